"""Hardening conformance: prove a sandbox container is confined, statically and from inside.

``check_container_attrs`` reads ``docker inspect`` output (flags the code asked for);
``check_from_inside`` asks the kernel from within the container (flags can be silently ignored,
so the running process is the proof). ``assert_conformant`` does both and raises with every
problem found. Used by the test suite on every container it creates, by the security suite, and
by the web app's self-check. See reference/security-and-reliability.md section 1.3.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .docker import (
    LABEL_APP,
    LABEL_DEADLINE,
    LABEL_ID,
    LABEL_OWNER,
    DockerSandbox,
    engine_errors,
)
from .errors import SandboxError


class ConformanceError(SandboxError, AssertionError):
    code = "conformance"

    def __init__(self, container: str, problems: list[str]) -> None:
        super().__init__(
            f"Container {container} is not hardened as required: " + "; ".join(problems)
        )
        self.problems = problems


_FORBIDDEN_OPTS = (
    "seccomp=unconfined",
    "seccomp:unconfined",
    "apparmor=unconfined",
    "label=disable",
)


def check_container_attrs(
    attrs: Mapping[str, Any], *, image_env: list[str] | None = None
) -> list[str]:
    """Problems with a container's ``docker inspect`` document (empty list: conformant)."""
    problems: list[str] = []
    hc = attrs.get("HostConfig") or {}
    cfg = attrs.get("Config") or {}

    def need(condition: bool, message: str) -> None:
        if not condition:
            problems.append(message)

    need(hc.get("Privileged") is False, "Privileged must be false")
    need([c.upper() for c in hc.get("CapDrop") or []] == ["ALL"], "CapDrop must be [ALL]")
    need(not hc.get("CapAdd"), f"CapAdd must be empty (got {hc.get('CapAdd')})")
    security = hc.get("SecurityOpt") or []
    need(
        any(opt in ("no-new-privileges", "no-new-privileges:true") for opt in security),
        "SecurityOpt must contain no-new-privileges",
    )
    for opt in security:
        need(not opt.startswith(_FORBIDDEN_OPTS), f"SecurityOpt must not contain {opt}")
    need(hc.get("ReadonlyRootfs") is True, "ReadonlyRootfs must be true")
    tmpfs = hc.get("Tmpfs") or {}
    need("/tmp" in tmpfs, "/tmp must be a tmpfs")  # noqa: S108
    for path, opts in tmpfs.items():
        need("size=" in opts, f"tmpfs {path} must have a size")
    memory = hc.get("Memory") or 0
    need(memory > 0, "Memory limit must be set")
    need(hc.get("MemorySwap") == memory, "MemorySwap must equal Memory (no swap)")
    need(not hc.get("OomKillDisable"), "OomKillDisable must not be set")
    need((hc.get("NanoCpus") or 0) > 0, "NanoCpus must be set")
    need((hc.get("PidsLimit") or 0) > 0, "PidsLimit must be set")
    need(hc.get("Init") is True, "Init must be true")
    need((hc.get("RestartPolicy") or {}).get("Name") in ("no", ""), "RestartPolicy must be no")
    log_config = hc.get("LogConfig") or {}
    need(
        log_config.get("Type") == "local"
        or (
            log_config.get("Type") == "json-file"
            and (log_config.get("Config") or {}).get("max-size")
        ),
        f"LogConfig must be bounded (got {log_config})",
    )
    need(not hc.get("Binds"), f"no bind mounts allowed (got {hc.get('Binds')})")
    need(not hc.get("Devices"), "no devices allowed")
    need(not hc.get("DeviceRequests"), "no device requests allowed")
    for mode_key in ("NetworkMode", "PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode"):
        need(hc.get(mode_key) != "host", f"{mode_key} must not be host")
    need(hc.get("IpcMode") == "private", f"IpcMode must be private (got {hc.get('IpcMode')})")
    ulimits = {u.get("Name"): u for u in hc.get("Ulimits") or []}
    need("nofile" in ulimits, "a nofile ulimit must be set")
    for mount in attrs.get("Mounts") or []:
        need(
            mount.get("Type") in ("volume", "tmpfs"),
            f"mount {mount.get('Destination')} is a {mount.get('Type')}",
        )
        for key in ("Source", "Destination"):
            need(
                "docker.sock" not in (mount.get(key) or ""), "the Docker socket must not be mounted"
            )
    user = str(cfg.get("User") or "")
    uid = user.split(":", 1)[0]
    need(
        uid.isdigit() and int(uid) != 0,
        f"Config.User must be a numeric non-root uid (got {user!r})",
    )
    labels = cfg.get("Labels") or {}
    for label in (LABEL_APP, LABEL_ID, LABEL_OWNER, LABEL_DEADLINE):
        need(label in labels, f"label {label} missing")
    if image_env is not None:
        extra = sorted(set(cfg.get("Env") or []) - set(image_env))
        need(not extra, f"Config.Env holds variables beyond the image's: {extra}")
    return problems


