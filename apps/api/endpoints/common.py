from __future__ import annotations

from ..schemas import ErrorOut


def errors(*codes: int) -> dict[int, type[ErrorOut]]:
    """The error responses an operation documents (all share one shape)."""
    return dict.fromkeys(codes, ErrorOut)


# What any operation on one object can answer besides success.
ERRORS = errors(400, 401, 403, 404, 409, 429)
