"""Hypothesis strategies for any location a record can carry, shared by the tests that check a
writer against its reference."""

from __future__ import annotations

from hypothesis import strategies as st

from trackstore.domain import Location

FINITE = st.floats(allow_nan=False, allow_infinity=False, width=64)
MEASURE = st.none() | FINITE
SCALARS = st.none() | st.booleans() | st.integers(-(10**12), 10**12) | FINITE | st.text(max_size=20)
LOCATIONS = st.builds(
    Location,
    device_id=st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True),
    timestamp=st.integers(0, 253_402_300_799_999),
    latitude=st.floats(-90, 90),
    longitude=st.floats(-180, 180),
    speed=MEASURE,
    heading=MEASURE,
    altitude=MEASURE,
    accuracy=MEASURE,
    battery=MEASURE,
    received_at=st.integers(0, 253_402_300_799_999),
    attributes=st.none() | st.dictionaries(st.text(max_size=10), SCALARS, max_size=4),
)
