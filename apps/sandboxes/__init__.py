"""The sandbox layer: run untrusted code in hardened, resource-limited sandboxes.

A standalone library (no Django, no other app): ``SandboxManager`` creates ``Sandbox`` objects
through registered providers (``docker``, ``e2b``). See docs/sandboxes.md.

    from apps.sandboxes import SandboxManager, SandboxConfig, ResourceLimits

    manager = SandboxManager(limits=ResourceLimits(memory_mb=512))
    with manager.create_sandbox(SandboxConfig(limits=ResourceLimits(cpu_cores=0.5))) as box:
        box.write_file("hello.py", "print('hi')")
        result = box.execute("python3", ["hello.py"], timeout=30)
"""

from .base import (
    LivenessCheck,
    OutputCallback,
    Sandbox,
    SandboxProvider,
    provider_class,
    register_provider,
    registered_providers,
)
from .errors import (
    DiskLimitExceeded,
    FileTooLarge,
    ImageNotFound,
    InvalidSandboxConfig,
    NetworkPolicyUnavailable,
    PathOutsideWorkspace,
    SandboxError,
    SandboxExists,
    SandboxFileError,
    SandboxFileNotFound,
    SandboxNotFound,
    SandboxRateLimited,
    SandboxStateError,
    SandboxTimeout,
    SandboxUnavailable,
    UnknownProvider,
    UnsupportedLimit,
)
from .manager import SandboxManager, SandboxReport, default_owner
from .stream import TextDecoder
from .types import (
    DEFAULT_DOCKER_IMAGE,
    DEFAULT_WORKSPACE,
    DockerOptions,
    E2BOptions,
    EndReason,
    ExecResult,
    FileInfo,
    HealthStatus,
    ResourceLimits,
    SandboxConfig,
    SandboxState,
    SandboxStats,
)

# Lazy references: the SDK behind a provider is imported only when that provider is used.
register_provider("docker", "apps.sandboxes.docker:DockerProvider")
register_provider("e2b", "apps.sandboxes.e2b:E2BProvider")

__all__ = [
    "DEFAULT_DOCKER_IMAGE",
    "DEFAULT_WORKSPACE",
    "DiskLimitExceeded",
    "DockerOptions",
    "E2BOptions",
    "EndReason",
    "ExecResult",
    "FileInfo",
    "FileTooLarge",
    "HealthStatus",
    "ImageNotFound",
    "InvalidSandboxConfig",
    "LivenessCheck",
    "NetworkPolicyUnavailable",
    "OutputCallback",
    "PathOutsideWorkspace",
    "ResourceLimits",
    "Sandbox",
    "SandboxConfig",
    "SandboxError",
    "SandboxExists",
    "SandboxFileError",
    "SandboxFileNotFound",
    "SandboxManager",
    "SandboxNotFound",
    "SandboxProvider",
    "SandboxRateLimited",
    "SandboxReport",
    "SandboxState",
    "SandboxStateError",
    "SandboxStats",
    "SandboxTimeout",
    "SandboxUnavailable",
    "TextDecoder",
    "UnknownProvider",
    "UnsupportedLimit",
    "default_owner",
    "provider_class",
    "register_provider",
    "registered_providers",
]
