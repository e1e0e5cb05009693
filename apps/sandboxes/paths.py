"""Lexical confinement of user-supplied paths to the sandbox workspace.

This is the first of two checks: it rejects ``..`` escapes, other absolute paths and NUL bytes
before anything reaches the engine. The second check runs inside the sandbox, after symlinks are
resolved (see the helper scripts in ``docker.py``), because only the sandbox knows its links.
"""

from __future__ import annotations

import posixpath

from .errors import PathOutsideWorkspace


def workspace_path(path: str, workspace: str) -> str:
    """Absolute, normalised form of ``path`` inside ``workspace``; raises if it leaves it.

    ``x``, ``./x`` and ``/workspace/x`` all name ``/workspace/x``; ``""`` and ``.`` name the
    workspace itself.
    """
    if not isinstance(path, str):
        raise TypeError(f"path must be a string, not {type(path).__name__}")
    workspace = posixpath.normpath(workspace)
    if "\x00" in path:
        raise PathOutsideWorkspace(f"Path {path!r} contains a NUL byte; use a plain file name.")
    candidate = path if path.startswith("/") else posixpath.join(workspace, path)
    normalised = posixpath.normpath(candidate)
    if normalised.startswith("//"):
        normalised = "/" + normalised.lstrip("/")
    if normalised != workspace and not normalised.startswith(workspace + "/"):
        raise PathOutsideWorkspace(
            f"Path {path!r} resolves to {normalised}, outside the sandbox workspace {workspace}; "
            f"use a path relative to {workspace} or below it."
        )
    return normalised
