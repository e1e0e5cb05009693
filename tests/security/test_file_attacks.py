"""Copy-out and file APIs against a hostile workspace (§2.2 rows 36-40), on the real Docker Engine.

The agent controls every byte of its workspace: it plants symlinks to ``/etc/passwd`` and ``/``,
tries a hardlink to a file outside and a device node, leaves a FIFO that would block a naive
reader forever, makes a file as big as the kernel lets it, nests directories thousands deep and
fills the disk with tiny files. Artifact capture (apps/agents/capture.py) and the sandbox file
API must copy only regular files inside the workspace, stop at their caps, never hang and keep
the worker's memory bounded; the web and API endpoints serve artifacts by id only.

The product copies out with one ``exec`` of ``cat`` per regular file (no tar), so tar-specific
entries (``../../evil`` members, absolute names, hardlink members) cannot arise on the way out;
their equivalents here are names and links the agent can really create. The one archive the
product writes, the artifacts zip, is checked in test_artifacts.py.
"""

from __future__ import annotations

import base64
import threading
import time
import tracemalloc
import uuid
from urllib.parse import quote

import pytest
from django.test import Client

from apps.agents.capture import capture_files
from apps.runs import services
from apps.runs.models import Artifact, Run, RunEvent
from apps.sandboxes import ResourceLimits, SandboxConfig, SandboxManager
from apps.sandboxes.errors import PathOutsideWorkspace, SandboxError, SandboxFileError
from tests.api.conftest import make_token
from tests.projects.factories import PASSWORD, make_project, make_user
from tests.runs.workers import leftover_sandboxes, reap_all

# Deep nesting: far past PATH_MAX (4096) once joined.
DEPTH = 1500
HOSTILE_WORKSPACE = rf"""
set -u
cd /workspace
mkdir -p out
printf 'kept\n' > out/ok.txt
ln -s /etc/passwd out/passwd
ln -s / out/root
ln -s ../../../../../etc/shadow out/up
ln /etc/passwd out/hard 2>/dev/null && echo "HARDLINK MADE" || echo "hardlink refused"
mknod out/sda b 8 0 2>/dev/null && echo "DEVICE MADE" || echo "mknod refused"
mkfifo out/pipe
truncate -s 20G out/sparse 2>/dev/null || echo "sparse refused"
ls -ls out/sparse 2>/dev/null
python3 - <<'EOF'
import os
os.chdir("out")
for _ in range({DEPTH}):
    os.mkdir("d")
    os.chdir("d")
open("deep.txt", "w").write("deep")
EOF
python3 - <<'EOF'
import os
os.makedirs("out/many")
made = 0
try:
    for i in range(1_000_000):
        open(f"out/many/{{i}}", "w").close()
        made += 1
except OSError as exc:
    print("tiny files stopped:", made, exc.strerror)
EOF
"""

PASSWD_LINE = "root:x:0:0:"


@pytest.fixture(scope="module")
def hostile_box(docker_engine):
    owner = f"pytest-files-{uuid.uuid4().hex[:8]}"
    config = SandboxConfig(
        limits=ResourceLimits(memory_mb=256, cpu_cores=1.0, disk_mb=256, timeout_seconds=300)
    )
    with SandboxManager(owner=owner) as manager, manager.create_sandbox(config) as box:
        setup = box.execute("bash", ["-c", HOSTILE_WORKSPACE], timeout=240)
        assert setup.exit_code == 0, setup.stderr
        box.setup_output = setup.stdout  # type: ignore[attr-defined]
        yield box
    left = leftover_sandboxes(owner)
    if left:
        reap_all(owner)
    assert not left, left


