"""File API: binary-safe, any name, streamed large files, confined to the workspace."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc

import pytest

from apps.sandboxes import (
    FileTooLarge,
    PathOutsideWorkspace,
    ResourceLimits,
    SandboxConfig,
    SandboxFileError,
    SandboxFileNotFound,
    SandboxStateError,
)

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


def test_binary_round_trip(shared_box):
    data = bytes(range(256)) * 100 + b"\x00\r\n\x1b[31m"
    shared_box.write_file("bin/data.bin", data)
    assert shared_box.read_file("bin/data.bin") == data
    assert shared_box.read_file("/workspace/bin/data.bin") == data  # same file
    shared_box.write_file("/workspace/bin/data.bin", "text é")  # overwrite, str is UTF-8
    assert shared_box.read_file("bin/data.bin") == "text é".encode()
    shared_box.write_file("empty", b"")
    assert shared_box.read_file("empty") == b""


@pytest.mark.parametrize("name", WEIRD_NAMES)
def test_arbitrary_file_names_round_trip_and_stay_inert(shared_box, name):
    shared_box.write_file(f"weird/{name}", name.encode())
    assert shared_box.read_file(f"weird/{name}") == name.encode()
    listed = {info.name for info in shared_box.list_files("weird")}
    assert name in listed
    assert not [f for f in shared_box.list_files(".") if f.name == "x"]  # $(touch x) inert
    shared_box.delete_file(f"weird/{name}")
    with pytest.raises(SandboxFileNotFound):
        shared_box.read_file(f"weird/{name}")


def test_written_files_belong_to_the_sandbox_user(shared_box):
    shared_box.write_file("owned.txt", "x")
    assert shared_box.execute("stat", ["-c", "%u:%g", "owned.txt"]).stdout == "1000:1000\n"


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "/workspace/../etc/x", "/tmp/x"])
def test_paths_outside_the_workspace_are_refused(shared_box, path):
    with pytest.raises(PathOutsideWorkspace):
        shared_box.read_file(path)
    with pytest.raises(PathOutsideWorkspace):
        shared_box.write_file(path, "x")
    with pytest.raises(PathOutsideWorkspace):
        shared_box.list_files(path)
    with pytest.raises(PathOutsideWorkspace):
        shared_box.delete_file(path)


def test_symlinks_out_of_the_workspace_are_not_followed(shared_box):
    shared_box.execute("ln", ["-sfn", "/etc/passwd", "passwd-link"])
    shared_box.execute("ln", ["-sfn", "/etc", "etc-link"])
    shared_box.execute("ln", ["-sfn", "/nonexistent/x", "dangling-out"])
    for path in ("passwd-link", "etc-link/passwd", "etc-link/new.txt", "dangling-out"):
        with pytest.raises(PathOutsideWorkspace):
            shared_box.read_file(path)
    with pytest.raises(PathOutsideWorkspace):
        shared_box.write_file("etc-link/new.txt", "x")
    with pytest.raises(PathOutsideWorkspace):
        shared_box.write_file("passwd-link", "overwrite through the link")
    with pytest.raises(PathOutsideWorkspace):
        shared_box.list_files("etc-link")
    # Deleting a link removes the link itself, never its target.
    shared_box.delete_file("passwd-link")
    assert "root:" in shared_box.execute("cat", ["/etc/passwd"]).stdout
    listed = {f.name: f for f in shared_box.list_files(".")}
    assert "passwd-link" not in listed and listed["etc-link"].is_symlink


def test_symlinks_inside_the_workspace_work(shared_box):
    shared_box.write_file("real/target.txt", "inside")
    shared_box.execute("ln", ["-sfn", "real", "alias"])
    assert shared_box.read_file("alias/target.txt") == b"inside"


def test_list_files(shared_box):
    shared_box.write_file("tree/a.txt", "aaa")
    shared_box.write_file("tree/sub/b.txt", "bb")
    top = shared_box.list_files("tree")
    assert [(f.path, f.is_dir) for f in top] == [
        ("/workspace/tree/a.txt", False),
        ("/workspace/tree/sub", True),
    ]
    assert top[0].size == 3 and top[0].mtime > 0
    deep = shared_box.list_files("/workspace/tree", recursive=True)
    assert [f.path for f in deep] == [
        "/workspace/tree/a.txt",
        "/workspace/tree/sub",
        "/workspace/tree/sub/b.txt",
    ]
    assert [f.path for f in shared_box.list_files("tree/a.txt")] == ["/workspace/tree/a.txt"]
    with pytest.raises(SandboxFileNotFound):
        shared_box.list_files("no-such-dir")


def test_delete(shared_box):
    shared_box.write_file("del/one.txt", "1")
    with pytest.raises(SandboxFileError, match="recursive"):
        shared_box.delete_file("del")
    shared_box.delete_file("del", recursive=True)
    with pytest.raises(SandboxFileNotFound):
        shared_box.delete_file("del")
    with pytest.raises(PathOutsideWorkspace):
        shared_box.delete_file("/workspace")


def test_errors_for_directories_fifos_and_parents(shared_box):
    shared_box.execute("mkdir", ["-p", "adir"])
    with pytest.raises(SandboxFileError, match="directory"):
        shared_box.read_file("adir")
    with pytest.raises(SandboxFileError, match="directory"):
        shared_box.write_file("adir", "x")
    shared_box.execute("mkfifo", ["pipe"])
    with pytest.raises(SandboxFileError, match="regular"):
        shared_box.read_file("pipe")  # must not hang
    shared_box.write_file("plain", "x")
    with pytest.raises(SandboxFileError, match="not a directory"):
        shared_box.write_file("plain/child", "x")


def test_read_size_cap(shared_box):
    shared_box.write_file("capped", b"x" * 5000)
    with pytest.raises(FileTooLarge, match="read_file_to"):
        shared_box.read_file("capped", max_bytes=1000)


def test_hundred_megabytes_round_trip_by_checksum_without_extra_copies(module_manager, tmp_path):
    size = 100 * 1024 * 1024
    config = SandboxConfig(limits=ResourceLimits(disk_mb=256))
    with module_manager.create_sandbox(config) as box:
        source = tmp_path / "source.bin"
        digest = hashlib.sha256()
        with source.open("wb") as fh:
            for _ in range(size // (1024 * 1024)):
                chunk = os.urandom(1024 * 1024)
                digest.update(chunk)
                fh.write(chunk)
        tracemalloc.start()
        with source.open("rb") as fh:
            box.write_file("big.bin", fh)  # streamed from the file
        sink = tmp_path / "back.bin"
        with sink.open("wb") as fh:
            assert box.read_file_to("big.bin", fh) == size  # streamed to the file
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 16 * 1024 * 1024, f"streaming held {peak} bytes"
        assert hashlib.sha256(sink.read_bytes()).hexdigest() == digest.hexdigest()
        inside = box.execute("sha256sum", ["big.bin"]).stdout.split()[0]
        assert inside == digest.hexdigest()
        # And as bytes in memory: one buffer for the result plus the chunks it is joined from.
        tracemalloc.start()
        data = box.read_file("big.bin")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(data) == size and peak < 2.3 * size
        assert hashlib.sha256(data).hexdigest() == digest.hexdigest()
        del data
        payload = bytearray(io.BytesIO(b"y" * size).getbuffer())
        box.write_file("from-memory.bin", payload)
        assert box.execute("stat", ["-c", "%s", "from-memory.bin"]).stdout.strip() == str(size)


def test_file_api_needs_a_running_sandbox(module_manager):
    box = module_manager.create_sandbox(start=False)
    try:
        with pytest.raises(SandboxStateError, match="start"):
            box.write_file("x", "y")
    finally:
        box.destroy()
