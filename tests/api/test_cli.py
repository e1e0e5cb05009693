"""The command-line client: its display and exit codes against a scripted server, then a real
script run end to end (daphne + a Celery worker + Docker), the way a CI job would use it."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxweb import cli
from tests.api.conftest import make_token
from tests.conftest import REPO_ROOT, child_environment
from tests.projects.factories import make_project, make_user

# -- against a scripted server -------------------------------------------------------------------


class ScriptedClient(cli.Client):
    """Answers from a list of (method, path) -> response; records what was asked."""

    def __init__(self, answers: dict[tuple[str, str], list]):
        super().__init__(base_url="http://sandboxweb.test", token="sbx_x", sleep=lambda s: None)
        self.answers = answers
        self.calls: list[tuple[str, str, dict]] = []

    def request(self, method, path, body=None, **params):
        self.calls.append((method, path, body or params))
        answer = self.answers[(method, path)].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def event(seq, kind, **data):
    return {"seq": seq, "type": kind, "ts": 0.0, "data": data}


def page(events, *, status, finished, last_seq=None, after=0):
    next_after = events[-1]["seq"] if events else after
    return {
        "events": events,
        "next_after": next_after,
        "last_seq": last_seq or next_after,
        "status": status,
        "finished": finished,
    }


def final_run(status, **extra):
    return {
        "id": 7,
        "status": status,
        "end_reason": extra.pop("end_reason", status),
        "error_message": extra.pop("error_message", ""),
        "usage": {"total_tokens": 1500, "cost_usd": "0.0123"},
        "links": {"web": "/runs/7/"},
        **extra,
    }


def test_follow_prints_log_lines_and_a_progress_line_per_change():
    client = ScriptedClient(
        {
            ("GET", "/runs/7/events"): [
                page([event(1, "status", status="queued")], status="queued", finished=False),
                page([], status="queued", finished=False, last_seq=1, after=1),
                page(
                    [
                        event(2, "status", status="running", message="Sandbox up"),
                        event(3, "command_started", command="make test", index=0),
                        event(4, "log", stream="stdout", line=1, text="ok 1\nok 2"),
                        event(5, "usage", total={"input_tokens": 1000, "output_tokens": 500}),
                        event(6, "status", status="succeeded"),
                    ],
                    status="succeeded",
                    finished=True,
                ),
            ],
            ("GET", "/runs/7"): [final_run("succeeded", end_reason="completed")],
        }
    )
    out, err = io.StringIO(), io.StringIO()
    run = cli.follow(client, 7, out=out, err=err, live=False)
    assert run["status"] == "succeeded"
    assert out.getvalue() == "$ make test\nok 1\nok 2\n"
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("[run #7 · queued · 00:00")
    assert any("succeeded" in line and "1.5k tokens $0.0123" in line for line in lines)
    assert lines[-1] == "run #7 succeeded"
    assert [params["after"] for _, path, params in client.calls if path.endswith("events")] == [
        0,
        1,
        1,
    ]


def test_on_a_terminal_the_progress_line_is_redrawn_in_place():
    client = ScriptedClient(
        {
            ("GET", "/runs/7/events"): [
                page([event(1, "log", text="hello")], status="failed", finished=True)
            ],
            ("GET", "/runs/7"): [final_run("failed", error_message="command 1 exited 3")],
        }
    )
    out, err = io.StringIO(), io.StringIO()
    cli.follow(client, 7, out=out, err=err, live=True)
    assert out.getvalue() == "hello\n"
    assert "\r\x1b[2Krun #7 · failed" in err.getvalue()
    assert err.getvalue().endswith("run #7 failed: command 1 exited 3\n")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("succeeded", 0),
        ("failed", 1),
        ("timed_out", 3),
        ("oom", 4),
        ("cancelled", 5),
        ("crashed", 6),
        ("error", 7),
    ],
)
def test_exit_codes_follow_the_runs_status(monkeypatch, status, code):
    answers = {
        ("POST", "/runs"): [{"id": 7, "links": {"web": "/runs/7/"}}],
        ("GET", "/runs/7/events"): [page([], status=status, finished=True)],
        ("GET", "/runs/7"): [final_run(status)],
    }
    monkeypatch.setattr(cli, "Client", lambda **kwargs: ScriptedClient(answers))
    argv = ["--url", "http://x", "--token", "t", "launch", "--project", "3", "--command", "true"]
    assert cli.main(argv, out=io.StringIO(), err=io.StringIO()) == code


def test_api_refusals_and_unreachable_servers_have_their_own_codes(monkeypatch):
    for error, code in (
        (cli.ApiError(403, "missing_scope", "This token lacks the runs:write scope."), 10),
        (cli.Unreachable("cannot reach http://x"), 11),
    ):
        answers = {("POST", "/runs"): [error]}
        monkeypatch.setattr(cli, "Client", lambda answers=answers, **kw: ScriptedClient(answers))
        err = io.StringIO()
        argv = ["--url", "http://x", "--token", "t", "launch", "--project", "3", "--task", "go"]
        assert cli.main(argv, out=io.StringIO(), err=err) == code
        assert "error:" in err.getvalue()


def test_url_and_token_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("SANDBOXWEB_URL", raising=False)
    monkeypatch.delenv("SANDBOXWEB_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.main(["cancel", "7"], err=io.StringIO())
    assert exited.value.code == 2
    monkeypatch.setenv("SANDBOXWEB_URL", "http://from-env")
    monkeypatch.setenv("SANDBOXWEB_TOKEN", "sbx_env")
    seen = {}

    def fake_client(**kwargs):
        seen.update(kwargs)
        return ScriptedClient({("POST", "/runs/7/cancel"): [{"id": 7, "status": "cancelled"}]})

    monkeypatch.setattr(cli, "Client", fake_client)
    assert cli.main(["cancel", "7"], err=io.StringIO()) == 0
    assert seen == {"base_url": "http://from-env", "token": "sbx_env"}


def test_overrides_are_parsed_as_json_when_they_can_be():
    assert cli._parse_override("memory_mb=512") == ("memory_mb", 512)
    assert cli._parse_override("image=python:3.12") == ("image", "python:3.12")
    with pytest.raises(Exception, match="NAME=VALUE"):
        cli._parse_override("memory_mb")


# -- end to end ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cli_worker(django_db_setup, django_db_blocker, redis_server, docker_engine, tmp_path_factory):
    from tests.runs.workers import runs_worker

    with (
        django_db_blocker.unblock(),
        # Script runs never call the model API; nothing listens there.
        runs_worker(
            tmp_path_factory.mktemp("cli-worker"), anthropic_url="http://127.0.0.1:9"
        ) as process,
    ):
        yield process


@pytest.fixture(scope="module")
def server_url(cli_worker, django_db_blocker, tmp_path_factory) -> Iterator[str]:
    """daphne serving the app on a free port, enqueueing onto the test worker's queue."""
    port = free_port()
    log_path = Path(tmp_path_factory.mktemp("daphne")) / "daphne.log"
    with django_db_blocker.unblock():
        environment = child_environment(CELERY_QUEUE=cli_worker.queue)
    with log_path.open("wb") as handle:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "sandboxweb.asgi:application",
            ],
            cwd=REPO_ROOT,
            env=environment,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        # Generous: on a loaded 2-core CI host starting Django and building the schema has
        # taken 30 s; this bounds a hang, it does not measure anything.
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"daphne exited:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/v1/openapi.json", timeout=2):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def run_cli(url: str, token: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {**os.environ, "SANDBOXWEB_URL": url, "SANDBOXWEB_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "sandboxweb.cli", "--poll", "0.3", *args],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.docker
@pytest.mark.slow
def test_the_cli_launches_a_real_run_follows_it_and_exits_with_its_status(server_url):
    from apps.runs.models import Run

    user = make_user()
    project = make_project(user, name="CLI", memory_mb=256)
    token = make_token(user, ["runs:write"])

    passed = run_cli(
        server_url,
        token,
        "launch",
        "--project",
        str(project.pk),
        "--command",
        "for i in 1 2 3; do echo line-$i; done",
        "--command",
        "echo to-stderr >&2",
        "--set",
        "timeout_seconds=60",
    )
    assert passed.returncode == 0, passed.stderr
    assert "line-1\nline-2\nline-3\n" in passed.stdout and "to-stderr" in passed.stdout
    run = Run.objects.get(project=project)
    assert run.status == "succeeded" and run.config["timeout_seconds"] == 60
    assert f"run #{run.pk} launched: {server_url}/runs/{run.pk}/" in passed.stderr
    # The progress line (not a terminal). Which transient states it catches depends on timing:
    # a quick run can go from provisioning to succeeded between two polls.
    assert f"[run #{run.pk} · " in passed.stderr
    assert passed.stderr.rstrip().endswith(f"run #{run.pk} succeeded")

    failed = run_cli(
        server_url, token, "launch", "--project", str(project.pk), "--command", "exit 3"
    )
    assert failed.returncode == 1, failed.stderr
    assert "failed" in failed.stderr.splitlines()[-1]

    again = run_cli(server_url, token, "follow", str(run.pk))
    assert again.returncode == 0 and "line-3" in again.stdout

    reader = run_cli(
        server_url, make_token(user, ["runs:read"]), "launch", "--project", str(project.pk)
    )
    assert reader.returncode == 10 and "runs:write" in reader.stderr


@pytest.mark.django_db(transaction=True)
@pytest.mark.docker
@pytest.mark.slow
def test_the_cli_waits_for_the_reviewers_verdict_after_a_real_run(server_url):
    from apps.reviews.services import set_verdict
    from apps.runs.models import Run

    user = make_user()
    project = make_project(user, name="Reviewed", memory_mb=256)
    token = make_token(user, ["runs:write", "reviews:read"])
    environment = {**os.environ, "SANDBOXWEB_URL": server_url, "SANDBOXWEB_TOKEN": token}
    argv = ["launch", "--project", str(project.pk), "--command", "echo reviewed", "--wait-verdict"]
    process = subprocess.Popen(
        [sys.executable, "-m", "sandboxweb.cli", "--poll", "0.3", *argv],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not Run.objects.filter(project=project, status="succeeded").exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.3)
        time.sleep(1)  # the client is now polling the review
        assert process.poll() is None
        set_verdict(run=Run.objects.get(project=project), user=user, verdict="rejected")
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 21, err
    assert "reviewed" in out and "waiting for a reviewer's verdict" in err
    assert f"rejected by {user.username}" in err


@pytest.mark.parametrize(
    ("verdict", "code"), [("approved", 0), ("needs_work", 20), ("rejected", 21)]
)
def test_a_ci_job_can_wait_for_the_reviewers_verdict(monkeypatch, verdict, code):
    pending = {"verdict": "", "verdict_by": None, "verdict_note": ""}
    given = {"verdict": verdict, "verdict_by": "rita", "verdict_note": "see comments"}
    answers = {
        ("POST", "/runs"): [{"id": 7, "links": {"web": "/runs/7/"}}],
        ("GET", "/runs/7/events"): [page([], status="succeeded", finished=True)],
        ("GET", "/runs/7"): [final_run("succeeded")],
        ("GET", "/runs/7/review"): [pending, pending, given],
    }
    client = ScriptedClient(answers)
    monkeypatch.setattr(cli, "Client", lambda **kwargs: client)
    err = io.StringIO()
    argv = ["--url", "http://x", "--token", "t", "launch", "--project", "3", "--task", "go"]
    assert cli.main([*argv, "--wait-verdict"], out=io.StringIO(), err=err) == code
    assert f"run #7 {verdict} by rita: see comments" in err.getvalue()
    assert answers[("GET", "/runs/7/review")] == []


def test_waiting_for_a_verdict_can_time_out(monkeypatch):
    pending = {"verdict": "", "verdict_by": None, "verdict_note": ""}
    answers = {
        ("POST", "/runs"): [{"id": 7, "links": {"web": "/runs/7/"}}],
        ("GET", "/runs/7/events"): [page([], status="succeeded", finished=True)],
        ("GET", "/runs/7"): [final_run("succeeded")],
        ("GET", "/runs/7/review"): [pending],
    }
    monkeypatch.setattr(cli, "Client", lambda **kwargs: ScriptedClient(answers))
    argv = ["--url", "http://x", "--token", "t", "launch", "--project", "3", "--task", "go"]
    argv += ["--wait-verdict", "--verdict-timeout", "0"]
    assert cli.main(argv, out=io.StringIO(), err=io.StringIO()) == 22


def test_a_failed_run_does_not_wait_for_a_verdict(monkeypatch):
    answers = {
        ("POST", "/runs"): [{"id": 7, "links": {"web": "/runs/7/"}}],
        ("GET", "/runs/7/events"): [page([], status="failed", finished=True)],
        ("GET", "/runs/7"): [final_run("failed")],
    }
    monkeypatch.setattr(cli, "Client", lambda **kwargs: ScriptedClient(answers))
    argv = ["--url", "http://x", "--token", "t", "launch", "--project", "3", "--task", "go"]
    assert cli.main([*argv, "--wait-verdict"], out=io.StringIO(), err=io.StringIO()) == 1
