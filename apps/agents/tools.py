"""The tools offered to the model, with Claude Code's names and parameters, run in the sandbox.

``Bash(command, timeout?)``, ``Read(file_path, offset?, limit?)``, ``Write(file_path, content)``,
``Edit(file_path, old_string, new_string, replace_all?)``, ``Glob(pattern, path?)``,
``Grep(pattern, path?, glob?)``, ``LS(path)``. Every path goes through :func:`paths.resolve`, so
``/workspace/x`` and ``x`` are the same file and escapes are refused as a tool error. A tool
reports a problem the model can act on by raising :class:`ToolError`; the loop turns it into an
error tool_result.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apps.sandboxes.errors import (
    FileTooLarge,
    PathOutsideWorkspace,
    SandboxError,
    SandboxFileError,
    SandboxFileNotFound,
)

from . import paths
from .interceptors import ToolResult

BASH_DEFAULT_TIMEOUT_MS = 120_000
BASH_MAX_TIMEOUT_MS = 600_000
READ_DEFAULT_LIMIT = 2000
READ_MAX_BYTES = 10 * 1024 * 1024
READ_MAX_LINE_CHARS = 2000
GLOB_MAX_RESULTS = 100
GREP_MAX_LINES = 250
LS_MAX_ENTRIES = 500


class ToolError(Exception):
    """A failure the model should see (and can recover from): bad input, missing file..."""


@dataclass
class ToolRuntime:
    """What tools need from the run."""

    sandbox: Any
    workspace: str
    env: dict[str, str] | None = None
    remaining_seconds: Callable[[], float | None] = lambda: None
    on_output: Callable[[str, str], None] | None = None
    on_file_changed: Callable[[str, str, int], None] | None = None
    on_command: Callable[[], None] | None = None  # counts commands that ran

    def resolve(self, path: Any) -> str:
        try:
            return paths.resolve(path, self.workspace)
        except paths.PathRefused as exc:
            raise ToolError(str(exc)) from None

    def relative(self, path: str) -> str:
        return paths.relative(path, self.workspace)

    def run(self, command: str, args: list[str], *, timeout: float | None = None, stream=False):
        """Run argv in the workspace, for at most ``timeout`` seconds."""
        remaining = self.remaining_seconds()
        if remaining is not None and remaining <= 0:
            raise ToolError("the run's time limit is used up")
        timeout = command_timeout(timeout, remaining)
        kwargs: dict[str, Any] = {"workdir": self.workspace, "timeout": timeout}
        if self.env:
            kwargs["env"] = self.env
        if stream and self.on_output is not None:
            kwargs["on_output"] = self.on_output
        return self.sandbox.execute(command, args, **kwargs)


def command_timeout(timeout: float | None, remaining: float | None) -> float | None:
    """The timeout to ask the sandbox for: none when its own deadline comes first.

    The sandbox then stops the command at its deadline *and* records that it ended by timeout,
    which it does not do for a caller's timeout it merely clamped.
    """
    if timeout is not None and remaining is not None and timeout >= remaining:
        return None
    return timeout


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_schema: dict
    run: Callable[[dict, ToolRuntime], ToolResult]

    def definition(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
        }


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def validate(tool: Tool, params: Any) -> dict:
    """Check required parameters and simple types; the model gets a precise message if wrong."""
    if not isinstance(params, dict):
        raise ToolError(f"{tool.name} expects an object of parameters")
    schema = tool.input_schema
    missing = [name for name in schema.get("required", []) if name not in params]
    if missing:
        raise ToolError(f"{tool.name}: missing required parameter(s): {', '.join(missing)}")
    kinds = {"string": str, "integer": int, "boolean": bool, "number": (int, float)}
    for name, value in params.items():
        spec = schema["properties"].get(name)
        if spec is None:
            continue  # tolerated, like the real tools (e.g. Bash "description")
        expected = kinds.get(spec.get("type"))
        wrong_bool = isinstance(value, bool) and spec.get("type") in ("integer", "number")
        if expected is not None and (not isinstance(value, expected) or wrong_bool):
            raise ToolError(f"{tool.name}: parameter {name} must be a {spec['type']}")
    return params


# -- Bash ------------------------------------------------------------------------------------


def run_bash(params: dict, rt: ToolRuntime) -> ToolResult:
    command = params["command"]
    timeout_ms = params.get("timeout") or BASH_DEFAULT_TIMEOUT_MS
    if timeout_ms <= 0:
        raise ToolError("Bash: timeout must be a positive number of milliseconds")
    timeout_ms = min(timeout_ms, BASH_MAX_TIMEOUT_MS)
    result = rt.run("bash", ["-c", command], timeout=timeout_ms / 1000, stream=True)
    if rt.on_command is not None:
        rt.on_command()
    stdout, stderr = as_text(result.stdout), as_text(result.stderr)
    parts = [stdout.rstrip("\n")] if stdout else []
    if stderr:
        parts.append(stderr.rstrip("\n"))
    if getattr(result, "truncated", False):
        parts.append("[output truncated by the sandbox's output limit]")
    end_reason = getattr(result, "end_reason", None)
    if end_reason == "oom":
        parts.append("[killed: the sandbox ran out of memory]")
    elif end_reason == "output_limit":
        parts.append("[killed: the command wrote more output than the sandbox allows]")
    elif result.timed_out:
        parts.append(f"[command timed out after {timeout_ms / 1000:g} s and was killed]")
    elif result.exit_code != 0:
        parts.append(f"[exit code {result.exit_code}]")
    content = "\n".join(parts) if parts else "(no output)"
    return ToolResult(
        content,
        is_error=bool(result.timed_out or result.exit_code != 0),
        metadata={
            "exit_code": result.exit_code,
            "timed_out": bool(result.timed_out),
            "end_reason": end_reason,
        },
    )


# -- Read / Write / Edit ---------------------------------------------------------------------


def _stat(rt: ToolRuntime, path: str) -> tuple[str, int] | None:
    """``(kind, size)`` of ``path`` (symlinks followed, as the file API does), None if absent."""
    result = rt.run("stat", ["-L", "-c", "%F|%s", "--", path])
    if result.exit_code != 0:
        return None
    kind, _, size = as_text(result.stdout).strip().rpartition("|")
    return kind, int(size or 0)


def _read_bytes(rt: ToolRuntime, path: str) -> bytes:
    found = _stat(rt, path)
    if found is None:
        raise ToolError(f"File does not exist: {path}")
    kind, size = found
    if kind == "directory":
        raise ToolError(f"{path} is a directory; use LS to list it")
    if size > READ_MAX_BYTES:
        raise ToolError(
            f"{path} is {size} bytes, too large to read whole (limit {READ_MAX_BYTES}); read "
            "parts of it with Bash (e.g. `sed -n '1,200p' FILE`, `head`, `tail`)"
        )
    try:
        return rt.sandbox.read_file(path)
    except SandboxFileNotFound:
        raise ToolError(f"File does not exist: {path}") from None
    except (FileTooLarge, SandboxFileError, PathOutsideWorkspace) as exc:
        raise ToolError(str(exc)) from None


def _write(rt: ToolRuntime, path: str, data: bytes, *, existed: bool) -> None:
    rt.sandbox.write_file(path, data)  # creates missing parent directories
    if rt.on_file_changed is not None:
        rt.on_file_changed(path, "modified" if existed else "created", len(data))


def run_read(params: dict, rt: ToolRuntime) -> ToolResult:
    path = rt.resolve(params["file_path"])
    data = _read_bytes(rt, path)
    if b"\x00" in data[:8192]:
        return ToolResult(f"{path} is a binary file ({len(data)} bytes); not shown")
    text = data.decode("utf-8", "replace")
    if not text:
        return ToolResult(f"{path} is empty")
    lines = text.splitlines()
    offset = params.get("offset") or 1
    limit = params.get("limit") or READ_DEFAULT_LIMIT
    if offset < 1 or limit < 1:
        raise ToolError("Read: offset and limit must be positive (offset counts from line 1)")
    if offset > len(lines):
        raise ToolError(f"{path} has only {len(lines)} lines; offset {offset} is past the end")
    chosen = lines[offset - 1 : offset - 1 + limit]
    out = []
    for number, line in enumerate(chosen, start=offset):
        if len(line) > READ_MAX_LINE_CHARS:
            line = line[:READ_MAX_LINE_CHARS] + " [line truncated]"
        out.append(f"{number:6}\t{line}")
    rest = len(lines) - (offset - 1 + len(chosen))
    if rest > 0:
        out.append(f"[{rest} more lines; read on with offset={offset + len(chosen)}]")
    return ToolResult("\n".join(out), metadata={"path": path})


def run_write(params: dict, rt: ToolRuntime) -> ToolResult:
    path = rt.resolve(params["file_path"])
    if path == paths.resolve("", rt.workspace):
        raise ToolError("Write: file_path names the workspace directory itself")
    data = params["content"].encode()
    existed = _stat(rt, path) is not None
    _write(rt, path, data, existed=existed)
    verb = "Updated" if existed else "Created"
    return ToolResult(
        f"{verb} {path} ({len(data)} bytes)", metadata={"path": path, "size": len(data)}
    )


def run_edit(params: dict, rt: ToolRuntime) -> ToolResult:
    path = rt.resolve(params["file_path"])
    old, new = params["old_string"], params["new_string"]
    replace_all = bool(params.get("replace_all", False))
    if old == new:
        raise ToolError("Edit: old_string and new_string are identical; nothing to change")
    if old == "":
        if _stat(rt, path) is not None:
            raise ToolError(
                f"Edit: old_string is empty but {path} exists; use Write to replace a whole file"
            )
        _write(rt, path, new.encode(), existed=False)
        return ToolResult(f"Created {path}", metadata={"path": path})
    try:
        text = _read_bytes(rt, path).decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(f"Edit: {path} is not UTF-8 text") from None
    count = text.count(old)
    if count == 0:
        raise ToolError(
            f"Edit: old_string not found in {path}. It must match exactly, including "
            "whitespace and indentation; Read the file and copy the text from it."
        )
    if count > 1 and not replace_all:
        raise ToolError(
            f"Edit: old_string appears {count} times in {path}; add surrounding lines so it is "
            "unique, or set replace_all to true"
        )
    first = text.index(old)
    updated = text.replace(old, new) if replace_all else text.replace(old, new, 1)
    _write(rt, path, updated.encode(), existed=True)
    line = updated.count("\n", 0, first) + 1
    lines = updated.splitlines()
    snippet_end = min(len(lines), line + new.count("\n") + 2)
    snippet = "\n".join(f"{n:6}\t{lines[n - 1]}" for n in range(max(1, line - 2), snippet_end + 1))
    replaced = count if replace_all else 1
    return ToolResult(
        f"Edited {path}: replaced {replaced} occurrence(s). Around line {line} now:\n{snippet}",
        metadata={"path": path, "replacements": replaced},
    )


# -- Glob / Grep / LS ------------------------------------------------------------------------


def list_tree(rt: ToolRuntime, root: str) -> list[tuple[str, int, float, str]]:
    """``(type, size, mtime, path relative to root)`` of everything below ``root``.

    ``find -P`` never follows symlinks; ``%y`` is the entry's own type (``f`` regular file, ``d``
    directory, ``l`` symlink, ``p`` FIFO, ``c``/``b`` devices, ``s`` socket).
    """
    result = rt.run("find", ["-P", root, "-mindepth", "1", "-printf", "%y\\t%s\\t%T@\\t%P\\0"])
    if result.exit_code != 0 and not as_text(result.stdout):
        message = as_text(result.stderr).strip() or f"exit code {result.exit_code}"
        raise ToolError(f"cannot list {root}: {message}")
    entries = []
    for record in as_text(result.stdout).split("\0"):
        if not record:
            continue
        kind, size, mtime, rel = record.split("\t", 3)
        entries.append((kind, int(size), float(mtime), rel))
    return entries


def run_glob(params: dict, rt: ToolRuntime) -> ToolResult:
    root = rt.resolve(params.get("path") or "")
    pattern = params["pattern"]
    if pattern.startswith("/"):
        absolute = rt.resolve(pattern)  # refuses patterns outside the workspace
        if absolute != root and not absolute.startswith(root.rstrip("/") + "/"):
            raise ToolError(f"Glob: pattern {pattern!r} is not under {root}")
        pattern = posixpath.relpath(absolute, root)
    matches = [
        (mtime, rel)
        for kind, _size, mtime, rel in list_tree(rt, root)
        if kind == "f" and paths.glob_match(pattern, rel)
    ]
    if not matches:
        return ToolResult(f"No files found matching {params['pattern']!r} in {root}")
    matches.sort(key=lambda item: (-item[0], item[1]))  # newest first, like Claude Code
    lines = [posixpath.join(root, rel) for _mtime, rel in matches[:GLOB_MAX_RESULTS]]
    if len(matches) > GLOB_MAX_RESULTS:
        lines.append(f"[{len(matches) - GLOB_MAX_RESULTS} more files; narrow the pattern]")
    return ToolResult("\n".join(lines))


def run_grep(params: dict, rt: ToolRuntime) -> ToolResult:
    root = rt.resolve(params.get("path") or "")
    pattern, file_glob = params["pattern"], params.get("glob")
    args = ["--line-number", "--no-heading", "--with-filename", "--color=never"]
    args += ["--max-columns=400", "--max-columns-preview"]
    if file_glob:
        args += ["--glob", file_glob]
    result = rt.run("rg", [*args, "-e", pattern, "--", root])
    if result.exit_code == 127 or "executable file not found" in as_text(result.stderr):
        fallback = ["-rnIE", "--color=never"]
        if file_glob:
            fallback.append(f"--include={file_glob}")
        result = rt.run("grep", [*fallback, "-e", pattern, "--", root])
    if result.exit_code == 1:
        return ToolResult(f"No matches for {pattern!r} in {root}")
    if result.exit_code != 0:
        message = as_text(result.stderr).strip() or f"exit code {result.exit_code}"
        raise ToolError(f"Grep failed: {message}")
    lines = as_text(result.stdout).splitlines()
    if len(lines) > GREP_MAX_LINES:
        extra = len(lines) - GREP_MAX_LINES
        lines = [*lines[:GREP_MAX_LINES], f"[{extra} more matching lines; narrow the search]"]
    return ToolResult("\n".join(lines))


def run_ls(params: dict, rt: ToolRuntime) -> ToolResult:
    root = rt.resolve(params.get("path") or "")
    found = _stat(rt, root)
    if found is None:
        raise ToolError(f"Directory does not exist: {root}")
    if found[0] != "directory":
        raise ToolError(f"{root} is not a directory; use Read for files")
    entries = rt.sandbox.list_files(root)
    rows = []
    for entry in sorted(entries, key=lambda e: e.path):
        name = posixpath.basename(entry.path.rstrip("/")) or entry.path
        rows.append(f"{name}/" if entry.is_dir else f"{name}  ({entry.size} bytes)")
    if not rows:
        return ToolResult(f"{root} is empty")
    more = len(rows) - LS_MAX_ENTRIES
    rows = rows[:LS_MAX_ENTRIES] + ([f"[{more} more entries]"] if more > 0 else [])
    return ToolResult(f"{root}/\n" + "\n".join(f"  {row}" for row in rows))


# -- the definitions the model sees ----------------------------------------------------------

_PATH_NOTE = "Paths are inside the workspace: absolute (/workspace/...) or relative to it."

TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in [
        Tool(
            "Bash",
            "Run a bash command in the sandbox, in the workspace directory, and return its "
            "stdout, stderr and exit code. Long output keeps its end. The network may be off.",
            {
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The command to run"},
                    "timeout": {
                        "type": "integer",
                        "description": "Timeout in milliseconds (default 120000, max 600000)",
                    },
                    "description": {
                        "type": "string",
                        "description": "A few words on what the command does",
                    },
                },
                "required": ["command"],
            },
            run_bash,
        ),
        Tool(
            "Read",
            "Read a text file, with line numbers (cat -n style). Reads up to 2000 lines from "
            "offset (1-based). " + _PATH_NOTE,
            {
                "type": "object",
                "properties": {
                    "file_path": {"type": "string", "description": "The file to read"},
                    "offset": {"type": "integer", "description": "First line to read (1-based)"},
                    "limit": {"type": "integer", "description": "How many lines to read"},
                },
                "required": ["file_path"],
            },
            run_read,
        ),
        Tool(
            "Write",
            "Write a file, replacing it if it exists and creating parent directories. "
            + _PATH_NOTE,
            {
                "type": "object",
                "properties": {
                    "file_path": {"type": "string", "description": "The file to write"},
                    "content": {"type": "string", "description": "The whole new content"},
                },
                "required": ["file_path", "content"],
            },
            run_write,
        ),
        Tool(
            "Edit",
            "Replace old_string with new_string in a file. old_string must match exactly and be "
            "unique unless replace_all is true. " + _PATH_NOTE,
            {
                "type": "object",
                "properties": {
                    "file_path": {"type": "string", "description": "The file to edit"},
                    "old_string": {"type": "string", "description": "The exact text to replace"},
                    "new_string": {"type": "string", "description": "The replacement text"},
                    "replace_all": {
                        "type": "boolean",
                        "description": "Replace every occurrence (default false)",
                    },
                },
                "required": ["file_path", "old_string", "new_string"],
            },
            run_edit,
        ),
        Tool(
            "Glob",
            "Find files by glob pattern (e.g. **/*.py, src/*.{js,ts}), newest first. " + _PATH_NOTE,
            {
                "type": "object",
                "properties": {
                    "pattern": {"type": "string", "description": "The glob pattern"},
                    "path": {
                        "type": "string",
                        "description": "Directory to search (default: workspace)",
                    },
                },
                "required": ["pattern"],
            },
            run_glob,
        ),
        Tool(
            "Grep",
            "Search file contents with a regular expression (ripgrep syntax); returns "
            "path:line:text for each match. " + _PATH_NOTE,
            {
                "type": "object",
                "properties": {
                    "pattern": {"type": "string", "description": "The regular expression"},
                    "path": {"type": "string", "description": "File or directory to search"},
                    "glob": {"type": "string", "description": "Only files matching this glob"},
                },
                "required": ["pattern"],
            },
            run_grep,
        ),
        Tool(
            "LS",
            "List a directory. " + _PATH_NOTE,
            {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "The directory to list"},
                },
                "required": ["path"],
            },
            run_ls,
        ),
    ]
}


def tool_definitions() -> list[dict]:
    return [tool.definition() for tool in TOOLS.values()]


def run_tool(tool: Tool, params: dict, rt: ToolRuntime) -> ToolResult:
    """Run a tool; a :class:`ToolError` or a sandbox error becomes an error result."""
    try:
        return tool.run(validate(tool, params), rt)
    except ToolError as exc:
        return ToolResult(str(exc), is_error=True)
    except SandboxError as exc:
        return ToolResult(
            f"{tool.name} failed in the sandbox: {exc}",
            is_error=True,
            metadata={"sandbox_error": type(exc).__name__},
        )
