"""Track simplification (trackstore.simplify), checked on the sphere, not on its projection.

- Random tracks (random walks with stops, U-turns, repeats, some across the antimeridian): the
  indexes kept are ascending, hold the first and last, and every dropped point is within the
  tolerance of the kept segment spanning it, measured here with great circles on geo's sphere.
- Simplifying what was kept keeps it all.
- A straight line collapses to its ends; a zig-zag wider than the tolerance keeps its corners,
  and only them; a point just beyond the tolerance of a segment 5,500 km long is kept, wherever
  it is along it; a point beyond an end is measured to the end.
- most_significant: exactly min(n, len) indexes, the ends among them, each set within the next.
- Few points, a bus standing still, a closed loop, a track that turns back on itself 1,500 times
  (too deep for recursion), 259,200 points.
- The box search answers as looking at every point does.
- Errors name the API's parameters: simplify, max_points.

The slack allowed on the sphere. The module promises that a dropped point is within the tolerance,
on the sphere, of the segment drawn straight in latitude and longitude between the kept points
around it. The great-circle arc between the same points strays from that segment by its bulge, at
most L^2 tan(phi) / (8R) for a segment of length L at latitudes up to phi (that much towards the
pole for a segment along a parallel, nothing along a meridian or the equator). The test allows
twice that (tan(phi) raised by 0.1) plus a micrometre for rounding: micrometres to centimetres for
the random tracks here (segments of metres to a few km, |lat| <= 75), against tolerances of 0.5
to 200 m. Segments longer than 20 km, where the formula no longer holds, get the bulge measured.
"""

from __future__ import annotations

import ast
import itertools
import math
import random
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import trackstore.simplify as simplify_module
from trackstore.errors import INVALID, Error
from trackstore.geo import EARTH_RADIUS_M
from trackstore.simplify import douglas_peucker, most_significant

# database=None: no .hypothesis/ directory in the work tree; a failure prints its example.
PROPERTY = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SOME = settings(PROPERTY, max_examples=100)
FEW = settings(PROPERTY, max_examples=60)

R = EARTH_RADIUS_M
M_PER_DEG = R * math.pi / 180.0

Point = tuple[float, float]


# -- the sphere, independently of the module -------------------------------------------------------


def unit(point: Point) -> tuple[float, float, float]:
    lat, lon = math.radians(point[0]), math.radians(point[1])
    return (math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat))


def cross(u: tuple[float, ...], v: tuple[float, ...]) -> tuple[float, float, float]:
    return (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])


def dot(u: tuple[float, ...], v: tuple[float, ...]) -> float:
    return u[0] * v[0] + u[1] * v[1] + u[2] * v[2]


def angle(u: tuple[float, ...], v: tuple[float, ...]) -> float:
    """The angle between two unit vectors, accurate for tiny ones too."""
    return math.atan2(math.sqrt(sum(x * x for x in cross(u, v))), dot(u, v))


def arc_distance_m(point: Point, a: Point, b: Point) -> float:
    """Great-circle distance from a point to the shorter great-circle arc a-b."""
    p, u, v = unit(point), unit(a), unit(b)
    normal = cross(u, v)
    size = math.sqrt(dot(normal, normal))
    ends = R * min(angle(p, u), angle(p, v))
    if size < 1e-12:  # a and b less than 6 micrometres apart: the arc is a point
        return ends
    n = tuple(x / size for x in normal)
    # p's foot on the great circle is on the arc when it is past a towards b and short of b.
    if dot(cross(u, p), n) >= 0.0 and dot(cross(p, v), n) >= 0.0:
        return R * abs(math.asin(max(-1.0, min(1.0, dot(p, n)))))
    return ends


