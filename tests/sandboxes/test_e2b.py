"""E2B-specific behaviour, through the real SDK against the loopback server: credentials, E2B's
error answers (401, 404, 429 with and without retry), sandboxes ending on E2B's side, what goes
into E2B metadata, and the limits E2B cannot enforce. The shared contract is test_contract.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from e2b import Sandbox as SDKSandbox
from e2b import SandboxQuery

from apps.sandboxes import (
    E2BOptions,
    ImageNotFound,
    InvalidSandboxConfig,
    NetworkPolicyUnavailable,
    ResourceLimits,
    SandboxConfig,
    SandboxManager,
    SandboxNotFound,
    SandboxRateLimited,
    SandboxState,
    SandboxStateError,
    SandboxTimeout,
    SandboxUnavailable,
    UnsupportedLimit,
)
from apps.sandboxes.common import LABEL_OWNER
from tests.support.e2b_server import Template, loopback_options

from .conftest import make_manager

pytestmark = pytest.mark.docker
REPO_ROOT = Path(__file__).resolve().parents[2]
CREATE = r"/v2/sandboxes"


@pytest.fixture
def e2b_manager(e2b_server, sandbox_owner):
    with make_manager("e2b", sandbox_owner, e2b_server) as manager:
        yield manager


def _creates(server) -> int:
    return len(server.calls("POST", CREATE))


# -- credentials ----------------------------------------------------------------------------


def test_no_key_fails_before_any_request_and_names_the_variable(
    e2b_server, sandbox_owner, monkeypatch
):
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    before = _creates(e2b_server)
    options = loopback_options(e2b_server, api_key=None)
    with (
        SandboxManager(provider="e2b", owner=sandbox_owner) as manager,
        pytest.raises(SandboxUnavailable, match="E2B_API_KEY"),
    ):
        manager.create_sandbox(SandboxConfig(e2b=options))
    assert _creates(e2b_server) == before


def test_the_key_may_come_from_the_environment(e2b_server, sandbox_owner, monkeypatch):
    monkeypatch.setenv("E2B_API_KEY", e2b_server.api_key)
    options = loopback_options(e2b_server, api_key=None)
    with (
        SandboxManager(provider="e2b", owner=sandbox_owner) as manager,
        manager.create_sandbox(SandboxConfig(e2b=options)) as box,
    ):
        assert box.execute("true").exit_code == 0


def test_a_bad_key_is_401_and_an_actionable_error(e2b_server, sandbox_owner):
    options = loopback_options(e2b_server, api_key="e2b_" + "f" * 40)
    before = _creates(e2b_server)
    with SandboxManager(provider="e2b", owner=sandbox_owner) as manager:
        with pytest.raises(SandboxUnavailable, match="E2B_API_KEY") as info:
            manager.create_sandbox(SandboxConfig(e2b=options))
        assert "credentials" in str(info.value)
        assert not manager.list_sandboxes()
    assert _creates(e2b_server) == before + 1  # 401 is never retried


def test_an_unreachable_api_is_sandbox_unavailable(sandbox_owner):
    dead = E2BOptions(
        api_key="e2b_" + "0" * 40, api_url="http://127.0.0.1:9", sandbox_url="http://127.0.0.1:9"
    )
    with (
        SandboxManager(provider="e2b", owner=sandbox_owner) as manager,
        pytest.raises(SandboxUnavailable, match="not reachable"),
    ):
        manager.create_sandbox(SandboxConfig(e2b=dead))


# -- 404 and sandboxes that end on E2B's side -----------------------------------------------


def test_a_sandbox_killed_behind_our_back_is_404_then_not_found(e2b_manager, e2b_server):
    box = e2b_manager.create_sandbox()
    assert SDKSandbox.kill(box.e2b_id, **box._api) is True  # someone else kills it
    with pytest.raises(SandboxNotFound, match="no longer exists"):
        box.get_stats()  # GET /sandboxes/{id}/metrics -> 404
    assert box.state is SandboxState.ERROR and box.end_reason == "crashed"
    with pytest.raises(SandboxStateError):
        box.execute("true")
    box.destroy()  # DELETE -> 404 is fine: destroy is idempotent
    assert e2b_server.calls("DELETE", rf"/sandboxes/{box.e2b_id}")
    with pytest.raises(SandboxNotFound):
        e2b_manager.attach_sandbox(box.id)


def test_commands_on_a_killed_sandbox_say_it_is_gone(e2b_manager, e2b_server):
    box = e2b_manager.create_sandbox()
    e2b_server.kill(box.e2b_id)
    with pytest.raises(SandboxNotFound, match="no longer exists"):
        box.execute("true")  # envd answers 502 "was not found"
    with pytest.raises(SandboxStateError):
        box.read_file("x")
    box.destroy()


def test_a_sandbox_that_expires_mid_run_is_reported_gone(e2b_manager, e2b_server):
    box = e2b_manager.create_sandbox()
    timer = threading.Timer(1.0, e2b_server.expire, args=(box.e2b_id,))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(SandboxNotFound, match="no longer exists"):
            box.execute("sleep", ["30"], timeout=20)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 10
    assert e2b_server.ended[box.e2b_id] == "timeout"
    assert box.end_reason == "crashed" and box.health_check().healthy is False
    box.destroy()


def test_the_deadline_is_enforced_by_e2b_even_without_us(e2b_manager, e2b_server):
    box = e2b_manager.create_sandbox(SandboxConfig(limits=ResourceLimits(timeout_seconds=3)))
    create = e2b_server.calls("POST", CREATE)[-1]
    assert create.body["timeout"] == 3  # the deadline lives on E2B's side
    deadline = time.monotonic() + 10
    while box.e2b_id not in e2b_server.ended and time.monotonic() < deadline:
        time.sleep(0.2)
    assert e2b_server.ended.get(box.e2b_id) == "timeout"
    with pytest.raises(SandboxTimeout):
        box.execute("true")
    assert box.end_reason == "timeout"
    box.destroy()


def test_resume_sets_the_remaining_time_on_e2b(e2b_manager, e2b_server):
    with e2b_manager.create_sandbox() as box:
        box.stop()
        assert e2b_server.sandboxes[box.e2b_id].state == "paused"
        box.start()
        assert e2b_server.calls("POST", rf"/sandboxes/{box.e2b_id}/timeout")
        end_at = e2b_server.sandboxes[box.e2b_id].end_at
        assert abs(end_at - box.deadline) <= 1.5


# -- 429 ------------------------------------------------------------------------------------


def test_429_with_retry_after_is_retried_by_the_sdk(e2b_manager, e2b_server):
    before = _creates(e2b_server)
    e2b_server.fail("POST", CREATE, 429, headers={"Retry-After": "1"})
    started = time.monotonic()
    with e2b_manager.create_sandbox() as box:
        assert box.execute("true").exit_code == 0
    assert time.monotonic() - started >= 1.0  # it waited as told
    assert _creates(e2b_server) == before + 2


def test_429_without_retry_after_backs_off_and_succeeds(e2b_manager, e2b_server):
    before = _creates(e2b_server)
    e2b_server.fail("POST", CREATE, 429, times=2)
    with e2b_manager.create_sandbox() as box:
        assert box.state is SandboxState.RUNNING
    assert _creates(e2b_server) == before + 3


def test_429_that_must_not_be_retried_is_sandbox_rate_limited(e2b_manager, e2b_server):
    before = _creates(e2b_server)
    e2b_server.fail("POST", CREATE, 429, headers={"Should-Retry": "false"})
    with pytest.raises(SandboxRateLimited, match="429") as info:
        e2b_manager.create_sandbox()
    assert isinstance(info.value, SandboxUnavailable)
    assert _creates(e2b_server) == before + 1
    assert not e2b_manager.list_sandboxes()


def test_429_until_the_retries_run_out(e2b_manager, e2b_server):
    e2b_server.fail("POST", CREATE, 429, times=4, headers={"Retry-After": "0"})
    with pytest.raises(SandboxRateLimited, match="try again"):
        e2b_manager.create_sandbox()


# -- commands -------------------------------------------------------------------------------


def test_non_zero_exits_are_results_not_exceptions(e2b_manager):
    with e2b_manager.create_sandbox() as box:
        failed = box.execute("sh", ["-c", "echo partial; echo broken >&2; exit 42"])
        assert (failed.exit_code, failed.stdout, failed.stderr) == (42, "partial\n", "broken\n")
        assert not failed.ok and not failed.timed_out
        missing = box.execute("no-such-program")
        assert missing.exit_code == 127 and "not found" in missing.stderr
        killed = box.execute("sh", ["-c", "kill -TERM $$"])  # envd: -1 "signal: terminated"
        assert killed.exit_code == 143


# -- metadata and secrets -------------------------------------------------------------------


def test_secrets_never_reach_e2b_metadata(e2b_manager, e2b_server, sandbox_owner):
    secret = "s3cret-token-value"
    config = SandboxConfig(env={"API_TOKEN": secret}, labels={"run": "7"})
    with e2b_manager.create_sandbox(config) as box:
        body = e2b_server.calls("POST", CREATE)[-1].body
        assert body["envVars"] == {"API_TOKEN": secret}  # env goes to the sandbox only
        assert secret not in str(body["metadata"]) and e2b_server.api_key not in str(body)
        assert body["metadata"]["run"] == "7"
        paginator = SDKSandbox.list(query=SandboxQuery(metadata={"run": "7"}), **box._api)
        listed = paginator.next_items()
        assert [info.sandbox_id for info in listed] == [box.e2b_id]
        assert secret not in str(listed[0].metadata)
        assert listed[0].metadata[LABEL_OWNER] == sandbox_owner
        assert box.execute("sh", ["-c", 'echo "$API_TOKEN"']).stdout == secret + "\n"
    leaky = SandboxConfig(
        env={"API_TOKEN": secret}, e2b=loopback_options(e2b_server, metadata={"note": secret})
    )
    with pytest.raises(InvalidSandboxConfig, match="never carry secrets"):
        e2b_manager.create_sandbox(leaky)


def test_network_modes_map_to_internet_access(e2b_manager, e2b_server):
    for mode, expected in (("none", False), ("isolated", False), ("bridge", True)):
        with e2b_manager.create_sandbox(SandboxConfig(network_mode=mode)):
            assert e2b_server.calls("POST", CREATE)[-1].body["allow_internet_access"] is expected
    stricter = SandboxConfig(
        network_mode="bridge", e2b=loopback_options(e2b_server, allow_internet_access=False)
    )
    with e2b_manager.create_sandbox(stricter):
        assert e2b_server.calls("POST", CREATE)[-1].body["allow_internet_access"] is False
    looser = SandboxConfig(e2b=loopback_options(e2b_server, allow_internet_access=True))
    with pytest.raises(InvalidSandboxConfig, match="bridge"):
        e2b_manager.create_sandbox(looser)
    with pytest.raises(NetworkPolicyUnavailable):
        e2b_manager.create_sandbox(SandboxConfig(network_mode="isolated", network_group="g"))


# -- limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "match"),
    [
        (ResourceLimits(max_processes=64), "max_processes"),
        (ResourceLimits(timeout_seconds=2 * 86400), "24 h"),
    ],
)
def test_limits_e2b_cannot_enforce_are_refused_before_any_request(
    e2b_manager, e2b_server, limits, match
):
    before = _creates(e2b_server)
    with pytest.raises(UnsupportedLimit, match=match):
        e2b_manager.create_sandbox(SandboxConfig(limits=limits))
    assert _creates(e2b_server) == before


def test_bandwidth_limits_are_refused_unless_there_is_no_network(e2b_manager):
    with pytest.raises(UnsupportedLimit, match="network_mbps"):
        e2b_manager.create_sandbox(
            SandboxConfig(network_mode="bridge", limits=ResourceLimits(network_mbps=5))
        )
    with e2b_manager.create_sandbox(SandboxConfig(limits=ResourceLimits(network_mbps=5))) as box:
        assert box.state is SandboxState.RUNNING  # network "none": trivially met


@pytest.mark.parametrize(
    ("limits", "match"),
    [
        (ResourceLimits(memory_mb=128), "memory_mb=128"),
        (ResourceLimits(cpu_cores=0.5), "cpu_cores=0.5"),
        (ResourceLimits(disk_mb=32), "disk_mb=32"),
    ],
)
def test_limits_below_the_template_are_refused_and_the_sandbox_killed(
    e2b_server, sandbox_owner, limits, match
):
    with SandboxManager(
        provider="e2b",
        owner=sandbox_owner,
        limits=limits,
        provider_options={"e2b": {"options": loopback_options(e2b_server)}},
    ) as manager:
        live_before = set(e2b_server.live())
        with pytest.raises(UnsupportedLimit, match=match):
            manager.create_sandbox()
        assert set(e2b_server.live()) == live_before  # the too-big sandbox was killed
        assert not manager.list_sandboxes()


def test_limits_above_the_template_are_met_and_reported(e2b_server, sandbox_owner):
    limits = ResourceLimits(memory_mb=1024, cpu_cores=2.0, disk_mb=512, timeout_seconds=60)
    with (
        make_manager("e2b", sandbox_owner, e2b_server, limits=limits) as manager,
        manager.create_sandbox() as box,
    ):
        assert any("256 MB" in notice for notice in box.notices), box.notices
        assert any("vCPU" in notice for notice in box.notices), box.notices
        assert box.get_stats().memory_limit_mb == 256  # what it really has


def test_a_bigger_template_is_used_when_asked(e2b_server, sandbox_owner):
    e2b_server.templates["python-large"] = Template(cpu_count=2, memory_mb=512, disk_mb=128)
    limits = ResourceLimits(memory_mb=512, cpu_cores=2.0, disk_mb=128, timeout_seconds=60)
    options = loopback_options(e2b_server, template="python-large")
    with (
        make_manager("e2b", sandbox_owner, e2b_server, limits=limits) as manager,
        manager.create_sandbox(SandboxConfig(e2b=options)) as box,
    ):
        assert not [n for n in box.notices if "memory" in n or "vCPU" in n], box.notices
        assert box.execute("nproc").stdout.strip() == "2"


def test_docker_images_are_not_silently_ignored(e2b_manager):
    with pytest.raises(InvalidSandboxConfig, match="template"):
        e2b_manager.create_sandbox(SandboxConfig(image="python:3.12"))


def test_a_missing_template_is_image_not_found(e2b_manager, e2b_server):
    options = loopback_options(e2b_server, template="nope")
    with pytest.raises(ImageNotFound, match="nope"):
        e2b_manager.create_sandbox(SandboxConfig(e2b=options))


# -- boundaries -----------------------------------------------------------------------------


def test_only_the_sandbox_layer_imports_e2b_and_it_imports_no_django():
    code = (
        "import sys, apps.sandboxes.e2b\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'docker'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)
    for path in (REPO_ROOT / "apps").rglob("*.py"):
        if path.is_relative_to(REPO_ROOT / "apps" / "sandboxes"):
            continue
        source = path.read_text()
        assert "import e2b" not in source and "from e2b" not in source, path
