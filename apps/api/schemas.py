"""Request and response shapes of the API (they are its OpenAPI schema)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from ninja import Field, Schema
from pydantic import AfterValidator, ConfigDict, StringConstraints

MAX_ID = 2**63 - 1
MAX_INT = 2**63 - 1
# Ids in paths, bodies and filters: bounded so a forged 40-digit id is a 404, not an overflow.
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
BigInt = Annotated[int, Field(ge=1, le=MAX_INT)]
# Text the database can store: PostgreSQL refuses NUL characters, and no database takes a lone
# UTF-16 surrogate (JSON can spell one: "\ud800"). Checked by a validator rather than a schema
# pattern (a pattern would make every generated client and fuzzer slower).


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


def text(max_length: int, min_length: int = 0) -> Any:
    return Annotated[
        str,
        StringConstraints(max_length=max_length, min_length=min_length),
        AfterValidator(_no_nul),
    ]


Kind = Literal["agent", "script"]
NetworkMode = Literal["none", "isolated", "bridge"]
RunStatus = Literal[
    "queued",
    "provisioning",
    "running",
    "cancelling",
    "succeeded",
    "failed",
    "timed_out",
    "oom",
    "cancelled",
    "crashed",
    "error",
]
# Dollars in requests: a JSON number, rounded to cents.
CostUsd = Annotated[float, Field(ge=0.01, le=99_999_999.99), AfterValidator(lambda v: round(v, 2))]


class ErrorDetail(Schema):
    code: str = Field(description="Stable machine-readable reason, e.g. token_expired.")
    message: str
    field: str | None = Field(None, description="The request field at fault, if one is.")
    limit: str | None = Field(None, description="On 429: the limit that was reached.")


class ErrorOut(Schema):
    error: ErrorDetail


# -- projects ------------------------------------------------------------------------------------


class SecretOut(Schema):
    name: str
    fingerprint: str
    updated_at: dt.datetime


class ProjectOut(Schema):
    id: int
    name: str
    owner: str
    team: int | None
    team_name: str | None
    role: str | None = Field(description="The caller's role: owner, admin, member or viewer.")
    description: str
    default_kind: str
    provider: str
    image: str
    cpu_cores: float
    memory_mb: int
    disk_mb: int
    timeout_seconds: int
    network_mode: str
    env: dict[str, str]
    log_limit_mb: int
    system_prompt: str
    model: str
    max_turns: int
    max_tokens_total: int | None
    max_cost_usd: Decimal | None
    capture_patterns: list[str]
    default_commands: str
    secrets: list[SecretOut] = Field(description="Names only: values are write-only.")
    archived: bool
    archived_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class ProjectListOut(Schema):
    items: list[ProjectOut]


class _ProjectFields(Schema):
    model_config = ConfigDict(extra="forbid")

    team: Id | None = Field(None, description="A team you are a member of; null: personal.")
    description: text(10_000) | None = None
    default_kind: Kind | None = None
    provider: text(20) | None = None
    image: text(255) | None = None
    cpu_cores: Annotated[float, Field(ge=0, le=1024)] | None = None
    memory_mb: Annotated[int, Field(ge=0, le=MAX_INT)] | None = None
    disk_mb: Annotated[int, Field(ge=0, le=MAX_INT)] | None = None
    timeout_seconds: Annotated[int, Field(ge=0, le=MAX_INT)] | None = None
    network_mode: NetworkMode | None = None
    env: dict[text(200), text(10_000)] | None = None
    log_limit_mb: Annotated[int, Field(ge=0, le=MAX_INT)] | None = None
    system_prompt: text(100_000) | None = None
    model: text(100) | None = None
    max_turns: Annotated[int, Field(ge=0, le=MAX_INT)] | None = None
    max_tokens_total: BigInt | None = None
    max_cost_usd: CostUsd | None = None
    capture_patterns: list[text(1000)] | None = None
    default_commands: text(100_000) | None = None
    secrets: dict[text(64), text(65_536)] | None = Field(
        None, description="NAME -> value; added or replaced, encrypted, never shown again."
    )


class ProjectIn(_ProjectFields):
    name: text(100, min_length=1)


class ProjectPatch(_ProjectFields):
    name: text(100, min_length=1) | None = None
    delete_secrets: list[text(64)] | None = Field(None, description="Secret names to delete.")


# -- runs ----------------------------------------------------------------------------------------


class RunOverrides(Schema):
    """Per-run changes to the project's settings; limits are checked against the admin's."""

    model_config = ConfigDict(extra="forbid")

    image: text(255) | None = None
    cpu_cores: Annotated[float, Field(ge=0, le=1024)] | None = None
    memory_mb: Annotated[int, Field(ge=0, le=MAX_INT)] | None = None
    disk_mb: Annotated[int, Field(ge=0, le=MAX_INT)] | None = None
    timeout_seconds: Annotated[int, Field(ge=0, le=MAX_INT)] | None = None
    network_mode: NetworkMode | None = None
    log_limit_mb: Annotated[int, Field(ge=0, le=MAX_INT)] | None = None
    model: text(100) | None = None
    max_turns: Annotated[int, Field(ge=0, le=MAX_INT)] | None = None
    max_tokens_total: BigInt | None = None
    max_cost_usd: CostUsd | None = None


class RunIn(Schema):
    model_config = ConfigDict(extra="forbid")

    project: Id
    kind: Kind | None = Field(None, description="Default: the project's default kind.")
    task: text(100_000) = Field(
        "", description="The agent's prompt, or a script's commands one per line."
    )
    commands: list[text(10_000)] | None = Field(
        None, description="A script's commands (instead of task). Empty: the project's default."
    )
    overrides: RunOverrides = Field(default_factory=RunOverrides)


class RunUsage(Schema):
    turns: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    total_tokens: int
    cost_usd: Decimal


class RunStats(Schema):
    duration_ms: int
    peak_memory_mb: float | None
    log_lines: int
    log_bytes: int
    log_dropped_bytes: int
    exit_code: int | None


class RunLinks(Schema):
    self: str
    events: str
    log: str
    artifacts: str
    web: str


class RunOut(Schema):
    id: int
    project: int
    project_name: str
    launched_by: str | None
    kind: str
    task: str
    commands: list[str]
    overrides: dict[str, Any]
    config: dict[str, Any] = Field(description="The effective settings, after clamping.")
    status: RunStatus
    finished: bool
    status_message: str
    end_reason: str
    error_message: str
    queue_position: int | None
    rerun_of: int | None
    attempt: int
    last_seq: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    usage: RunUsage
    stats: RunStats
    links: RunLinks


class RunPageOut(Schema):
    items: list[RunOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")
    prev_cursor: str | None = Field(description="Pass as ?before= for the previous page.")


class RunFilters(Schema):
    """The history page's filters."""

    project: Id | None = None
    status: list[RunStatus] = Field(default_factory=list)
    user: text(150) | None = Field(None, description="Launched by (username).")
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    min_duration: Annotated[float, Field(ge=0, le=10**9)] | None = Field(None, description="s")
    max_duration: Annotated[float, Field(ge=0, le=10**9)] | None = Field(None, description="s")
    min_cost: Annotated[Decimal, Field(ge=0, le=10**9)] | None = None
    max_cost: Annotated[Decimal, Field(ge=0, le=10**9)] | None = None
    verdict: Literal["approved", "needs_work", "rejected", "none"] | None = Field(
        None, description="The run's verdict; none: no verdict yet."
    )
    label: text(40) | None = Field(None, description="Has this label.")
    reviewer: text(150) | None = Field(None, description="Assigned reviewer (username).")
    has_comments: bool | None = Field(None, description="With (true) or without (false).")
    sort: Literal["created", "duration", "cost", "tokens"] = "created"
    order: Literal["desc", "asc"] = "desc"
    cursor: text(500) | None = Field(None, description="next_cursor of the previous page.")
    before: text(500) | None = Field(None, description="prev_cursor of the following page.")
    limit: Annotated[int, Field(ge=1, le=200)] = 50


