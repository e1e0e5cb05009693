"""Writes to API tokens, and the lookup a request authenticates with."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.utils import timezone

from .exceptions import NotAuthenticated
from .models import ApiToken
from .scopes import SCOPES

TOKEN_PREFIX = "sbx_"  # noqa: S105 (a label, not a secret)
PREFIX_CHARS = len(TOKEN_PREFIX) + 8
MAX_TOKENS_PER_USER = 50
# Writing last_used_at on every request would turn reads into writes; once a minute is plenty.
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def create_token(
    *,
    user: AbstractBaseUser,
    name: str,
    scopes: Iterable[str],
    expires_at: dt.datetime | None = None,
) -> tuple[ApiToken, str]:
    """A new token for ``user``; returns the row and the raw token, which is never stored and
    cannot be shown again."""
    name = (name or "").strip()
    scopes = sorted(set(scopes))
    errors: dict[str, list[str]] = {}
    if not name:
        errors["name"] = ["Give the token a name (what uses it)."]
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        errors["scopes"] = [f"Unknown scope(s): {', '.join(unknown)}."]
    elif not scopes:
        errors["scopes"] = ["Choose at least one scope."]
    if expires_at is not None and expires_at <= timezone.now():
        errors["expires_at"] = ["The expiry must be in the future."]
    if ApiToken.objects.filter(user=user, revoked_at__isnull=True).count() >= MAX_TOKENS_PER_USER:
        errors["name"] = [f"At most {MAX_TOKENS_PER_USER} active tokens; revoke one first."]
    if errors:
        raise ValidationError(errors)
    raw = TOKEN_PREFIX + secrets.token_urlsafe(30)
    token = ApiToken(
        user=user,
        name=name,
        prefix=raw[:PREFIX_CHARS],
        token_hash=hash_token(raw),
        scopes=scopes,
        expires_at=expires_at,
    )
    token.full_clean()
    token.save()
    return token, raw


def revoke_token(*, token: ApiToken) -> ApiToken:
    """Revoked tokens stop working at once and stay listed (greyed) for the record."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def authenticate_token(*, raw: str) -> ApiToken:
    """The usable token for ``raw`` with its user; NotAuthenticated (with a code saying why)
    otherwise. Marks the token used, at most once a minute."""
    if not raw or not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        raise NotAuthenticated("The token is not a sandboxweb API token.", code="token_invalid")
    token = ApiToken.objects.select_related("user").filter(token_hash=hash_token(raw)).first()
    if token is None:
        raise NotAuthenticated("Unknown token.", code="token_invalid")
    if token.is_revoked:
        raise NotAuthenticated("This token was revoked.", code="token_revoked")
    if token.is_expired:
        raise NotAuthenticated("This token has expired.", code="token_expired")
    if not token.user.is_active:
        raise NotAuthenticated("The token's owner is deactivated.", code="user_inactive")
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
