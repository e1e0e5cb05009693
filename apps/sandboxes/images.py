"""Make sure a sandbox image exists: use it if present, pull it, or build it offline.

Where a registry is reachable, images are simply pulled. Where none is (air-gapped hosts, CI
machines that only reach a Debian mirror), the default image is built from Debian packages:
``mmdebstrap`` writes a root filesystem tarball, ``docker import`` turns it into a base image and
``docker build`` adds the sandbox user on top. The build is keyed by a content hash of
``docker/sandbox/`` so an unchanged definition is never built twice.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import docker.errors

import docker

from .errors import SandboxError, SandboxUnavailable

IMAGE_DEFINITION_DIR = Path(__file__).resolve().parents[2] / "docker" / "sandbox"
DEFAULT_IMAGE_REPOSITORY = "sandboxweb/sandbox"
BASE_IMAGE_REPOSITORY = "sandboxweb/debian-base"
CONTENT_HASH_LABEL = "org.sandboxweb.content-hash"
DEBIAN_SUITE = "bookworm"
# Debian's own APT configuration says which mirror this host may use; we never name one.
HOST_APT_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))

Progress = Callable[[str], None]


def _print_progress(line: str) -> None:
    print(line, flush=True)


def definition_hash(definition_dir: Path = IMAGE_DEFINITION_DIR) -> str:
    digest = hashlib.sha256(DEBIAN_SUITE.encode())
    for path in sorted(p for p in definition_dir.rglob("*") if p.is_file()):
        digest.update(path.relative_to(definition_dir).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def default_image_tag() -> str:
    return f"{DEFAULT_IMAGE_REPOSITORY}:{definition_hash()}"


def _client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as exc:
        raise SandboxUnavailable(
            "The Docker Engine does not answer "
            f"({os.environ.get('DOCKER_HOST') or 'unix:///var/run/docker.sock'}): start dockerd "
            "or set DOCKER_HOST to a reachable engine."
        ) from exc
    return client


def image_exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def try_pull(client: docker.DockerClient, name: str, progress: Progress) -> bool:
    repository, tag = _split_tag(name)
    progress(f"Pulling {name} ...")
    try:
        client.images.pull(repository, tag=tag)
    except docker.errors.DockerException as exc:
        progress(f"  pull failed ({_first_line(exc)}); will build it locally instead.")
        return False
    return True


def _split_tag(name: str) -> tuple[str, str]:
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repository, _, tag = name.rpartition(":")
        return repository, tag
    return name, "latest"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _sources_file() -> Path:
    for candidate in HOST_APT_SOURCES:
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    raise SandboxError(
        "Cannot build the sandbox image offline: this host has no Debian APT sources "
        f"({', '.join(map(str, HOST_APT_SOURCES))}). Pull the image from a registry instead."
    )


def _packages(definition_dir: Path) -> list[str]:
    lines = (definition_dir / "packages.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def build_offline(
    client: docker.DockerClient,
    tag: str,
    *,
    definition_dir: Path = IMAGE_DEFINITION_DIR,
    progress: Progress = _print_progress,
) -> str:
    """Build the sandbox image from Debian packages; returns the image tag."""
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise SandboxError(
            "Cannot build the sandbox image offline: mmdebstrap is not installed "
            "(Debian: apt-get install mmdebstrap), and the image could not be pulled."
        )
    content_hash = definition_hash(definition_dir)
    base_tag = f"{BASE_IMAGE_REPOSITORY}:{DEBIAN_SUITE}-{content_hash}"
    if not image_exists(client, base_tag):
        with tempfile.TemporaryDirectory(prefix="sandboxweb-rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs.tar"
            progress(
                f"[1/3] mmdebstrap: Debian {DEBIAN_SUITE} root filesystem "
                "(first build only; about a minute) ..."
            )
            command = [
                mmdebstrap,
                "--variant=minbase",
                f"--include={','.join(_packages(definition_dir))}",
                '--aptopt=Acquire::Retries "3"',
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                DEBIAN_SUITE,
                str(rootfs),
                str(_sources_file()),
            ]
            _run_streaming(command, progress)
            progress(f"[2/3] docker import -> {base_tag}")
            repository, base_version = _split_tag(base_tag)
            # from_file streams the tarball with a Content-Length; the chunked variant is
            # refused by Docker 20.10 ("header line too long").
            client.api.import_image_from_file(str(rootfs), repository=repository, tag=base_version)
    else:
        progress(f"[1/3] base image {base_tag} already present")
        progress("[2/3] skipped")
    progress(f"[3/3] docker build -> {tag}")
    _, logs = client.images.build(
        path=str(definition_dir),
        tag=tag,
        buildargs={"BASE_IMAGE": base_tag},
        labels={CONTENT_HASH_LABEL: content_hash},
        rm=True,
        forcerm=True,
        network_mode="none",
    )
    for chunk in logs:
        text = chunk.get("stream", "").rstrip()
        if text:
            progress(f"  {text}")
    return tag


def _run_streaming(command: list[str], progress: Progress) -> None:
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
    )
    assert process.stdout is not None
    for line in process.stdout:
        progress(f"  {line.rstrip()}")
    if process.wait() != 0:
        raise SandboxError(
            f"Building the sandbox root filesystem failed (mmdebstrap exit {process.returncode}); "
            "see the lines above. Check that this host's APT sources are reachable."
        )


def ensure_image(
    name: str | None = None,
    *,
    alias: str | None = None,
    allow_pull: bool = True,
    progress: Progress = _print_progress,
) -> str:
    """Return a usable image name, pulling or building it when missing.

    ``name=None`` means our default image, tagged with the content hash of its definition (so a
    registry that publishes it can serve it, and an unchanged definition is never rebuilt);
    ``alias`` (e.g. ``sandboxweb/sandbox:latest``) is then pointed at it.
    """
    client = _client()
    if name is not None:
        if image_exists(client, name):
            return name
        if allow_pull and try_pull(client, name, progress):
            return name
        raise SandboxError(f"Image {name} is not present and could not be pulled.")
    tag = default_image_tag()
    if image_exists(client, tag):
        progress(f"Sandbox image {tag} is up to date.")
    elif not (allow_pull and try_pull(client, tag, progress)):
        build_offline(client, tag, progress=progress)
    if alias:
        repository, _, alias_tag = alias.rpartition(":")
        client.images.get(tag).tag(repository, alias_tag)
    return alias or tag


if __name__ == "__main__":  # pragma: no cover - manual use
    print(ensure_image(alias=sys.argv[1] if len(sys.argv) > 1 else None))
