"""The usage page's numbers: runs, sandbox-minutes, tokens and cost over time, and the headroom
left against each limit, for a user, a team or a project. Charts are server-drawn SVG bars."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, Max, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.http import Http404
from django.utils import timezone

from apps.projects.selectors import get_project_for_user, list_projects_for_user
from apps.runs.models import Run
from apps.teams.selectors import get_team_for_user, teams_of

from .selectors import ACTIVE_STATES, EffectiveLimits, effective_limits, month_spend, month_start

DAYS = 30
CHART_W, CHART_H = 600, 120


@dataclass
class Bar:
    x: float
    y: float
    w: float
    h: float
    label: str
    value: str


@dataclass
class Chart:
    title: str
    total: str
    bars: list[Bar]
    peak: str
    width: int = CHART_W
    height: int = CHART_H


@dataclass
class Headroom:
    label: str
    used: str
    limit: str
    source: str
    percent: int | None  # of the limit used, for the bar; None when unlimited

    @property
    def tone(self) -> str:
        if self.percent is None:
            return "muted"
        return "bad" if self.percent >= 100 else "warn" if self.percent >= 80 else "ok"


@dataclass
class UsageReport:
    title: str
    kind: str
    month_runs: int = 0
    month_minutes: float = 0.0
    month_tokens: int = 0
    month_cost: Decimal = Decimal(0)
    active: int = 0
    charts: list[Chart] = field(default_factory=list)
    headroom: list[Headroom] = field(default_factory=list)
    allowed: list[tuple[str, str, str]] = field(default_factory=list)


def _minutes(runs: QuerySet[Run]) -> float:
    now = timezone.now()
    done = runs.aggregate(ms=Sum("duration_ms"))["ms"] or 0
    live = sum(
        (now - started).total_seconds() * 1000
        for started in runs.filter(status__in=ACTIVE_STATES, started_at__isnull=False).values_list(
            "started_at", flat=True
        )
    )
    return round((done + live) / 60000, 2)


def _chart(title: str, days: list[dt.date], values: dict[dt.date, float], fmt: Any) -> Chart:
    peak = max([values.get(d, 0) for d in days] + [0])
    slot = CHART_W / len(days)
    bars = []
    for index, day in enumerate(days):
        value = values.get(day, 0)
        height = 0 if not peak else (CHART_H - 16) * value / peak
        bars.append(
            Bar(
                x=round(index * slot + 1, 1),
                y=round(CHART_H - 14 - height, 1),
                w=round(max(1.0, slot - 2), 1),
                h=round(height, 1),
                label=day.strftime("%b %d"),
                value=fmt(value),
            )
        )
    return Chart(title=title, total=fmt(sum(values.values())), bars=bars, peak=fmt(peak))


def _series(runs: QuerySet[Run], since: dt.datetime) -> dict[str, dict[dt.date, float]]:
    rows = (
        runs.filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(
            n=Count("pk"), ms=Sum("duration_ms"), tokens=Sum("total_tokens"), cost=Sum("cost_usd")
        )
    )
    series: dict[str, dict[dt.date, float]] = {"runs": {}, "minutes": {}, "tokens": {}, "cost": {}}
    for row in rows:
        day = row["day"]
        series["runs"][day] = row["n"]
        series["minutes"][day] = (row["ms"] or 0) / 60000
        series["tokens"][day] = row["tokens"] or 0
        series["cost"][day] = float(row["cost"] or 0)
    return series


def _pct(used: float, limit: float | None) -> int | None:
    if not limit:
        return None
    return int(min(999, round(100 * used / float(limit))))


def _headroom(
    report: UsageReport,
    runs: QuerySet[Run],
    limits: EffectiveLimits,
    *,
    user_id: int | None,
    team_id: int | None,
) -> None:
    def add(label: str, used: float, limit: Any, fmt: str = "{:g}") -> None:
        value = limit.value if limit else None
        report.headroom.append(
            Headroom(
                label=label,
                used=fmt.format(used),
                limit=fmt.format(value) if value is not None else "no limit",
                source=limit.source if limit else "",
                percent=_pct(used, value),
            )
        )

    if user_id is not None:
        spend = month_spend(user_id=user_id)
        mine = Run.objects.filter(user_id=user_id, status__in=ACTIVE_STATES).count()
        add("Concurrent runs (you)", mine, limits.user_concurrency)
        add("Tokens this month (you)", spend.tokens, limits.user_tokens, "{:,}")
        add("Cost this month (you)", float(spend.cost), limits.user_cost, "${:,.2f}")
    if team_id is not None:
        spend = month_spend(team_id=team_id)
        active = Run.objects.filter(project__team_id=team_id, status__in=ACTIVE_STATES).count()
        add("Concurrent runs (team)", active, limits.team_concurrency)
        add("Tokens this month (team)", spend.tokens, limits.team_tokens, "{:,}")
        add("Cost this month (team)", float(spend.cost), limits.team_cost, "${:,.2f}")
    month = runs.filter(created_at__gte=month_start())
    peaks = month.aggregate(memory=Max("peak_memory_mb"), duration=Max("duration_ms"))
    add("Peak memory (MB) vs max memory", peaks["memory"] or 0, limits.get("max_memory_mb"))
    add(
        "Longest run (s) vs wall-clock limit",
        round((peaks["duration"] or 0) / 1000),
        limits.get("max_timeout_seconds"),
    )
    for name, label in (("max_cpu_cores", "Max CPU cores"), ("max_disk_mb", "Max disk (MB)")):
        limit = limits.get(name)
        report.allowed.append((label, f"{limit.value:g}", limit.source))
    for name, label in (
        ("allowed_network_modes", "Network modes"),
        ("allowed_images", "Images"),
        ("allowed_providers", "Providers"),
    ):
        limit = limits.get(name)
        shown = ", ".join(limit.value) if limit.value is not None else "any"
        report.allowed.append((label, shown, limit.source or "no limit"))


def build_report(
    *, title: str, kind: str, runs: QuerySet[Run], user_id: int | None, team_id: int | None
) -> UsageReport:
    report = UsageReport(title=title, kind=kind)
    month = runs.filter(created_at__gte=month_start())
    totals = month.aggregate(n=Count("pk"), tokens=Sum("total_tokens"), cost=Sum("cost_usd"))
    report.month_runs = totals["n"] or 0
    report.month_tokens = int(totals["tokens"] or 0)
    report.month_cost = Decimal(totals["cost"] or 0)
    report.month_minutes = _minutes(month)
    report.active = runs.filter(status__in=ACTIVE_STATES).count()
    today = timezone.localdate()
    days = [today - dt.timedelta(days=DAYS - 1 - i) for i in range(DAYS)]
    since = timezone.make_aware(dt.datetime.combine(days[0], dt.time.min))
    series = _series(runs, since)
    report.charts = [
        _chart("Runs per day", days, series["runs"], lambda v: f"{v:g}"),
        _chart("Sandbox-minutes per day", days, series["minutes"], lambda v: f"{v:,.2f}"),
        _chart("Tokens per day", days, series["tokens"], lambda v: f"{v:,.0f}"),
        _chart("Cost per day", days, series["cost"], lambda v: f"${v:,.2f}"),
    ]
    limits = effective_limits(user_id=user_id, team_id=team_id)
    _headroom(report, runs, limits, user_id=user_id, team_id=team_id)
    return report


def report_for_request(*, user: Any, params: Any) -> UsageReport:
    if params.get("team"):
        team, _ = get_team_for_user(user=user, team_id=params["team"])
        runs = Run.objects.filter(project__team_id=team.pk)
        return build_report(
            title=f"Team {team.name}", kind="team", runs=runs, user_id=None, team_id=team.pk
        )
    if params.get("project"):
        project = get_project_for_user(user=user, project_id=params["project"])
        runs = Run.objects.filter(project_id=project.pk)
        return build_report(
            title=f"Project {project.name}",
            kind="project",
            runs=runs,
            user_id=None if project.team_id else project.owner_id,
            team_id=project.team_id,
        )
    subject = user
    if params.get("user") and params["user"] != user.get_username():
        # Instance admins look at anyone's usage; everyone else only at their own.
        subject = (
            get_user_model().objects.filter(username=params["user"]).first()
            if user.is_staff
            else None
        )
        if subject is None:
            raise Http404("No such user")
    runs = Run.objects.filter(user_id=subject.pk)
    title = f"You ({user.get_username()})" if subject == user else f"User {subject.get_username()}"
    return build_report(title=title, kind="user", runs=runs, user_id=subject.pk, team_id=None)


def choices(user: Any) -> dict[str, Any]:
    return {"teams": teams_of(user), "projects": list_projects_for_user(user=user)}
