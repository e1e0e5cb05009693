"""The provider contract: every test here runs on Docker and on E2B (the loopback server).

What a caller of ``apps.sandboxes`` may rely on whatever the provider: argv semantics, output
capture and streaming, timeouts that kill the whole command, files confined to the workspace,
lifecycle, ids, reaping, stats and health. Provider-specific behaviour lives in test_exec.py,
test_files.py, test_lifecycle.py, test_limits.py, test_network.py, test_pool_and_stats.py
(Docker) and test_e2b.py (E2B). Where the providers legitimately differ (raw output bytes,
what "exists" means) the ``backend`` fixture answers for each.
"""

from __future__ import annotations

import hashlib
import os
import time

import pytest

import docker
from apps.sandboxes import (
    FileTooLarge,
    ImageNotFound,
    InvalidSandboxConfig,
    PathOutsideWorkspace,
    ResourceLimits,
    SandboxConfig,
    SandboxExists,
    SandboxFileError,
    SandboxFileNotFound,
    SandboxNotFound,
    SandboxState,
    SandboxStateError,
    SandboxTimeout,
)
from apps.sandboxes.common import LABEL_DEADLINE, LABEL_ID, LABEL_OWNER
from tests.support.e2b_server import E2BServer, loopback_options

from .conftest import make_manager

pytestmark = pytest.mark.docker

WEIRD_NAMES = [
    "$(touch x); 'q\".txt",
    "with space.txt",
    "ünïcødé-файл-文件.md",
    "-starts-with-dash",
    "new\nline",
    "back\\slash",
    ".hidden",
]


class Backend:
    """What the tests need to see behind a provider's back."""

    def __init__(self, provider: str, server: E2BServer | None) -> None:
        self.provider = provider
        self.server = server
        self.client = docker.from_env() if provider == "docker" else None

    def exists(self, box) -> bool:
        """Anything of the sandbox left: Docker container or volume; the E2B sandbox."""
        if self.client is not None:
            for collection, key in (
                (self.client.containers, box.container_id),
                (self.client.volumes, box.volume),
            ):
                try:
                    collection.get(key)
                    return True
                except docker.errors.NotFound:
                    pass
            return False
        return box.e2b_id in self.server.live()

    def remove_behind_back(self, box) -> None:
        if self.client is not None:
            self.client.containers.get(box.container_id).remove(force=True)
        else:
            self.server.kill(box.e2b_id)

    def labels(self, box) -> dict[str, str]:
        if self.client is not None:
            return self.client.containers.get(box.container_id).labels
        return dict(self.server.sandboxes[box.e2b_id].metadata)

    def resources_of(self, sandbox_id: str) -> list[str]:
        """Everything the provider keeps for one sandbox id (volumes / E2B sandboxes)."""
        if self.client is not None:
            volumes = self.client.volumes.list(filters={"label": f"{LABEL_ID}={sandbox_id}"})
            return sorted(v.name for v in volumes)
        return sorted(
            s.sandbox_id
            for s in self.server.sandboxes.values()
            if s.metadata.get(LABEL_ID) == sandbox_id
        )

    def missing_image(self) -> SandboxConfig:
        if self.provider == "docker":
            return SandboxConfig(image="sandboxweb/does-not-exist:nope")
        return SandboxConfig(e2b=loopback_options(self.server, template="no-such-template"))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


@pytest.fixture(scope="module")
def backend(provider, provider_server):
    helper = Backend(provider, provider_server)
    yield helper
    helper.close()


# -- commands -------------------------------------------------------------------------------


def test_shell_metacharacters_are_inert(box):
    result = box.execute("echo", ["a; touch /workspace/pwned", "$(touch /workspace/x)", "`id`"])
    assert result.exit_code == 0
    assert result.stdout == "a; touch /workspace/pwned $(touch /workspace/x) `id`\n"
    with pytest.raises(SandboxFileNotFound):
        box.read_file("pwned")
    assert not [f for f in box.list_files() if f.name in ("pwned", "x")]


def test_a_command_string_is_argv0_not_a_shell_line(box):
    result = box.execute("echo hi")
    assert result.exit_code != 0  # there is no program called "echo hi"
    assert box.execute(["sh", "-c", "echo $((6*7))"]).stdout == "42\n"
    assert box.execute("sh", ["-c", "echo hi"]).stdout == "hi\n"


