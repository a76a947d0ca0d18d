"""The simulated bus fleet of `demo`, `simulate` and the benchmarks: its reports are deterministic,
decode into valid locations, and move like buses on their routes (speed and heading agree with
the fixes, buses dwell at stops, trips turn round at the termini)."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from datetime import UTC, datetime
from functools import cache
from itertools import pairwise
from typing import Any

import msgspec
import pytest

from tests.helpers import HOUR_MS, NOW_MS, TTL_MS, stream_record
from trackstore.cli.bus_routes import BLOCK_M, CENTRE, GRID_SIZE, Route
from trackstore.cli.fleet import Fleet
from trackstore.domain import Location
from trackstore.records import RecordDecoder

START_MS = NOW_MS - 2 * HOUR_MS
DEVICES = 20
INTERVAL_S = 2.0  # each bus reports every 2 s
DRIVEN_S = 75 * 60  # long enough for every bus to finish a trip or two
EARTH_RADIUS_M = 6_371_000.0
# Fixes are rounded to 1e-6 degrees (about 0.1 m), speeds to 0.1 km/h.
POSITION_SLACK_M = 0.15
TRIP_ID = re.compile(r"(R\d+)-([01])-(\d\d)(\d\d)-(bus-\d{4})")

Report = dict[str, Any]


@cache
def driven() -> tuple[Fleet, dict[str, list[Report]]]:
    """A new-format fleet driven for DRIVEN_S, reports decoded as JSON, by bus."""
    fleet = Fleet(devices=DEVICES, rate=DEVICES / INTERVAL_S, start_ms=START_MS, seed=11)
    by_bus: dict[str, list[Report]] = defaultdict(list)
    for second in range(0, DRIVEN_S + 1, 10):
        for key, data in fleet.advance(START_MS + second * 1000):
            by_bus[key].append(msgspec.json.decode(data))
    return fleet, dict(by_bus)


def routes_by_id(fleet: Fleet) -> dict[str, Route]:
    return {route.route_id: route for route in fleet.routes}


def consecutive(reports: list[Report]) -> list[tuple[Report, Report, float]]:
    """(fix, next fix, seconds between them) of one bus."""
    return [(a, b, (b["timestamp"] - a["timestamp"]) / 1000) for a, b in pairwise(reports)]


def metres(a: Report, b: Report) -> float:
    """Great-circle distance between two fixes."""
    lat1, lon1, lat2, lon2 = map(
        math.radians, (a["latitude"], a["longitude"], b["latitude"], b["longitude"])
    )
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def bearing(a: Report, b: Report) -> float:
    """Initial bearing from one fix to the next: degrees from true north, clockwise."""
    lat1, lon1, lat2, lon2 = map(
        math.radians, (a["latitude"], a["longitude"], b["latitude"], b["longitude"])
    )
    y = math.sin(lon2 - lon1) * math.cos(lat2)
    x = math.cos(lat1) * math.sin(lat2) - math.sin(lat1) * math.cos(lat2) * math.cos(lon2 - lon1)
    return math.degrees(math.atan2(y, x)) % 360


def angle_between(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


def local_m(lat: float, lon: float) -> tuple[float, float]:
    """East and north metres from the centre (fine for a city)."""
    return (
        math.radians(lon - CENTRE[1]) * EARTH_RADIUS_M * math.cos(math.radians(lat)),
        math.radians(lat - CENTRE[0]) * EARTH_RADIUS_M,
    )


def off_polyline_m(points: tuple[tuple[float, float], ...], lat: float, lon: float) -> float:
    px, py = local_m(lat, lon)
    best = math.inf
    for (ax, ay), (bx, by) in pairwise(local_m(*p) for p in points):
        dx, dy = bx - ax, by - ay
        t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
        best = min(best, math.hypot(px - ax - t * dx, py - ay - t * dy))
    return best


def point(lat_lon: tuple[float, float]) -> Report:
    return {"latitude": lat_lon[0], "longitude": lat_lon[1]}


def at(a: Report, place: tuple[float, float]) -> bool:
    return metres(a, point(place)) < 1.0


# -- determinism ---------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_bytes_however_the_fleet_is_advanced() -> None:
    def reports(seed: int, steps: list[int]) -> list[tuple[str, bytes]]:
        fleet = Fleet(devices=30, rate=15, start_ms=START_MS, seed=seed, legacy_share=0.3)
        out: list[tuple[str, bytes]] = []
        for ms in steps:
            out += fleet.advance(START_MS + ms)
        return sorted(out)

    every_second = list(range(0, 600_001, 1000))
    uneven = [*range(0, 600_000, 7_013), 600_000]
    assert reports(7, every_second) == reports(7, every_second) == reports(7, uneven)
    assert len(reports(7, every_second)) == 30 * 300 + 1  # bus-0000 reports at the start too
    assert reports(8, every_second) != reports(7, every_second)


def test_the_routes_depend_on_the_seed_only() -> None:
    small, large = Fleet(1, 1, START_MS, seed=5), Fleet(500, 90, 0, seed=5)
    assert [r.junctions for r in small.routes] == [r.junctions for r in large.routes]
    assert [r.stops for r in small.routes] == [r.stops for r in large.routes]
    assert [r.junctions for r in Fleet(1, 1, START_MS, seed=6).routes] != [
        r.junctions for r in small.routes
    ]


def test_a_fleet_needs_devices_and_a_rate() -> None:
    with pytest.raises(ValueError, match="at least one device"):
        Fleet(devices=0, rate=1, start_ms=START_MS)
    with pytest.raises(ValueError, match="positive rate"):
        Fleet(devices=1, rate=0, start_ms=START_MS)


# -- the network ---------------------------------------------------------------------------------


def test_routes_are_staircases_of_grid_streets_with_stops_every_few_blocks() -> None:
    fleet, _ = driven()
    assert 8 <= len(fleet.routes) <= 12
    assert len({route.route_id for route in fleet.routes}) == len(fleet.routes)
    for route in fleet.routes:
        assert all(0 <= x < GRID_SIZE and 0 <= y < GRID_SIZE for x, y in route.junctions)
        runs = [(b[0] - a[0], b[1] - a[1]) for a, b in pairwise(route.junctions)]
        assert all((dx == 0) != (dy == 0) for dx, dy in runs), "along a street, never diagonal"
        assert all((a[0] == 0) != (b[0] == 0) for a, b in pairwise(runs)), "each junction turns"
        assert route.length_m == BLOCK_M * sum(abs(dx) + abs(dy) for dx, dy in runs)
        assert route.stops[0] == route.points[0]
        assert route.stops[-1] == pytest.approx(route.points[-1], abs=1e-9)
        assert len(route.stops) >= 4
        gaps = [metres(point(a), point(b)) for a, b in pairwise(route.stops)]
        # Straight-line gaps: a gap round a corner is shorter than its drive.
        assert all(BLOCK_M * 0.5 < gap < BLOCK_M * 3.7 for gap in gaps), gaps


# -- every report --------------------------------------------------------------------------------


def test_every_report_decodes_into_a_valid_location() -> None:
    fleet = Fleet(devices=40, rate=20, start_ms=START_MS, legacy_share=0.3)
    decoder = RecordDecoder(TTL_MS)
    routes = routes_by_id(fleet)
    kinds: dict[bool, int] = {True: 0, False: 0}
    for second in range(0, 901, 5):
        now = START_MS + second * 1000
        for key, data in fleet.advance(now):
            location = decoder.decode(stream_record(data, arrival_ms=now), NOW_MS)
            assert isinstance(location, Location), location
            assert location.device_id == key
            assert START_MS <= location.timestamp <= now
            assert abs(location.latitude - CENTRE[0]) < 0.05
            assert abs(location.longitude - CENTRE[1]) < 0.08
            assert location.speed is not None
            assert 0 <= location.speed <= 70
            assert location.heading is not None
            assert 0 <= location.heading < 360
            assert location.attributes is not None
            legacy = b'"busId"' in data
            kinds[legacy] += 1
            if legacy:  # the legacy format has no attributes: only its extra fields are kept
                assert set(location.attributes) == {"region", "quality_score", "processed_at"}
                continue
            assert location.altitude is not None
            assert location.accuracy is not None
            assert 3 <= location.accuracy <= 12
            assert location.battery is not None
            assert 5 <= location.battery <= 100
            attributes = location.attributes
            assert set(attributes) == {
                *("routeId", "tripId", "directionId", "startDate", "startTime"),
            }
            assert attributes["routeId"] in routes
            assert attributes["directionId"] in (0, 1)
            assert isinstance(attributes["tripId"], str)
            assert isinstance(attributes["startDate"], str)
            assert re.fullmatch(r"\d{8}", attributes["startDate"])
            assert isinstance(attributes["startTime"], str)
            assert re.fullmatch(r"\d\d:\d\d:\d\d", attributes["startTime"])
    assert kinds[True] > 1000
    assert kinds[False] > 3000


# -- motion --------------------------------------------------------------------------------------


def test_speed_is_the_distance_driven_since_the_previous_fix() -> None:
    _, by_bus = driven()
    straight = turning = 0
    fastest = 0.0
    for reports in by_bus.values():
        for a, b, seconds in consecutive(reports):
            assert seconds == INTERVAL_S
            kmh = metres(a, b) / seconds * 3.6
            slack = 2 * POSITION_SLACK_M / seconds * 3.6 + 0.05
            if a["heading"] == b["heading"]:  # on one street: the chord is the way driven
                straight += 1
                assert kmh == pytest.approx(b["speed"], rel=0.003, abs=slack), (a, b)
            else:  # round a corner: the way driven is longer than the chord, at most by √2
                turning += 1
                assert kmh <= b["speed"] + slack, (a, b)
                assert kmh >= b["speed"] / math.sqrt(2) - slack, (a, b)
            fastest = max(fastest, b["speed"])
    assert straight > 20_000
    assert turning > 50
    assert fastest > 55


def test_heading_is_the_bearing_of_travel_and_kept_while_standing() -> None:
    _, by_bus = driven()
    checked = kept = 0
    for reports in by_bus.values():
        for a, b, _ in consecutive(reports):
            if b["speed"] == 0:
                assert b["heading"] == a["heading"], (a, b)
                kept += 1
            elif a["heading"] == b["heading"] and metres(a, b) > 5:
                assert angle_between(bearing(a, b), b["heading"]) < 0.5, (a, b)
                checked += 1
    assert checked > 15_000
    assert kept > 5_000


def test_buses_dwell_at_their_stops_again_and_again() -> None:
    fleet, by_bus = driven()
    routes = routes_by_id(fleet)
    stops_seen: set[tuple[str, tuple[float, float]]] = set()
    short_dwells: list[float] = []
    for bus, reports in by_bus.items():
        route = routes[reports[0]["attributes"]["routeId"]]
        dwells = 0
        run: list[Report] = []
        for report in [*reports, {"speed": None}]:
            if report["speed"] == 0:
                run.append(report)
                continue
            if len(run) >= 2:
                stop = next((s for s in route.stops if at(run[0], s)), None)
                assert stop is not None, f"{bus} stood still away from a stop: {run[0]}"
                # A bus pulling away moves a few millimetres before its speed rounds above 0.
                assert all(metres(r, point(stop)) < POSITION_SLACK_M for r in run), run
                stood_s = (run[-1]["timestamp"] - run[0]["timestamp"]) / 1000
                # A dwell is 15-45 s, a layover 1-4 min. The first fix standing is the first
                # whose whole interval was spent there; the drive's ends cut a stand short.
                if reports[0] not in run and reports[-1] not in run:
                    assert 15 - 3 * INTERVAL_S < stood_s < 240, run
                if stop not in (route.stops[0], route.stops[-1]):
                    short_dwells.append(stood_s)
                stops_seen.add((route.route_id, stop))
                dwells += 1
            run = []
        assert dwells >= 10, bus
    assert short_dwells
    assert max(short_dwells) <= 45
    assert len(stops_seen) > 50


def test_every_fix_lies_on_the_route() -> None:
    fleet, by_bus = driven()
    routes = routes_by_id(fleet)
    for reports in by_bus.values():
        route = routes[reports[0]["attributes"]["routeId"]]
        for report in reports:
            assert report["attributes"]["routeId"] == route.route_id
            off = off_polyline_m(route.points, report["latitude"], report["longitude"])
            assert off < POSITION_SLACK_M, report


def test_legacy_reports_drive_their_routes_too() -> None:
    fleet = Fleet(devices=10, rate=10, start_ms=START_MS, legacy_share=1.0)
    routes = {vehicle.device_id: vehicle.route for vehicle in fleet.vehicles}
    moving = 0
    for second in range(1, 301):
        for key, data in fleet.advance(START_MS + second * 1000):
            body = msgspec.json.decode(data)
            assert "attributes" not in body
            assert body["busId"] == key
            assert off_polyline_m(routes[key].points, body["lat"], body["lon"]) < POSITION_SLACK_M
            moving += body["speed"] > 0
    assert moving > 1000


# -- trips ---------------------------------------------------------------------------------------


def test_trips_are_named_and_turn_round_at_the_termini() -> None:
    fleet, by_bus = driven()
    routes = routes_by_id(fleet)
    turnarounds = 0
    for bus, reports in by_bus.items():
        route = routes[reports[0]["attributes"]["routeId"]]
        trips: list[list[Report]] = []
        for report in reports:
            attributes = report["attributes"]
            match = TRIP_ID.fullmatch(attributes["tripId"])
            assert match, attributes
            route_id, direction, hours, minutes, device = match.groups()
            assert (route_id, int(direction), device) == (
                route.route_id,
                attributes["directionId"],
                bus,
            )
            start = datetime.strptime(
                attributes["startDate"] + attributes["startTime"], "%Y%m%d%H:%M:%S"
            ).replace(tzinfo=UTC)
            assert (hours, minutes) == (f"{start:%H}", f"{start:%M}")
            assert start.second == 0, "trips leave on the minute"
            assert start.timestamp() * 1000 <= report["timestamp"]
            if not trips or trips[-1][0]["attributes"] != attributes:
                trips.append([])
            trips[-1].append(report)
        ids = [trip[0]["attributes"]["tripId"] for trip in trips]
        assert len(set(ids)) == len(ids), "a trip id names one trip"
        for ended, started in pairwise(trips):
            old, new = ended[0]["attributes"], started[0]["attributes"]
            assert new["directionId"] == 1 - old["directionId"]
            # It leaves from where the last trip ended, the terminus, after a layover there.
            end = route.stops[-1] if old["directionId"] == 0 else route.stops[0]
            assert at(ended[-1], end)
            assert metres(ended[-1], started[0]) < 5
            stood = [r for r in ended if r["speed"] == 0 and at(r, end)]
            assert (started[0]["timestamp"] - stood[0]["timestamp"]) / 1000 >= 60 - INTERVAL_S
            turnarounds += 1
        # Out to one end, back to the other: each finished trip drove its whole way.
        for trip in trips[1:-1]:
            begin, end = (route.stops[0], route.stops[-1])[
                :: 1 - 2 * trip[0]["attributes"]["directionId"]
            ]
            assert metres(trip[0], point(begin)) < 5  # it left a moment ago
            assert at(trip[-1], end)
    assert turnarounds >= 2 * DEVICES
