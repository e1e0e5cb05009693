"""The agent executor end to end: the real ``anthropic`` SDK against the loopback Messages API,
every tool call running in a real Docker sandbox."""

from __future__ import annotations

import json
import threading
import time

import anthropic
import pytest

import docker
from apps.agents import (
    AgentConfig,
    Interceptor,
    RetryPolicy,
    SandboxedAgentExecutor,
    ScriptConfig,
    ToolBlocked,
    secret_ref,
)
from apps.sandboxes import ResourceLimits, SandboxConfig
from tests.support.anthropic_server import AnthropicServer, Reply, route, text, tool_use

from .fakes import Recorder

pytestmark = [pytest.mark.docker]


@pytest.fixture
def executor(anthropic_server, docker_manager):
    client = anthropic.Anthropic(api_key="test-key", base_url=anthropic_server.base_url)
    retry = RetryPolicy(max_retries=2, initial_delay=0.01)
    return SandboxedAgentExecutor(manager=docker_manager, client=client, retry=retry)


def agent(**overrides) -> AgentConfig:
    values = {
        "agent_name": "scenario",
        "system_prompt": "You work in /workspace.",
        "sandbox_config": SandboxConfig(),
    }
    values.update(overrides)
    return AgentConfig(**values)


def container_exists(sandbox_id: str) -> bool:
    client = docker.from_env()
    try:
        client.containers.get(sandbox_id)
        return True
    except docker.errors.NotFound:
        return False
    finally:
        client.close()


def test_write_a_file_run_it_and_read_the_output(anthropic_server, executor):
    program = "import sys\nprint('fib', [1, 1, 2, 3, 5][-1])\nprint('warn', file=sys.stderr)\n"
    anthropic_server.add(
        Reply(
            [text("Writing it."), tool_use("Write", {"file_path": "fib.py", "content": program})]
        ),
        Reply([tool_use("Bash", {"command": "python3 /workspace/fib.py > out.txt; echo $?"})]),
        Reply([tool_use("Read", {"file_path": "out.txt"})]),
        Reply([text("fib is 5.")]),
    )
    events = Recorder()
    result = executor.execute("Compute fib", agent(), on_event=events)

    assert result.ok, result.error
    assert result.output == "fib is 5." and result.turns == 4
    requests = anthropic_server.requests
    assert requests[1].tool_result_texts() == [f"Created /workspace/fib.py ({len(program)} bytes)"]
    assert requests[2].tool_result_texts() == ["0\nwarn"]  # stdout, then stderr
    assert requests[3].tool_result_texts() == ["     1\tfib 5"]
    logs = events.of("log")
    assert {e.stream for e in logs} == {"stdout", "stderr"}
    assert all(e.tool_use_id == requests[2].tool_results()[0]["tool_use_id"] for e in logs)
    assert result.stats.commands_executed == 1 and result.stats.files_created == 1
    assert result.stats.sandbox["memory_limit_mb"] == 256
    assert not container_exists(result.sandbox_id)


def test_a_failed_edit_is_retried_with_what_the_tool_said(anthropic_server, executor):
    def fix_after_error(request):
        feedback = request.tool_results()[0]
        assert feedback["is_error"] and "old_string not found" in feedback["content"]
        return Reply([tool_use("Edit", {"file_path": "app.py", "old_string": "x = 1",
                                        "new_string": "x = 2"})])  # fmt: skip

    anthropic_server.add(
        Reply([tool_use("Write", {"file_path": "app.py", "content": "x = 1\nprint(x)\n"})]),
        Reply(
            [tool_use("Edit", {"file_path": "app.py", "old_string": "x=1", "new_string": "x=2"})]
        ),
        fix_after_error,
        Reply([tool_use("Bash", {"command": "python3 app.py"})]),
        Reply([text("x is 2 now")]),
    )
    events = Recorder()
    result = executor.execute("Set x to 2", agent(), on_event=events)

    assert result.ok, result.error
    assert anthropic_server.requests[3].tool_results()[0]["is_error"] is False
    assert anthropic_server.requests[4].tool_result_texts() == ["2"]
    assert [e.action for e in events.of("file_changed")] == ["created", "modified"]
    assert result.stats.tool_errors == 1


