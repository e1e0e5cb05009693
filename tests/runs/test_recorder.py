import threading
import time

import pytest
from django.db import transaction

from apps.agents import events as ev
from apps.runs import services
from apps.runs.exceptions import LeaseLost
from apps.runs.models import Run, RunEvent
from apps.runs.recorder import MAX_LINE_CHARS, NewEvent, RunRecorder, append_events
from apps.runs.selectors import log_lines

S = Run.Status


@pytest.fixture
def run(project, alice):
    run = services.start_run(project=project, user=alice, task="echo", overrides={})
    return services.claim_run(run_id=run.pk, lease_owner="w1")


def recorder_for(run, **kwargs):
    kwargs.setdefault("log_limit_bytes", 10 * 1024 * 1024)
    return RunRecorder(run, lease_owner="w1", **kwargs)


def texts(run):
    return [line.text for line in log_lines(run=run, first=1, last=10**9)]


def seqs(run):
    return list(RunEvent.objects.filter(run=run).order_by("seq").values_list("seq", flat=True))


def test_append_events_numbers_from_last_seq_and_checks_the_lease(run):
    with transaction.atomic():
        upto = append_events(run.pk, [NewEvent("a", time.time()), NewEvent("b", time.time())])
    assert upto == run.last_seq + 2
    assert seqs(run) == list(range(1, upto + 1))
    with pytest.raises(LeaseLost), transaction.atomic():
        append_events(run.pk, [NewEvent("c", time.time())], lease_owner="intruder")
    assert seqs(run)[-1] == upto


def test_log_chunks_become_numbered_whole_lines_per_stream(run):
    recorder = recorder_for(run)
    recorder.record(ev.LogOutput(stream="stdout", text="hel"))
    recorder.record(ev.LogOutput(stream="stderr", text="warn: x\n"))
    recorder.record(ev.LogOutput(stream="stdout", text="lo\nwor"))
    recorder.record(ev.LogOutput(stream="stdout", text="ld\n\x1b[31mred\x1b[0m\nnul\x00byte\n"))
    recorder.close()
    assert texts(run) == ["warn: x", "hello", "world", "\x1b[31mred\x1b[0m", "nulbyte"]
    lines = log_lines(run=run, first=1, last=10)
    assert [line.stream for line in lines] == ["stderr", "stdout", "stdout", "stdout", "stdout"]
    run.refresh_from_db()
    assert run.log_lines == 5
    assert run.log_bytes == sum(len(t.encode()) + 1 for t in texts(run))


def test_a_line_without_newline_is_kept_at_close_and_long_lines_are_split(run):
    recorder = recorder_for(run)
    recorder.record(ev.LogOutput(stream="stdout", text="x" * (MAX_LINE_CHARS * 2 + 5)))
    recorder.record(ev.LogOutput(stream="stdout", text="Password: "))
    recorder.close()
    assert [len(t) for t in texts(run)] == [MAX_LINE_CHARS, MAX_LINE_CHARS, 5 + len("Password: ")]


@pytest.mark.django_db(transaction=True)  # the flusher thread writes on its own connection
def test_a_line_shown_early_is_ended_by_its_late_newline_not_followed_by_an_empty_one(
    run, monkeypatch
):
    """Programs that write a line and its newline separately (print(..., end="") then
    print()) on a starved host: the line is shown after PARTIAL_LINE_AFTER, and the newline
    that follows must end it rather than store an empty line after it."""
    monkeypatch.setattr("apps.runs.recorder.PARTIAL_LINE_AFTER", 0.05)
    recorder = recorder_for(run)
    recorder.start()
    recorder.record(ev.LogOutput(stream="stdout", text="fact gateway null"))
    deadline = time.monotonic() + 10
    while not texts(run) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert texts(run) == ["fact gateway null"]  # shown before its newline came
    recorder.record(ev.LogOutput(stream="stdout", text="\n"))
    recorder.record(ev.LogOutput(stream="stdout", text="fact address []\n\n"))
    recorder.close()
    assert texts(run) == ["fact gateway null", "fact address []", ""]


def test_a_new_command_ends_the_previous_commands_unfinished_line(run):
    recorder = recorder_for(run)
    recorder.record(ev.LogOutput(stream="stdout", text="no newline", command_index=0))
    recorder.record(ev.LogOutput(stream="stdout", text="second\n", command_index=1))
    recorder.close()
    assert texts(run) == ["no newline", "second"]
    data = list(RunEvent.objects.filter(run=run, type="log").values_list("data", flat=True))
    assert [d["command_index"] for d in data] == [0, 1]


