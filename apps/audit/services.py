"""Writing the audit log. Call :func:`record` inside the transaction of the change."""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
from collections.abc import Mapping
from typing import Any

from django.db import models, transaction

from .context import current_request_info
from .models import AuditEvent


class Action:
    LIMIT_CHANGE = "limit.change"
    ROLE_CHANGE = "team.role_change"
    MEMBER_ADD = "team.member_add"
    MEMBER_REMOVE = "team.member_remove"
    TEAM_CREATE = "team.create"
    INVITE = "team.invite"
    INVITE_ACCEPT = "team.invite_accept"
    INVITE_DECLINE = "team.invite_decline"
    INVITE_REVOKE = "team.invite_revoke"
    SECRET_SET = "secret.set"  # noqa: S105 - an action name, not a secret
    SECRET_DELETE = "secret.delete"  # noqa: S105 - an action name
    RUN_LAUNCH = "run.launch"
    RUN_CANCEL = "run.cancel"
    SHARE_CREATE = "share.create"
    SHARE_REVOKE = "share.revoke"
    PROJECT_TEAM = "project.team_change"
    SECRET_ROTATE_KEYS = "secret.rotate_keys"  # noqa: S105 - an action name
    LOGIN_LOCKOUT = "auth.lockout"

    ALL = (
        LIMIT_CHANGE,
        ROLE_CHANGE,
        MEMBER_ADD,
        MEMBER_REMOVE,
        TEAM_CREATE,
        INVITE,
        INVITE_ACCEPT,
        INVITE_DECLINE,
        INVITE_REVOKE,
        SECRET_SET,
        SECRET_DELETE,
        RUN_LAUNCH,
        RUN_CANCEL,
        SHARE_CREATE,
        SHARE_REVOKE,
        PROJECT_TEAM,
        SECRET_ROTATE_KEYS,
        LOGIN_LOCKOUT,
    )


def _plain(value: Any) -> Any:
    """JSON-safe copy of ``value`` (decimals, dates and model instances become strings/ids)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, models.Model):
        return value.pk
    return value


def record(
    *,
    actor: Any,
    action: str,
    target: models.Model | None = None,
    target_type: str = "",
    target_id: Any = "",
    target_repr: str = "",
    team_id: int | None = None,
    before: Any = None,
    after: Any = None,
) -> AuditEvent:
    """Append one entry. Must run inside the transaction of the change (it checks)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit.record must be called inside the change's transaction")
    info = current_request_info()
    ip = info.ip if info else None
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            ip = None
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or target.pk
        target_repr = target_repr or str(target)
    authenticated = actor is not None and getattr(actor, "is_authenticated", False)
    return AuditEvent.objects.create(
        actor=actor if authenticated else None,
        actor_name=actor.get_username() if authenticated else "",
        action=action,
        target_type=target_type[:50],
        target_id=str(target_id or "")[:64],
        target_repr=target_repr[:200],
        team_id=team_id,
        before=_plain(before),
        after=_plain(after),
        ip=ip,
        user_agent=info.user_agent if info else "",
    )