def test_a_blocked_command_reason_reaches_the_model(anthropic_server, executor):
    def no_network(params, ctx):
        if "curl" in params["command"] or "wget" in params["command"]:
            raise ToolBlocked("downloads are not allowed in this project")

    anthropic_server.add(
        Reply([tool_use("Bash", {"command": "curl -s https://example.com > page.html"})]),
        Reply([tool_use("Bash", {"command": "rm -rf / --no-preserve-root"})]),
        Reply([tool_use("Bash", {"command": "ls -A"})]),
        Reply([text("Understood.")]),
    )
    events = Recorder()
    config = agent(interceptors=[Interceptor("Bash", before=no_network)])
    result = executor.execute("fetch the page", config, on_event=events)

    assert result.ok, result.error
    first = anthropic_server.requests[1].tool_results()[0]
    assert first["is_error"] and "downloads are not allowed in this project" in first["content"]
    second = anthropic_server.requests[2].tool_results()[0]
    assert second["is_error"] and "safety policy" in second["content"]
    assert anthropic_server.requests[3].tool_result_texts() == ["(no output)"]  # nothing ran
    decisions = [(e.interceptor, e.decision) for e in events.of("interceptor")]
    assert decisions == [("no_network", "blocked"), ("safety.destructive_commands", "blocked")]
    assert result.stats.blocked_calls == 2 and result.stats.commands_executed == 1


def test_path_escapes_are_refused(anthropic_server, executor):
    anthropic_server.add(
        Reply(
            [
                tool_use("Read", {"file_path": "../../etc/passwd"}),
                tool_use("Read", {"file_path": "/etc/passwd"}),
                tool_use("Write", {"file_path": "/tmp/../etc/x", "content": "x"}),
                tool_use("LS", {"path": "/"}),
            ]
        ),
        Reply([tool_use("Bash", {"command": "ln -s /etc/passwd link && echo linked"})]),
        Reply([tool_use("Read", {"file_path": "link"})]),
        Reply([text("I cannot read outside the workspace.")]),
    )
    result = executor.execute("read /etc/passwd", agent())

    assert result.ok, result.error
    refusals = anthropic_server.requests[1].tool_results()
    assert all(r["is_error"] for r in refusals)
    assert all("outside the sandbox workspace" in r["content"] for r in refusals)
    through_link = anthropic_server.requests[3].tool_results()[0]
    assert through_link["is_error"] and "root:" not in through_link["content"]


def test_two_tool_calls_in_one_turn(anthropic_server, executor):
    anthropic_server.add(
        Reply(
            [
                text("Both at once."),
                tool_use("Write", {"file_path": "a.txt", "content": "alpha"}, id="toolu_w"),
                tool_use("Bash", {"command": "cat a.txt; echo; uname -s"}, id="toolu_b"),
            ]
        ),
        Reply([text("done")]),
    )
    result = executor.execute("t", agent())

    assert result.ok, result.error
    results = anthropic_server.requests[1].tool_results()
    assert [r["tool_use_id"] for r in results] == ["toolu_w", "toolu_b"]
    assert results[1]["content"] == "alpha\nLinux"  # in order: the Write ran first


def test_budget_exhausted(anthropic_server, executor):
    usage = {"input_tokens": 3000, "output_tokens": 500}
    anthropic_server.set_script(
        lambda request: Reply([tool_use("Bash", {"command": "echo again"})], usage=usage)
    )
    events = Recorder()
    result = executor.execute("loop", agent(max_tokens_total=8000), on_event=events)

    assert (result.status, result.end_reason, result.turns) == ("failed", "budget", 3)
    assert result.usage.input_tokens == 9000 and result.error.type == "BudgetExhausted"
    assert events.of("usage")[-1].total["input_tokens"] == 9000
    assert events[-1].type == "run_finished" and events[-1].end_reason == "budget"
    assert not container_exists(result.sandbox_id)