def test_exit_codes_stderr_env_and_workdir(box):
    result = box.execute("sh", ["-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.ok and result.duration_ms > 0
    env = box.execute("sh", ["-c", 'printf %s "$GREETING"'], env={"GREETING": "a b;$c"})
    assert env.stdout == "a b;$c"
    box.execute("mkdir", ["-p", "sub dir"])
    assert box.execute("pwd", workdir="sub dir").stdout == "/workspace/sub dir\n"
    assert box.execute("pwd").stdout == "/workspace\n"
    assert box.execute("pwd", workdir="/tmp").stdout == "/tmp\n"
    killed = box.execute("sh", ["-c", "kill -9 $$"])
    assert killed.exit_code == 137 and not killed.timed_out


def test_config_env_applies_to_every_command(contract_manager):
    with contract_manager.create_sandbox(SandboxConfig(env={"API_TOKEN": "s3cret-value"})) as b:
        assert b.execute("sh", ["-c", 'echo "$API_TOKEN"']).stdout == "s3cret-value\n"
        override = b.execute("sh", ["-c", 'echo "$API_TOKEN"'], env={"API_TOKEN": "other"})
        assert override.stdout == "other\n"


def test_stdin_is_delivered_and_closed(box):
    assert box.execute("sh", ["-c", "wc -c; cat"], stdin=b"").stdout.strip() == "0"
    data = bytes(range(256)) * 4000
    result = box.execute("sha256sum", stdin=data)
    assert result.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    assert box.execute("cat", stdin="héllo").stdout == "héllo"
    # A command that stops reading early still ends and reports.
    assert box.execute("head", ["-c", "3"], stdin=data).stdout_bytes == data[:3]


def test_output_streams_as_it_arrives(box):
    seen: list[tuple[float, str, bytes]] = []
    started = time.monotonic()
    result = box.execute(
        "sh",
        ["-c", "echo first; sleep 1.5; echo second >&2"],
        on_output=lambda stream, data: seen.append((time.monotonic() - started, stream, data)),
    )
    assert result.exit_code == 0
    first = next(t for t, s, d in seen if b"first" in d)
    second = next(t for t, s, d in seen if b"second" in d)
    assert second - first > 1.0, "the first line must be delivered before the command ends"
    assert {s for _, s, _ in seen} == {"stdout", "stderr"}
    assert all(isinstance(d, bytes) for _, _, d in seen)


def test_binary_and_invalid_utf8_output(box, provider):
    result = box.execute("printf", ["\\000\\377\\376ok \\342\\202\\254"])
    assert result.stdout == "\x00\ufffd\ufffdok €"
    if provider == "docker":
        assert result.stdout_bytes == b"\x00\xff\xfeok \xe2\x82\xac"
    else:  # envd's stream reaches us through the SDK's UTF-8 decoder (docs: "E2B")
        assert result.stdout_bytes == result.stdout.encode()


def test_output_cap_keeps_the_tail_and_says_so(box):
    result = box.execute("sh", ["-c", "seq 1 200000; echo THE-END"], max_output_bytes=4096)
    assert result.exit_code == 0 and result.truncated
    assert len(result.stdout_bytes) == 4096
    assert result.stdout.endswith("THE-END\n")
    assert result.output_bytes_total > 1_000_000


def test_output_flood_is_stopped_at_the_hard_limit(contract_manager):
    config = SandboxConfig(max_output_bytes=64 * 1024, output_limit_bytes=2 * 1024 * 1024)
    with contract_manager.create_sandbox(config) as flooded:
        result = flooded.execute("yes", timeout=60)
        assert result.end_reason == "output_limit"
        assert result.truncated and result.duration_ms < 30_000
        assert "yes" not in flooded.execute("ps", ["-eo", "comm"]).stdout


def test_timeout_kills_the_whole_command_and_reports_124(box):
    started = time.monotonic()
    result = box.execute(
        "sh",
        ["-c", "echo started; sleep 60 & (setsid sleep 61 &); sh -c 'sleep 62'; wait"],
        timeout=1.5,
    )
    assert time.monotonic() - started < 10
    assert result.timed_out and result.exit_code == 124 and result.end_reason == "timeout"
    assert result.stdout == "started\n"
    processes = box.execute("ps", ["-eo", "pid,args"]).stdout
    assert "sleep 6" not in processes, processes  # not even the one that left with setsid
    assert box.state is SandboxState.RUNNING
    assert box.execute("echo", ["after"]).stdout == "after\n"


def test_timeout_ignoring_sigterm_still_dies(box):
    result = box.execute("sh", ["-c", "trap '' TERM INT; while :; do :; done"], timeout=1)
    assert result.timed_out
    assert "while" not in box.execute("ps", ["-eo", "args"]).stdout


def test_kill_all_processes_keeps_the_sandbox(box):
    box.execute("sh", ["-c", "sleep 300 >/dev/null 2>&1 &"])
    assert "sleep 300" in box.execute("ps", ["-eo", "args"]).stdout
    box.kill_all_processes()
    assert "sleep 300" not in box.execute("ps", ["-eo", "args"]).stdout
    assert box.state is SandboxState.RUNNING


def test_bad_arguments_are_refused(box):
    with pytest.raises(TypeError):
        box.execute("echo", "not-a-list")
    with pytest.raises(InvalidSandboxConfig):
        box.execute("true", timeout=0)
    with pytest.raises(InvalidSandboxConfig):
        box.execute("true", env={"BAD=NAME": "x"})
    with pytest.raises(PathOutsideWorkspace):
        box.execute("pwd", workdir="../etc")


def test_sandbox_deadline_ends_the_sandbox_with_reason_timeout(contract_manager):
    short = contract_manager.create_sandbox(SandboxConfig(limits=ResourceLimits(timeout_seconds=4)))
    try:
        result = short.execute("sleep", ["30"])  # no per-call timeout: the sandbox's applies
        assert result.timed_out and result.exit_code == 124
        assert short.end_reason == "timeout"
        with pytest.raises(SandboxTimeout):
            short.execute("true")
        assert short.health_check().healthy is False
    finally:
        short.destroy()
    assert short.end_reason == "timeout"  # destroy keeps the first reason


# -- files ----------------------------------------------------------------------------------


def test_binary_round_trip(box):
    data = bytes(range(256)) * 100 + b"\x00\r\n\x1b[31m"
    box.write_file("bin/data.bin", data)
    assert box.read_file("bin/data.bin") == data
    assert box.read_file("/workspace/bin/data.bin") == data  # same file
    box.write_file("/workspace/bin/data.bin", "text é")  # overwrite, str is UTF-8
    assert box.read_file("bin/data.bin") == "text é".encode()
    box.write_file("empty", b"")
    assert box.read_file("empty") == b""


@pytest.mark.parametrize("name", WEIRD_NAMES)
def test_arbitrary_file_names_round_trip_and_stay_inert(box, name):
    box.write_file(f"weird/{name}", name.encode())
    assert box.read_file(f"weird/{name}") == name.encode()
    assert name in {info.name for info in box.list_files("weird")}
    assert not [f for f in box.list_files(".") if f.name == "x"]  # $(touch x) inert
    box.delete_file(f"weird/{name}")
    with pytest.raises(SandboxFileNotFound):
        box.read_file(f"weird/{name}")


def test_written_files_belong_to_the_sandbox_user(box):
    box.write_file("owned.txt", "x")
    user = box.execute("sh", ["-c", 'echo "$(id -u):$(id -g)"']).stdout
    assert box.execute("stat", ["-c", "%u:%g", "owned.txt"]).stdout == user
    assert not user.startswith("0:")


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "/workspace/../etc/x", "/tmp/x"])
def test_paths_outside_the_workspace_are_refused(box, path):
    with pytest.raises(PathOutsideWorkspace):
        box.read_file(path)
    with pytest.raises(PathOutsideWorkspace):
        box.write_file(path, "x")
    with pytest.raises(PathOutsideWorkspace):
        box.list_files(path)
    with pytest.raises(PathOutsideWorkspace):
        box.delete_file(path)


