"""The agent loop's own logic against the loopback API and an in-memory sandbox (fast).

The same behaviours against real Docker sandboxes are in test_scenarios.py.
"""

from __future__ import annotations

import json
import threading
import time

import anthropic
import pytest

from apps.agents import (
    AgentConfig,
    Interceptor,
    RetryPolicy,
    SandboxedAgentExecutor,
    ToolBlocked,
    ToolResult,
    secret_ref,
)
from apps.sandboxes.types import SandboxConfig
from tests.support.anthropic_server import (
    ErrorReply,
    Reply,
    StreamErrorReply,
    text,
    tool_use,
)

from .fakes import FakeManager, Recorder

FAST_RETRY = RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.05)


@pytest.fixture
def manager():
    return FakeManager()


@pytest.fixture
def executor(anthropic_server, manager):
    client = anthropic.Anthropic(api_key="test-key", base_url=anthropic_server.base_url)
    return SandboxedAgentExecutor(manager=manager, client=client, retry=FAST_RETRY)


def config(**overrides) -> AgentConfig:
    values = {
        "agent_name": "tester",
        "system_prompt": "You are a careful engineer.",
        "sandbox_config": SandboxConfig(),
    }
    values.update(overrides)
    return AgentConfig(**values)


def test_one_turn_answer_succeeds_with_usage_and_cache_control(anthropic_server, executor, manager):
    anthropic_server.add(
        Reply(
            [text("All done: nothing to change.")],
            usage={"input_tokens": 1000, "output_tokens": 100, "cache_creation_input_tokens": 50},
        )
    )
    events = Recorder()
    result = executor.execute("Check the repo", config(), on_event=events)

    assert result.ok, result.error
    assert (result.status, result.end_reason, result.turns) == ("succeeded", "end_turn", 1)
    assert result.output == "All done: nothing to change."
    assert (result.usage.input_tokens, result.usage.output_tokens) == (1000, 100)
    # the default model, claude-sonnet-5-5: $2 in, $10 out, $2.50 cache write per MTok
    assert result.usage.cost_usd == pytest.approx((1000 * 2 + 100 * 10 + 50 * 2.5) / 1e6)
    assert result.sandbox_id == "fake-1" and manager.destroyed == ["fake-1"]
    assert executor.list_active() == []

    request = anthropic_server.requests[0]
    assert request.stream
    assert request.system_blocks[0]["cache_control"] == {"type": "ephemeral"}
    assert request.tools[-1]["cache_control"] == {"type": "ephemeral"}
    assert [t["name"] for t in request.tools] == [
        "Bash",
        "Read",
        "Write",
        "Edit",
        "Glob",
        "Grep",
        "LS",
    ]
    assert request.messages[0]["content"][0]["text"] == "Check the repo"
    types = events.types()
    assert types[:3] == ["status", "status", "turn_started"]
    assert "text_delta" in types and types[-1] == "run_finished"
    assert "".join(e.text for e in events.of("text_delta")) == "All done: nothing to change."
    assert events.of("usage")[0].total["input_tokens"] == 1000


def test_tool_calls_run_in_the_sandbox_and_results_go_back(anthropic_server, executor, manager):
    anthropic_server.add(
        Reply([text("Writing."), tool_use("Write", {"file_path": "hello.py", "content": "x=1\n"})]),
        Reply([tool_use("Read", {"file_path": "/workspace/hello.py"})]),
        Reply([text("Done.")]),
    )
    events = Recorder()
    result = executor.execute("Write hello.py", config(), on_event=events)

    assert result.ok, result.error
    assert manager.created[0].files["/workspace/hello.py"] == b"x=1\n"
    second, third = anthropic_server.requests[1], anthropic_server.requests[2]
    assert second.tool_result_texts() == ["Created /workspace/hello.py (4 bytes)"]
    assert third.tool_result_texts() == ["     1\tx=1"]  # x and /workspace/x are one file
    assert second.tool_results()[0]["is_error"] is False
    # exactly one cache breakpoint on the conversation: the newest block
    marked = [b for m in third.messages for b in m["content"] if "cache_control" in b]
    assert marked == [third.messages[-1]["content"][-1]]
    assert [e.action for e in events.of("file_changed")] == ["created"]
    assert result.stats.files_created == 1 and result.stats.tool_calls == 2


