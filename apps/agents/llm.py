"""One model turn over the Anthropic Messages API: stream it, and retry what is worth retrying.

We retry ourselves instead of leaving it to the SDK (whose client is used with
``max_retries=0``) for three reasons: the pause must end at once when the run is cancelled, every
retry is an event the user sees ("rate limited, retrying in 2 s"), and an error arriving in the
middle of a stream (``overloaded_error``) must be retried too. ``retry-after-ms`` and
``retry-after`` are honoured, capped at ``RetryPolicy.max_retry_after``.

Retried: 408, 409, 429, 5xx and 529, connection errors and timeouts, and stream ``error`` events
of type ``overloaded_error``/``api_error``/``rate_limit_error``. Not retried: 400, 401, 403, 404,
413, 422 (a 401 ends the run with ``end_reason="auth_error"``).
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anthropic

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
RETRYABLE_STREAM_ERRORS = frozenset({"overloaded_error", "api_error", "rate_limit_error"})


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 4
    initial_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 60.0  # never wait longer than this, whatever the server says


class ModelCallCancelled(Exception):
    pass


class ModelCallFailed(Exception):
    """The model could not be reached or refused the request for good."""

    def __init__(self, end_reason: str, error_type: str, message: str) -> None:
        super().__init__(message)
        self.end_reason = end_reason
        self.error_type = error_type
        self.message = message


@dataclass
class RetryInfo:
    attempt: int
    status_code: int | None
    error_type: str
    message: str
    delay_s: float


def _error_type(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error") if isinstance(body.get("error"), dict) else body
        if isinstance(error, dict) and isinstance(error.get("type"), str):
            return error["type"]
    return type(exc).__name__


def _error_message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error") if isinstance(body.get("error"), dict) else body
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
    return str(exc)


def retry_after_seconds(headers: Any) -> float | None:
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(float(value) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        return max(email.utils.mktime_tz(parsed) - time.time(), 0.0)


def classify(exc: BaseException) -> tuple[bool, int | None]:
    """``(retryable, status code)`` of an exception raised by the SDK."""
    if isinstance(exc, anthropic.APIConnectionError):  # includes APITimeoutError
        return True, None
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        if status == 200:  # an ``error`` event inside a stream
            return _error_type(exc) in RETRYABLE_STREAM_ERRORS, status
        return status in RETRYABLE_STATUS or status >= 500, status
    return False, None


def failure_for(exc: BaseException) -> ModelCallFailed:
    if isinstance(exc, anthropic.AuthenticationError):
        return ModelCallFailed(
            "auth_error",
            "AuthenticationError",
            "The Anthropic API rejected the credentials (401 "
            f"{_error_type(exc)}: {_error_message(exc)}). Check ANTHROPIC_API_KEY.",
        )
    if isinstance(exc, anthropic.PermissionDeniedError):
        return ModelCallFailed(
            "auth_error",
            "PermissionDeniedError",
            f"The API key may not use this model or resource (403: {_error_message(exc)}).",
        )
    status = getattr(exc, "status_code", None)
    where = f"{status} " if status and status != 200 else ""
    return ModelCallFailed(
        "api_error",
        type(exc).__name__,
        f"The Anthropic API failed ({where}{_error_type(exc)}): {_error_message(exc)}",
    )


def backoff_delay(policy: RetryPolicy, attempt: int, exc: BaseException) -> float:
    response = getattr(exc, "response", None)
    server_says = retry_after_seconds(getattr(response, "headers", None))
    if server_says is not None:
        return min(server_says, policy.max_retry_after)
    delay = min(policy.initial_delay * 2 ** (attempt - 1), policy.max_delay)
    return delay * (1 - 0.25 * random.random())  # noqa: S311 - jitter, not crypto


def stream_message(
    client: anthropic.Anthropic,
    request: dict,
    *,
    policy: RetryPolicy,
    cancel: threading.Event,
    on_text: Callable[[str], None],
    on_retry: Callable[[RetryInfo], None],
    on_stream: Callable[[Any], None],
) -> Any:
    """Stream one response and return the final ``Message``; raise ModelCall* on failure."""
    attempt = 0
    while True:
        if cancel.is_set():
            raise ModelCallCancelled()
        try:
            with client.messages.stream(**request) as stream:
                on_stream(stream)
                try:
                    for event in stream:
                        if cancel.is_set():
                            raise ModelCallCancelled()
                        if event.type == "text" and event.text:
                            on_text(event.text)
                    return stream.get_final_message()
                finally:
                    on_stream(None)
        except ModelCallCancelled:
            raise
        except Exception as exc:
            if cancel.is_set():
                raise ModelCallCancelled() from exc
            retryable, status = classify(exc)
            if not retryable:
                if isinstance(exc, anthropic.AnthropicError):
                    raise failure_for(exc) from exc
                raise
            attempt += 1
            if attempt > policy.max_retries:
                failure = failure_for(exc)
                failure.message += f" (gave up after {policy.max_retries} retries)"
                raise failure from exc
            delay = backoff_delay(policy, attempt, exc)
            on_retry(RetryInfo(attempt, status, _error_type(exc), _error_message(exc), delay))
            if cancel.wait(delay):
                raise ModelCallCancelled() from exc
