"""The one error type of TrackStore. Adapters translate their failures into it at their edge."""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    NOT_FOUND = "not_found"
    INVALID = "invalid"
    CONFLICT = "conflict"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


NOT_FOUND = Code.NOT_FOUND
INVALID = Code.INVALID
CONFLICT = Code.CONFLICT
UNAVAILABLE = Code.UNAVAILABLE
INTERNAL = Code.INTERNAL


class Error(Exception):
    """A failure a caller can act on: the code says what kind, the message says what exactly.

    `retry_after` (seconds) is set on UNAVAILABLE errors when the caller should come back later.
    """

    def __init__(self, code: Code, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"Error({self.code.value!r}, {self.message!r})"