def test_cancel_mid_command_destroys_the_sandbox_within_a_second(
    anthropic_server, executor, docker_manager
):
    anthropic_server.add(Reply([tool_use("Bash", {"command": "echo started; sleep 60"})]))
    cancel = threading.Event()
    marks: dict[str, float] = {}

    def on_event(event):
        if event.type == "log" and "started" in event.text and not cancel.is_set():
            marks["cancel"] = time.monotonic()
            cancel.set()

    def watch_manager():
        while "cancel" not in marks:
            time.sleep(0.01)
        while docker_manager.list_sandboxes():
            time.sleep(0.01)
        marks["gone"] = time.monotonic()

    watcher = threading.Thread(target=watch_manager, daemon=True)
    watcher.start()
    result = executor.execute("sleep", agent(), on_event=on_event, cancel=cancel)
    returned = time.monotonic()
    watcher.join(timeout=5)

    assert (result.status, result.end_reason) == ("cancelled", "cancelled")
    assert marks["gone"] - marks["cancel"] < 1.5
    assert returned - marks["cancel"] < 5
    assert not container_exists(result.sandbox_id)


def test_capture_collects_regular_files_only(anthropic_server, executor):
    setup = (
        "mkdir -p pkg/sub && echo 'x = 1' > pkg/sub/a.py && echo 'y = 2' > top.py"
        " && echo notes > notes.txt && ln -s /etc/passwd leak.py"
        " && ln -s ../top.py pkg/inner_link.py && mkfifo pipe.py"
    )
    anthropic_server.add(Reply([tool_use("Bash", {"command": setup})]), Reply([text("ok")]))
    events = Recorder()
    config = agent(capture_files=True, capture_patterns=["**/*.py"])
    result = executor.execute("make files", config, on_event=events)

    assert result.ok, result.error
    assert {f.path: f.content for f in result.files} == {
        "pkg/sub/a.py": b"x = 1\n",
        "top.py": b"y = 2\n",
    }
    import hashlib

    assert all(f.sha256 == hashlib.sha256(f.content).hexdigest() for f in result.files)
    skipped = {s["path"]: s["reason"] for s in result.stats.capture["skipped"]}
    assert skipped == {
        "leak.py": "not a regular file (symlink)",
        "pkg/inner_link.py": "not a regular file (symlink)",
        "pipe.py": "not a regular file (fifo)",
    }
    assert events.of("files_captured")[0].count == 2

    anthropic_server.add(Reply([tool_use("Bash", {"command": setup})]), Reply([text("ok")]))
    capped = executor.execute("again", agent(capture_files=True, capture_patterns=["**/*.py"],
                                             capture_max_files=1))  # fmt: skip
    assert [f.path for f in capped.files] == ["pkg/sub/a.py"]
    assert capped.stats.capture["limit_hit"] == "max_files"


