"""Pure functions of the agent package: paths, globs, redaction, prices, safety rules, events."""

from __future__ import annotations

import json

import pytest

from apps.agents import events as ev
from apps.agents import pricing
from apps.agents.config import ConfigError, resolve_secret_env, secret_ref
from apps.agents.executor import cap_output
from apps.agents.interceptors import ToolBlocked, refuse_destructive_commands
from apps.agents.paths import PathRefused, glob_match, resolve
from apps.agents.redaction import Redactor


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("x.txt", "/workspace/x.txt"),
        ("/workspace/x.txt", "/workspace/x.txt"),
        ("./src/../x.txt", "/workspace/x.txt"),
        ("", "/workspace"),
        ("/workspace/../workspace/a", "/workspace/a"),
    ],
)
def test_workspace_paths_name_the_same_file(path, expected):
    assert resolve(path, "/workspace") == expected


@pytest.mark.parametrize(
    "path", ["../etc/passwd", "/etc/passwd", "a/../../x", "/workspacex/y", "//etc", "a\x00b"]
)
def test_escapes_are_refused(path):
    with pytest.raises(PathRefused):
        resolve(path, "/workspace")


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("**/*.py", "a.py", True),
        ("**/*.py", "src/pkg/a.py", True),
        ("**/*.py", "a.pyc", False),
        ("*.js", "app.js", True),
        ("*.js", "src/app.js", False),
        ("*.js", "appxjs", False),
        ("src/**", "src/a/b.txt", True),
        ("src/**", "srcx/a", False),
        ("*.{js,json}", "package.json", True),
        ("data/?.csv", "data/1.csv", True),
        ("[!a]*.txt", "b.txt", True),
        ("[!a]*.txt", "a.txt", False),
        ("./notes.md", "notes.md", True),
    ],
)
def test_glob_semantics(pattern, path, matches):
    assert glob_match(pattern, path) is matches


def test_redaction_of_plain_and_base64_forms():
    redactor = Redactor({"TOKEN": "s3cr3t-value", "SHORT": "ab"})
    import base64

    encoded = base64.b64encode(b"s3cr3t-value").decode()
    assert redactor.text(f"x s3cr3t-value y {encoded}") == "x [REDACTED:TOKEN] y [REDACTED:TOKEN]"
    assert redactor.text("ab stays") == "ab stays"  # too short to redact meaningfully
    assert redactor.value({"k": ["s3cr3t-value"]}) == {"k": ["[REDACTED:TOKEN]"]}


def test_stream_redaction_catches_a_secret_split_across_pieces():
    stream = Redactor({"TOKEN": "s3cr3t-value"}).stream()
    pieces = ["abc s3c", "r3t-va", "lue def"]
    out = "".join(stream.feed(p) for p in pieces) + stream.flush()
    assert out == "abc [REDACTED:TOKEN] def"
    assert Redactor({}).stream().feed("as is") == "as is"


def test_secret_refs_resolve_and_unknown_ones_fail():
    env = {"PLAIN": "1", "TOKEN": secret_ref("API_TOKEN")}
    assert resolve_secret_env(env, {"API_TOKEN": "v"}) == {"PLAIN": "1", "TOKEN": "v"}
    with pytest.raises(ConfigError, match="API_TOKEN"):
        resolve_secret_env(env, {})


def test_prices_come_from_one_table():
    cost = pricing.cost_usd(
        "claude-sonnet-4-5-20250929",
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_read_tokens=1_000_000,
        cache_write_tokens=1_000_000,
    )
    assert cost == pytest.approx(3 + 15 + 0.30 + 3.75)
    assert pricing.price_for("claude-haiku-4-5-20251001").input == 1.0
    assert pricing.price_for("claude-opus-4-1").input == 15.0  # longest prefix wins over opus-4
    assert pricing.price_for("some-future-model") == pricing.FALLBACK_PRICE


