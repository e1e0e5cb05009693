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


class SandboxRateLimited(SandboxUnavailable):
    """The provider's API rate-limited the request (HTTP 429) and retrying did not help."""

    code = "rate_limited"


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


class InvalidSandboxConfig(SandboxError, ValueError):
    """A limit, id, path or option is malformed; the message names the field and the rule."""

    code = "invalid_config"


class SandboxExists(SandboxError):
    """A sandbox with this (deterministic) id already exists; it was left untouched."""

    code = "sandbox_exists"

    def __init__(self, message: str, *, sandbox_id: str | None = None) -> None:
        super().__init__(message)
        self.sandbox_id = sandbox_id


class DiskLimitExceeded(SandboxError):
    """The sandbox workspace is full (its disk_mb limit was reached)."""

    code = "disk_limit"


class SandboxFileError(SandboxError):
    """A file operation failed inside the sandbox (not a directory, not a regular file, ...)."""

    code = "file_error"


class NetworkPolicyUnavailable(SandboxError):
    """A network mode's isolation cannot be guaranteed on this host, so the mode is refused."""

    code = "network_policy_unavailable"