def test_two_tool_calls_in_one_turn_answered_in_one_message(anthropic_server, executor):
    anthropic_server.add(
        Reply(
            [
                tool_use("Bash", {"command": "echo one"}, id="toolu_a"),
                tool_use("Bash", {"command": "echo two"}, id="toolu_b"),
            ]
        ),
        Reply([text("ok")]),
    )
    result = executor.execute("two at once", config())
    assert result.ok, result.error
    results = anthropic_server.requests[1].tool_results()
    assert [r["tool_use_id"] for r in results] == ["toolu_a", "toolu_b"]
    assert [r["content"] for r in results] == ["ran: echo one", "ran: echo two"]


def test_rate_limit_is_retried_after_retry_after(anthropic_server, executor):
    anthropic_server.add(
        ErrorReply(429, "rate_limit_error", "Number of requests exceeded", {"retry-after": "0.2"}),
        StreamErrorReply("overloaded_error", "Overloaded"),
        Reply([text("finally")]),
    )
    events = Recorder()
    result = executor.execute("t", config(), on_event=events)

    assert result.ok, result.error
    retries = events.of("api_retry")
    assert [(r.status_code, r.error_type) for r in retries] == [
        (429, "rate_limit_error"),
        (200, "overloaded_error"),
    ]
    assert retries[0].delay_s == pytest.approx(0.2)
    first, second = anthropic_server.requests[:2]
    assert second.received_at - first.received_at >= 0.2
    assert result.stats.api_retries == 2


def test_server_errors_give_up_after_the_retry_budget(anthropic_server, executor):
    anthropic_server.add(*[ErrorReply(500, "api_error", "Internal server error")] * 3)
    result = executor.execute("t", config())
    assert (result.status, result.end_reason) == ("error", "api_error")
    assert "gave up after 2 retries" in result.error.message
    assert len(anthropic_server.requests) == 3


def test_401_ends_the_run_with_a_clear_error(anthropic_server, manager):
    client = anthropic.Anthropic(api_key="not-the-key", base_url=anthropic_server.base_url)
    executor = SandboxedAgentExecutor(manager=manager, client=client, retry=FAST_RETRY)
    result = executor.execute("t", config())
    assert (result.status, result.end_reason) == ("error", "auth_error")
    assert result.error.type == "AuthenticationError"
    assert "ANTHROPIC_API_KEY" in result.error.message
    assert len(anthropic_server.requests) == 1
    assert manager.destroyed == ["fake-1"]


def test_max_turns(anthropic_server, executor):
    anthropic_server.set_script(lambda request: Reply([tool_use("Bash", {"command": "true"})]))
    result = executor.execute("loop forever", config(max_turns=3))
    assert (result.status, result.end_reason, result.turns) == ("failed", "max_turns", 3)
    assert len(anthropic_server.requests) == 3


def test_token_and_cost_budgets(anthropic_server, executor):
    big = {"input_tokens": 6000, "output_tokens": 1000}
    anthropic_server.set_script(lambda r: Reply([tool_use("Bash", {"command": "true"})], usage=big))
    result = executor.execute("t", config(max_tokens_total=10_000))
    assert (result.status, result.end_reason, result.turns) == ("failed", "budget", 2)
    assert result.usage.input_tokens + result.usage.output_tokens == 14_000
    assert "token budget" in result.error.message

    result = executor.execute("t", config(max_cost_usd=0.03))  # $0.022 a turn
    assert (result.end_reason, result.turns) == ("budget", 2)
    assert result.usage.cost_usd == pytest.approx(0.044)


