"""Replace known secret values with ``[REDACTED:<NAME>]`` in anything leaving the run.

Values shorter than :data:`MIN_SECRET_LENGTH` are not redacted (replacing every "1" or "yes" in a
log would destroy it and protect nothing). Besides the plain value, its base64 and URL-safe
base64 forms are redacted, which is how secrets most often reappear in output, also when the
value sits inside a longer encoded text (:func:`base64_cores`).
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Mapping
from typing import Any, TypeVar

MIN_SECRET_LENGTH = 4
# A base64 core shorter than this is not redacted on its own (too likely to occur by chance).
MIN_CORE_LENGTH = 8


def base64_cores(encoded: bytes) -> list[str]:
    """The base64 characters that encode only ``encoded``'s bits, for each of the three byte
    alignments it can have inside a longer encoded stream, in both alphabets.

    ``echo "$TOKEN" | base64`` appends a newline, ``printf 'key=%s' "$TOKEN" | base64`` shifts
    the token: the plain ``b64encode(value)`` is then absent, but one of these cores is there
    (the one or two characters shared with the neighbouring bytes stay).
    """
    cores = []
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * offset + encoded + b"\0\0").decode()
            start = -(-8 * offset // 6)  # the first character whose 6 bits are all the value's
            end = 8 * (offset + len(encoded)) // 6
            if end - start >= MIN_CORE_LENGTH:
                cores.append(text[start:end])
    return cores


T = TypeVar("T")


class Redactor:
    def __init__(self, secrets: Mapping[str, str] | None = None) -> None:
        replacements: dict[str, str] = {}
        for name, value in (secrets or {}).items():
            if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
                continue
            marker = f"[REDACTED:{name}]"
            encoded = value.encode()
            for form in (
                value,
                base64.b64encode(encoded).decode().rstrip("="),
                base64.urlsafe_b64encode(encoded).decode().rstrip("="),
                *base64_cores(encoded),
            ):
                replacements.setdefault(form, marker)
        self._replacements = replacements
        # Longest first, so a value that contains another secret is replaced whole.
        ordered = sorted(replacements, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, value: str) -> str:
        if self._pattern is None or not value:
            return value
        return self._pattern.sub(lambda match: self._replacements[match.group(0)], value)

    def value(self, value: T) -> T:
        """Redact every string inside ``value`` (dicts, lists, tuples, dataclasses)."""
        if self._pattern is None:
            return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self._walk(k): self._walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._walk(v) for v in value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {
                f.name: self._walk(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if f.init
            }
            return dataclasses.replace(value, **changes)
        return value

    @property
    def longest(self) -> int:
        return max(map(len, self._replacements), default=0)

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)


class StreamRedactor:
    """Redacts a text stream fed in pieces: a secret split across two pieces is still caught.

    It holds back the last ``longest - 1`` characters until the next piece (or :meth:`flush`),
    and holds back nothing when there is no secret to look for.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._keep = max(redactor.longest - 1, 0)
        self._pending = ""

    def feed(self, piece: str) -> str:
        if not self._redactor:
            return piece
        combined = self._redactor.text(self._pending + piece)
        if len(combined) <= self._keep:
            self._pending = combined
            return ""
        cut = len(combined) - self._keep
        self._pending = combined[cut:]
        return combined[:cut]

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        return rest