def bounded(call, seconds: float):
    """Run ``call`` in a thread; fail (instead of hanging the suite) if it takes too long."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds}s (blocked on a FIFO?)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"], time.monotonic() - started


@pytest.mark.docker
def test_the_kernel_refuses_hardlinks_out_devices_and_huge_files(hostile_box):
    said = hostile_box.setup_output
    assert "hardlink refused" in said and "HARDLINK MADE" not in said  # EXDEV: other filesystem
    assert "mknod refused" in said and "DEVICE MADE" not in said  # no CAP_MKNOD
    # 1 M tiny files: the workspace's inode budget ends it long before.
    stopped = [line for line in said.splitlines() if line.startswith("tiny files stopped")]
    assert stopped and int(stopped[0].split()[3]) < 1_000_000, said


@pytest.mark.docker
def test_capture_copies_only_regular_files_within_caps_without_hanging(hostile_box):
    # The planted entries: only the regular file is copied, each other one is named and skipped.
    (files, report), _ = bounded(
        lambda: capture_files(
            hostile_box, "/workspace", ["out/*"], max_files=50, max_bytes=1024 * 1024
        ),
        seconds=60,
    )
    assert {f.path: f.content for f in files} == {"out/ok.txt": b"kept\n", "out/sparse": b""}
    skipped = {entry["path"]: entry["reason"] for entry in report.skipped}
    assert skipped == {
        "out/passwd": "not a regular file (symlink)",
        "out/root": "not a regular file (symlink)",
        "out/up": "not a regular file (symlink)",
        "out/pipe": "not a regular file (fifo)",
    }

    # Everything, flood included: the caps hold and memory stays bounded.
    max_bytes = 1024 * 1024
    tracemalloc.start()
    (files, report), elapsed = bounded(
        lambda: capture_files(
            hostile_box, "/workspace", ["out/**"], max_files=50, max_bytes=max_bytes
        ),
        seconds=120,
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    captured = {f.path: f.content for f in files}
    assert not {"out/passwd", "out/root", "out/up", "out/pipe", "out/sda"} & set(captured)
    assert not any(PASSWD_LINE.encode() in content for content in captured.values())
    assert report.count == len(files) == 50
    assert report.limit_hit == "max_files"
    assert report.total_bytes <= max_bytes
    assert report.skipped_total > 10_000  # the rest of the tiny files, counted, not read
    # The listing is the largest thing held, and the sandbox's output cap bounds it (~1 MB
    # kept of its tail): memory does not grow with what the agent made.
    assert peak < 16 * max_bytes, f"capture held {peak} bytes"
    assert elapsed < 120


@pytest.mark.docker
def test_the_file_api_refuses_escapes_and_special_files(hostile_box):
    box = hostile_box
    for path in (
        "out/passwd",
        "out/root/etc/passwd",
        "out/up",
        "../../etc/passwd",
        "/etc/passwd",
        "out/../../etc/passwd",
    ):
        with pytest.raises(PathOutsideWorkspace):
            box.read_file(path)
    for path in ("out/root/tmp/evil", "../evil", "/tmp/evil", "out/root/workspace/../tmp/x"):
        with pytest.raises(PathOutsideWorkspace):
            box.write_file(path, b"x")
    assert box.execute("sh", ["-c", "ls /tmp/evil /tmp/x 2>&1 | wc -l"]).stdout.strip() == "2"
    with pytest.raises(PathOutsideWorkspace):
        box.list_files("out/root")
    with pytest.raises(PathOutsideWorkspace):
        box.delete_file("out/root/etc/hostname")

    # A FIFO is refused at once (a reader would block until someone writes).
    with pytest.raises(SandboxFileError, match="not a regular file"):
        bounded(lambda: box.read_file("out/pipe"), seconds=20)
    # The biggest file the agent could make is refused by size, not streamed into memory.
    # (Here the kernel already refused it: the file size limit sits just above the disk size.)
    assert "sparse refused" in box.setup_output
    assert box.execute("stat", ["-c", "%s", "out/sparse"]).stdout.strip() == "0"
    box.execute("truncate", ["-s", "200M", "out/sparse"])
    with pytest.raises(SandboxError, match="more than the 1048576 bytes"):
        box.read_file("out/sparse", max_bytes=1024 * 1024)
    # Listing the tiny-file flood: a clear refusal or a bounded list, never unbounded memory.
    tracemalloc.start()
    try:
        listing, _ = bounded(lambda: box.list_files("out/many"), seconds=60)
        assert len(listing) <= 100_000
    except SandboxFileError as exc:
        assert "entries" in str(exc)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 1024 * 1024
    # Deep nesting: resolving a path of DEPTH levels is bounded work.
    deep = "out/" + "d/" * DEPTH + "deep.txt"
    assert bounded(lambda: box.read_file(deep), seconds=30)[0] == b"deep"


# -- the web: artifacts by id, never by a path ---------------------------------------------------

TRAVERSALS = [
    "../../settings.py",
    "..%2f..%2fsandboxweb%2fsettings.py",
    "%2e%2e%2f%2e%2e%2fsandboxweb%2fsettings.py",
    "..\\..\\sandboxweb\\settings.py",
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "1%00",
    "1%00.py",
    "\u2025/\u2025/settings.py",  # TWO DOT LEADER
    "\uff0e\uff0e\uff0fsettings.py",  # fullwidth "../"
    "\uff11",  # FULLWIDTH DIGIT ONE: not the artifact id 1
]


@pytest.fixture
def stored_artifact(db):
    user = make_user("ivy")
    project = make_project(user, name="Files")
    run = services.start_run(project=project, user=user, task="true", overrides={})
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED)
    artifact = Artifact.objects.create(
        run=run, path="out/report.txt", size=3, sha256="0" * 64, content=b"ok\n"
    )
    return user, run, artifact


def test_artifact_endpoints_take_an_id_and_ignore_paths(stored_artifact):
    user, run, artifact = stored_artifact
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    token = make_token(user)
    api = {"Authorization": f"Bearer {token}"}
    settings_text = b"CONTENT_SECURITY_POLICY"

    for raw in TRAVERSALS:
        segment = raw if "%" in raw else quote(raw, safe="")
        for url, headers in [
            (f"/runs/{run.pk}/artifacts/{segment}/", {}),
            (f"/runs/{run.pk}/artifacts/{segment}/download/", {}),
            (f"/api/v1/runs/{run.pk}/artifacts/{segment}/download", api),
        ]:
            response = client.get(url, headers=headers)
            assert response.status_code in (400, 404), (url, response.status_code)
            body = b"".join(response) if response.streaming else response.content
            assert settings_text not in body and PASSWD_LINE.encode() not in body, url

    # A path parameter next to the id changes nothing: the artifact is the one with that id.
    for raw in TRAVERSALS:
        for url, headers in [
            (f"/runs/{run.pk}/artifacts/{artifact.pk}/download/", {}),
            (f"/api/v1/runs/{run.pk}/artifacts/{artifact.pk}/download", api),
        ]:
            response = client.get(url, {"path": raw, "file": raw, "name": raw}, headers=headers)
            assert response.status_code == 200
            assert b"".join(response.streaming_content) == b"ok\n", url

    # Another run's id in the URL does not reach this artifact.
    other = services.start_run(project=run.project, user=user, task="true", overrides={})
    response = client.get(f"/runs/{other.pk}/artifacts/{artifact.pk}/download/")
    assert response.status_code == 404


@pytest.mark.docker
def test_a_hostile_run_stores_only_its_regular_files(attacks):
    script = HOSTILE_WORKSPACE.replace(f"range({DEPTH})", "range(300)").encode()
    # A script run takes one command per line: the script travels base64-encoded.
    run = attacks.launch(
        f"echo {base64.b64encode(script).decode()} | base64 -d > /tmp/hostile.sh\n"
        "bash /tmp/hostile.sh",
        capture_patterns=["out/*", "out/d/**"],
        disk_mb=64,
    )
    (run,) = attacks.wait(run, timeout=180)
    assert run.status == Run.Status.SUCCEEDED, (run.status, run.end_reason, run.error_message)
    stored = {a.path: bytes(a.content) for a in Artifact.objects.filter(run=run)}
    assert stored == {
        "out/ok.txt": b"kept\n",
        "out/" + "d/" * 300 + "deep.txt": b"deep",
        "out/sparse": b"",  # created empty: the kernel refused to make it 20 GB
    }
    report = RunEvent.objects.get(run=run, type="files_captured").data
    reasons = {entry["path"]: entry["reason"] for entry in report["skipped"]}
    assert reasons["out/passwd"] == reasons["out/root"] == "not a regular file (symlink)"
    assert reasons["out/pipe"] == "not a regular file (fifo)"
