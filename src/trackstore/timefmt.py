"""Time values as TrackStore sees them: integer epoch milliseconds inside, ISO-8601 at the edges."""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime, timedelta

# A number below this is epoch seconds, otherwise epoch milliseconds (the contract's rule):
# 10^11 seconds is the year 5138, 10^11 milliseconds is 1973.
EPOCH_SECONDS_LIMIT = 10**11

DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_to_ms(value: float) -> int:
    """Epoch seconds or milliseconds (told apart by magnitude) to integer milliseconds."""
    if not math.isfinite(value):
        raise ValueError("timestamp is not a finite number")
    if abs(value) < EPOCH_SECONDS_LIMIT:
        return round(value * 1000)
    return round(value)


def parse_iso(text: str) -> int:
    """An ISO-8601 date-time with a UTC offset (`Z` or `+hh:mm`) to epoch milliseconds."""
    text = text.strip()
    try:
        # RFC 3339 allows a lower-case t and z; fromisoformat does not.
        moment = datetime.fromisoformat(text.upper())
    except ValueError:
        raise ValueError(f"not an ISO-8601 date-time: {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"ISO-8601 date-time needs a UTC offset (Z or +hh:mm): {text!r}")
    return _datetime_to_ms(moment)


def parse_time(text: str) -> int:
    """A query parameter's time: ISO-8601 with offset, or epoch milliseconds as digits."""
    stripped = text.strip()
    digits = stripped.removeprefix("-")
    if digits.isascii() and digits.isdigit():
        if len(digits) > 15:  # beyond year 33658: not a time anyone means
            raise ValueError(f"epoch milliseconds out of range: {text!r}")
        return int(stripped)
    return parse_iso(stripped)


# Zero-padded numbers looked up rather than formatted: `{n:02d}` costs four times as much.
_TWO_DIGITS = tuple(f"{n:02d}" for n in range(100))
_THREE_DIGITS = tuple(f"{n:03d}" for n in range(1000))


def format_ms(ms: int) -> str:
    """Epoch milliseconds to `2026-11-28T12:00:00.123Z`."""
    # On every location of every response: arithmetic and a cached date, not strftime.
    day, rest = divmod(ms, DAY_MS)
    seconds, milli = divmod(rest, 1000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    two = _TWO_DIGITS
    return f"{_date(day)}T{two[hours]}:{two[minutes]}:{two[seconds]}.{_THREE_DIGITS[milli]}Z"


def utc_date(ms: int) -> str:
    """`YYYY-MM-DD` (UTC) of epoch milliseconds."""
    return _date(ms // DAY_MS)


@functools.lru_cache(maxsize=1024)
def _date(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")


def _datetime_to_ms(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return delta.days * DAY_MS + delta.seconds * 1000 + delta.microseconds // 1000
