"""A small in-memory stand-in for a sandbox, for fast tests of the agent loop's own logic.

It supplements the real-Docker scenario tests (test_scenarios.py), it does not replace them: it
knows just enough commands (``stat``, ``mkdir -p``, ``find -printf``) for the file tools, and
answers ``bash -c``/``sh -c`` through a ``shell`` function the test provides.
"""

from __future__ import annotations

import json
import posixpath
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from apps.sandboxes.errors import SandboxFileNotFound, SandboxStateError
from apps.sandboxes.types import ExecResult, FileInfo, SandboxStats

Shell = Callable[[str], tuple[int, str, str]]


class Recorder(list):
    """An ``on_event`` sink that keeps the events (and checks each is JSON-serialisable)."""

    def __call__(self, event) -> None:
        json.dumps(event.to_dict())
        self.append(event)

    def of(self, kind: str) -> list:
        return [e for e in self if e.type == kind]

    def types(self) -> list[str]:
        return [e.type for e in self]


def ok_shell(command: str) -> tuple[int, str, str]:
    return 0, f"ran: {command}\n", ""


@dataclass
class FakeSandbox:
    id: str
    workspace: str = "/workspace"
    shell: Shell = ok_shell
    files: dict[str, bytes] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {"/workspace"})
    state: str = "running"
    end_reason: str | None = None
    end_message: str | None = None
    deadline: float | None = None
    commands: list[list[str]] = field(default_factory=list)
    envs: list[dict | None] = field(default_factory=list)

    def start(self) -> None:
        self.state = "running"

    def _alive(self) -> None:
        if self.state != "running":
            raise SandboxStateError(f"Sandbox {self.id} is {self.state}")

    def execute(
        self,
        command,
        args=None,
        *,
        timeout=None,
        env=None,
        workdir=None,
        stdin=None,
        on_output=None,
    ) -> ExecResult:
        self._alive()
        argv = [command, *(args or [])]
        self.commands.append(argv)
        self.envs.append(env)
        started = time.monotonic()
        code, out, err = self._run(argv)
        if on_output is not None:
            if out:
                on_output("stdout", out.encode())
            if err:
                on_output("stderr", err.encode())
        return ExecResult(code, out, err, (time.monotonic() - started) * 1000)

    def _run(self, argv: list[str]) -> tuple[int, str, str]:
        name = argv[0]
        if name in ("bash", "sh") and argv[1] == "-c":
            return self.shell(argv[2])
        if name == "stat":
            path = argv[-1]
            if path in self.files:
                return 0, f"regular file|{len(self.files[path])}\n", ""
            if path in self.dirs:
                return 0, "directory|4096\n", ""
            return 1, "", f"stat: cannot statx '{path}': No such file or directory"
        if name == "mkdir":
            path = argv[-1]
            while path not in ("", "/"):
                self.dirs.add(path)
                path = posixpath.dirname(path)
            return 0, "", ""
        if name == "find":
            root = argv[2]
            records = []
            for path, data in sorted(self.files.items()):
                if path.startswith(root.rstrip("/") + "/"):
                    records.append(f"f\t{len(data)}\t1.0\t{path[len(root.rstrip('/')) + 1 :]}\0")
            if "-not" in argv:  # capture's listing has no mtime column
                records = [r.replace("\t1.0\t", "\t", 1) for r in records]
            return 0, "".join(records), ""
        return 127, "", f"{name}: not known to the fake sandbox"

    def write_file(self, path: str, content) -> None:
        self._alive()
        self.files[path] = content.encode() if isinstance(content, str) else bytes(content)

    def read_file(self, path: str) -> bytes:
        self._alive()
        if path not in self.files:
            raise SandboxFileNotFound(f"{path} does not exist")
        return self.files[path]

    def list_files(self, path: str = ".", recursive: bool = False) -> list[FileInfo]:
        self._alive()
        return [
            FileInfo(path=p, size=len(d), is_dir=False, mtime=1.0)
            for p, d in self.files.items()
            if posixpath.dirname(p) == path
        ]

    def get_stats(self) -> SandboxStats:
        return SandboxStats(1.0, 512.0, 0.0, 0.0, 0.0, 0.0, 1)

    def destroy(self) -> None:
        self.state = "destroyed"


class FakeManager:
    def __init__(self, shell: Shell = ok_shell) -> None:
        self.shell = shell
        self.created: list[FakeSandbox] = []
        self.configs: list = []
        self.destroyed: list[str] = []
        self._lock = threading.Lock()

    def create_sandbox(self, config) -> FakeSandbox:
        with self._lock:
            sandbox = FakeSandbox(id=f"fake-{len(self.created) + 1}", shell=self.shell)
            self.created.append(sandbox)
            self.configs.append(config)
        return sandbox

    def destroy_sandbox(self, sandbox_id: str) -> bool:
        with self._lock:
            for sandbox in self.created:
                if sandbox.id == sandbox_id and sandbox.state != "destroyed":
                    sandbox.destroy()
                    self.destroyed.append(sandbox_id)
                    return True
        return False
