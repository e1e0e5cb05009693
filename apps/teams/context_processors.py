"""Counts for the top bar: open invitations and runs waiting for the user's verdict.

Lazy: the queries run only when a template reads them (the top bar of full pages), never for
fragments or JSON."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject


def nav_counts(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}

    def invitations() -> int:
        from .selectors import pending_invitations_for

        return pending_invitations_for(user=user).count()

    def reviews() -> int:
        from apps.reviews.selectors import waiting_for_review

        return waiting_for_review(user=user).count()

    return {
        "nav_invitations": SimpleLazyObject(invitations),
        "nav_reviews": SimpleLazyObject(reviews),
    }