def test_interceptors_modify_answer_block_and_rewrite(anthropic_server, executor, manager):
    seen = []

    def add_flag(params, ctx):
        seen.append((ctx.tool_name, ctx.turn, ctx.agent_name))
        return {**params, "command": params["command"] + " --flag"}

    def answer_reads(params, ctx):
        return ToolResult("cached answer")

    def no_curl(params, ctx):
        if "curl" in params["command"]:
            raise ToolBlocked("network tools are not allowed in this project")

    def shout(result, ctx):
        return ToolResult(result.content.upper(), result.is_error)

    interceptors = [
        Interceptor("Bash", before=no_curl),
        Interceptor("Bash", before=add_flag, after=shout),
        Interceptor("Read", before=answer_reads),
        Interceptor("*", after=lambda result, ctx: None, name="observer"),
    ]
    anthropic_server.add(
        Reply(
            [
                tool_use("Bash", {"command": "echo hi"}),
                tool_use("Read", {"file_path": "nothing.txt"}),
                tool_use("Bash", {"command": "curl http://x"}),
            ]
        ),
        Reply([text("ok")]),
    )
    events = Recorder()
    result = executor.execute("t", config(interceptors=interceptors), on_event=events)

    assert result.ok, result.error
    outputs = anthropic_server.requests[1].tool_results()
    assert outputs[0]["content"] == "RAN: ECHO HI --FLAG"
    assert outputs[1]["content"] == "cached answer" and not outputs[1]["is_error"]
    assert outputs[2]["is_error"] is True
    assert "network tools are not allowed in this project" in outputs[2]["content"]
    assert manager.created[0].commands[0] == ["bash", "-c", "echo hi --flag"]
    assert not any("curl" in " ".join(c) for c in manager.created[0].commands)
    decisions = [(d.interceptor, d.decision) for d in events.of("interceptor")]
    assert decisions == [
        ("add_flag", "modified"),
        ("add_flag", "result_modified"),
        ("answer_reads", "answered"),
        ("no_curl", "blocked"),
    ]
    assert seen == [("Bash", 1, "tester")]
    assert result.stats.blocked_calls == 1


def test_default_safety_set_is_on_and_removable(anthropic_server, executor, manager):
    script = [Reply([tool_use("Bash", {"command": "rm -rf /"})]), Reply([text("ok")])]
    anthropic_server.add(*script)
    executor.execute("t", config())
    refusal = anthropic_server.requests[1].tool_results()[0]
    assert refusal["is_error"] and "safety policy" in refusal["content"]
    assert manager.created[0].commands == []

    anthropic_server.add(*script)
    executor.execute("t", config(safety_interceptors=[]))
    assert manager.created[1].commands == [["bash", "-c", "rm -rf /"]]


def test_path_escapes_are_tool_errors(anthropic_server, executor, manager):
    anthropic_server.add(
        Reply(
            [
                tool_use("Read", {"file_path": "../etc/passwd"}),
                tool_use("Write", {"file_path": "/etc/evil", "content": "x"}),
                tool_use("Edit", {"file_path": "a", "old_string": "x"}),  # missing new_string
                tool_use("Teleport", {}),
            ]
        ),
        Reply([text("ok")]),
    )
    result = executor.execute("t", config())
    assert result.ok
    outs = anthropic_server.requests[1].tool_results()
    assert all(o["is_error"] for o in outs)
    assert "outside the sandbox workspace" in outs[0]["content"]
    assert "outside the sandbox workspace" in outs[1]["content"]
    assert "missing required parameter(s): new_string" in outs[2]["content"]
    assert "Unknown tool 'Teleport'" in outs[3]["content"]
    assert manager.created[0].files == {}


def test_long_tool_output_is_capped_keeping_the_tail(anthropic_server, manager):
    manager.shell = lambda command: (0, "x" * 5000 + "\nLAST LINE", "")
    client = anthropic.Anthropic(api_key="test-key", base_url=anthropic_server.base_url)
    executor = SandboxedAgentExecutor(manager=manager, client=client, retry=FAST_RETRY)
    anthropic_server.add(Reply([tool_use("Bash", {"command": "big"})]), Reply([text("ok")]))
    events = Recorder()
    executor.execute("t", config(tool_output_limit=1000), on_event=events)
    sent = anthropic_server.requests[1].tool_result_texts()[0]
    assert sent.startswith("[output truncated: first") and sent.endswith("LAST LINE")
    assert len(sent) < 1100
    assert events.of("tool_result")[0].truncated


