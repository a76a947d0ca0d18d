"""What DynamoDB can store, as rules the core checks before anything is written.

DynamoDB refuses a whole request (ValidationException, which no retry fixes) for one value it
cannot hold. A stream record or a registration body that passed our rules and then hit one of
these would stop its shard or answer 500, so every value that reaches a table is checked here
first: stream records (both decode paths), their attributes and legacy extras, registration
bodies.

- Numbers: at most 38 significant digits, and a magnitude of 1E-130 to below 1E+126 (zero is
  fine). A float is stored by its shortest repr (at most 17 digits), so for floats only the
  magnitude can be out; an integer can also be too long.
- Maps and lists nest at most 32 levels deep. Counted conservatively, the item itself as the
  first level, so a top-level attribute's own map is the second.
- An item is at most 400 KB. No item of ours comes near it: a location's attributes are capped at
  2 KiB, a device's name and metadata at 4 KiB, a device id at 128 characters.
- Strings are UTF-8: a lone surrogate (which JSON's \\ud800 escape can carry) cannot be sent.
"""

from __future__ import annotations

import math
from decimal import Decimal

from trackstore.domain import Location

MAX_SIGNIFICANT_DIGITS = 38
MAX_EXPONENT = 125  # 9.99..E+125 is the largest magnitude
MIN_EXPONENT = -130  # 1E-130 is the smallest non-zero magnitude
MAX_NESTING = 32
_LOWEST = 1e-130
_HIGHEST = 1e126
_LONG_INT = 10**MAX_SIGNIFICANT_DIGITS


def number_problem(value: int | float) -> str | None:
    """Why DynamoDB cannot store the number, or None when it can."""
    if isinstance(value, float):
        if value == 0.0 or _LOWEST <= abs(value) < _HIGHEST:
            return None
        if not math.isfinite(value):
            return "is not a finite number"
        exponent = Decimal(repr(value)).adjusted()
        if exponent > MAX_EXPONENT:
            return "is too large for DynamoDB (magnitude 1E+126 or more)"
        if exponent < MIN_EXPONENT:
            return "is too small for DynamoDB (non-zero magnitude under 1E-130)"
        return None
    if -_LONG_INT < value < _LONG_INT:
        return None
    digits = str(abs(value))
    if len(digits) - 1 > MAX_EXPONENT:
        return "is too large for DynamoDB (magnitude 1E+126 or more)"
    if len(digits.rstrip("0")) > MAX_SIGNIFICANT_DIGITS:
        return f"has more than {MAX_SIGNIFICANT_DIGITS} significant digits"
    return None


def string_problem(value: str) -> str | None:
    try:
        value.encode()
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate)"
    return None


def value_problem(value: object, depth: int = 2) -> str | None:
    """Why DynamoDB cannot store this JSON-like value (None, bool, number, string, dict, list)
    at nesting level `depth` (2: a top-level attribute), or None when it can. The answer names
    where the bad part is."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return number_problem(value)
    if isinstance(value, str):
        return string_problem(value)
    if isinstance(value, dict | list):
        if depth > MAX_NESTING:
            return f"is nested deeper than {MAX_NESTING} levels"
        pairs = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in pairs:
            if isinstance(key, str) and (problem := string_problem(key)):
                return f"has a key that {problem}"
            if problem := value_problem(item, depth + 1):
                label = f".{key}" if isinstance(key, str) else f"[{key}]"
                joiner = "" if problem[0] in ".[" else " "
                return f"{label}{joiner}{problem}"
        return None
    return f"is a {type(value).__name__}, which is not JSON"


def location_problem(location: Location) -> str | None:
    """Why DynamoDB cannot store the location's item, or None when it can."""
    for name in ("latitude", "longitude", "speed", "heading", "altitude", "accuracy", "battery"):
        value = getattr(location, name)
        if value is not None and (problem := number_problem(value)):
            return f"{name} {problem}"
    if location.attributes and (problem := value_problem(location.attributes)):
        return f"attributes{problem}"
    return None