class EventOut(Schema):
    seq: int
    type: str
    ts: float
    data: dict[str, Any]


class EventPageOut(Schema):
    events: list[EventOut] = Field(description="In seq order, exactly as the WebSocket sends.")
    next_after: int = Field(description="Pass as ?after= to continue.")
    last_seq: int = Field(description="The run's last seq when this page was read.")
    status: RunStatus
    finished: bool = Field(description="The run is over and every event was returned.")


class ArtifactOut(Schema):
    id: int
    path: str
    name: str
    size: int
    sha256: str
    created_at: dt.datetime
    download_url: str


class ArtifactListOut(Schema):
    items: list[ArtifactOut]


# -- the caller ----------------------------------------------------------------------------------


class TokenInfo(Schema):
    name: str
    prefix: str
    scopes: list[str]
    expires_at: dt.datetime | None


class RateLimitOut(Schema):
    requests: int
    window_seconds: int
    remaining: int | None


class UsageOut(Schema):
    user: str
    token: TokenInfo
    rate_limit: RateLimitOut
    usage: dict[str, Any] = Field(description="Runs, tokens and cost: totals and last 30 days.")
    limits: dict[str, Any] = Field(
        description="The most a run may ask for, and under teams: each of your teams' limits."
    )


# -- review --------------------------------------------------------------------------------------