def test_secrets_reach_the_sandbox_only_by_reference_and_never_leave(anthropic_server, manager):
    secret = "tok-9f8e7d6c5b4a"
    manager.shell = lambda command: (0, f"token is {secret}\n", "")
    client = anthropic.Anthropic(api_key="test-key", base_url=anthropic_server.base_url)
    executor = SandboxedAgentExecutor(manager=manager, client=client, retry=FAST_RETRY)
    anthropic_server.add(
        Reply([text(f"I will print {secret[:6]}"), tool_use("Bash", {"command": "env"})]),
        Reply([text(f"The token was {secret}.")]),
    )
    sandbox_config = SandboxConfig(env={"API_TOKEN": secret_ref("API_TOKEN"), "MODE": "ci"})
    run_config = config(sandbox_config=sandbox_config, secrets={"API_TOKEN": secret})
    events = Recorder()
    result = executor.execute("t", run_config, on_event=events)

    assert result.ok, result.error
    assert dict(manager.configs[0].env) == {"API_TOKEN": secret, "MODE": "ci"}
    assert secret not in repr(run_config) and secret not in repr(sandbox_config)
    everything = json.dumps([e.to_dict() for e in events]) + json.dumps(result.to_dict())
    assert secret not in everything
    assert "[REDACTED:API_TOKEN]" in everything
    # the model never saw the value either: tool output is redacted before it is sent
    assert secret not in json.dumps(anthropic_server.requests[1].body)

    unknown = config(sandbox_config=SandboxConfig(env={"X": secret_ref("NOPE")}))
    failed = executor.execute("t", unknown)
    assert (failed.status, failed.end_reason) == ("error", "config_error")
    assert "NOPE" in failed.error.message


def test_a_failing_event_sink_ends_the_run_with_its_error(anthropic_server, executor, manager):
    anthropic_server.add(Reply([text("hi")]))

    def sink(event):
        if event.type == "turn_started":
            raise RuntimeError("database is down")

    result = executor.execute("t", config(), on_event=sink)
    assert (result.status, result.end_reason) == ("error", "internal_error")
    assert result.error.type == "EventSinkFailed" and "database is down" in result.error.message
    assert manager.destroyed == ["fake-1"]


def test_cancel_during_a_model_call(anthropic_server, executor, manager):
    anthropic_server.add(Reply([text("slow " * 50)], event_delay=0.05))
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    result = executor.execute("t", config(), cancel=cancel)
    assert (result.status, result.end_reason) == ("cancelled", "cancelled")
    assert time.monotonic() - started < 2.5
    assert manager.destroyed and manager.destroyed[0] == "fake-1"


def test_auto_cleanup_off_keeps_the_sandbox_until_cleanup_all(anthropic_server, executor, manager):
    anthropic_server.add(Reply([text("done")]))
    result = executor.execute("t", config(auto_cleanup=False))
    assert executor.list_active() == [result.sandbox_id]
    context = executor.get_context(result.sandbox_id)
    assert context.agent_name == "tester" and context.status == "succeeded"
    assert manager.destroyed == []
    assert executor.cleanup_all() == {}
    assert manager.destroyed == [result.sandbox_id] and executor.list_active() == []


def test_parallel_keeps_order_and_one_failure_does_not_sink_the_others(anthropic_server, executor):
    anthropic_server.set_script(lambda request: Reply([text(f"done: {request.system_text}")]))
    broken = config(system_prompt="b", sandbox_config=SandboxConfig(env={"T": secret_ref("NONE")}))
    tasks = [
        ("t", config(system_prompt="a")),
        ("t", broken),
        {"task": "t", "config": config(system_prompt="c")},
        ("t", "not a config"),
    ]
    results = executor.execute_parallel(tasks, max_concurrency=2)
    assert [r.status for r in results] == ["succeeded", "error", "succeeded", "error"]
    assert [results[0].output, results[2].output] == ["done: a", "done: c"]
    assert results[1].end_reason == "config_error"
    assert results[3].error.type == "TypeError"


def test_capture_caps_are_reported(anthropic_server, executor, manager):
    anthropic_server.add(
        Reply(
            [
                tool_use("Write", {"file_path": "a.py", "content": "a" * 10}),
                tool_use("Write", {"file_path": "b.py", "content": "b" * 10}),
                tool_use("Write", {"file_path": "c.txt", "content": "c"}),
            ]
        ),
        Reply([text("ok")]),
    )
    events = Recorder()
    result = executor.execute(
        "t",
        config(capture_files=True, capture_patterns=["*.py"], capture_max_bytes=15),
        on_event=events,
    )
    assert [(f.path, f.content) for f in result.files] == [("a.py", b"a" * 10)]
    assert result.stats.capture["limit_hit"] == "max_bytes"
    assert result.stats.capture["skipped"] == [
        {"path": "b.py", "reason": "byte cap of 15 bytes reached (10 bytes)"}
    ]
    assert events.of("files_captured")[0].limit_hit == "max_bytes"