def test_symlinks_out_of_the_workspace_are_not_followed(box):
    box.execute("ln", ["-sfn", "/etc/passwd", "passwd-link"])
    box.execute("ln", ["-sfn", "/etc", "etc-link"])
    box.execute("ln", ["-sfn", "/nonexistent/x", "dangling-out"])
    for path in ("passwd-link", "etc-link/passwd", "etc-link/new.txt", "dangling-out"):
        with pytest.raises(PathOutsideWorkspace):
            box.read_file(path)
    with pytest.raises(PathOutsideWorkspace):
        box.write_file("etc-link/new.txt", "x")
    with pytest.raises(PathOutsideWorkspace):
        box.write_file("passwd-link", "overwrite through the link")
    with pytest.raises(PathOutsideWorkspace):
        box.list_files("etc-link")
    # Deleting a link removes the link itself, never its target.
    box.delete_file("passwd-link")
    assert "root:" in box.execute("cat", ["/etc/passwd"]).stdout
    listed = {f.name: f for f in box.list_files(".")}
    assert "passwd-link" not in listed and listed["etc-link"].is_symlink


def test_symlinks_inside_the_workspace_work(box):
    box.write_file("real/target.txt", "inside")
    box.execute("ln", ["-sfn", "real", "alias"])
    assert box.read_file("alias/target.txt") == b"inside"


