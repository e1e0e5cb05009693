"""The run page's log rows are built in Python (apps/runs/views.py: _log_rows) because including
templates/runs/_log_line.html once per line made the page cost ~1 s of CPU (docs/benchmarks.md,
"Load"). These tests pin the two to the same markup, so neither can drift from the other."""

from __future__ import annotations

import datetime as dt

import pytest
from django.template.loader import render_to_string
from django.utils import timezone

from apps.runs import services
from apps.runs.models import Run
from apps.runs.recorder import RunRecorder
from apps.runs.selectors import LogLine, log_tail
from apps.runs.views import _log_rows
from tests.projects.factories import PASSWORD, make_project, make_user

TS = dt.datetime(2026, 11, 29, 23, 59, 58, 123456, tzinfo=dt.UTC)
LINES = [
    LogLine(number=1, text="plain", stream="stdout", ts=TS),
    LogLine(number=2, text="<b>bold?</b> & \"quotes\" 'too'", stream="stderr", ts=TS),
    LogLine(number=3, text="\x1b[31mred\x1b[0m \x1b[1;42mbold on green", stream="stdout", ts=TS),
    LogLine(number=4, text="", stream="stdout", ts=TS + dt.timedelta(seconds=3)),
    LogLine(number=12345, text="progress 10%\rprogress 100%\x07", stream="stderr", ts=TS),
]


def partial(lines: list[LogLine]) -> str:
    return "".join(render_to_string("runs/_log_line.html", {"line": line}) for line in lines)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/St_Johns"])
def test_log_rows_are_the_partials_markup(zone):
    with timezone.override(zone):
        assert str(_log_rows(LINES)) == partial(LINES)


def test_log_rows_escape_what_the_program_printed():
    html = str(_log_rows(LINES))
    assert "<b>" not in html
    assert "&lt;b&gt;bold?&lt;/b&gt; &amp; &quot;quotes&quot; &#x27;too&#x27;" in html


@pytest.mark.django_db
def test_the_run_page_shows_the_last_thousand_lines_as_the_partial_would(client):
    user = make_user("loadpage")
    project = make_project(user)
    run = services.start_run(project=project, user=user, task="make", overrides={})
    run = services.claim_run(run_id=run.pk, lease_owner="w")
    run = services.transition(run, to=Run.Status.RUNNING, lease_owner="w")
    # Not started: close() writes in this thread, inside the test's transaction.
    recorder = RunRecorder(run, lease_owner="w", log_limit_bytes=10**7)
    for i in range(1, 1201):
        colour = "\x1b[33m" if i % 7 == 0 else ""
        recorder.log("stderr" if i % 5 == 0 else "stdout", f"{colour}line {i} <i>\n")
    recorder.close()
    run.refresh_from_db()
    client.login(username="loadpage", password=PASSWORD)

    page = client.get(f"/runs/{run.pk}/").content.decode()

    rows = partial(log_tail(run=run))
    assert rows.count("data-n=") == 1000
    assert f'data-testid="log-lines">{rows}</div>' in page
    assert 'id="L200"' not in page and 'id="L201"' in page and 'id="L1200"' in page
