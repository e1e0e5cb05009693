"""Workspace paths and glob patterns, as the file tools and file capture understand them.

Confinement is lexical: ``/workspace/x``, ``x`` and ``./x`` name the same file, ``..`` is resolved
first, and whatever lands outside the workspace is refused. It is a contract of the tools, not the
security boundary (the agent can run any command inside its sandbox; the sandbox is the
boundary), which is also why symlinks inside the workspace are not chased here. File capture,
which copies files *out* of the sandbox, never follows symlinks (see capture.py).
"""

from __future__ import annotations

import posixpath
import re
from functools import lru_cache

from apps.sandboxes.errors import PathOutsideWorkspace
from apps.sandboxes.paths import workspace_path


class PathRefused(ValueError):
    """A path the tools will not touch; the message is meant for the model."""


def resolve(path: str, workspace: str) -> str:
    """The absolute, normalised path of ``path`` inside ``workspace``, or :class:`PathRefused`.

    The rule is the sandbox layer's own (``apps.sandboxes.paths.workspace_path``), so a path the
    tools accept is one the sandbox file API accepts too.
    """
    if not isinstance(path, str):
        raise PathRefused(f"path must be a string, got {type(path).__name__}")
    try:
        return workspace_path(path.strip(), workspace)
    except PathOutsideWorkspace as exc:
        raise PathRefused(str(exc)) from None


def relative(path: str, workspace: str) -> str:
    """``path`` (absolute, inside the workspace) relative to the workspace; ``.`` for the root."""
    return posixpath.relpath(path, posixpath.normpath(workspace))


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a glob over ``/``-separated relative paths.

    ``*`` and ``?`` stay inside one path segment, ``**`` crosses segments (``**/`` also matches
    no directory at all, so ``**/*.py`` matches ``a.py`` and ``src/a/b.py``), ``[abc]``/``[!abc]``
    are character classes and ``{a,b}`` alternatives. ``*`` matches dotfiles too.
    """
    while pattern.startswith("./"):
        pattern = pattern[2:]
    return re.compile(r"\A" + _translate(pattern) + r"\Z", re.DOTALL)


def glob_match(pattern: str, path: str) -> bool:
    return glob_regex(pattern).match(path) is not None


def _translate(pattern: str) -> str:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if pattern.startswith("**", i):
            at_segment_start = i == 0 or pattern[i - 1] == "/"
            after = i + 2
            if at_segment_start and pattern.startswith("/", after):
                out.append("(?:.*/)?")
                i = after + 1
                continue
            if at_segment_start and after == n and i > 0:
                out.pop()  # the "/" before: "src/**" matches "src" and everything under it
                out.append("(?:/.*)?")
                i = after
                continue
            out.append(".*")
            i = after
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            end = pattern.find("]", i + 2 if pattern.startswith("[!", i) else i + 1)
            if end == -1:
                out.append(re.escape(char))
                i += 1
                continue
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        elif char == "{":
            end = _matching_brace(pattern, i)
            if end == -1:
                out.append(re.escape(char))
                i += 1
                continue
            options = _split_top_level(pattern[i + 1 : end])
            out.append("(?:" + "|".join(_translate(option) for option in options) + ")")
            i = end + 1
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


def _matching_brace(pattern: str, start: int) -> int:
    depth = 0
    for index in range(start, len(pattern)):
        if pattern[index] == "{":
            depth += 1
        elif pattern[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    return -1


def _split_top_level(body: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in body:
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        depth += char == "{"
        depth -= char == "}"
        current.append(char)
    parts.append("".join(current))
    return parts