@pytest.mark.parametrize(
    "command",
    [
        "rm -rf /",
        "rm -rf / --no-preserve-root",
        "sudo rm -fr /*",
        "cd /tmp && rm -r -f ~",
        "rm -rf $HOME",
        ":(){ :|:& };:",
        "mkfs.ext4 /dev/sda1",
        "dd if=/dev/zero of=/dev/sda bs=1M",
        "echo x > /dev/sda",
        "shutdown -h now",
        "chmod -R 777 /",
    ],
)
def test_safety_rules_refuse_clearly_destructive_commands(command):
    with pytest.raises(ToolBlocked):
        refuse_destructive_commands({"command": command}, None)


@pytest.mark.parametrize(
    "command",
    [
        "rm -rf build/",
        "rm -rf /workspace/build",
        "rm -f /tmp/x",
        "dd if=/dev/zero of=/tmp/file bs=1k count=1",
        "dd if=/dev/urandom of=/dev/null count=1",
        "echo reboot is a word",
        "python3 -c 'print(1)'",
        "chmod -R 755 ./dist",
    ],
)
def test_safety_rules_let_ordinary_commands_through(command):
    assert refuse_destructive_commands({"command": command}, None) is None


def test_tool_output_cap_keeps_the_tail():
    capped, truncated = cap_output("a" * 50 + "THE END", 10)
    assert truncated and capped.endswith("aaaTHE END") and "57" not in capped
    assert "first 47 characters dropped" in capped
    assert cap_output("short", 10) == ("short", False)


def test_every_event_is_json_and_round_trips():
    samples = [
        ev.StatusChanged(status="running", sandbox_id="s1"),
        ev.TurnStarted(turn=1, model="m"),
        ev.TextDelta(turn=1, text="hi"),
        ev.AssistantMessage(turn=1, text="hi", stop_reason="end_turn"),
        ev.UsageUpdate(turn=1, delta={"input_tokens": 1}, total={"input_tokens": 1}),
        ev.ApiRetry(
            turn=1,
            attempt=1,
            max_retries=2,
            status_code=429,
            error_type="rate_limit_error",
            message="slow",
            delay_s=0.1,
        ),
        ev.ToolCall(turn=1, tool_use_id="t", tool="Bash", input={"command": "ls"}),
        ev.InterceptorDecision(
            tool_use_id="t",
            tool="Bash",
            interceptor="i",
            phase="before",
            decision="blocked",
            reason="no",
        ),
        ev.LogOutput(stream="stdout", text="x", tool_use_id="t"),
        ev.ToolFinished(
            turn=1, tool_use_id="t", tool="Bash", output="x", is_error=False, duration_ms=1.0
        ),
        ev.FileChanged(path="a.py", action="created", size=3),
        ev.CommandStarted(index=0, command="ls"),
        ev.CommandFinished(index=0, command="ls", exit_code=0, duration_ms=1.0),
        ev.FilesCaptured(count=0, total_bytes=0),
        ev.RunFinished(status="succeeded", end_reason="end_turn"),
    ]
    assert {type(e) for e in samples} == set(ev.EVENT_TYPES.values())
    for event in samples:
        data = json.loads(json.dumps(event.to_dict()))
        assert data["type"] == event.type and isinstance(data["ts"], float)
        assert ev.event_from_dict(data) == event
        line = ev.describe(event)
        assert isinstance(line, str) and not line.startswith(f"[{event.type}] {{")


def test_the_agents_package_imports_neither_django_nor_docker():
    import subprocess
    import sys

    code = (
        "import sys, apps.agents, apps.agents.executor, apps.agents.tools, apps.agents.capture\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'docker'))\n"
        "assert not bad, bad\n"
    )
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)
    for path in (root / "apps" / "agents").glob("*.py"):
        source = path.read_text()
        assert "import docker" not in source and "from docker" not in source, path
        assert "import django" not in source and "from django" not in source, path
