"""Request parameters: their OpenAPI declarations, and parsers from the raw strings.

Parameters are declared as (optional) strings with explicit markers and parsed here, so every bad
value is a 400 problem whose message names the parameter, not a framework validation dump.
"""

from __future__ import annotations

from typing import Annotated

from litestar.params import PathParameter, QueryParameter

from trackstore.domain import DEFAULT_PAGE_SIZE, DEVICE_ID_PATTERN, MAX_PAGE_SIZE, Order
from trackstore.errors import INVALID, Error
from trackstore.timefmt import parse_time

# datetime's range (years 1..9999): anything outside is a typo, and DynamoDB numbers have limits.
MIN_TIME_MS = -62_135_596_800_000
MAX_TIME_MS = 253_402_300_799_999
_MAX_LIMIT_DIGITS = 6
_TIME_HELP = (
    "ISO-8601 date-time with a UTC offset (encode '+' as %2B), or epoch time: seconds below "
    "10^11, milliseconds from there; inclusive"
)

DeviceId = Annotated[
    str,
    PathParameter(
        description="The device id: 1..128 characters of A-Z a-z 0-9 . _ : -",
        # Documented here, checked by the service, whose 400 says what is wrong with the id.
        schema_extra={"pattern": f"^{DEVICE_ID_PATTERN.pattern}$", "maxLength": 128},
    ),
]
Limit = Annotated[
    str | None,
    QueryParameter(description=f"Page size, an integer 1..{MAX_PAGE_SIZE}; default 100"),
]
NextToken = Annotated[
    str | None,
    QueryParameter(description="Opaque token: the previous page's nextToken"),
]
StartTime = Annotated[str | None, QueryParameter(description=f"Window start: {_TIME_HELP}")]
EndTime = Annotated[str | None, QueryParameter(description=f"Window end: {_TIME_HELP}")]
SortOrder = Annotated[
    str | None, QueryParameter(description="'asc' (oldest first, the default) or 'desc'")
]


def time_param(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        ms = parse_time(text)
    except (ValueError, OverflowError) as exc:
        raise Error(
            INVALID,
            f"{name} must be an ISO-8601 date-time with a UTC offset "
            f"(e.g. 2026-11-28T12:00:00Z) or epoch seconds or milliseconds: {exc}",
        ) from None
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise Error(INVALID, f"{name} is out of range: {_shorten(text)!r}")
    return ms


def limit_param(text: str | None) -> int:
    if text is None:
        return DEFAULT_PAGE_SIZE
    # str.isdigit alone would let "٣" through, and int() would take "1_000": plain ASCII only.
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit() and len(digits) <= _MAX_LIMIT_DIGITS):
        raise Error(INVALID, f"limit must be an integer between 1 and {MAX_PAGE_SIZE}")
    limit = int(digits)
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise Error(INVALID, f"limit must be an integer between 1 and {MAX_PAGE_SIZE}")
    return limit


def order_param(text: str | None) -> Order:
    if text is None:
        return Order.ASC
    try:
        return Order(text)
    except ValueError:
        raise Error(INVALID, f"order must be 'asc' or 'desc', got {_shorten(text)!r}") from None


def _shorten(text: str, limit: int = 64) -> str:
    # Enough of a bad value to recognise it, without reflecting a huge query string back.
    return text if len(text) <= limit else text[:limit] + "..."
