"""Presentation helpers for run pages: durations, status tones, end reasons in words."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()

END_REASONS = {
    "completed": "All commands succeeded",
    "end_turn": "The agent finished",
    "exit_code": "A command failed",
    "max_turns": "Used all its turns",
    "max_tokens": "A reply hit the token cap",
    "budget": "Budget used up",
    "timeout": "Hit the time limit",
    "timed_out": "Hit the time limit",
    "oom": "Ran out of memory",
    "output_limit": "Printed too much output",
    "disk_limit": "Workspace disk full",
    "cancelled": "Cancelled",
    "crashed": "Infrastructure crashed",
    "image_not_found": "Image not found",
    "config_error": "Configuration error",
    "sandbox_error": "Sandbox error",
    "auth_error": "Model API refused the key",
    "api_error": "Model API error",
    "internal_error": "Internal error",
    "refusal": "The model refused",
}

TONES = {
    "queued": "muted",
    "provisioning": "info",
    "running": "info",
    "cancelling": "warn",
    "succeeded": "ok",
    "failed": "bad",
    "timed_out": "warn",
    "oom": "bad",
    "cancelled": "muted",
    "crashed": "bad",
    "error": "bad",
}


@register.filter
def end_reason_label(reason: str) -> str:
    return END_REASONS.get(reason or "", (reason or "").replace("_", " ").capitalize())


@register.filter
def status_tone(status: str) -> str:
    return TONES.get(status or "", "muted")


@register.filter
def duration(ms: Any) -> str:
    """Milliseconds as 850 ms / 12.3 s / 4m 05s / 2h 03m."""
    if ms in (None, ""):
        return "—"
    ms = float(ms)
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


@register.filter
def percent(value: Any, total: Any) -> float:
    try:
        value, total = float(value or 0), float(total or 0)
    except (TypeError, ValueError):
        return 0.0
    if total <= 0:
        return 0.0
    return round(min(100.0, max(0.0, value * 100 / total)), 1)


@register.filter
def tokens(value: Any) -> str:
    value = int(value or 0)
    if value >= 1_000_000:
        return f"{value / 1_000_000:.2f}".rstrip("0").rstrip(".") + "M"
    if value >= 10_000:
        return f"{value / 1000:.1f}".rstrip("0").rstrip(".") + "k"
    return f"{value:,}"


@register.filter
def usd(value: Any) -> str:
    value = float(value or 0)
    if value == 0:
        return "$0"
    if value < 0.01:
        return f"${value:.4f}"
    return f"${value:,.2f}"


@register.filter
def first_line(text: str, length: int = 120) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= length else line[: length - 1] + "…"
