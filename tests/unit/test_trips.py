"""The report rules (trackstore.trips) on hand-made tracks with known answers: daily summaries,
stops and trips; and a day's figures do not depend on how a window cuts the track."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

import pytest

from trackstore.domain import Location
from trackstore.geo import EARTH_RADIUS_M, haversine_m
from trackstore.timefmt import DAY_MS, parse_iso
from trackstore.trips import (
    DaySummaries,
    DaySummary,
    Itinerary,
    StepKind,
    Stop,
    Trip,
    step_between,
)

DAY = parse_iso("2026-11-27T00:00:00Z") // DAY_MS
T0 = DAY * DAY_MS + 8 * 3_600_000  # 08:00 UTC
LAT0, LON = 52.0, 13.4
M_PER_DEG = EARTH_RADIUS_M * math.pi / 180  # along a meridian


def fix(t_ms: int, north_m: float, speed: float | None = None, east_m: float = 0.0) -> Location:
    """A fix `north_m` metres north (and `east_m` east) of (LAT0, LON)."""
    return Location(
        device_id="bus-1",
        timestamp=t_ms,
        latitude=LAT0 + north_m / M_PER_DEG,
        longitude=LON + east_m / (M_PER_DEG * math.cos(math.radians(LAT0))),
        speed=speed,
        received_at=t_ms,
    )


def drive(
    t_ms: int, from_m: float, metres: float, kmh: float, every_s: int, speed: bool = True
) -> list[Location]:
    """Driving north from `from_m` for `metres` at `kmh`, a fix every `every_s` seconds from
    t_ms (the first fix is at from_m, t_ms)."""
    per_fix = kmh / 3.6 * every_s
    count = round(metres / per_fix)
    return [
        fix(t_ms + k * every_s * 1000, from_m + k * per_fix, kmh if speed else None)
        for k in range(count + 1)
    ]


def stand(t_ms: int, at_m: float, seconds: int, every_s: int) -> list[Location]:
    return [fix(t_ms + k * every_s * 1000, at_m, 0.0) for k in range(1, seconds // every_s + 1)]


def summarise(fixes: Iterable[Location], first: int = DAY, last: int = DAY) -> list[DaySummary]:
    summaries = DaySummaries(first, last)
    days: list[DaySummary] = []
    for location in fixes:
        days += summaries.add(location)
    return days + summaries.finish()


def one_day(fixes: Iterable[Location]) -> DaySummary:
    (day,) = summarise(fixes)
    return day


# -- steps ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "kind"),
    [
        (fix(T0 + 10_000, 100.0, 36.0), StepKind.MOVING),
        (fix(T0 + 10_000, 100.0), StepKind.MOVING),  # derived: 36 km/h
        (fix(T0 + 10_000, 5.0), StepKind.IDLE),  # derived: 1.8 km/h
        (fix(T0 + 10_000, 100.0, 2.0), StepKind.IDLE),  # the reported speed decides
        (fix(T0 + 10_000, 50_000.0), StepKind.JUMP),  # 18,000 km/h
        (fix(T0 + 600_000, 1000.0), StepKind.GAP),
        (fix(T0 + 600_000, 100_000.0), StepKind.JUMP),  # 600 km/h, over a gap
    ],
)
def test_a_step_is_a_jump_a_gap_idle_or_moving(current: Location, kind: StepKind) -> None:
    assert step_between(fix(T0, 0.0), current, 250.0).kind is kind


# -- daily summaries ------------------------------------------------------------------------------

TEN_KM = drive(T0, 0.0, 10_000, 36.0, 10)  # 101 fixes, 1000 s
STOPPED = [
    *drive(T0, 0.0, 5_000, 36.0, 10),  # to 5 km at T0 + 500 s
    *stand(T0 + 500_000, 5_000.0, 300, 10),  # 5 minutes, 30 fixes
    *drive(T0 + 800_000, 5_000.0, 5_000, 36.0, 10)[1:],
]
JUMPED = [*TEN_KM[:50], fix(T0 + 500_000, 60_000.0, 36.0), *TEN_KM[51:]]
GAPPED = [
    *drive(T0, 0.0, 5_000, 36.0, 10),  # to 5 km at T0 + 500 s
    *drive(T0 + 1_100_000, 6_000.0, 5_000, 36.0, 10),  # silent 10 minutes, 1 km on
]
JITTER = [  # no speed reported; within 3 m of the spot: derived speeds under 3 km/h
    fix(T0 + k * 10_000, 3.0 * math.sin(k), east_m=3.0 * math.cos(k * 1.7)) for k in range(181)
]


@pytest.mark.parametrize(
    ("name", "track", "expected"),
    [
        (
            "10 km at 36 km/h",
            TEN_KM,
            {"fixes": 101, "distance_m": 10_000, "moving_ms": 1_000_000, "idle_ms": 0,
             "max_speed_kmh": 36.0, "avg_moving_speed_kmh": 36.0, "gaps": 0, "jumps_skipped": 0},
        ),
        (
            "a 5 minute stop",
            STOPPED,
            {"fixes": 131, "distance_m": 10_000, "moving_ms": 1_000_000, "idle_ms": 300_000,
             "max_speed_kmh": 36.0, "avg_moving_speed_kmh": 36.0, "gaps": 0, "jumps_skipped": 0},
        ),
        (
            "a GPS jump: out and back skipped",
            JUMPED,
            {"fixes": 101, "distance_m": 9_800, "moving_ms": 980_000, "idle_ms": 0,
             "max_speed_kmh": 36.0, "avg_moving_speed_kmh": 36.0, "gaps": 0, "jumps_skipped": 2},
        ),
        (
            "a 10 minute gap",
            GAPPED,
            {"fixes": 102, "distance_m": 11_000, "moving_ms": 1_000_000, "idle_ms": 0,
             "max_speed_kmh": 36.0, "avg_moving_speed_kmh": 36.0, "gaps": 1, "gap_ms": 600_000,
             "jumps_skipped": 0},
        ),
        (
            "standing still with jitter, no speed",
            JITTER,
            {"fixes": 181, "moving_ms": 0, "idle_ms": 1_800_000, "max_speed_kmh": None,
             "avg_moving_speed_kmh": None, "gaps": 0, "jumps_skipped": 0},
        ),
        (
            "no fix",
            [],
            {"fixes": 0, "first_fix": None, "last_fix": None, "distance_m": 0, "moving_ms": 0,
             "idle_ms": 0, "max_speed_kmh": None, "gaps": 0},
        ),
    ],
)  # fmt: skip
def test_a_day_summary_of_a_known_track(
    name: str, track: list[Location], expected: dict[str, object]
) -> None:
    day = one_day(track)

    for field, value in expected.items():
        got = getattr(day, field)
        if isinstance(value, float | int) and not isinstance(value, bool) and field != "fixes":
            assert got == pytest.approx(value, abs=1e-6), (name, field)
        else:
            assert got == value, (name, field)
    if track:
        assert (day.first_fix, day.last_fix) == (track[0].timestamp, track[-1].timestamp)
    assert day.date == "2026-11-27"


def test_jitter_adds_its_small_distances() -> None:
    day = one_day(JITTER)

    assert 0 < day.distance_m < 180 * 6


def test_a_step_across_midnight_is_split_there() -> None:
    midnight = (DAY + 1) * DAY_MS
    track = drive(midnight - 120_000, 0.0, 2_400, 36.0, 10)  # 23:58 to 00:02
    crossing = [fix(midnight - 5_000, 0.0, 36.0), fix(midnight + 5_000, 100.0, 36.0)]

    first, second = summarise(track, DAY, DAY + 1)
    a, b = summarise(crossing, DAY, DAY + 1)

    assert (first.distance_m, second.distance_m) == pytest.approx((1200, 1200))
    assert (first.moving_ms, second.moving_ms) == (120_000, 120_000)
    assert (first.fixes, second.fixes) == (12, 13)  # the fix at midnight is the next day's
    assert (a.distance_m, b.distance_m) == pytest.approx((50, 50))
    assert (a.moving_ms, b.moving_ms) == (5_000, 5_000)
    assert (a.fixes, b.fixes) == (1, 1)


def test_a_gap_across_midnight_counts_in_both_days_with_its_part() -> None:
    midnight = (DAY + 1) * DAY_MS
    track = [fix(midnight - 3_600_000, 0.0, 0.0), fix(midnight + 1_800_000, 0.0, 0.0)]

    first, second = summarise(track, DAY, DAY + 1)

    assert (first.gaps, first.gap_ms) == (1, 3_600_000)
    assert (second.gaps, second.gap_ms) == (1, 1_800_000)
    assert first.idle_ms == second.idle_ms == 0


def test_every_day_asked_is_answered_in_order_even_without_fixes() -> None:
    days = summarise([fix(T0 + DAY_MS, 0.0)], DAY, DAY + 2)

    assert [(d.day, d.fixes) for d in days] == [(DAY, 0), (DAY + 1, 1), (DAY + 2, 0)]
    assert [d.date for d in days] == ["2026-11-27", "2026-11-28", "2026-11-29"]


def test_days_are_returned_as_soon_as_a_later_fix_closes_them() -> None:
    summaries = DaySummaries(DAY, DAY + 2)

    assert summaries.add(fix(T0, 0.0)) == []
    closed = summaries.add(fix(T0 + 2 * DAY_MS, 0.0))

    assert [d.day for d in closed] == [DAY, DAY + 1]
    assert [d.day for d in summaries.finish()] == [DAY + 2]


def test_a_fix_not_newer_than_the_last_is_ignored() -> None:
    day = one_day([fix(T0, 0.0), fix(T0 + 10_000, 100.0), fix(T0 + 10_000, 900.0)])

    assert (day.fixes, day.distance_m) == pytest.approx((2, 100))


# -- the same day, however the window cuts it -----------------------------------------------------


def busy_days(days: int, seed: int = 7) -> list[Location]:
    """Several days of driving, stopping, silences (some across midnight) and GPS jumps, with
    and without reported speeds."""
    rng = random.Random(seed)
    fixes: list[Location] = []
    t = DAY * DAY_MS - 2 * 3_600_000
    position = 0.0
    end = (DAY + days) * DAY_MS + 2 * 3_600_000
    while t < end:
        r = rng.random()
        if r < 0.02:
            t += rng.randint(6, 300) * 60_000  # a silence of 6 minutes to 5 hours
        elif r < 0.03:
            fixes.append(fix(t, position + 80_000.0, 40.0))  # an outlier
            t += 10_000
            continue
        kmh = rng.choice([0.0, 0.0, 20.0, 36.0, 50.0])
        for _ in range(rng.randint(5, 120)):
            position += kmh / 3.6 * 10 + rng.uniform(-2, 2)
            speed = None if rng.random() < 0.3 else kmh
            fixes.append(fix(t, position, speed, east_m=rng.uniform(-3, 3)))
            t += 10_000
    return fixes


def asked_alone(track: Sequence[Location], day: int) -> DaySummary:
    """The day from what the API reads for it: its fixes and one neighbour each side."""
    start, end = day * DAY_MS, (day + 1) * DAY_MS
    before = [f for f in track if f.timestamp < start][-1:]
    inside = [f for f in track if start <= f.timestamp < end]
    after = [f for f in track if f.timestamp >= end][:1]
    (summary,) = summarise([*before, *inside, *after], day, day)
    return summary


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_day_is_the_same_alone_or_in_any_window(seed: int) -> None:
    track = busy_days(4, seed)

    whole = summarise(track, DAY, DAY + 3)
    middle = summarise(track, DAY + 1, DAY + 2)  # everything fed: the rest is harmless

    assert [d.day for d in whole] == [DAY, DAY + 1, DAY + 2, DAY + 3]
    for summary in whole:
        assert asked_alone(track, summary.day) == summary
    assert middle == whole[1:3]
    assert sum(d.jumps_skipped for d in whole) > 0
    assert sum(d.gaps for d in whole) > 0


# -- stops and trips ------------------------------------------------------------------------------


def itinerary(fixes: Iterable[Location], **options: float) -> list[Stop | Trip]:
    found = Itinerary(**options)  # type: ignore[arg-type]
    out: list[Stop | Trip] = []
    for location in fixes:
        out += found.add(location)
    return out + found.finish()


def s(seconds: int) -> int:
    return T0 + seconds * 1000


# A fix a minute: 5 minutes at 0 m, 6 km at 36 km/h, 5 minutes at 6 km, 3.6 km on.
ROUND = [
    *[fix(s(t), 0.0, 0.0) for t in range(0, 301, 60)],
    *[fix(s(300 + 60 * k), 600.0 * k, 36.0) for k in range(1, 11)],
    *[fix(s(900 + 60 * k), 6000.0, 0.0) for k in range(1, 6)],
    *[fix(s(1200 + 60 * k), 6000.0 + 600 * k, 36.0) for k in range(1, 7)],
]


def test_stops_and_trips_of_a_known_track() -> None:
    found = itinerary(ROUND)

    assert [type(item) for item in found] == [Stop, Trip, Stop, Trip]
    stop1, trip1, stop2, trip2 = found
    assert isinstance(stop1, Stop)
    assert isinstance(stop2, Stop)
    assert isinstance(trip1, Trip)
    assert isinstance(trip2, Trip)
    assert (stop1.arrival, stop1.departure, stop1.fixes) == (s(0), s(300), 6)
    assert (stop2.arrival, stop2.departure, stop2.fixes) == (s(900), s(1200), 6)
    assert stop2.duration_ms == 300_000
    assert (stop1.latitude, stop1.longitude) == pytest.approx((LAT0, LON))
    assert stop2.latitude == pytest.approx(LAT0 + 6000 / M_PER_DEG)
    assert (trip1.start, trip1.end, trip1.fixes) == (s(300), s(900), 11)
    assert trip1.distance_m == pytest.approx(6000)
    assert (trip1.start_latitude, trip1.end_latitude) == pytest.approx(
        (LAT0, LAT0 + 6000 / M_PER_DEG)
    )
    assert trip1.max_speed_kmh == 36.0
    assert trip1.avg_speed_kmh == pytest.approx(36.0)
    assert (trip2.start, trip2.end, trip2.fixes) == (s(1200), s(1560), 7)  # to the window's end
    assert trip2.distance_m == pytest.approx(3600)


def test_a_stop_shorter_than_min_duration_is_part_of_the_trip() -> None:
    found = itinerary(ROUND, min_duration_ms=301_000)

    (trip,) = found
    assert isinstance(trip, Trip)
    assert (trip.start, trip.end, trip.fixes) == (s(0), s(1560), len(ROUND))
    assert trip.distance_m == pytest.approx(9600)


def test_standing_still_with_jitter_is_one_stop_at_its_centroid() -> None:
    found = itinerary(JITTER)

    (stop,) = found
    assert isinstance(stop, Stop)
    assert (stop.arrival, stop.departure, stop.fixes) == (T0, T0 + 1_800_000, 181)
    assert haversine_m(stop.latitude, stop.longitude, LAT0, LON) < 1.0


def test_arrival_is_early_by_at_most_radius_over_speed_with_frequent_fixes() -> None:
    track = [
        *drive(T0, 0.0, 10_000, 36.0, 10),  # arrives at 10 km at T0 + 1000 s
        *stand(T0 + 1_000_000, 10_000.0, 300, 10),
        *drive(T0 + 1_300_000, 10_000.0, 2_000, 36.0, 10)[1:],
    ]

    stops = [item for item in itinerary(track) if isinstance(item, Stop)]

    (stop,) = stops
    assert T0 + 980_000 <= stop.arrival <= T0 + 1_000_000
    assert T0 + 1_300_000 <= stop.departure <= T0 + 1_320_000
    trips = [item for item in itinerary(track) if isinstance(item, Trip)]
    assert [(t.start, t.end) for t in trips] == [(T0, stop.arrival), (stop.departure, trips[1].end)]
    assert sum(t.distance_m for t in trips) == pytest.approx(12_000, abs=400)


def test_a_gps_jump_in_a_trip_is_skipped_and_counted() -> None:
    (trip,) = itinerary(JUMPED)

    assert isinstance(trip, Trip)
    assert (trip.start, trip.end, trip.fixes) == (T0, T0 + 1_000_000, 101)
    assert trip.jumps_skipped == 2
    assert trip.max_speed_kmh == 36.0
    assert trip.distance_m == pytest.approx(9_800)  # the steps to and from the outlier skipped


def test_a_silence_in_place_is_part_of_the_stop() -> None:
    track = [fix(T0, 0.0, 0.0), fix(T0 + 3_600_000, 10.0, 0.0), fix(T0 + 3_660_000, 900.0, 36.0)]

    found = itinerary(track)

    assert isinstance(found[0], Stop)
    assert (found[0].arrival, found[0].departure) == (T0, T0 + 3_600_000)


def test_no_fixes_no_stops_no_trips() -> None:
    assert itinerary([]) == []
    assert itinerary([fix(T0, 0.0)]) == []


def test_the_rules_import_only_the_standard_library_msgspec_and_the_core() -> None:
    from pathlib import Path

    import trackstore
    from tests.unit.test_service import foreign_imports

    path = Path(trackstore.__file__).parent / "trips.py"

    assert foreign_imports(path.read_text(encoding="utf-8"), "trackstore.trips") == []
