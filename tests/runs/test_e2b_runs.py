"""Runs on the E2B provider through the web app, end to end.

A real Celery worker whose environment points the e2b SDK at the loopback E2B server
(``E2B_API_URL``/``E2B_SANDBOX_URL``, ``NO_PROXY``), with an instance-wide ``E2B_API_KEY``;
projects choose ``provider="e2b"``. Runs must stream exactly like Docker runs: the same events,
log lines, samples, file trees and artifacts.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from apps.runs import execution
from apps.runs.models import Run, RunEvent
from apps.runs.selectors import log_lines
from tests.projects.factories import make_project, make_user
from tests.runs.test_tasks import assert_gap_free, launch, wait_done
from tests.runs.workers import leftover_sandboxes, runs_worker
from tests.support.anthropic_server import Reply, text, tool_use
from tests.support.e2b_server import TEST_API_KEY, E2BServer, ensure_no_proxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker, pytest.mark.slow]
S = Run.Status
SERVER_KEY = TEST_API_KEY
PROJECT_KEY = "e2b_" + "2" * 40  # another team's key, kept as that project's secret


@pytest.fixture(scope="module")
def e2b_fake(docker_engine):
    """The loopback E2B server; its Docker containers carry an owner of their own."""
    owner = f"pytest-e2bfake-{uuid.uuid4().hex[:8]}"
    ensure_no_proxy()
    with E2BServer(owner=owner, other_keys=[PROJECT_KEY]) as server:
        yield server
        left = server.live()
    assert not left, f"runs left E2B sandboxes behind: {left}"
    assert leftover_sandboxes(owner) == []


@pytest.fixture(scope="module")
def e2b_worker(
    django_db_setup,
    django_db_blocker,
    redis_server,
    docker_engine,
    anthropic_server,
    e2b_fake,
    tmp_path_factory,
):
    no_proxy = "127.0.0.1,localhost"
    with (
        django_db_blocker.unblock(),
        runs_worker(
            tmp_path_factory.mktemp("e2b-worker"),
            anthropic_url=anthropic_server.base_url,
            E2B_API_KEY=SERVER_KEY,
            E2B_API_URL=e2b_fake.url,
            E2B_SANDBOX_URL=e2b_fake.url,
            NO_PROXY=no_proxy,
            no_proxy=no_proxy,
        ) as process,
    ):
        yield process


@pytest.fixture
def server_key(settings):
    settings.E2B_API_KEY = SERVER_KEY


def create_for(server: E2BServer, run: Run):
    """The control-plane create request that started ``run``'s sandbox."""
    creates = [
        r
        for r in server.calls("POST", r"/v2/sandboxes")
        if isinstance(r.body, dict)
        and (r.body.get("metadata") or {}).get("org.sandboxweb.sandbox-id") == run.sandbox_id
    ]
    assert len(creates) == 1, creates
    return creates[0]


def test_a_script_run_on_e2b_streams_like_a_docker_run(e2b_worker, e2b_fake, server_key):
    user = make_user()
    project = make_project(
        user,
        provider="e2b",
        cpu_cores=1.0,
        capture_patterns=["out/**"],
        env={"GREETING": "${secret:GREETING}"},
        secrets={"GREETING": "hello-secret-123"},
    )
    commands = "\n".join(
        [
            r"for i in $(seq 1 500); do printf '\033[3%dmline %d\033[0m\n' $((i%7+1)) $i; done",
            "echo to-stderr >&2; mkdir -p out/sub && echo report > out/report.txt",
            'echo "$GREETING" > out/sub/g.txt && sleep 2 && echo done',
        ]
    )
    run = wait_done(launch(project, user, commands).pk)
    assert (run.status, run.end_reason, run.exit_code) == (S.SUCCEEDED, "completed", 0), (
        run.error_message
    )
    lines = log_lines(run=run, first=1, last=10**6)
    assert [line.number for line in lines] == list(range(1, 503))
    assert lines[0].text == "\x1b[32mline 1\x1b[0m" and lines[499].plain == "line 500"
    assert [line.text for line in lines if line.stream == "stderr"] == ["to-stderr"]
    kinds = Counter(assert_gap_free(run))
    assert kinds["command_started"] == kinds["command_finished"] == 3
    assert kinds["stats"] >= 2 and kinds["files"] >= 1 and kinds["run_finished"] == 1
    statuses = list(
        RunEvent.objects.filter(run=run, type="status").values_list("data__status", flat=True)
    )
    assert statuses == ["queued", "provisioning", "running", "succeeded"]
    sample = RunEvent.objects.filter(run=run, type="stats").order_by("-seq").first().data
    assert sample["memory_limit_mb"] == 256  # the template's size, from E2B's metrics
    final = RunEvent.objects.filter(run=run, type="files").order_by("-seq").first().data
    assert final["final"] and ["out/report.txt", 7, False] in final["entries"]
    assert sorted(run.artifacts.values_list("path", flat=True)) == [
        "out/report.txt",
        "out/sub/g.txt",
    ]
    assert run.sandbox_id == execution.sandbox_id_for(run.pk, 1) and run.lease_owner == ""
    create = create_for(e2b_fake, run)
    assert create.headers["x-api-key"] == SERVER_KEY
    assert create.body["templateID"] == "base" and create.body["allow_internet_access"] is False
    assert "hello-secret-123" not in str(create.body["metadata"])  # E2B publishes metadata
    assert create.body["metadata"]["org.sandboxweb.owner"] == e2b_worker.owner
    assert not [
        sandbox_id
        for sandbox_id, sandbox in list(e2b_fake.sandboxes.items())
        if sandbox.metadata.get("org.sandboxweb.sandbox-id") == run.sandbox_id
    ], "the run's E2B sandbox outlived the run"