def test_list_files(box):
    box.write_file("tree/a.txt", "aaa")
    box.write_file("tree/sub/b.txt", "bb")
    top = box.list_files("tree")
    assert [(f.path, f.is_dir) for f in top] == [
        ("/workspace/tree/a.txt", False),
        ("/workspace/tree/sub", True),
    ]
    assert top[0].size == 3 and top[0].mtime > 0
    deep = box.list_files("/workspace/tree", recursive=True)
    assert [f.path for f in deep] == [
        "/workspace/tree/a.txt",
        "/workspace/tree/sub",
        "/workspace/tree/sub/b.txt",
    ]
    assert [f.path for f in box.list_files("tree/a.txt")] == ["/workspace/tree/a.txt"]
    with pytest.raises(SandboxFileNotFound):
        box.list_files("no-such-dir")


def test_delete(box):
    box.write_file("del/one.txt", "1")
    with pytest.raises(SandboxFileError, match="recursive"):
        box.delete_file("del")
    box.delete_file("del", recursive=True)
    with pytest.raises(SandboxFileNotFound):
        box.delete_file("del")
    with pytest.raises(PathOutsideWorkspace):
        box.delete_file("/workspace")
    box.execute("mkdir", ["empty-dir"])
    box.delete_file("empty-dir")  # an empty directory needs no recursive=True


def test_errors_for_directories_fifos_and_parents(box):
    box.execute("mkdir", ["-p", "adir"])
    with pytest.raises(SandboxFileError, match="directory"):
        box.read_file("adir")
    with pytest.raises(SandboxFileError, match="directory"):
        box.write_file("adir", "x")
    box.execute("mkfifo", ["pipe"])
    with pytest.raises(SandboxFileError, match="regular"):
        box.read_file("pipe")  # must not hang
    box.write_file("plain", "x")
    with pytest.raises(SandboxFileError, match="not a directory"):
        box.write_file("plain/child", "x")


def test_read_size_cap(box):
    box.write_file("capped", b"x" * 5000)
    with pytest.raises(FileTooLarge, match="read_file_to"):
        box.read_file("capped", max_bytes=1000)


def test_large_binary_file_streams_both_ways(box, tmp_path):
    source = tmp_path / "source.bin"
    digest = hashlib.sha256()
    with source.open("wb") as fh:
        for _ in range(16):
            chunk = os.urandom(1024 * 1024)
            digest.update(chunk)
            fh.write(chunk)
    with source.open("rb") as fh:
        box.write_file("big.bin", fh)  # streamed from the file
    sink = tmp_path / "back.bin"
    with sink.open("wb") as fh:
        assert box.read_file_to("big.bin", fh) == 16 * 1024 * 1024
    assert hashlib.sha256(sink.read_bytes()).hexdigest() == digest.hexdigest()
    assert box.execute("sha256sum", ["big.bin"]).stdout.split()[0] == digest.hexdigest()
    box.delete_file("big.bin")


def test_file_api_needs_a_running_sandbox(contract_manager):
    idle = contract_manager.create_sandbox(start=False)
    try:
        with pytest.raises(SandboxStateError, match="start"):
            idle.write_file("x", "y")
    finally:
        idle.destroy()


