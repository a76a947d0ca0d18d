"""Request parameters: their OpenAPI declarations, and parsers from the raw strings.

Parameters are declared as (optional) strings with explicit markers and parsed here, so every bad
value is a 400 problem whose message names the parameter, not a framework validation dump.
"""

from __future__ import annotations

import re
from typing import Annotated

from litestar.params import PathParameter, QueryParameter

from trackstore.domain import DEFAULT_PAGE_SIZE, DEVICE_ID_PATTERN, MAX_PAGE_SIZE, Order
from trackstore.errors import INVALID, Error
from trackstore.timefmt import parse_time
from trackstore.track_simplification import Simplification

# datetime's range (years 1..9999): anything outside is a typo, and DynamoDB numbers have limits.
MIN_TIME_MS = -62_135_596_800_000
MAX_TIME_MS = 253_402_300_799_999
_MAX_LIMIT_DIGITS = 6
MAX_SIMPLIFY_M = 100_000
MAX_POINTS = 100_000
_METRES = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6})?")
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
Simplify = Annotated[
    str | None,
    QueryParameter(
        description=(
            "Douglas-Peucker tolerance in metres, a number above 0 and up to "
            f"{MAX_SIMPLIFY_M:,}: keeps the first and last locations and enough others that no "
            "location left out is farther than this from the line between the kept ones around "
            "it. On the JSON answer each page is simplified on its own; on a file, the whole "
            "window"
        )
    ),
]
MaxPoints = Annotated[
    str | None,
    QueryParameter(
        description=(
            f"Keep at most this many locations (an integer 2..{MAX_POINTS:,}), the most "
            "significant ones (Douglas-Peucker by rank, the first and last among them); after "
            "simplify when both are given. Per page on the JSON answer, over the whole window "
            "on a file"
        )
    ),
]
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


def simplification_param(simplify: str | None, max_points: str | None) -> Simplification:
    tolerance = None
    if simplify is not None:
        text = simplify.strip()
        tolerance = float(text) if _METRES.fullmatch(text) else 0.0
        if not 0 < tolerance <= MAX_SIMPLIFY_M:
            raise Error(
                INVALID,
                f"simplify must be a number of metres above 0 and up to {MAX_SIMPLIFY_M}, "
                f"got {_shorten(simplify)!r}",
            )
    count = None
    if max_points is not None:
        digits = max_points.strip()
        count = int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 7 else 0
        if not 2 <= count <= MAX_POINTS:
            raise Error(
                INVALID,
                f"max_points must be an integer between 2 and {MAX_POINTS}, "
                f"got {_shorten(max_points)!r}",
            )
    return Simplification(tolerance, count)


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