def slack_m(a: Point, b: Point) -> float:
    """How much farther than the tolerance a dropped point may be from the great-circle arc a-b
    (module docstring above): twice the arc's bulge, plus a micrometre for rounding. The bulge
    by its formula for segments of up to 20 km, else as found: the greatest distance to the arc
    of 257 points along the straight segment in latitude and longitude, plus 1 %."""
    length = R * angle(unit(a), unit(b))
    if length <= 20_000.0:
        phi = math.radians(max(abs(a[0]), abs(b[0]))) + length / R
        return length**2 * (math.tan(phi) + 0.1) / (4 * R) + 1e-6
    east = (b[1] - a[1] + 180.0) % 360.0 - 180.0
    straight = [(a[0] + (b[0] - a[0]) * k / 256, a[1] + east * k / 256) for k in range(257)]
    return 1.01 * max(arc_distance_m(point, a, b) for point in straight) + 1e-6


def destination(point: Point, bearing_deg: float, distance_m: float) -> Point:
    """Where a great circle from `point` leads after `distance_m` (longitude in [-180, 180])."""
    lat1, lon1 = math.radians(point[0]), math.radians(point[1])
    theta, delta = math.radians(bearing_deg), distance_m / R
    lat2 = math.asin(
        math.sin(lat1) * math.cos(delta) + math.cos(lat1) * math.sin(delta) * math.cos(theta)
    )
    lon2 = lon1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(lat1),
        math.cos(delta) - math.sin(lat1) * math.sin(lat2),
    )
    return (math.degrees(lat2), (math.degrees(lon2) + 180.0) % 360.0 - 180.0)


def assert_simplified(points: list[Point], kept: list[int], tolerance_m: float) -> None:
    """The kept indexes are ascending, hold both ends, and every dropped point is within the
    tolerance (plus slack) of the great-circle arc between the kept points around it."""
    assert kept == sorted(set(kept))
    if not points:
        assert kept == []
        return
    assert kept[0] == 0
    assert kept[-1] == len(points) - 1
    for i, j in itertools.pairwise(kept):
        a, b = points[i], points[j]
        allowed = tolerance_m + slack_m(a, b)
        for k in range(i + 1, j):
            distance = arc_distance_m(points[k], a, b)
            assert distance <= allowed, (k, i, j, distance, tolerance_m)


# -- tracks ----------------------------------------------------------------------------------------

latitudes = st.one_of(st.floats(-75, 75), st.sampled_from([0.0, 52.52, -33.87, 75.0, -75.0]))
longitudes = st.one_of(
    st.floats(-180, 180), st.floats(179.9, 180), st.floats(-180, -179.9), st.just(180.0)
)


@st.composite
def tracks(draw: st.DrawFn, max_points: int = 300) -> list[Point]:
    """A vehicle's fixes: a walk on the sphere from a random start, of random style (step length,
    how much it turns, how often it stops, turns back or repeats a fix), drawn by hypothesis;
    the steps themselves by a random generator hypothesis seeds."""
    count = draw(st.one_of(st.integers(0, 4), st.integers(0, max_points)))
    start = (draw(latitudes), draw(longitudes))
    step_m = draw(st.sampled_from([0.5, 5.0, 15.0, 60.0]))
    wander = draw(st.sampled_from([0.0, 5.0, 30.0, 180.0]))  # degrees of turn per step
    stops = draw(st.sampled_from([0.0, 0.05, 0.3]))  # how often it stands still
    u_turns = draw(st.sampled_from([0.0, 0.02, 0.2]))
    rnd = draw(st.randoms(use_true_random=False))
    heading = rnd.uniform(0, 360)
    points = [start][:count]
    while len(points) < count:
        if rnd.random() < stops:
            points += [points[-1]] * rnd.randint(1, 10)  # a stop: the same fix, repeated
            continue
        heading += 180.0 if rnd.random() < u_turns else rnd.uniform(-wander, wander)
        points.append(destination(points[-1], heading % 360.0, rnd.uniform(0.0, 2.0 * step_m)))
    return points[:count]


tolerances = st.one_of(st.floats(0.5, 200), st.sampled_from([1.0, 5.0, 10.0, 25.0]))


