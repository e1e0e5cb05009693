"""Encryption of project secrets at rest: the one module that touches the keys.

``SECRETS_KEYS`` (newest first) feeds a ``MultiFernet``: new values are encrypted with the first
key, any listed key decrypts. Without it, one key is derived from SECRET_KEY, which keeps a fresh
install working (and ties the secrets to that SECRET_KEY); the entry ``secret_key`` in the list
stands for that derived key, so an install can move to its own keys.

Rotation (docs/security.md): put the new key first, restart, run ``manage.py rotate_secret_keys``
(re-encrypts every stored value with the newest key, :func:`reencrypt_all`), then drop the old key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretDecryptionError(Exception):
    pass


DERIVED_KEY_NAME = "secret_key"  # the name of an entry in SECRETS_KEYS, not a key


def _derived_key(secret_key: str) -> bytes:
    derived = hashlib.sha256(b"sandboxweb.project-secrets:" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(derived)


def _keys(keys: tuple[str, ...], secret_key: str) -> list[bytes]:
    if not keys:
        return [_derived_key(secret_key)]
    return [_derived_key(secret_key) if k == DERIVED_KEY_NAME else k.encode() for k in keys]


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in _keys(keys, secret_key)])


@lru_cache(maxsize=4)
def _newest(keys: tuple[str, ...], secret_key: str) -> Fernet:
    return Fernet(_keys(keys, secret_key)[0])


def _current() -> MultiFernet:
    return _fernet(tuple(settings.SECRETS_KEYS), settings.SECRET_KEY)


def encrypt(value: str) -> str:
    return _current().encrypt(value.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _current().decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken as exc:
        raise SecretDecryptionError(
            "A project secret cannot be decrypted with the configured SECRETS_KEYS "
            "(was the key rotated away or SECRET_KEY changed?)."
        ) from exc


def rotate(token: str) -> str:
    return _current().rotate(token.encode("ascii")).decode("ascii")


def fingerprint(value: str) -> str:
    """A short keyed digest: tells two values apart without helping anyone guess them."""
    digest = hmac.new(settings.SECRET_KEY.encode(), value.encode("utf-8"), hashlib.sha256)
    return digest.hexdigest()[:12]


def key_fingerprint() -> str:
    """Names the newest key in logs and the audit log without revealing it."""
    newest = _keys(tuple(settings.SECRETS_KEYS), settings.SECRET_KEY)[0]
    return hashlib.sha256(b"sandboxweb.key-fingerprint:" + newest).hexdigest()[:12]


def is_current(token: str) -> bool:
    """True when ``token`` is already encrypted with the newest key."""
    try:
        _newest(tuple(settings.SECRETS_KEYS), settings.SECRET_KEY).decrypt(token.encode("ascii"))
    except InvalidToken:
        return False
    return True


@dataclass(frozen=True)
class Rotation:
    reencrypted: int = 0
    current: int = 0
    failed: tuple[int, ...] = ()  # ids of secrets no configured key decrypts
    batches: int = 0


def reencrypt_all(*, batch_size: int = 200) -> Rotation:
    """Re-encrypt every stored project secret with the newest key; idempotent.

    Batches by primary key, each in its own transaction with the rows locked, so a secret set
    through the UI meanwhile is neither lost nor overwritten with a stale value, and a huge table
    never holds one long transaction. Values already on the newest key are left alone (running it
    twice changes nothing). A value no key decrypts is counted and left as it is.
    """
    from django.db import transaction

    from .models import ProjectSecret

    reencrypted = current = batches = 0
    failed: list[int] = []
    last_pk = 0
    while True:
        with transaction.atomic():
            batch = list(
                ProjectSecret.objects.select_for_update()
                .filter(pk__gt=last_pk)
                .order_by("pk")
                .only("pk", "ciphertext")[:batch_size]
            )
            if not batch:
                break
            batches += 1
            last_pk = batch[-1].pk
            for secret in batch:
                if is_current(secret.ciphertext):
                    current += 1
                    continue
                try:
                    secret.ciphertext = rotate(secret.ciphertext)
                except InvalidToken:
                    failed.append(secret.pk)
                    continue
                # update(), not save(): updated_at is about the value, which did not change.
                ProjectSecret.objects.filter(pk=secret.pk).update(ciphertext=secret.ciphertext)
                reencrypted += 1
    return Rotation(reencrypted, current, tuple(failed), batches)