def test_an_agent_run_on_e2b_through_the_loopback_model_api(
    e2b_worker, e2b_fake, anthropic_server, server_key
):
    user = make_user()
    project = make_project(
        user,
        provider="e2b",
        cpu_cores=1.0,
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
            Reply([tool_use("Read", {"file_path": "/workspace/out/answer.md"})]),
            Reply([text("All done: wrote out/answer.md.")]),
        ]
    )
    run = wait_done(launch(project, user, "Write an answer file.").pk)
    assert (run.status, run.end_reason) == (S.SUCCEEDED, "end_turn"), run.error_message
    kinds = Counter(assert_gap_free(run))
    assert kinds["turn_started"] == 4 and kinds["tool_call"] == 3 and kinds["tool_result"] == 3
    assert kinds["file_changed"] == 1
    bash = RunEvent.objects.get(run=run, type="tool_result", data__tool="Bash").data
    assert bash["output"].strip() == "hi" and not bash["is_error"]
    read = RunEvent.objects.get(run=run, type="tool_result", data__tool="Read").data
    assert "# Done" in read["output"] and not read["is_error"]
    assert bytes(run.artifacts.get(path="out/answer.md").content) == b"# Done\n"
    final = RunEvent.objects.filter(run=run, type="files").order_by("-seq").first().data
    assert ["note.txt", 3, False] in final["entries"]
    assert create_for(e2b_fake, run).headers["x-api-key"] == SERVER_KEY


def test_a_projects_own_e2b_key_is_used_for_its_runs(e2b_worker, e2b_fake, settings):
    settings.E2B_API_KEY = None  # the project must stand on its own key
    user = make_user()
    project = make_project(
        user, provider="e2b", cpu_cores=1.0, secrets={"E2B_API_KEY": PROJECT_KEY}
    )
    run = wait_done(launch(project, user, "echo with-my-own-key").pk)
    assert run.status == S.SUCCEEDED, run.error_message
    assert create_for(e2b_fake, run).headers["x-api-key"] == PROJECT_KEY
    assert [line.text for line in log_lines(run=run, first=1, last=10)] == ["with-my-own-key"]


def test_a_limit_e2b_cannot_enforce_ends_the_run_with_the_reason(e2b_worker, e2b_fake, server_key):
    user = make_user()
    project = make_project(user, provider="e2b", cpu_cores=1.0, memory_mb=128)
    run = wait_done(launch(project, user, "echo never").pk)
    assert run.status in (S.ERROR, S.FAILED, S.CRASHED)
    assert "memory_mb=128" in run.error_message and "template" in run.error_message
    assert not log_lines(run=run, first=1, last=10)


def test_the_sweeper_reaps_e2b_sandboxes_of_dead_runs(e2b_fake, monkeypatch, settings):
    """In-process: the worker's sweep lists E2B sandboxes by metadata and kills those whose
    run is unknown, and leaves sandboxes that serve no run alone."""
    from apps.runs import execution
    from apps.sandboxes import ResourceLimits, SandboxConfig, SandboxManager
    from tests.support.e2b_server import loopback_options

    owner = f"pytest-e2b-sweep-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SANDBOX_OWNER", owner)
    monkeypatch.setenv("E2B_API_URL", e2b_fake.url)  # how a worker is pointed at an endpoint
    monkeypatch.setenv("E2B_SANDBOX_URL", e2b_fake.url)
    settings.E2B_API_KEY = SERVER_KEY
    execution.close_manager()
    names = {"dead": execution.sandbox_id_for(987655, 1), "scratch": f"scratch-{owner}"}
    crashed = SandboxManager(
        provider="e2b",
        owner=owner,
        provider_options={"e2b": {"options": loopback_options(e2b_fake)}},
    )
    try:
        for name in names.values():
            crashed.provider("e2b").create(
                SandboxConfig(sandbox_id=name), ResourceLimits(timeout_seconds=120)
            ).start()
        report = execution.sweep()
        assert names["dead"] in report["reaped"] and names["scratch"] not in report["reaped"]
        left = [s.metadata["org.sandboxweb.sandbox-id"] for s in e2b_fake.sandboxes.values()]
        assert names["dead"] not in left and names["scratch"] in left
    finally:
        execution.close_manager()
        with SandboxManager(
            provider="e2b",
            owner=owner,
            provider_options={"e2b": {"options": loopback_options(e2b_fake)}},
        ) as janitor:
            janitor.reap_orphans(is_live=lambda labels: False)
        crashed.close()