def city_walk(count: int, seed: int, origin: Point = (52.52, 13.40)) -> list[Point]:
    """A bus-like random walk: 1 Hz fixes, 0-14 m/s, stops, GPS noise of a few metres."""
    rnd = random.Random(seed)
    cos_lat = math.cos(math.radians(origin[0]))
    x = y = heading = speed = 0.0
    points = []
    for _ in range(count):
        if rnd.random() < 0.01:
            speed = 0.0
        speed = min(14.0, max(0.0, speed + rnd.gauss(0.4, 1.0)))
        heading += rnd.gauss(0.0, 0.15)
        x += speed * math.cos(heading)
        y += speed * math.sin(heading)
        points.append(
            (
                origin[0] + (y + rnd.gauss(0, 3)) / M_PER_DEG,
                origin[1] + (x + rnd.gauss(0, 3)) / (M_PER_DEG * cos_lat),
            )
        )
    return points


# -- douglas_peucker -------------------------------------------------------------------------------


@PROPERTY
@given(tracks(), tolerances)
@example([(0.0, 179.9995), (0.00001, 180.0), (0.0, -179.9995)], 0.5)  # across the antimeridian
@example([(10.0, 20.0)] * 5, 1.0)  # standing still
@example([(10.0, 20.0), (10.001, 20.0), (10.0, 20.0)], 1.0)  # there and back: a loop closed
def test_no_dropped_point_is_farther_than_the_tolerance_from_its_segment(
    points: list[Point], tolerance_m: float
) -> None:
    kept = douglas_peucker(points, tolerance_m)

    assert_simplified(points, kept, tolerance_m)


@SOME
@given(tracks(), tolerances)
def test_simplifying_what_was_kept_keeps_it_all(points: list[Point], tolerance_m: float) -> None:
    kept = [points[i] for i in douglas_peucker(points, tolerance_m)]

    assert douglas_peucker(kept, tolerance_m) == list(range(len(kept)))


def bulge_m(start: Point, length_m: float) -> float:
    """How far a great circle of that length strays from the straight line of an equirectangular
    projection between its ends, at most: L^2 tan(phi) / (8R)."""
    return length_m**2 * math.tan(math.radians(abs(start[0]) + 1)) / (8 * R)


@pytest.mark.parametrize(
    ("start", "bearing", "length_m", "count"),
    [
        ((52.52, 13.40), 0.0, 20_000.0, 2000),  # a meridian: straight on every projection
        ((-33.87, 151.21), 180.0, 20_000.0, 2000),
        ((0.0, 10.0), 90.0, 20_000.0, 2000),  # the equator too
        ((0.0, 179.95), 90.0, 20_000.0, 500),  # the equator, across the antimeridian
    ],
)
def test_a_meridian_or_the_equator_collapses_to_its_ends(
    start: Point, bearing: float, length_m: float, count: int
) -> None:
    points = [destination(start, bearing, length_m * i / (count - 1)) for i in range(count)]

    assert douglas_peucker(points, 0.001) == [0, count - 1]


@pytest.mark.parametrize(
    ("start", "bearing", "length_m", "count"),
    [
        ((45.0, 7.0), 63.0, 5_000.0, 1000),  # bulges by 0.5 m
        ((-33.87, 151.21), 222.0, 2_000.0, 1000),  # 5 cm
        ((60.17, 24.94), 90.0, 1_000.0, 1000),  # 3.5 cm, along a parallel's tangent
        ((35.68, 139.69), 300.0, 30_000.0, 300),  # 13 m
    ],
)
def test_any_other_great_circle_collapses_to_its_ends_at_its_bulge(
    start: Point, bearing: float, length_m: float, count: int
) -> None:
    """Any other great circle is not quite straight on a projection: its middle strays from the
    straight line between its ends by up to its bulge, and a tolerance of twice that is enough."""
    points = [destination(start, bearing, length_m * i / (count - 1)) for i in range(count)]

    assert douglas_peucker(points, 2 * bulge_m(start, length_m)) == [0, count - 1]
    assert len(douglas_peucker(points, bulge_m(start, length_m) / 10)) > 2