# -- lifecycle ------------------------------------------------------------------------------


def test_create_execute_destroy(fresh_manager, backend, provider):
    sandbox = fresh_manager.create_sandbox()
    assert sandbox.state is SandboxState.RUNNING and sandbox.provider == provider
    assert (
        sandbox.id.startswith(f"{provider}-") and fresh_manager.get_sandbox(sandbox.id) is sandbox
    )
    assert sandbox.execute("echo", ["hello"]).stdout == "hello\n"
    assert backend.exists(sandbox)
    sandbox.destroy()
    assert sandbox.state is SandboxState.DESTROYED and sandbox.end_reason == "destroyed"
    assert not backend.exists(sandbox)
    assert fresh_manager.get_sandbox(sandbox.id) is None
    sandbox.destroy()  # twice is harmless
    with pytest.raises(SandboxStateError, match="destroyed"):
        sandbox.execute("true")


def test_labels_carry_owner_id_and_deadline(fresh_manager, backend, sandbox_owner):
    before = time.time()
    sandbox = fresh_manager.create_sandbox(
        SandboxConfig(limits=ResourceLimits(timeout_seconds=90), labels={"run": "42"})
    )
    try:
        labels = backend.labels(sandbox)
        assert labels[LABEL_OWNER] == sandbox_owner and labels[LABEL_ID] == sandbox.id
        assert labels["run"] == "42"
        assert before + 89 <= int(labels[LABEL_DEADLINE]) <= time.time() + 91
        assert abs(sandbox.deadline - int(labels[LABEL_DEADLINE])) <= 1
    finally:
        sandbox.destroy()


def test_context_manager_always_destroys(fresh_manager, backend):
    with pytest.raises(RuntimeError), fresh_manager.create_sandbox() as sandbox:
        raise RuntimeError("boom")
    assert sandbox.state is SandboxState.DESTROYED
    assert not backend.exists(sandbox)


def test_stop_and_start_again_keeps_the_workspace(fresh_manager):
    with fresh_manager.create_sandbox() as sandbox:
        sandbox.write_file("keep.txt", "still here")
        started = time.monotonic()
        sandbox.stop()
        assert time.monotonic() - started < 5
        assert sandbox.state is SandboxState.STOPPED
        assert sandbox.health_check().healthy is False
        sandbox.start()
        assert sandbox.read_file("keep.txt") == b"still here"


def test_deterministic_id_detects_a_duplicate_without_touching_the_first(
    fresh_manager, backend, provider, provider_server
):
    name = f"det-{fresh_manager.owner}-{time.time_ns()}"
    first = fresh_manager.create_sandbox(SandboxConfig(sandbox_id=name))
    try:
        first.write_file("marker", "first")
        kept = backend.resources_of(name)
        with pytest.raises(SandboxExists) as info:
            fresh_manager.create_sandbox(SandboxConfig(sandbox_id=name))
        assert info.value.sandbox_id == name
        assert first.read_file("marker") == b"first"  # the original is intact
        assert first.execute("true").exit_code == 0
        assert backend.resources_of(name) == kept, "the refused create leaked something"
        # A second worker (a new manager, same owner) can attach instead of creating; it then
        # owns the sandbox, so closing that manager destroys it.
        with make_manager(provider, fresh_manager.owner, provider_server) as other:
            attached = other.attach_sandbox(name)
            assert attached.state is SandboxState.RUNNING
            assert attached.limits == first.limits
            assert attached.read_file("marker") == b"first"
        assert not backend.exists(first)
    finally:
        first.destroy()
    with pytest.raises(SandboxNotFound):
        fresh_manager.attach_sandbox(name)


def test_attach_refuses_other_owners(fresh_manager, provider, provider_server):
    with (
        fresh_manager.create_sandbox() as sandbox,
        make_manager(provider, "someone-else", provider_server) as stranger,
        pytest.raises(SandboxNotFound, match="owner"),
    ):
        stranger.attach_sandbox(sandbox.id)


