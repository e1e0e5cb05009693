"""execute_run in a real Celery worker process, against Redis, Docker and the loopback model API."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from apps.runs import execution, services
from apps.runs.models import Run, RunEvent
from apps.runs.selectors import log_lines
from apps.runs.tasks import execute_run_task
from tests.projects.factories import make_project, make_user
from tests.runs.workers import leftover_sandboxes
from tests.support.anthropic_server import Reply, text, tool_use

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker, pytest.mark.slow]
S = Run.Status


def wait_for(run_id: int, condition, timeout: float = 60, what: str = "") -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = Run.objects.get(pk=run_id)
        if condition(run):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not become {what or condition}: {run.status}")


def wait_done(run_id: int, timeout: float = 90) -> Run:
    return wait_for(run_id, lambda r: r.is_terminal, timeout, "terminal")


def launch(project, user, task, **overrides) -> Run:
    return services.start_run(project=project, user=user, task=task, overrides=overrides)


def assert_gap_free(run: Run) -> list[str]:
    rows = list(RunEvent.objects.filter(run=run).order_by("seq").values_list("seq", "type"))
    assert [seq for seq, _ in rows] == list(range(1, run.last_seq + 1))
    return [kind for _, kind in rows]


def test_a_script_run_streams_lines_files_samples_and_artifacts(worker):
    user = make_user()
    project = make_project(user, capture_patterns=["out/**"], memory_mb=256)
    commands = "\n".join(
        [
            r"for i in $(seq 1 3000); do printf '\033[3%dmline %d\033[0m\n' $((i%7+1)) $i; done",
            "echo to-stderr >&2; mkdir -p out/sub && echo report > out/report.txt",
            "echo nested > out/sub/n.txt && sleep 2 && echo done",
        ]
    )
    run = wait_done(launch(project, user, commands).pk)
    assert (run.status, run.end_reason, run.exit_code) == (S.SUCCEEDED, "completed", 0)
    lines = log_lines(run=run, first=1, last=10**6)
    assert [line.number for line in lines] == list(range(1, 3003))
    assert lines[0].text == "\x1b[32mline 1\x1b[0m" and lines[2999].plain == "line 3000"
    assert [line.text for line in lines if line.stream == "stderr"] == ["to-stderr"]
    kinds = Counter(assert_gap_free(run))
    assert kinds["command_started"] == kinds["command_finished"] == 3
    assert kinds["stats"] >= 2 and kinds["files"] >= 1 and kinds["run_finished"] == 1
    statuses = list(
        RunEvent.objects.filter(run=run, type="status").values_list("data__status", flat=True)
    )
    assert statuses == ["queued", "provisioning", "running", "succeeded"]
    final = RunEvent.objects.filter(run=run, type="files").order_by("-seq").first().data
    assert final["final"] and ["out/sub/n.txt", 7, False] in final["entries"]
    assert sorted(run.artifacts.values_list("path", flat=True)) == [
        "out/report.txt",
        "out/sub/n.txt",
    ]
    assert bytes(run.artifacts.get(path="out/report.txt").content) == b"report\n"
    assert run.peak_memory_mb and run.log_lines == 3002 and run.duration_ms >= 2000
    assert run.sandbox_id == execution.sandbox_id_for(run.pk, 1) and run.lease_owner == ""
    assert leftover_sandboxes(worker.owner) == []


def test_faults_end_with_their_typed_reason_and_keep_the_log(worker):
    user = make_user()
    missing = make_project(user, image="sandboxweb/does-not-exist:1")
    small = make_project(user, memory_mb=64, log_limit_mb=1, timeout_seconds=10)
    runs = {
        "image": launch(missing, user, "echo never"),
        "oom": launch(
            small,
            user,
            "echo before-oom && python3 -c \"x = bytearray(300 * 1024 * 1024); print('survived')\"",
        ),
        "yes": launch(small, user, "yes 'all work and no play makes jack a dull boy'"),
        "exit": launch(small, user, "echo failing && exit 3\necho never-runs"),
        "timeout": launch(small, user, "echo waiting && sleep 60"),
    }
    started = time.monotonic()
    done = {name: wait_done(run.pk, timeout=120) for name, run in runs.items()}

    image = done["image"]
    assert (image.status, image.end_reason) == (S.ERROR, "image_not_found")
    assert image.error_message.startswith("image sandboxweb/does-not-exist:1 not found")
    assert (image.finished_at - image.created_at).total_seconds() < 30

    oom = done["oom"]
    assert (oom.status, oom.end_reason) == (S.OOM, "oom")
    assert log_lines(run=oom, first=1, last=1)[0].text == "before-oom"

    yes = done["yes"]
    assert (yes.status, yes.end_reason) == (S.FAILED, "output_limit")
    assert yes.log_bytes <= 1024 * 1024 and yes.log_dropped_bytes > 0
    assert RunEvent.objects.filter(run=yes, type="log_truncated").count() == 1
    assert "the sandbox was killed" in yes.error_message

    failing = done["exit"]
    assert (failing.status, failing.end_reason, failing.exit_code) == (S.FAILED, "exit_code", 3)
    assert "never-runs" not in "".join(
        line.text for line in log_lines(run=failing, first=1, last=99)
    )

    timeout = done["timeout"]
    assert (timeout.status, timeout.end_reason) == (S.TIMED_OUT, "timeout")
    assert log_lines(run=timeout, first=1, last=1)[0].text == "waiting"
    for run in done.values():
        assert_gap_free(run)
    assert time.monotonic() - started < 100
    assert leftover_sandboxes(worker.owner) == []
    # The flood went through a bounded recorder: the worker's children stay small.
    assert max(peak_rss_mb(pid) for pid in children(worker.process.pid)) < 400


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found or [pid]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_cancel_stops_the_sandbox_within_seconds(worker):
    user = make_user()
    project = make_project(user)
    run = launch(project, user, "echo started && sleep 300")
    wait_for(run.pk, lambda r: r.status == S.RUNNING and r.log_lines >= 1, 60, "running")
    requested = time.monotonic()
    services.cancel_run(run=Run.objects.get(pk=run.pk), user=user)
    run = wait_done(run.pk, timeout=30)
    assert run.status == S.CANCELLED and run.end_reason == "cancelled"
    assert time.monotonic() - requested < 10
    statuses = list(
        RunEvent.objects.filter(run=run, type="status").values_list("data__status", flat=True)
    )
    assert statuses[-2:] == ["cancelling", "cancelled"]
    assert leftover_sandboxes(worker.owner) == []


def test_duplicate_deliveries_start_one_sandbox_and_write_each_event_once(worker):
    user = make_user()
    project = make_project(user)
    run = launch(project, user, "for i in $(seq 1 200); do echo $i; done; sleep 1")
    for _ in range(3):
        execute_run_task.apply_async(args=[run.pk])
    run = wait_done(run.pk)
    time.sleep(1)  # let the duplicates reach the worker and give up
    run.refresh_from_db()
    assert run.status == S.SUCCEEDED and run.attempt == 1
    kinds = Counter(assert_gap_free(run))
    assert kinds["command_started"] == 1 and kinds["run_finished"] == 1
    assert [line.text for line in log_lines(run=run, first=1, last=999)] == [
        str(i) for i in range(1, 201)
    ]


def test_an_agent_run_through_the_loopback_model_api(worker, anthropic_server):
    user = make_user()
    project = make_project(
        user,
        default_kind="agent",
        system_prompt="You are a test agent.",
        model="claude-sonnet-5-5",
        capture_patterns=["out/**"],
        max_turns=5,
    )
    anthropic_server.set_script(
        [
            Reply(
                [
                    text("Let me look."),
                    tool_use("Bash", {"command": "echo hi > note.txt && cat note.txt"}),
                ]
            ),
            Reply([tool_use("Write", {"file_path": "out/answer.md", "content": "# Done\n"})]),
            Reply([text("All done: wrote out/answer.md.")]),
        ]
    )
    run = wait_done(launch(project, user, "Write an answer file.").pk)
    assert (run.status, run.end_reason) == (S.SUCCEEDED, "end_turn"), run.error_message
    kinds = Counter(assert_gap_free(run))
    assert kinds["turn_started"] == 3 and kinds["tool_call"] == 2 and kinds["tool_result"] == 2
    assert kinds["assistant_message"] == 3 and kinds["usage"] == 3 and kinds["file_changed"] == 1
    bash = RunEvent.objects.get(run=run, type="tool_result", data__tool="Bash").data
    assert bash["output"].strip() == "hi" and not bash["is_error"]
    assert [line.text for line in log_lines(run=run, first=1, last=9)] == ["hi"]
    assert run.turns == 3 and run.total_tokens > 0 and run.cost_usd > 0
    assert bytes(run.artifacts.get(path="out/answer.md").content) == b"# Done\n"
    final = RunEvent.objects.filter(run=run, type="files").order_by("-seq").first().data
    assert ["note.txt", 3, False] in final["entries"]
    requests = anthropic_server.message_requests()
    assert requests[0].system_text == "You are a test agent."
    assert "Write an answer file." in str(requests[0].messages[0])


def test_a_sandbox_killed_from_outside_ends_as_crashed_with_its_log(worker):
    import docker

    user = make_user()
    project = make_project(user)
    run = launch(project, user, "echo alive && sleep 120")
    run = wait_for(run.pk, lambda r: r.status == S.RUNNING and r.log_lines >= 1, 60, "running")
    client = docker.from_env()
    try:
        client.containers.get(run.sandbox_id).kill()
    finally:
        client.close()
    run = wait_done(run.pk, timeout=30)
    assert (run.status, run.end_reason) == (S.CRASHED, "crashed"), (
        run.status,
        run.end_reason,
        run.error_message,
    )
    assert log_lines(run=run, first=1, last=1)[0].text == "alive"
    assert leftover_sandboxes(worker.owner) == []