def test_a_straight_line_with_a_bus_stop_on_it_collapses_to_its_ends() -> None:
    line = [destination((48.85, 2.35), 30.0, 10.0 * i) for i in range(200)]
    points = line[:100] + [line[100]] * 60 + line[100:]  # a minute at a stop

    assert douglas_peucker(points, 2 * bulge_m((48.85, 2.35), 2000.0)) == [0, len(points) - 1]


def zigzag(
    origin: Point, legs: int, leg_points: int, width_m: float, amplitude_m: float
) -> tuple[list[Point], list[int]]:
    """A zig-zag with straight legs in latitude and longitude (straight on any equirectangular
    projection), and the indexes of its corners and ends."""
    cos_lat = math.cos(math.radians(origin[0]))
    corners = [
        (
            origin[0] + (amplitude_m if k % 2 else -amplitude_m) / M_PER_DEG,
            origin[1] + k * width_m / (M_PER_DEG * cos_lat),
        )
        for k in range(legs + 1)
    ]
    points: list[Point] = []
    indexes = []
    for a, b in itertools.pairwise(corners):
        indexes.append(len(points))
        points += [
            (a[0] + (b[0] - a[0]) * i / leg_points, a[1] + (b[1] - a[1]) * i / leg_points)
            for i in range(leg_points)
        ]
    indexes.append(len(points))
    points.append(corners[-1])
    return [(lat, (lon + 180.0) % 360.0 - 180.0) for lat, lon in points], indexes


@pytest.mark.parametrize(
    ("origin", "width_m", "amplitude_m", "tolerance_m"),
    [
        ((52.52, 13.40), 100.0, 10.0, 5.0),
        ((-33.87, 151.21), 30.0, 3.0, 1.0),
        ((0.0, 179.99), 50.0, 50.0, 20.0),  # across the antimeridian
        ((70.0, -150.0), 500.0, 30.0, 25.0),
    ],
)
def test_a_zigzag_wider_than_the_tolerance_keeps_its_corners_and_only_them(
    origin: Point, width_m: float, amplitude_m: float, tolerance_m: float
) -> None:
    points, corners = zigzag(
        origin, legs=40, leg_points=25, width_m=width_m, amplitude_m=amplitude_m
    )

    assert douglas_peucker(points, tolerance_m) == corners
    assert most_significant(points, len(corners)) == corners


def test_a_zigzag_within_the_tolerance_collapses() -> None:
    points, _ = zigzag((52.52, 13.40), legs=40, leg_points=25, width_m=100.0, amplitude_m=2.0)

    assert douglas_peucker(points, 5.0) == [0, len(points) - 1]


@pytest.mark.parametrize(
    ("south", "north", "off"),
    [(25.0, 75.0, 27.0), (25.0, 75.0, 30.0), (25.0, 75.0, 35.0), (-75.0, -25.0, -30.0)],
)
def test_a_long_segment_is_measured_at_each_point_s_latitude(
    south: float, north: float, off: float
) -> None:
    """5,500 km along a meridian, a point every 5.5 km, one of them 10.5 m east of it: beyond a
    10 m tolerance, it is kept. (Measured at the mid latitude alone, 50 degrees, it would be
    10.5 cos(50) / cos(30) = 7.8 m off at 30 degrees, and dropped.)"""
    points = [(south + i * 0.05, 10.0) for i in range(1001)]
    i = round((off - south) / 0.05)
    points[i] = destination(points[i], 90.0, 10.5)

    kept = douglas_peucker(points, 10.0)

    # Its neighbours too: 5.5 km from it, they are 10.5 (1 - 1/40 or so) m from the long
    # segments that end at it.
    assert kept == [0, i - 1, i, i + 1, 1000]
    assert douglas_peucker(points[::-1], 10.0) == [0, 999 - i, 1000 - i, 1001 - i, 1000]
    assert_simplified(points, kept, 10.0)