def test_vanished_sandbox_reports_unhealthy_with_a_reason(fresh_manager, backend):
    sandbox = fresh_manager.create_sandbox()
    backend.remove_behind_back(sandbox)
    health = sandbox.health_check()
    assert health.healthy is False and "no longer exists" in health.message
    reports = fresh_manager.health_check_all()
    assert any(r.id == sandbox.id and r.health and not r.health.healthy for r in reports)
    with pytest.raises(SandboxStateError):
        sandbox.execute("true")
    sandbox.destroy()  # still cleans up what is left, and is harmless


def test_missing_image_is_a_typed_error_and_leaks_nothing(fresh_manager, backend):
    with pytest.raises(ImageNotFound):
        fresh_manager.create_sandbox(backend.missing_image())
    assert not fresh_manager.list_sandboxes()


def test_destroy_all_removes_everything(fresh_manager, backend):
    boxes = [fresh_manager.create_sandbox() for _ in range(2)]
    boxes.append(fresh_manager.create_sandbox(start=False))
    assert len(fresh_manager.list_sandboxes()) == 3
    assert fresh_manager.destroy_all() == []
    assert fresh_manager.list_sandboxes() == []
    for sandbox in boxes:
        assert not backend.exists(sandbox)


def test_reap_orphans_by_deadline_and_by_liveness(sandbox_owner, provider, provider_server):
    owner = f"{sandbox_owner}-reap"  # other tests' sandboxes must not look expired here
    crashed = make_manager(provider, owner, provider_server)  # a worker that dies untidily
    sweeper = make_manager(provider, owner, provider_server)
    try:
        expired = crashed.create_sandbox(SandboxConfig(limits=ResourceLimits(timeout_seconds=30)))
        finished = crashed.create_sandbox(SandboxConfig(labels={"run": "done"}))
        running = crashed.create_sandbox(SandboxConfig(labels={"run": "live"}))
        # Nothing is past its deadline yet and nobody says a run ended: nothing is reaped.
        assert sweeper.reap_orphans(providers=[provider]) == []
        # By deadline: pretend it is 60 s later (only the 30 s one expired).
        later = time.time() + 60
        assert sweeper.reap_orphans(now=later, providers=[provider]) == [expired.id]
        # By liveness callback: the web layer knows run "done" finished.
        reaped = sweeper.reap_orphans(
            is_live=lambda labels: labels.get("run") != "done", providers=[provider]
        )
        assert reaped == [finished.id]
        assert running.execute("true").exit_code == 0
        # Sandboxes the calling manager still owns are never reaped, even if "not live".
        assert crashed.reap_orphans(is_live=lambda labels: False, providers=[provider]) == []
    finally:
        crashed.close()
        sweeper.reap_orphans(is_live=lambda labels: False, grace_seconds=0, providers=[provider])
        sweeper.close()
    with pytest.raises(SandboxStateError):
        expired.execute("true")


# -- observation ----------------------------------------------------------------------------


def test_stats_reflect_real_usage(box):
    first = box.get_stats()
    assert first.memory_limit_mb == 256 and first.timestamp > 0
    assert first.disk_limit_mb and 0 < first.disk_limit_mb <= 64
    box.write_file("stats/blob.bin", b"s" * (5 * 1024 * 1024))
    hog = (
        "import time\nx = bytearray(60 * 2**20)\nt = time.time()\n"
        "while time.time() - t < 2.5:\n    pass\n"
    )
    # Background jobs must let go of stdout/stderr, or the command lasts as long as they do.
    box.execute("sh", ["-c", 'python3 -c "$0" >/dev/null 2>&1 &', hog])
    time.sleep(1.0)
    stats = box.get_stats()
    assert stats.memory_usage_mb > 40, stats
    assert stats.cpu_percent > 20, stats
    assert stats.disk_usage_mb >= 5, stats
    time.sleep(1.5)
    box.delete_file("stats", recursive=True)


def test_manager_reports(fresh_manager):
    running = fresh_manager.create_sandbox()
    stopped = fresh_manager.create_sandbox()
    stopped.stop()
    reports = {r.id: r for r in fresh_manager.get_all_stats()}
    assert reports[running.id].stats and reports[running.id].stats.memory_limit_mb == 256
    assert reports[stopped.id].error and "stopped" in reports[stopped.id].error
    health = {r.id: r.health for r in fresh_manager.health_check_all()}
    assert health[running.id].healthy and not health[stopped.id].healthy
    assert fresh_manager.destroy_all() == []