Verdict = Literal["approved", "needs_work", "rejected", ""]


class CommentOut(Schema):
    id: int
    author: str | None
    body: str
    anchor: str = Field(description="run, line (a log line) or event (a timeline event).")
    line: int | None
    seq: int | None
    created_at: dt.datetime


class CommentIn(Schema):
    model_config = ConfigDict(extra="forbid")

    body: text(10_000, min_length=1)
    line: BigInt | None = Field(None, description="Anchor on this log line (from 1).")
    seq: BigInt | None = Field(None, description="Anchor on this event of the run.")


class VerdictIn(Schema):
    model_config = ConfigDict(extra="forbid")

    verdict: Verdict = Field(description="Empty clears the verdict.")
    note: text(500) = ""


class ReviewOut(Schema):
    run: int
    verdict: str = Field(description="approved, needs_work, rejected, or empty: none yet.")
    verdict_by: str | None
    verdict_at: dt.datetime | None
    verdict_note: str
    reviewer: str | None
    labels: list[str]
    comments: list[CommentOut]


class LabelIn(Schema):
    model_config = ConfigDict(extra="forbid")

    label: text(200) = Field(description="1-40 letters, digits, spaces or . : / - _ (lowercased).")


class ReviewerIn(Schema):
    model_config = ConfigDict(extra="forbid")

    reviewer: text(150) | None = Field(
        description="Username of a member of the run's project; null or empty unassigns."
    )


class WaitingOut(Schema):
    run: int
    project: int
    project_name: str
    status: RunStatus
    task: str
    launched_by: str | None
    created_at: dt.datetime
    assigned_by: str | None
    assigned_at: dt.datetime | None
    url: str = Field(description="The run in the API.")


class WaitingListOut(Schema):
    items: list[WaitingOut] = Field(description="Oldest assignment first.")


class ShareLinkIn(Schema):
    model_config = ConfigDict(extra="forbid")

    days: Annotated[int, Field(ge=-MAX_INT, le=MAX_INT)] = Field(
        7, description="Valid for this many days (1 to 90)."
    )


class ShareLinkOut(Schema):
    id: int
    run: int
    hint: str = Field(description="The token's first characters, to tell links apart.")
    created_by: str | None
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    active: bool = Field(description="Neither revoked nor expired.")


class ShareLinkCreatedOut(ShareLinkOut):
    token: str = Field(description="Shown once; only its hash is stored.")
    url: str = Field(description="The read-only page (no login needed) while the link lives.")


class ShareLinkListOut(Schema):
    items: list[ShareLinkOut]


# -- comparison ----------------------------------------------------------------------------------


class CompareRowOut(Schema):
    label: str
    a: str
    b: str
    differs: bool


class CompareFileOut(Schema):
    path: str
    a: int | None = Field(description="Size in A (bytes); null: not in A.")
    b: int | None
    state: Literal["only in A", "only in B", "same size", "different size"]


class CompareOut(Schema):
    a: int
    b: int
    rows: list[CompareRowOut] = Field(description="The compare page's rows, as it shows them.")
    files: list[CompareFileOut] = Field(description="Files in the workspace at the end.")


# -- teams ---------------------------------------------------------------------------------------

TeamRole = Literal["owner", "admin", "member", "viewer"]
InvitationStatus = Literal["pending", "accepted", "declined", "revoked"]


class TeamIn(Schema):
    model_config = ConfigDict(extra="forbid")

    name: text(100)


class TeamOut(Schema):
    id: int
    name: str
    role: TeamRole = Field(description="Your role in the team.")
    members: int = Field(description="How many members it has.")
    created_at: dt.datetime


class TeamListOut(Schema):
    items: list[TeamOut]


class MemberOut(Schema):
    id: int = Field(description="The membership's id (for role changes and removal).")
    user: str
    email: str = Field(description="As the team page shows it to every member.")
    role: TeamRole
    since: dt.datetime
    you: bool


class MemberListOut(Schema):
    items: list[MemberOut]


class MemberRoleIn(Schema):
    model_config = ConfigDict(extra="forbid")

    role: TeamRole


class InviteIn(Schema):
    model_config = ConfigDict(extra="forbid")

    who: text(254) = Field(description="A username or an email address of an existing user.")
    role: TeamRole = "member"