def test_events_get_gap_free_seqs_in_the_order_recorded(run):
    recorder = recorder_for(run)
    recorder.record(ev.CommandStarted(index=0, command="make"))
    recorder.record(ev.LogOutput(stream="stdout", text="building\n", command_index=0))
    recorder.record(ev.CommandFinished(index=0, command="make", exit_code=2, duration_ms=5.0))
    recorder.close()
    rows = list(RunEvent.objects.filter(run=run).order_by("seq").values_list("seq", "type"))
    assert [t for _, t in rows] == [
        "status",
        "status",
        "command_started",
        "log",
        "command_finished",
    ]
    assert [s for s, _ in rows] == [1, 2, 3, 4, 5]
    run.refresh_from_db()
    assert run.last_seq == 5 and run.exit_code == 2


def test_streamed_text_is_merged_and_totals_follow_the_events(run):
    recorder = recorder_for(run)
    recorder.record(ev.TurnStarted(turn=1, model="m"))
    for piece in ("Hel", "lo", " there"):
        recorder.record(ev.TextDelta(turn=1, text=piece))
    total = {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_tokens": 1,
        "cache_write_tokens": 2,
        "cost_usd": 0.0123,
    }
    recorder.record(ev.UsageUpdate(turn=1, delta=total, total=total))
    recorder.record_event("stats", {"memory_mb": 42.5, "cpu": 3})
    recorder.record_event("stats", {"memory_mb": 12.0, "cpu": 1})
    recorder.record(ev.StatusChanged(status="capturing"))
    recorder.close()
    deltas = RunEvent.objects.filter(run=run, type="text_delta")
    assert [e.data["text"] for e in deltas] == ["Hello there"]
    assert RunEvent.objects.filter(run=run, type="phase").count() == 1
    run.refresh_from_db()
    assert (run.turns, run.total_tokens, float(run.cost_usd)) == (1, 18, 0.0123)
    assert run.peak_memory_mb == 42.5


def test_log_cap_keeps_the_head_marks_once_counts_the_rest_and_kills_past_the_hard_cap(run):
    fired = []
    recorder = recorder_for(run, log_limit_bytes=1000, hard_limit_bytes=5000, on_limit=fired.append)
    line = "y" * 99 + "\n"  # 100 bytes a line
    for _ in range(30):
        recorder.record(ev.LogOutput(stream="stdout", text=line * 3))
    recorder.close()
    assert texts(run) == ["y" * 99] * 10
    markers = RunEvent.objects.filter(run=run, type="log_truncated")
    assert markers.count() == 1 and markers[0].data["limit_bytes"] == 1000
    run.refresh_from_db()
    assert (run.log_bytes, run.log_dropped_bytes) == (1000, 8000)
    assert fired == ["output_limit"]  # once, when output passed 5000 bytes


def test_event_data_is_bounded_and_free_of_nul(run):
    recorder = recorder_for(run)
    recorder.record(
        ev.ToolCall(turn=1, tool_use_id="t", tool="Write", input={"content": "a\x00" * 100_000})
    )
    recorder.close()
    content = RunEvent.objects.get(run=run, type="tool_call").data["input"]["content"]
    assert "\x00" not in content and len(content) < 70_000 and "not stored" in content


def test_a_recorder_whose_lease_was_taken_stops_and_says_so(run):
    fired = []
    recorder = recorder_for(run, on_limit=fired.append)
    Run.objects.filter(pk=run.pk).update(lease_owner="another-worker")
    recorder.record(ev.LogOutput(stream="stdout", text="late\n"))
    recorder.close()
    assert recorder.lost and fired == ["lease_lost"]
    assert not RunEvent.objects.filter(run=run, type="log").exists()


@pytest.mark.django_db(transaction=True)
def test_flusher_thread_and_concurrent_transitions_never_reuse_a_seq(alice):
    from tests.projects.factories import make_project

    project = make_project(alice)
    run = services.start_run(project=project, user=alice, task="echo", overrides={})
    run = services.claim_run(run_id=run.pk, lease_owner="w1")
    recorder = recorder_for(run, flush_interval=0.01).start()

    def writer(stream: str) -> None:
        for i in range(400):
            recorder.record(ev.LogOutput(stream=stream, text=f"{stream} {i}\n"))

    threads = [threading.Thread(target=writer, args=(s,)) for s in ("stdout", "stderr")]
    for thread in threads:
        thread.start()
    services.transition(run, to=S.RUNNING, lease_owner="w1")
    for thread in threads:
        thread.join()
    recorder.close()
    numbers = seqs(run)
    assert numbers == list(range(1, len(numbers) + 1))
    lines = log_lines(run=run, first=1, last=10**6)
    assert [line.number for line in lines] == list(range(1, 801))
    assert sorted(line.text for line in lines) == sorted(
        f"{s} {i}" for s in ("stdout", "stderr") for i in range(400)
    )
    run.refresh_from_db()
    assert run.last_seq == numbers[-1] and run.status == S.RUNNING
