"""The Docker daemon restarted under a running run (chaos test §3.7.6).

A private ``dockerd`` (own data root, exec root, pidfile and socket; no bridge, no iptables) serves
a worker whose ``DOCKER_HOST`` points at it; the shared daemon is never touched. Its data root
lives under /var/lib/sbx-chaos, so the sandbox image loaded into it (``docker save | docker
load``, only when the image differs from the shared daemon's) is reused by later sessions.

Mid-run the daemon gets SIGTERM (it stops every container, as a host reboot or an upgrade does)
and is started again. The run must end with a typed reason, keep its log up to that point, leave
no container or volume behind after the next sweep, and the worker must serve the next run.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

import docker
from apps.runs import services
from apps.runs.models import Run
from apps.runs.tasks import sweep_task
from apps.sandboxes.docker import APP_NAME, LABEL_APP, LABEL_OWNER
from tests.reliability.test_redis_restart import (
    Service,
    assert_gap_free,
    numbered_lines,
    spawn,
    wait_for_run,
    wait_until,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker, pytest.mark.slow]
S = Run.Status

RUN_DIR = Path("/run/sbx-chaos")
DATA_ROOT = Path("/var/lib/sbx-chaos/docker")  # kept between sessions: the image stays loaded
SOCKET = f"unix://{RUN_DIR / 'docker.sock'}"
IMAGE = "sandboxweb/sandbox:latest"


class PrivateDockerd:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.service: Service | None = None

    def start(self) -> float:
        """Start the daemon; returns how long it took to answer."""
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        DATA_ROOT.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        argv = ["dockerd", "--data-root", str(DATA_ROOT), "--exec-root", str(RUN_DIR / "exec")]
        argv += ["--pidfile", str(RUN_DIR / "docker.pid"), "-H", SOCKET]
        argv += ["--bridge=none", "--iptables=false", "--ip-masq=false"]
        # Its own cgroup parent: its containers never mix with the shared daemon's.
        argv += ["--cgroup-parent", "sbx-chaos", "--shutdown-timeout", "3"]
        self.service = spawn("dockerd", argv, self.log_dir, dict(os.environ))

        def answers() -> bool:
            if self.service.process.poll() is not None:
                raise RuntimeError(f"dockerd exited: {self.service.log()[-3000:]}")
            return self.docker("version").returncode == 0

        wait_until(answers, 60, "the private dockerd to answer", interval=0.3)
        return time.monotonic() - started

    def stop(self) -> None:
        """SIGTERM, as systemd does on a restart: the daemon stops its containers and exits."""
        assert self.service is not None
        self.service.stop(timeout=60)

    def docker(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker", "-H", SOCKET, *args], capture_output=True, timeout=300, **kwargs
        )

    def ensure_image(self) -> float:
        """Load the shared daemon's sandbox image unless this daemon has the same one."""
        shared = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", IMAGE],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        mine = self.docker("image", "inspect", "--format", "{{.Id}}", IMAGE, text=True)
        if mine.returncode == 0 and mine.stdout.strip() == shared:
            return 0.0
        started = time.monotonic()
        with subprocess.Popen(["docker", "save", IMAGE], stdout=subprocess.PIPE) as save:
            loaded = self.docker("load", stdin=save.stdout)
        assert save.returncode == 0 and loaded.returncode == 0, loaded.stderr
        return time.monotonic() - started

    def clear(self) -> None:
        """Sandboxes an interrupted earlier session left in the (kept) data root: their names
        may come again (same test database, same run ids), so they go before anything starts."""
        client = docker.DockerClient(base_url=SOCKET)
        try:
            label = f"{LABEL_APP}={APP_NAME}"
            for container in client.containers.list(all=True, filters={"label": label}):
                container.remove(force=True)
            for volume in client.volumes.list(filters={"label": label}):
                volume.remove(force=True)
        finally:
            client.close()

    def leftovers(self, owner: str) -> tuple[list[str], list[str]]:
        client = docker.DockerClient(base_url=SOCKET)
        try:
            labels = [f"{LABEL_APP}={APP_NAME}", f"{LABEL_OWNER}={owner}"]
            containers = [
                c.name for c in client.containers.list(all=True, filters={"label": labels})
            ]
            volumes = [v.name for v in client.volumes.list(filters={"label": labels})]
            return containers, volumes
        finally:
            client.close()


@pytest.fixture(scope="module")
def dockerd(docker_engine, tmp_path_factory):
    daemon = PrivateDockerd(tmp_path_factory.mktemp("chaos-dockerd"))
    start_seconds = daemon.start()
    try:
        daemon.clear()
        load_seconds = daemon.ensure_image()
        print(f"\nprivate dockerd: up in {start_seconds:.1f} s, image load {load_seconds:.1f} s")
        yield daemon
    finally:
        if daemon.service is not None:
            daemon.stop()


@pytest.fixture(scope="module")
def worker(dockerd, django_db_setup, django_db_blocker, redis_server, tmp_path_factory):
    from tests.runs.workers import runs_worker

    with (
        django_db_blocker.unblock(),
        runs_worker(
            tmp_path_factory.mktemp("chaos-docker-worker"),
            anthropic_url="http://127.0.0.1:9",  # script runs only: never called
            concurrency=1,
            DOCKER_HOST=SOCKET,
        ) as process,
    ):
        yield process
        containers, volumes = dockerd.leftovers(process.owner)
        assert (containers, volumes) == ([], [])


def launch(project, user, command: str) -> Run:
    return services.start_run(
        project=project, user=user, task=command, overrides={"network_mode": "none"}
    )


def test_docker_daemon_restart_mid_run(dockerd, worker):
    from tests.projects.factories import make_project, make_user

    user = make_user()
    project = make_project(user, network_mode="none")
    run = launch(project, user, "for i in $(seq 1 600); do echo line $i; sleep 0.1; done")
    wait_for_run(run.pk, lambda r: r.status == S.RUNNING and r.log_lines >= 10, 90, "running")

    restart_started = time.monotonic()
    dockerd.stop()
    dockerd.start()
    restart_seconds = time.monotonic() - restart_started

    run = wait_for_run(run.pk, lambda r: r.is_terminal, 90, "finished")
    # Typed: the sandbox went away under the run, it did not fail by itself.
    assert (run.status, run.end_reason) == (S.CRASHED, "sandbox_lost"), (
        run.status,
        run.end_reason,
        run.error_message,
    )
    assert "Docker" in run.error_message or "sandbox" in run.error_message
    printed = numbered_lines(run)
    assert 10 <= len(printed) < 600
    assert printed == [f"line {i}" for i in range(1, len(printed) + 1)]
    events = assert_gap_free(run)
    assert events[-1].type == "status" and events[-1].data["reason"] == "sandbox_lost"

    # The next sweep leaves nothing of the run on the daemon.
    # (sweep_task keeps no result: watch the daemon instead.)
    sweep_task.apply_async(queue=worker.queue)
    wait_until(lambda: dockerd.leftovers(worker.owner) == ([], []), 60, "the sweep to reap")

    # The worker keeps serving.
    after = launch(project, user, "echo after the restart")
    after = wait_for_run(after.pk, lambda r: r.is_terminal, 90, "finished")
    assert after.status == S.SUCCEEDED, after.error_message
    assert numbered_lines(after) == ["after the restart"]
    print(
        f"\ndocker restart: daemon down and up again in {restart_seconds:.1f} s; run ended "
        f"{run.status}/{run.end_reason} with {len(printed)} lines kept"
    )
