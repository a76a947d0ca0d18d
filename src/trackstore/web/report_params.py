"""The reports' query parameters: their OpenAPI declarations and parsers, and the windows they
give (a summary's UTC days, a stops or trips window)."""

from __future__ import annotations

import datetime
import math
import re
from typing import Annotated

from litestar.params import QueryParameter

from trackstore.errors import INVALID, Error
from trackstore.service import TrackService
from trackstore.timefmt import DAY_MS, HOUR_MS
from trackstore.trips import (
    DEFAULT_MAX_SPEED_KMH,
    DEFAULT_STOP_MIN_DURATION_MS,
    DEFAULT_STOP_RADIUS_M,
)
from trackstore.web.params import time_param

MAX_REPORT_DAYS = 31
MAX_REPORT_WINDOW_MS = MAX_REPORT_DAYS * DAY_MS
DEFAULT_REPORT_WINDOW_MS = 24 * HOUR_MS
MAX_RADIUS_M = 10_000.0
MAX_MIN_DURATION_S = 86_400
MAX_SPEED_LIMIT_KMH = 2_000.0
CSV_MEDIA_TYPE = "text/csv"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()

# -- parameters -----------------------------------------------------------------------------------

Date = Annotated[
    str | None,
    QueryParameter(
        description="A UTC day, YYYY-MM-DD; not with start_time or end_time. Without any of "
        "them: today (UTC)",
    ),
]
SummaryStart = Annotated[
    str | None,
    QueryParameter(
        description="With end_time instead of date: the summary covers every UTC day the window "
        f"touches (at most {MAX_REPORT_DAYS}), each day whole. ISO-8601 date-time with a UTC "
        "offset (encode '+' as %2B) or epoch seconds or milliseconds; default: end_time's day",
    ),
]
SummaryEnd = Annotated[
    str | None,
    QueryParameter(description="The window's end, as start_time; default: now"),
]
MaxSpeed = Annotated[
    str | None,
    QueryParameter(
        description="km/h: a step between two fixes implying more is a GPS jump, skipped and "
        f"counted; a number above 0, at most {MAX_SPEED_LIMIT_KMH:g}; default "
        f"{DEFAULT_MAX_SPEED_KMH:g}",
    ),
]
Radius = Annotated[
    str | None,
    QueryParameter(
        description="Metres: a stop keeps within this distance of its first fix; a number above "
        f"0, at most {MAX_RADIUS_M:g}; default {DEFAULT_STOP_RADIUS_M:g}",
    ),
]
MinDuration = Annotated[
    str | None,
    QueryParameter(
        description="Seconds a device must stay within radius_m for a stop; an integer 1.."
        f"{MAX_MIN_DURATION_S}; default {DEFAULT_STOP_MIN_DURATION_MS // 1000}",
    ),
]
Format = Annotated[
    str | None,
    QueryParameter(
        name="format",
        enum=["json", "csv"],
        description="'json' (the default) or 'csv' (RFC 4180, a header row, ISO-8601 times)",
    ),
]


def _shorten(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def date_param(text: str) -> int:
    """`YYYY-MM-DD` to days since the epoch."""
    try:
        if not _DATE.fullmatch(text):
            raise ValueError
        day = datetime.date.fromisoformat(text)
    except ValueError:
        raise Error(
            INVALID, f"date must be a UTC day as YYYY-MM-DD, got {_shorten(text)!r}"
        ) from None
    return day.toordinal() - _EPOCH_ORDINAL


def number_param(name: str, text: str | None, default: float, maximum: float) -> float:
    """A number above 0 and at most `maximum`."""
    if text is None:
        return default
    stripped = text.strip()
    try:
        number = float(stripped)
    except ValueError:
        number = math.nan
    if "_" in stripped or not math.isfinite(number) or not 0.0 < number <= maximum:
        raise Error(
            INVALID,
            f"{name} must be a number above 0 and at most {maximum:g}, got {_shorten(stripped)!r}",
        )
    return number


def seconds_param(name: str, text: str | None, default: int, maximum: int) -> int:
    if text is None:
        return default
    digits = text.strip()
    plain = digits.isascii() and digits.isdigit() and len(digits) <= 6
    number = int(digits) if plain else -1
    if not 1 <= number <= maximum:
        raise Error(INVALID, f"{name} must be an integer 1..{maximum}, got {_shorten(digits)!r}")
    return number


def csv_param(text: str | None) -> bool:
    """True for CSV."""
    if text is None or text == "json":
        return False
    if text == "csv":
        return True
    raise Error(INVALID, f"format must be 'json' or 'csv', got {_shorten(text)!r}")


def summary_days(day: str | None, start: int | None, end: int | None, now: int) -> tuple[int, int]:
    """The first and last UTC day (days since the epoch) a summary covers."""
    if day is not None:
        if start is not None or end is not None:
            raise Error(INVALID, "give either date or start_time/end_time, not both")
        first = date_param(day)
        return first, first
    if start is None and end is None:
        return now // DAY_MS, now // DAY_MS
    last_ms = now if end is None else end
    first_ms = last_ms if start is None else start
    if first_ms > last_ms:
        raise Error(INVALID, "start_time is after end_time")
    first, last = first_ms // DAY_MS, last_ms // DAY_MS
    if last - first + 1 > MAX_REPORT_DAYS:
        raise Error(
            INVALID,
            f"a summary covers at most {MAX_REPORT_DAYS} UTC days: give start_time and end_time "
            "closer together (end_time defaults to now)",
        )
    return first, last


def report_window(start: int | None, end: int | None, now: int) -> tuple[int, int]:
    """A stops or trips window: by default the last 24 hours; at most 31 days."""
    until = now if end is None else end
    since = until - DEFAULT_REPORT_WINDOW_MS if start is None else start
    if since > until:
        raise Error(INVALID, "start_time is after end_time")
    if until - since > MAX_REPORT_WINDOW_MS:
        raise Error(
            INVALID,
            f"a window spans at most {MAX_REPORT_DAYS} days: give start_time and end_time "
            "closer together (end_time defaults to now)",
        )
    return since, until


# -- reading the history --------------------------------------------------------------------------


def itinerary_params(
    service: TrackService,
    start_time: str | None,
    end_time: str | None,
    radius_m: str | None,
    min_duration_s: str | None,
    max_speed_kmh: str | None,
) -> tuple[int, int, float, int, float]:
    start, end = report_window(
        time_param("start_time", start_time), time_param("end_time", end_time), service.now_ms()
    )
    radius = number_param("radius_m", radius_m, DEFAULT_STOP_RADIUS_M, MAX_RADIUS_M)
    min_s = seconds_param(
        "min_duration_s", min_duration_s, DEFAULT_STOP_MIN_DURATION_MS // 1000, MAX_MIN_DURATION_S
    )
    limit = number_param("max_speed_kmh", max_speed_kmh, DEFAULT_MAX_SPEED_KMH, MAX_SPEED_LIMIT_KMH)
    return start, end, radius, min_s, limit
