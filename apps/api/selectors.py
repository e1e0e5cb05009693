"""Reads of API tokens: a user sees and revokes only their own."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet
from django.http import Http404

from .models import ApiToken


def tokens_of(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[ApiToken]:
    if not user.is_authenticated:
        return ApiToken.objects.none()
    return ApiToken.objects.filter(user_id=user.pk)


def get_token_for_user(*, user: AbstractBaseUser | AnonymousUser, token_id: int | str) -> ApiToken:
    try:
        return tokens_of(user=user).get(pk=int(token_id))
    except (ApiToken.DoesNotExist, ValueError, TypeError):
        raise Http404("No such token") from None