def test_a_point_beyond_an_end_is_measured_to_the_end() -> None:
    """Out along a street, back past the start: the turning point is on the line through the
    ends, but 500 m from the segment between them."""
    out = [destination((52.52, 13.40), 90.0, 10.0 * i) for i in range(51)]  # 500 m east
    back = [destination((52.52, 13.40), 90.0, 500.0 - 10.0 * i) for i in range(1, 61)]  # to -100

    points = out + back
    kept = douglas_peucker(points, 5.0)

    assert kept == [0, 50, len(points) - 1]


def test_a_closed_loop_keeps_its_far_side() -> None:
    square = [(52.52, 13.40), (52.53, 13.40), (52.53, 13.42), (52.52, 13.42), (52.52, 13.40)]

    assert douglas_peucker(square, 10.0) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ([], []),
        ([(52.5, 13.4)], [0]),
        ([(52.5, 13.4), (52.6, 13.5)], [0, 1]),
        ([(52.5, 13.4), (52.5, 13.4)], [0, 1]),
        ([(52.5, 13.4)] * 1000, [0, 999]),  # a bus standing still
    ],
)
def test_few_points_and_a_bus_standing_still(points: list[Point], expected: list[int]) -> None:
    assert douglas_peucker(points, 1.0) == expected


def test_a_track_turning_back_1500_times_is_not_recursed_into() -> None:
    """Back and forth along a street, each turn 10 m short of the last: every segment's farthest
    point is the next turn, so the segments nest 1500 deep, past Python's recursion limit.
    And the points come as any sequence of pairs, ints among them."""
    turns = 1500
    assert turns > sys.getrecursionlimit()
    cos_lat = math.cos(math.radians(52.0))
    offsets = [0.0] + [(-1) ** k * 10.0 * (turns + 1 - k) for k in range(1, turns + 1)]
    points = tuple((52, 13.0 + x / (M_PER_DEG * cos_lat)) for x in offsets)

    assert douglas_peucker(points, 1.0) == list(range(len(points)))


def test_259200_points_a_bus_for_three_days() -> None:
    points = city_walk(259_200, seed=7)

    kept = douglas_peucker(points, 10.0)
    top = most_significant(points, 1000)

    assert kept[0] == 0
    assert kept[-1] == len(points) - 1
    assert 2 < len(kept) < len(points) // 4
    rnd = random.Random(1)
    for i in rnd.sample(range(len(kept) - 1), 300):  # a sample: the full check takes a while
        assert_simplified(points[kept[i] : kept[i + 1] + 1], [0, kept[i + 1] - kept[i]], 10.0)
    assert len(top) == 1000
    assert top[0] == 0
    assert top[-1] == len(points) - 1


# -- most_significant ------------------------------------------------------------------------------


@SOME
@given(tracks(max_points=100), st.integers(2, 120))
def test_most_significant_keeps_n_points_the_ends_among_them(points: list[Point], n: int) -> None:
    kept = most_significant(points, n)

    assert len(kept) == min(n, len(points))
    assert kept == sorted(set(kept))
    assert all(0 <= i < len(points) for i in kept)
    if points:
        assert kept[0] == 0
        assert kept[-1] == len(points) - 1


@FEW
@given(tracks(max_points=60))
def test_each_most_significant_set_is_within_the_next(points: list[Point]) -> None:
    sets = [set(most_significant(points, n)) for n in range(2, max(len(points), 2) + 1)]

    for smaller, larger in itertools.pairwise(sets):
        assert smaller <= larger
    assert sets[-1] == set(range(len(points)))


@pytest.mark.parametrize("n", [1000, 1001, 10**9])
def test_most_significant_keeps_everything_when_n_is_large(n: int) -> None:
    points = city_walk(1000, seed=3)

    assert most_significant(points, n) == list(range(1000))