_PROBE = r"""
grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status
echo "uid: $(id -u)"
echo "init uid: $(stat -c %u /proc/1)"
if touch /etc/.sbx-probe 2>/dev/null; then echo "rootfs: writable"; else echo "rootfs: ro"; fi
awk '$2 == "/" || $2 == "/tmp" { print "mount: " $2 " " $3 " " $4 }' /proc/mounts
for f in /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max; do
  [ -r "$f" ] && echo "pids.max: $(cat "$f")"
done
for f in /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max; do
  [ -r "$f" ] && echo "memory.max: $(cat "$f")"
done
[ -e /var/run/docker.sock ] && echo "docker.sock: present"
exit 0
"""


def check_from_inside(sandbox: DockerSandbox) -> list[str]:
    """Problems seen by a process inside the running sandbox."""
    result = sandbox.execute("sh", ["-c", _PROBE], timeout=30)
    facts: dict[str, str] = {}
    mounts: dict[str, tuple[str, str]] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "mount":
            path, fstype, opts = value.split(" ", 2)
            mounts[path] = (fstype, opts)
        else:
            facts[key] = value
    problems = []
    expected = {"CapEff": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"}
    for key, value in expected.items():
        if facts.get(key) != value:
            problems.append(f"{key} is {facts.get(key)!r} inside, expected {value}")
    uid = facts.get("uid", "")
    if not uid.isdigit() or int(uid) == 0:
        problems.append(f"processes run as uid {uid!r}, expected non-root")
    init_uid = facts.get("init uid", "")
    if not init_uid.isdigit() or init_uid in ("0", uid):
        problems.append(f"init (PID 1) runs as uid {init_uid!r}: commands could ptrace or kill it")
    if facts.get("rootfs") != "ro":
        problems.append("the root filesystem is writable from inside")
    root = mounts.get("/")
    if not root or "ro" not in root[1].split(","):
        problems.append(f"/ is not mounted read-only ({root})")
    tmp = mounts.get("/tmp")  # noqa: S108
    if not tmp or tmp[0] != "tmpfs" or "size=" not in tmp[1]:
        problems.append(f"/tmp is not a sized tmpfs ({tmp})")  # noqa: S108
    if "noexec" not in (tmp[1] if tmp else ""):
        problems.append("/tmp is executable")  # noqa: S108
    if facts.get("pids.max") in (None, "max"):
        problems.append(f"no pids limit inside ({facts.get('pids.max')})")
    elif int(facts["pids.max"]) != sandbox.limits.max_processes:
        problems.append(f"pids.max {facts['pids.max']} != {sandbox.limits.max_processes}")
    memory = facts.get("memory.max")
    if memory is None or not memory.isdigit() or int(memory) != sandbox.limits.memory_bytes:
        problems.append(f"memory limit inside is {memory}, expected {sandbox.limits.memory_bytes}")
    if "docker.sock" in facts:
        problems.append("the Docker socket is reachable inside")
    return problems


def check_sandbox(sandbox: DockerSandbox, *, dynamic: bool = True) -> list[str]:
    with engine_errors("inspect a sandbox for conformance"):
        attrs = sandbox.api.inspect_container(sandbox.container_id)
        image = sandbox.api.inspect_image(attrs["Image"])
    problems = check_container_attrs(attrs, image_env=(image.get("Config") or {}).get("Env") or [])
    hc = attrs["HostConfig"]
    if hc.get("Memory") != sandbox.limits.memory_bytes:
        problems.append(f"Memory {hc.get('Memory')} != limit {sandbox.limits.memory_bytes}")
    if hc.get("NanoCpus") != int(sandbox.limits.cpu_cores * 1e9):
        problems.append(f"NanoCpus {hc.get('NanoCpus')} != {sandbox.limits.cpu_cores} cores")
    if hc.get("PidsLimit") != sandbox.limits.max_processes:
        problems.append(f"PidsLimit {hc.get('PidsLimit')} != {sandbox.limits.max_processes}")
    if dynamic and attrs.get("State", {}).get("Running"):
        problems += check_from_inside(sandbox)
    return problems


def assert_conformant(sandbox: DockerSandbox, *, dynamic: bool = True) -> None:
    problems = check_sandbox(sandbox, dynamic=dynamic)
    if problems:
        raise ConformanceError(sandbox.id, problems)
