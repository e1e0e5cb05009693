"""What a personal API token may be allowed to do.

A scope only ever narrows what the token's owner may do: every request is still authorized by
the same selectors and services as the UI, as the owner. ``*:write`` implies ``*:read`` of the
same resource (a CI job that launches a run must be able to follow it). The instance-admin
scopes (limits, audit) can be put on anyone's token, but only ever act for staff owners.
"""

from __future__ import annotations

SCOPES: dict[str, str] = {
    "projects:read": "List and read projects",
    "projects:write": "Create, edit and archive projects",
    "runs:read": "List runs, read their events, logs and artifacts",
    "runs:write": "Launch, cancel and re-run runs",
    "reviews:read": "Read comments, verdicts, labels, share links and the review queue",
    "reviews:write": "Comment, give verdicts, label, assign reviewers, share runs",
    "teams:read": "List your teams, their members and invitations",
    "teams:write": "Create teams, invite, answer invitations, change roles, remove members",
    "limits:read": "Read usage and headroom; instance admins: every limit",
    "limits:write": "Instance admins: set the instance, team and user limits",
    "audit:read": "Instance admins: read and export the audit log",
}
READ_IMPLIED_BY = {scope.replace(":read", ":write"): scope for scope in SCOPES if ":read" in scope}


def expand(scopes: list[str] | tuple[str, ...] | set[str]) -> frozenset[str]:
    """The scopes a token holds, with the reads its writes imply."""
    held = {scope for scope in scopes if scope in SCOPES}
    held |= {READ_IMPLIED_BY[scope] for scope in held if scope in READ_IMPLIED_BY}
    return frozenset(held)