def test_most_significant_of_all_but_one_leaves_one_out() -> None:
    points = city_walk(1000, seed=3)

    kept = most_significant(points, 999)

    assert len(kept) == 999
    assert set(most_significant(points, 500)) < set(kept)


def test_most_significant_keeps_the_point_farthest_out_first() -> None:
    points = [destination((52.52, 13.40), 90.0, 10.0 * i) for i in range(100)]
    points[30] = destination(points[30], 0.0, 50.0)  # 50 m off the street
    points[70] = destination(points[70], 180.0, 80.0)  # 80 m off, the other side

    assert most_significant(points, 3) == [0, 70, 99]
    assert most_significant(points, 4) == [0, 30, 70, 99]


@pytest.mark.parametrize(
    ("points", "n", "expected"),
    [
        ([], 2, []),
        ([(52.5, 13.4)], 2, [0]),
        ([(52.5, 13.4), (52.6, 13.5)], 2, [0, 1]),
        ([(52.5, 13.4), (52.6, 13.5), (52.7, 13.4)], 2, [0, 2]),
        ([(52.5, 13.4)] * 9, 3, [0, 4, 8]),  # standing still: spread evenly
        ([(52.5, 13.4)] * 9, 5, [0, 2, 4, 6, 8]),
    ],
)
def test_most_significant_of_few_points_and_a_bus_standing_still(
    points: list[Point], n: int, expected: list[int]
) -> None:
    assert most_significant(points, n) == expected


def test_most_significant_of_a_long_stop_is_quick() -> None:
    """Eight hours parked, one fix a second, the same fix: spread evenly, not one by one."""
    points = [(52.5, 13.4)] * 28_800

    kept = most_significant(points, 28_000)

    assert len(kept) == 28_000


# -- the box search --------------------------------------------------------------------------------


@SOME
@given(tracks(), tolerances, st.integers(2, 100))
def test_the_box_search_answers_as_looking_at_every_point_does(
    points: list[Point], tolerance_m: float, n: int
) -> None:
    expected = (douglas_peucker(points, tolerance_m), most_significant(points, n))

    with pytest.MonkeyPatch.context() as patch:
        # Boxes of 2 points, 2 to a box above; every segment of more than 2 points searched.
        patch.setattr(simplify_module, "_BLOCK", 2)
        patch.setattr(simplify_module, "_FAN", 2)
        patch.setattr(simplify_module, "_DIRECT", 2)
        searched = (douglas_peucker(points, tolerance_m), most_significant(points, n))

    assert searched == expected


def shuttle(trips: int, seed: int) -> tuple[list[Point], int]:
    """A bus line: out 3 km along a street and back, again and again, 1 Hz with GPS noise; on the
    first trip it waits five minutes at the far end, its fixes all the same. Every long segment
    has its farthest points beyond its ends. The index of the first fix of that wait."""
    rnd = random.Random(seed)
    street = [destination((52.52, 13.40), 80.0, 10.0 * i) for i in range(301)]
    points: list[Point] = []
    wait = -1
    for trip in range(trips):
        for point in street[:-1] + street[::-1][:-1]:
            points.append(destination(point, rnd.uniform(0, 360), abs(rnd.gauss(0, 3))))
            if trip == 0 and point == street[-1]:
                wait = len(points) - 1
                points += [points[-1]] * 300
    return points, wait


def test_the_box_search_on_long_tracks() -> None:
    for points, tolerance_m, n in [
        (city_walk(20_000, seed=11), 4.0, 500),
        (shuttle(8, 5)[0], 8.0, 300),
    ]:
        expected = (douglas_peucker(points, tolerance_m), most_significant(points, n))

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(simplify_module, "_DIRECT", 10**9)  # every point looked at
            direct = (douglas_peucker(points, tolerance_m), most_significant(points, n))

        assert direct == expected


