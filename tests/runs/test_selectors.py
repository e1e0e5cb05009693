from decimal import Decimal

import pytest

from apps.agents import events as ev
from apps.runs import selectors, services
from apps.runs.models import Run
from apps.runs.recorder import MAX_LINES_PER_EVENT, RunRecorder
from tests.projects.factories import make_project


@pytest.fixture
def many_runs(project, alice):
    runs = []
    for i in range(23):
        run = services.start_run(project=project, user=alice, task=f"echo {i}", overrides={})
        # Ties on purpose: the cursor must order by (value, id) to neither skip nor repeat.
        Run.objects.filter(pk=run.pk).update(
            cost_usd=Decimal(i % 4) / 10, duration_ms=1000 * (i % 5), total_tokens=i
        )
        runs.append(run.pk)
    return runs


@pytest.mark.parametrize("sort", ["created", "cost", "duration", "tokens"])
@pytest.mark.parametrize("descending", [True, False])
def test_keyset_pages_cover_every_run_once_in_order_both_ways(alice, many_runs, sort, descending):
    filters = selectors.HistoryFilters(sort=sort, descending=descending)
    field = selectors.SORTS[sort]
    pages, cursor = [], None
    while True:
        page = selectors.list_runs_for_user(user=alice, filters=filters, after=cursor, limit=5)
        pages.append(page)
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    seen = [run.pk for page in pages for run in page.runs]
    assert sorted(seen) == sorted(many_runs) and len(seen) == len(set(seen))
    keys = [(getattr(Run.objects.get(pk=pk), field), pk) for pk in seen]
    assert keys == sorted(keys, reverse=descending)
    assert pages[0].prev_cursor is None
    # Walking back with "newer" links gives the same pages.
    for index in range(len(pages) - 1, 0, -1):
        back = selectors.list_runs_for_user(
            user=alice, filters=filters, before=pages[index].prev_cursor, limit=5
        )
        assert [r.pk for r in back.runs] == [r.pk for r in pages[index - 1].runs]


def test_history_is_scoped_to_what_the_user_may_see(alice, bob, many_runs):
    make_project(bob)
    page = selectors.list_runs_for_user(user=bob, filters=selectors.HistoryFilters())
    assert page.runs == []
    assert selectors.list_runs_for_user(
        user=alice, filters=selectors.HistoryFilters(), after="not-a-cursor"
    ).runs  # a bad cursor is the first page, not an error


def test_log_windows_span_event_boundaries_and_search_ignores_colours(project, alice):
    run = services.start_run(project=project, user=alice, task="echo", overrides={})
    run = services.claim_run(run_id=run.pk, lease_owner="w")
    recorder = RunRecorder(run, lease_owner="w", log_limit_bytes=10**8)
    total = MAX_LINES_PER_EVENT * 2 + 10
    for i in range(1, total + 1):
        colour = "\x1b[1;31m" if i == 1234 else ""
        recorder.record(ev.LogOutput(stream="stdout", text=f"{colour}row {i}\x1b[0m\n"))
    recorder.close()
    run.refresh_from_db()
    window = selectors.log_lines(
        run=run, first=MAX_LINES_PER_EVENT - 2, last=MAX_LINES_PER_EVENT + 2
    )
    assert [line.number for line in window] == list(
        range(MAX_LINES_PER_EVENT - 2, MAX_LINES_PER_EVENT + 3)
    )
    assert [line.plain for line in selectors.log_tail(run=run, count=3)] == [
        f"row {i}" for i in range(total - 2, total + 1)
    ]
    result = selectors.search_log(run=run, query="ROW 1234")
    assert [line.number for line in result.matches] == [1234]
    assert "a-fg-1" in result.matches[0].html
    capped = selectors.search_log(run=run, query="row 1", limit=3)
    assert (capped.total, len(capped.matches), capped.truncated) == (1 + 10 + 100 + 1000, 3, True)
