"""Typed sandbox errors. Every message says what happened and what the user can do about it."""

from __future__ import annotations


class SandboxError(Exception):
    """Base class of every error the sandbox layer raises."""

    code = "sandbox_error"


class SandboxNotFound(SandboxError):
    code = "sandbox_not_found"


class SandboxUnavailable(SandboxError):
    """The engine (Docker daemon, E2B API) cannot be reached or refused the credentials."""

    code = "sandbox_unavailable"


class SandboxTimeout(SandboxError):
    code = "sandbox_timeout"


class SandboxStateError(SandboxError):
    """The sandbox is in a state that cannot do this (e.g. exec after destroy)."""

    code = "sandbox_state"


class ImageNotFound(SandboxError):
    code = "image_not_found"


class PathOutsideWorkspace(SandboxError):
    code = "path_outside_workspace"


class FileTooLarge(SandboxError):
    code = "file_too_large"


class SandboxFileNotFound(SandboxError):
    code = "file_not_found"


class UnsupportedLimit(SandboxError):
    """A limit this provider cannot enforce on this host: refused, never ignored."""

    code = "unsupported_limit"


class UnknownProvider(SandboxError):
    code = "unknown_provider"