def test_the_point_farthest_out_is_the_one_of_equals_nearest_the_middle() -> None:
    """Five minutes at the far end of the line: 301 fixes, the same, all farthest from the
    segment between the first and last points; of them, the one nearest the segment's middle is
    kept (the last: the wait is on the first of three trips)."""
    points, wait = shuttle(3, 8)
    last_of_wait = wait + 300
    assert last_of_wait < (len(points) - 1) // 2

    assert most_significant(points, 3) == [0, last_of_wait, len(points) - 1]
    # The wait is one place: Douglas-Peucker keeps one of its fixes.
    kept = douglas_peucker(points, 10.0)
    assert len([k for k in kept if wait <= k <= last_of_wait]) == 1


@pytest.mark.parametrize("corners", [2_000, 20_000])
def test_a_zigzag_of_equal_corners_costs_n_log_n_not_n_squared(
    corners: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every corner of a zig-zag is as far out as the others. Splitting at the first of them
    peeled one corner off a segment at a time (160 s for 50,000); splitting at the one nearest
    the middle halves the segments. Counted in points measured, not timed."""
    measured = 0
    crosses, values = simplify_module._crosses, simplify_module._values

    def counting_crosses(lats: Any, lons: Any, *rest: float) -> list[float]:
        nonlocal measured
        measured += len(lats)
        return crosses(lats, lons, *rest)

    def counting_values(lats: Any, lons: Any, *rest: float) -> list[float]:
        nonlocal measured
        measured += len(lats)
        return values(lats, lons, *rest)

    monkeypatch.setattr(simplify_module, "_crosses", counting_crosses)
    monkeypatch.setattr(simplify_module, "_values", counting_values)
    zigzag = [(52.1 + (i % 2) * 1e-4, 13.9 + i * 1e-4) for i in range(corners)]

    assert douglas_peucker(zigzag, 5.0) == list(range(corners))
    assert most_significant(zigzag, corners // 2)[:3] == [0, 1, 2]

    budget = 8 * corners * math.log2(corners)
    assert measured < budget, f"{measured:,} points measured for {corners:,} corners"


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tolerance", [0, 0.0, -1.0, math.nan, math.inf, -math.inf, True])
def test_a_tolerance_must_be_positive_and_finite(tolerance: float) -> None:
    with pytest.raises(Error) as raised:
        douglas_peucker([(52.5, 13.4), (52.6, 13.5), (52.7, 13.4)], tolerance)

    assert raised.value.code == INVALID
    assert "simplify" in raised.value.message
    assert "positive number of metres" in raised.value.message


@pytest.mark.parametrize("n", [1, 0, -5, True, 2.5])
def test_max_points_must_be_at_least_2(n: int) -> None:
    with pytest.raises(Error) as raised:
        most_significant([(52.5, 13.4), (52.6, 13.5), (52.7, 13.4)], n)

    assert raised.value.code == INVALID
    assert "max_points" in raised.value.message
    assert "at least 2" in raised.value.message


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ((math.nan, 13.4), "finite"),
        ((52.5, math.inf), "finite"),
        ((91.0, 13.4), "between -90 and 90"),
        ((-90.5, 13.4), "between -90 and 90"),
    ],
)
def test_a_point_that_is_no_position_is_refused(point: Point, message: str) -> None:
    points = [(52.5, 13.4), point, (52.7, 13.4)]

    for call in (lambda: douglas_peucker(points, 5.0), lambda: most_significant(points, 2)):
        with pytest.raises(Error) as raised:
            call()
        assert raised.value.code == INVALID
        assert message in raised.value.message


# -- the core's imports ----------------------------------------------------------------------------


def test_simplify_imports_only_the_standard_library_and_the_core() -> None:
    source = Path(simplify_module.__file__).read_text(encoding="utf-8")
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            imported.add(node.module or "")

    foreign = {
        name
        for name in imported
        if name.partition(".")[0] not in sys.stdlib_module_names | {"__future__"}
        and name not in {"trackstore.errors", "trackstore.geo"}
    }
    assert foreign == set()
