"""Command execution: argv without a shell, streaming, output caps, stdin, timeouts that kill."""

from __future__ import annotations

import time

import pytest

from apps.sandboxes import (
    InvalidSandboxConfig,
    ResourceLimits,
    SandboxConfig,
    SandboxFileNotFound,
    SandboxState,
    SandboxTimeout,
)

pytestmark = pytest.mark.docker


def test_shell_metacharacters_are_inert(shared_box):
    result = shared_box.execute(
        "echo", ["a; touch /workspace/pwned", "$(touch /workspace/x)", "`id`"]
    )
    assert result.exit_code == 0
    assert result.stdout == "a; touch /workspace/pwned $(touch /workspace/x) `id`\n"
    with pytest.raises(SandboxFileNotFound):
        shared_box.read_file("pwned")
    assert not [f for f in shared_box.list_files() if f.name in ("pwned", "x")]


def test_a_command_string_is_argv0_not_a_shell_line(shared_box):
    result = shared_box.execute("echo hi")
    assert result.exit_code != 0  # there is no program called "echo hi"
    assert shared_box.execute(["sh", "-c", "echo $((6*7))"]).stdout == "42\n"
    assert shared_box.execute("sh", ["-c", "echo hi"]).stdout == "hi\n"


def test_exit_codes_stderr_env_and_workdir(shared_box):
    result = shared_box.execute("sh", ["-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.ok and result.duration_ms > 0
    env = shared_box.execute("sh", ["-c", 'printf %s "$GREETING"'], env={"GREETING": "a b;$c"})
    assert env.stdout == "a b;$c"
    shared_box.execute("mkdir", ["-p", "sub dir"])
    assert shared_box.execute("pwd", workdir="sub dir").stdout == "/workspace/sub dir\n"
    assert shared_box.execute("pwd").stdout == "/workspace\n"
    assert shared_box.execute("pwd", workdir="/tmp").stdout == "/tmp\n"


def test_config_env_applies_to_every_command_but_not_to_container_metadata(module_manager):
    config = SandboxConfig(env={"API_TOKEN": "s3cret-value"})
    with module_manager.create_sandbox(config) as box:
        assert box.execute("sh", ["-c", 'echo "$API_TOKEN"']).stdout == "s3cret-value\n"
        attrs = box.api.inspect_container(box.container_id)
        assert "s3cret-value" not in str(attrs)


def test_stdin_is_delivered_and_closed(shared_box):
    result = shared_box.execute("sh", ["-c", "wc -c; cat"], stdin=b"")
    assert result.stdout.strip() == "0"
    data = bytes(range(256)) * 4000
    result = shared_box.execute("sha256sum", stdin=data)
    import hashlib

    assert result.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    assert shared_box.execute("cat", stdin="héllo").stdout == "héllo"


def test_output_streams_as_it_arrives(shared_box):
    seen: list[tuple[float, str, bytes]] = []
    started = time.monotonic()
    result = shared_box.execute(
        "sh",
        ["-c", "echo first; sleep 1.5; echo second >&2"],
        on_output=lambda stream, data: seen.append((time.monotonic() - started, stream, data)),
    )
    assert result.exit_code == 0
    first = next(t for t, s, d in seen if b"first" in d)
    second = next(t for t, s, d in seen if b"second" in d)
    assert second - first > 1.0, "the first line must be delivered before the command ends"
    assert {s for _, s, _ in seen} == {"stdout", "stderr"}


def test_binary_and_invalid_utf8_output(shared_box):
    result = shared_box.execute("printf", ["\\000\\377\\376ok \\342\\202\\254"])
    assert result.stdout_bytes == b"\x00\xff\xfeok \xe2\x82\xac"
    assert result.stdout == "\x00\ufffd\ufffdok €"


def test_output_cap_keeps_the_tail_and_says_so(shared_box):
    result = shared_box.execute("sh", ["-c", "seq 1 200000; echo THE-END"], max_output_bytes=4096)
    assert result.exit_code == 0 and result.truncated
    assert len(result.stdout_bytes) == 4096
    assert result.stdout.endswith("THE-END\n")
    assert result.output_bytes_total > 1_000_000


def test_output_flood_is_stopped_at_the_hard_limit(module_manager):
    config = SandboxConfig(max_output_bytes=64 * 1024, output_limit_bytes=2 * 1024 * 1024)
    with module_manager.create_sandbox(config) as box:
        result = box.execute("yes", timeout=60)
        assert result.end_reason == "output_limit"
        assert result.truncated and result.duration_ms < 30_000
        assert "yes" not in box.execute("ps", ["-eo", "comm"]).stdout


def test_timeout_kills_the_whole_command_and_reports_124(shared_box):
    started = time.monotonic()
    result = shared_box.execute(
        "sh",
        ["-c", "echo started; sleep 60 & (setsid sleep 61 &); sh -c 'sleep 62'; wait"],
        timeout=1.5,
    )
    assert time.monotonic() - started < 10
    assert result.timed_out and result.exit_code == 124 and result.end_reason == "timeout"
    assert result.stdout == "started\n"
    processes = shared_box.execute("ps", ["-eo", "pid,args"]).stdout
    assert "sleep 6" not in processes, processes  # not even the one that left with setsid
    assert shared_box.state is SandboxState.RUNNING
    assert shared_box.execute("echo", ["after"]).stdout == "after\n"


def test_timeout_ignoring_sigterm_still_dies(shared_box):
    result = shared_box.execute("sh", ["-c", "trap '' TERM INT; while :; do :; done"], timeout=1)
    assert result.timed_out
    assert "while" not in shared_box.execute("ps", ["-eo", "args"]).stdout


def test_bad_arguments_are_refused(shared_box):
    with pytest.raises(TypeError):
        shared_box.execute("echo", "not-a-list")
    with pytest.raises(InvalidSandboxConfig):
        shared_box.execute("true", timeout=0)
    with pytest.raises(InvalidSandboxConfig):
        shared_box.execute("true", env={"BAD=NAME": "x"})


def test_sandbox_deadline_ends_the_sandbox_with_reason_timeout(module_manager):
    box = module_manager.create_sandbox(SandboxConfig(limits=ResourceLimits(timeout_seconds=4)))
    try:
        result = box.execute("sleep", ["30"])  # no per-call timeout: the sandbox's applies
        assert result.timed_out and result.exit_code == 124
        assert box.end_reason == "timeout"
        with pytest.raises(SandboxTimeout):
            box.execute("true")
        assert box.health_check().healthy is False
    finally:
        box.destroy()
    assert box.end_reason == "timeout"  # destroy keeps the first reason