class InvitationOut(Schema):
    id: int
    team: int
    team_name: str
    user: str
    role: TeamRole
    status: InvitationStatus
    invited_by: str | None
    created_at: dt.datetime
    responded_at: dt.datetime | None


class InvitationListOut(Schema):
    items: list[InvitationOut]


# -- limits --------------------------------------------------------------------------------------

PolicyScope = Literal["instance", "team", "user"]
# Bounded to what the columns hold; the admin form's own rules (at least 0.1 cores, known
# providers, image patterns, cents) then decide, with the same messages.
PositiveInt = Annotated[int, Field(ge=0, le=2**31 - 1)]


class LimitPolicyFields(Schema):
    max_concurrent_runs: PositiveInt | None = None
    max_memory_mb: PositiveInt | None = None
    max_cpu_cores: Annotated[float, Field(ge=0, le=1_000_000, allow_inf_nan=False)] | None = None
    max_disk_mb: PositiveInt | None = None
    max_timeout_seconds: PositiveInt | None = None
    allowed_network_modes: list[NetworkMode] | None = Field(
        None, description="null or [] = inherit."
    )
    allowed_images: list[text(255)] | None = Field(
        None, description="Glob patterns (sandboxweb/*, python:3.*); null or [] = inherit."
    )
    allowed_providers: list[text(50)] | None = Field(
        None, description="docker, e2b; null or [] = inherit."
    )
    monthly_token_budget: Annotated[int, Field(ge=0, le=MAX_INT)] | None = None
    monthly_cost_budget_usd: (
        Annotated[Decimal, Field(ge=0, le=Decimal("9999999999.99"), allow_inf_nan=False)] | None
    ) = Field(None, description="Dollars, at most two decimals.")


class LimitPolicyPatch(LimitPolicyFields):
    """Only the fields sent change; an explicit null clears one (it then inherits)."""

    model_config = ConfigDict(extra="forbid")


class LimitPolicyOut(Schema):
    id: int | None = Field(description="null: no row yet (every field inherits).")
    scope: PolicyScope
    team: int | None
    team_name: str | None
    user: str | None
    max_concurrent_runs: int | None
    max_memory_mb: int | None
    max_cpu_cores: float | None
    max_disk_mb: int | None
    max_timeout_seconds: int | None
    allowed_network_modes: list[str] | None
    allowed_images: list[str] | None
    allowed_providers: list[str] | None
    monthly_token_budget: int | None
    monthly_cost_budget_usd: str | None = Field(description="Dollars as a decimal string.")
    updated_at: dt.datetime | None
    updated_by: str | None


class CeilingOut(Schema):
    label: str
    value: float


class LimitsOut(Schema):
    instance: LimitPolicyOut
    teams: list[LimitPolicyOut]
    users: list[LimitPolicyOut]
    ceiling: list[CeilingOut] = Field(description="The hardware ceiling no row can raise.")


class HeadroomOut(Schema):
    label: str
    used: str
    limit: str
    source: str
    percent: int | None = Field(description="Of the limit used; null when unlimited.")


class AllowedOut(Schema):
    label: str
    value: str
    source: str


class DayOut(Schema):
    day: str
    value: str


class ChartOut(Schema):
    title: str
    total: str
    days: list[DayOut]


class UsageReportOut(Schema):
    title: str
    kind: Literal["user", "team", "project"]
    month_runs: int
    month_minutes: float
    month_tokens: int
    month_cost_usd: str
    active: int
    daily: list[ChartOut] = Field(description="The last 30 days, as the usage page charts them.")
    headroom: list[HeadroomOut]
    allowed: list[AllowedOut]


# -- audit ---------------------------------------------------------------------------------------


class AuditFiltersIn(Schema):
    """The audit page's filters (validated by its own form)."""

    action: text(50) | None = None
    actor: text(150) | None = Field(None, description="Username, any case.")
    target_type: text(50) | None = Field(None, description="e.g. teams.membership")
    target_id: text(64) | None = None
    team: Id | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None


class AuditQuery(AuditFiltersIn):
    cursor: text(500) | None = Field(None, description="next_cursor of the previous page.")
    before: text(500) | None = Field(None, description="prev_cursor of the following page.")
    limit: Annotated[int, Field(ge=1, le=500)] = 100


class AuditEventOut(Schema):
    id: int
    at: dt.datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    target: str
    team: int | None
    ip: str | None
    user_agent: str
    before: Any = None
    after: Any = None


class AuditPageOut(Schema):
    items: list[AuditEventOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next (older) page.")
    prev_cursor: str | None = Field(description="Pass as ?before= for the previous page.")
