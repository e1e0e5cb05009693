"""Engine-free units: limits merging, config validation, path confinement, argv, stream parsing."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from apps.sandboxes import (
    InvalidSandboxConfig,
    PathOutsideWorkspace,
    ResourceLimits,
    SandboxConfig,
    SandboxManager,
    SandboxUnavailable,
    TextDecoder,
    UnknownProvider,
    registered_providers,
)
from apps.sandboxes.docker import build_argv
from apps.sandboxes.paths import workspace_path
from apps.sandboxes.stream import MuxStream, OutputTail, decode_output

# -- limits ---------------------------------------------------------------------------------


def test_limits_defaults_match_the_contract():
    limits = ResourceLimits()
    assert limits.as_dict() == {
        "memory_mb": 512,
        "cpu_cores": 1.0,
        "disk_mb": 1024,
        "network_mbps": None,
        "timeout_seconds": 300,
        "max_processes": 256,
    }
    assert limits.explicit == frozenset()


def test_per_sandbox_limits_override_field_by_field():
    manager_defaults = ResourceLimits(memory_mb=2048, cpu_cores=2.0, timeout_seconds=60)
    mine = ResourceLimits(memory_mb=256)
    merged = mine.merged_with(manager_defaults)
    assert merged.memory_mb == 256  # mine
    assert merged.cpu_cores == 2.0  # manager's, not the class default 1.0
    assert merged.timeout_seconds == 60
    assert merged.disk_mb == 1024  # nobody set it: the default


def test_explicit_none_is_a_value_not_unset():
    merged = ResourceLimits(disk_mb=None).merged_with(ResourceLimits(disk_mb=100))
    assert merged.disk_mb is None
    assert ResourceLimits().merged_with(ResourceLimits(disk_mb=100)).disk_mb == 100


def test_manager_merges_partial_limits_with_defaults():
    manager = SandboxManager(limits=ResourceLimits(cpu_cores=0.5), owner="unit")
    config, limits = manager.effective(SandboxConfig(limits=ResourceLimits(timeout_seconds=10)))
    assert (limits.memory_mb, limits.cpu_cores, limits.timeout_seconds) == (512, 0.5, 10)
    assert config.provider == "docker"


def test_limits_replace_keeps_explicitness():
    limits = ResourceLimits(memory_mb=300).replace(cpu_cores=0.25)
    assert limits.explicit == {"memory_mb", "cpu_cores"}
    assert limits.merged_with(ResourceLimits(disk_mb=5000)).disk_mb == 5000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"memory_mb": 0},
        {"memory_mb": "512"},
        {"cpu_cores": 0},
        {"disk_mb": 1},
        {"network_mbps": -1},
        {"timeout_seconds": 0},
        {"max_processes": 2},
    ],
)
def test_bad_limits_are_refused_with_the_field_named(kwargs):
    with pytest.raises(InvalidSandboxConfig) as info:
        ResourceLimits(**kwargs)
    assert next(iter(kwargs)) in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"network_mode": "host"},
        {"sandbox_id": "../x"},
        {"sandbox_id": "a b"},
        {"network_group": "g;rm"},
        {"workdir": "relative"},
        {"workdir": "/"},
        {"env": {"A=B": "x"}},
        {"env": {"A": "nul\x00"}},
        {"max_output_bytes": 10},
    ],
)
def test_bad_configs_are_refused(kwargs):
    with pytest.raises(InvalidSandboxConfig):
        SandboxConfig(**kwargs)


def test_providers_are_registered_and_unknown_ones_refused(monkeypatch):
    assert {"docker", "e2b"} <= set(registered_providers())
    manager = SandboxManager(owner="unit")
    with pytest.raises(UnknownProvider, match="available"):
        manager.create_sandbox(SandboxConfig(provider="nope"))
    # A lazily registered provider whose module cannot be imported is a clear, typed refusal.
    from apps.sandboxes import base

    monkeypatch.setitem(base._REGISTRY, "broken", "apps.sandboxes.no_such_module:Provider")
    with pytest.raises(UnknownProvider, match="cannot be imported"):
        manager.create_sandbox(SandboxConfig(provider="broken"))
    # E2B loads on first use; without a key it says which variable to set.
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    with pytest.raises(SandboxUnavailable, match="E2B_API_KEY"):
        manager.create_sandbox(SandboxConfig(provider="e2b"))


# -- paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("x", "/workspace/x"),
        ("./x", "/workspace/x"),
        ("/workspace/x", "/workspace/x"),
        ("a/b/../c", "/workspace/a/c"),
        ("", "/workspace"),
        (".", "/workspace"),
        ("/workspace/", "/workspace"),
        ("/workspace/../workspace/y", "/workspace/y"),
        ("$(touch x); 'q\".txt", "/workspace/$(touch x); 'q\".txt"),
        ("ünïcode dir/файл.txt", "/workspace/ünïcode dir/файл.txt"),
    ],
)
def test_workspace_paths(path, expected):
    assert workspace_path(path, "/workspace") == expected


@pytest.mark.parametrize(
    "path",
    [
        "..",
        "../etc/passwd",
        "/etc/passwd",
        "/workspace/../etc",
        "a/../../x",
        "/workspacex",
        "x\x00y",
    ],
)
def test_paths_outside_the_workspace_are_refused(path):
    with pytest.raises(PathOutsideWorkspace):
        workspace_path(path, "/workspace")


# -- argv -----------------------------------------------------------------------------------


def test_argv_is_never_split_or_shell_parsed():
    assert build_argv("echo", ["a; touch /x", "$(id)"]) == ["echo", "a; touch /x", "$(id)"]
    assert build_argv("ls -la", None) == ["ls -la"]
    assert build_argv(["sh", "-c", "echo hi"], None) == ["sh", "-c", "echo hi"]
    assert build_argv(["python3"], ["-V"]) == ["python3", "-V"]
    with pytest.raises(TypeError):
        build_argv("echo", "hello")  # a string would become a list of characters
    with pytest.raises(InvalidSandboxConfig):
        build_argv("", None)
    with pytest.raises(InvalidSandboxConfig):
        build_argv("echo", ["a\x00b"])


# -- output ---------------------------------------------------------------------------------


def test_output_tail_keeps_the_end():
    tail = OutputTail(10)
    for _ in range(100):
        tail.feed(b"0123456789abc")
    assert tail.value() == b"3456789abc"
    assert tail.total == 1300 and tail.truncated


def test_decoding_replaces_bad_bytes_and_drops_a_cut_character():
    assert decode_output(b"ok \xff\xfe") == "ok \ufffd\ufffd"
    euro = "€".encode()
    assert decode_output(euro[1:] + b"x", truncated=True) == "x"


def test_incremental_decoder_joins_split_characters():
    decoder = TextDecoder()
    data = "héllo €".encode()
    text = "".join(decoder.feed(data[i : i + 1]) for i in range(len(data))) + decoder.flush()
    assert text == "héllo €"


def _frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def test_mux_stream_demultiplexes_split_frames_and_feeds_stdin():
    ours, theirs = socket.socketpair()
    received_stdin = bytearray()
    payload = _frame(1, b"out1") + _frame(2, b"err") + _frame(1, b"\x00\xffbin")

    def peer() -> None:
        while True:  # read all stdin until we half-close
            chunk = theirs.recv(65536)
            if not chunk:
                break
            received_stdin.extend(chunk)
        for i in range(len(payload)):  # one byte at a time: frames split everywhere
            theirs.send(payload[i : i + 1])
        theirs.close()

    thread = threading.Thread(target=peer)
    thread.start()
    stream = MuxStream(ours, prebuffered=b"")
    stream.set_stdin(b"x" * 1_000_000)
    frames: list[tuple[str, bytes]] = []
    status = stream.run(lambda s, d: frames.append((s, bytes(d))), deadline=None)
    thread.join()
    stream.close()
    assert status == "eof"
    assert len(received_stdin) == 1_000_000
    assert b"".join(d for s, d in frames if s == "stdout") == b"out1\x00\xffbin"
    assert [d for s, d in frames if s == "stderr"] == [b"err"]


def test_mux_stream_honours_the_deadline_and_prebuffer():
    import time

    ours, theirs = socket.socketpair()
    stream = MuxStream(ours, prebuffered=_frame(1, b"early"))
    frames = []
    started = time.monotonic()
    status = stream.run(lambda s, d: frames.append(bytes(d)), deadline=time.monotonic() + 0.3)
    assert status == "timeout"
    assert 0.25 < time.monotonic() - started < 2
    assert frames == [b"early"]
    stream.close()
    theirs.close()
