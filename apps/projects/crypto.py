"""Encryption of project secrets at rest: the one module that touches the keys.

``SECRETS_KEYS`` (newest first) feeds a ``MultiFernet``, so a key can be rotated by putting the new
one in front and re-encrypting with :func:`rotate`. Without it, one key is derived from
SECRET_KEY, which keeps a fresh install working (and ties the secrets to that SECRET_KEY).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretDecryptionError(Exception):
    pass


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    if keys:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    derived = hashlib.sha256(b"sandboxweb.project-secrets:" + secret_key.encode()).digest()
    return MultiFernet([Fernet(base64.urlsafe_b64encode(derived))])


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