def test_parallel_agents_overlap_and_stay_isolated(executor, docker_manager):
    def script_for(name):
        return [
            Reply([tool_use("Write", {"file_path": f"{name}.txt", "content": name})]),
            Reply([tool_use("Bash", {"command": "sleep 1.5; ls"})]),
            Reply([text(f"{name} done")]),
        ]

    names = ["backend", "tester", "documenter"]
    scripts = {f"You are {n}.": script_for(n) for n in names}
    with AnthropicServer(route(lambda request: request.system_text, scripts)) as server:
        executor._client = anthropic.Anthropic(api_key="test-key", base_url=server.base_url)
        spans: dict[int, list[float]] = {}

        def on_event(index, event):
            span = spans.setdefault(index, [event.ts, event.ts])
            span[1] = event.ts

        tasks = [(f"do {n}", agent(agent_name=n, system_prompt=f"You are {n}.")) for n in names]
        started = time.monotonic()
        results = executor.execute_parallel(tasks, max_concurrency=2, on_event=on_event)
        wall = time.monotonic() - started

    assert [r.output for r in results] == ["backend done", "tester done", "documenter done"]
    assert all(r.ok for r in results)
    listings = [
        next(
            req for req in server.requests if req.system_text == f"You are {n}." and req.turn == 2
        ).tool_result_texts()[0]
        for n in names
    ]
    assert listings == ["backend.txt", "tester.txt", "documenter.txt"]  # each sees only its own
    assert len({r.sandbox_id for r in results}) == 3
    intervals = sorted(spans.values())
    most_at_once = max(
        sum(1 for start, end in intervals if start <= moment < end) for moment, _ in intervals
    )
    assert most_at_once == 2  # overlapping, and never more than max_concurrency
    assert sum(r.duration_ms for r in results) / 1000 > 1.2 * wall  # a real speed-up


def test_script_run_streams_logs_and_fails_on_the_first_bad_exit(executor):
    secret = "s3cr3t-tok3n-value"
    sandbox_config = SandboxConfig(env={"TOKEN": secret_ref("TOKEN")})
    config = ScriptConfig(
        commands=[
            "echo building; echo 'print(42)' > main.py",
            'echo to-stderr >&2; echo token=$TOKEN; printf %s "$TOKEN" | base64',
            "python3 main.py && exit 3",
            "echo never runs",
        ],
        sandbox_config=sandbox_config,
        secrets={"TOKEN": secret},
        capture_files=True,
        capture_patterns=["*.py"],
    )
    events = Recorder()
    result = executor.execute(None, config, on_event=events)

    assert (result.status, result.end_reason) == ("failed", "exit_code")
    assert result.error.type == "CommandFailed" and "exited with 3" in result.error.message
    finished = events.of("command_finished")
    assert [(e.index, e.exit_code) for e in finished] == [(0, 0), (1, 0), (2, 3)]
    logs = events.of("log")
    assert ("stderr", "to-stderr\n") in [(e.stream, e.text) for e in logs]
    assert any(e.command_index == 2 and "42" in e.text for e in logs)
    dumped = json.dumps([e.to_dict() for e in events]) + json.dumps(result.to_dict())
    assert secret not in dumped and "token=[REDACTED:TOKEN]" in dumped
    assert "c3MzY3IzdC10b2szbi12YWx1ZQ" not in dumped  # the base64 form is redacted too
    assert [f.path for f in result.files] == ["main.py"]  # captured even though it failed
    assert "42" in result.output

    ok = executor.execute_script(
        ScriptConfig(commands=["false", "echo after"], continue_on_error=True)
    )
    assert (ok.status, ok.end_reason) == ("succeeded", "completed")
    assert ok.output == "after\n" and ok.stats.commands_executed == 2


def test_sandbox_limits_end_the_run_with_their_reason(anthropic_server, executor):
    anthropic_server.add(
        Reply([tool_use("Bash", {"command": "python3 -c 'x = bytearray(400 * 2**20)'"})]),
        Reply([text("unreachable")]),
    )
    result = executor.execute("eat memory", agent())
    assert (result.status, result.end_reason) == ("oom", "oom")
    assert "out of memory" in result.error.message

    assert anthropic_server.remaining == 1  # the model was not asked again
    anthropic_server.set_script([Reply([tool_use("Bash", {"command": "sleep 30"})])])
    limits = ResourceLimits(timeout_seconds=3)
    started = time.monotonic()
    result = executor.execute("sleep", agent(sandbox_config=SandboxConfig(limits=limits)))
    assert (result.status, result.end_reason) == ("timed_out", "timeout")
    assert time.monotonic() - started < 15
    assert anthropic_server.remaining == 0 and len(anthropic_server.requests) == 2
