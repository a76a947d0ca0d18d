"""The street grid the simulated buses drive, their routes, and how a bus drives between stops.

The city is a square grid of streets around a centre in Amsterdam, every fourth street an
arterial with a higher limit. A handful of bus routes, drawn from the seed, cross it as staircases
of straight runs between junctions, with a stop every few blocks. From a stop a bus pulls away
(briskly from standstill, ever more gently near its cruising speed), cruises at the share of the
street's limit that the traffic allows, slows for corners and brakes to the next stop.

Between two stops the motion is a few pieces of constant acceleration, worked out once per leg
and traffic level and shared by every bus, so placing a bus at an instant is a lookup and a
quadratic.
"""

from __future__ import annotations

import math
import random
from itertools import pairwise

EARTH_RADIUS_M = 6_371_000.0
GRID_SIZE = 24  # junctions per side
BLOCK_M = 400.0  # distance between junctions
CENTRE = (52.3676, 4.9041)
ARTERIAL_EVERY = 4  # every 4th road is an arterial with a higher limit
ARTERIAL_KMH = 70.0
STREET_KMH = 40.0
ROUTES = 10
STOP_SPACING_BLOCKS = (1.2, 2.8)
DWELL_S = (15.0, 45.0)
LAYOVER_S = (60.0, 180.0)  # at least; the next trip departs on the whole minute after it
TRAFFIC = (0.75, 0.85, 0.92, 1.0)  # shares of the limit a leg can be driven at
TURN_KMH = 15.0
# (from m/s, m/s²): a laden bus gains speed ever more slowly, so it eases into its cruise.
ACCELERATION = ((0.0, 1.3), (20 / 3.6, 0.8), (40 / 3.6, 0.4))
BRAKING = 1.2  # m/s², what standing passengers put up with

_DEG_LAT_PER_M = math.degrees(1 / EARTH_RADIUS_M)
# One scale for the whole city: across its 9.6 km the true one strays by a tenth of a percent.
_DEG_LON_PER_M = _DEG_LAT_PER_M / math.cos(math.radians(CENTRE[0]))
_BANDS = tuple(
    (low, ACCELERATION[i + 1][0] if i + 1 < len(ACCELERATION) else math.inf, rate)
    for i, (low, rate) in enumerate(ACCELERATION)
)

# (ends at, starts at) seconds into the leg, then the distance along the trip (m), speed (m/s)
# and acceleration (m/s²) at its start.
Piece = tuple[float, float, float, float, float]


class _Path:
    """A route driven one way: its straight runs and stops as distances along it (m)."""

    __slots__ = (
        "corners",
        "dlats",
        "dlons",
        "ends",
        "headings",
        "lats",
        "length",
        "limits",
        "lons",
        "profiles",
        "starts",
        "stops",
    )

    def __init__(self, junctions: list[tuple[int, int]], stops: list[float]) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.lats: list[float] = []
        self.lons: list[float] = []
        self.dlats: list[float] = []
        self.dlons: list[float] = []
        self.headings: list[float] = []
        self.limits: list[float] = []  # m/s
        along = 0.0
        for (x0, y0), (x1, y1) in pairwise(junctions):
            east, north = _sign(x1 - x0), _sign(y1 - y0)
            lat, lon = _lat_lon(x0, y0)
            self.starts.append(along)
            along += BLOCK_M * (abs(x1 - x0) + abs(y1 - y0))
            self.ends.append(along)
            self.lats.append(lat)
            self.lons.append(lon)
            self.dlats.append(north * _DEG_LAT_PER_M)
            self.dlons.append(east * _DEG_LON_PER_M)
            self.headings.append(math.degrees(math.atan2(east, north)) % 360.0)
            road = x0 if east == 0 else y0
            kmh = ARTERIAL_KMH if road % ARTERIAL_EVERY == 0 else STREET_KMH
            self.limits.append(kmh / 3.6)
        self.length = along
        self.corners = self.ends[:-1]
        self.stops = stops
        self.profiles: dict[int, tuple[Piece, ...]] = {}

    def locate(self, along: float, segment: int = 0) -> tuple[float, float, int]:
        """Latitude, longitude and segment (at a corner, the one arrived by) of a distance."""
        ends = self.ends
        last = len(ends) - 1
        while segment < last and along > ends[segment]:
            segment += 1
        offset = along - self.starts[segment]
        return (
            self.lats[segment] + offset * self.dlats[segment],
            self.lons[segment] + offset * self.dlons[segment],
            segment,
        )

    def profile(self, leg: int, traffic: int) -> tuple[Piece, ...]:
        """The motion from stop `leg` to the next one, worked out on first use."""
        key = leg * len(TRAFFIC) + traffic
        pieces = self.profiles.get(key)
        if pieces is None:
            pieces = self.profiles[key] = self._profile(leg, TRAFFIC[traffic])
        return pieces

    def _profile(self, leg: int, share: float) -> tuple[Piece, ...]:
        start, end = self.stops[leg], self.stops[leg + 1]
        marks = [start, *(c for c in self.corners if start < c < end), end]
        cruise = [self._limit((a + b) / 2) * share for a, b in pairwise(marks)]
        turn = TURN_KMH / 3.6
        speeds = [0.0, *(min(turn, cruise[i - 1], cruise[i]) for i in range(1, len(marks) - 1))]
        speeds.append(0.0)
        # A corner's speed must be reachable from the one before and leave room to brake for
        # the one after: short runs take corners slower.
        for i in range(1, len(marks)):
            speeds[i] = min(speeds[i], _reachable(speeds[i - 1], marks[i] - marks[i - 1]))
        for i in range(len(marks) - 2, -1, -1):
            room = marks[i + 1] - marks[i]
            speeds[i] = min(speeds[i], math.sqrt(speeds[i + 1] ** 2 + 2 * BRAKING * room))
        pieces: list[Piece] = []
        clock = 0.0
        for i in range(len(marks) - 1):
            clock = _run(pieces, clock, marks[i], marks[i + 1], speeds[i], speeds[i + 1], cruise[i])
        return tuple(pieces)

    def _limit(self, along: float) -> float:
        return self.limits[self.locate(along)[2]]


class Route:
    """A bus route: the junctions (x east, y north) it drives in directionId 0, reversed in 1,
    their latitudes and longitudes, and its stops (direction 0's order)."""

    def __init__(self, route_id: str, junctions: list[tuple[int, int]], stops: list[float]) -> None:
        self.route_id = route_id
        self.junctions = tuple(junctions)
        self.points = tuple(_lat_lon(x, y) for x, y in junctions)
        outward = _Path(junctions, stops)
        back = _Path(junctions[::-1], [outward.length - s for s in reversed(stops)])
        self.paths = (outward, back)
        self.stops = tuple(outward.locate(s)[:2] for s in stops)
        self.length_m = outward.length
        # How long a trip and its layover take on average: to spread the buses along the route.
        dwells = (len(stops) - 2) * sum(DWELL_S) / 2
        layover = sum(LAYOVER_S) / 2 + 30
        self.cycle_s = tuple(
            sum(path.profile(leg, len(TRAFFIC) // 2)[-1][0] for leg in range(len(stops) - 1))
            + dwells
            + layover
            for path in self.paths
        )


def draw_route(rng: random.Random) -> tuple[list[tuple[int, int]], list[float]]:
    """A route's junctions, a staircase across town that turns onto arterials where it can,
    and its stops as distances along it."""
    while True:
        start = (rng.randrange(GRID_SIZE), rng.randrange(GRID_SIZE))
        end = (rng.randrange(GRID_SIZE), rng.randrange(GRID_SIZE))
        dx, dy = end[0] - start[0], end[1] - start[1]
        if min(abs(dx), abs(dy)) >= 4 and 14 <= abs(dx) + abs(dy) <= 30:
            break
    junctions = [start]
    here = list(start)
    axis = rng.randrange(2)
    while tuple(here) != end:
        step = _sign(end[axis] - here[axis])
        left = abs(end[axis] - here[axis])
        if here[1 - axis] == end[1 - axis]:
            run = left
        else:
            runs = range(min(2, left), min(6, left) + 1)
            onto_arterial = [r for r in runs if (here[axis] + step * r) % ARTERIAL_EVERY == 0]
            run = rng.choice(onto_arterial if onto_arterial and rng.random() < 0.7 else runs)
        here[axis] += step * run
        junctions.append((here[0], here[1]))
        axis = 1 - axis
    length = BLOCK_M * (abs(dx) + abs(dy))
    stops = [0.0]
    while (
        stop := stops[-1] + BLOCK_M * rng.uniform(*STOP_SPACING_BLOCKS)
    ) < length - 0.8 * BLOCK_M:
        stops.append(stop)
    stops.append(length)
    return junctions, stops


def _run(
    pieces: list[Piece],
    clock: float,
    start: float,
    end: float,
    entry: float,
    leave: float,
    cruise: float,
) -> float:
    """Appends the pieces from `start` to `end` (m) entered at `entry` and left at `leave`
    (m/s), at most `cruise` in between; returns the clock at the end."""
    peak = _peak(entry, leave, end - start, cruise)
    along = start
    for low, high, rate in _BANDS:
        low, high = max(low, entry), min(high, peak)
        if high > low:
            seconds = (high - low) / rate
            pieces.append((clock + seconds, clock, along, low, rate))
            clock += seconds
            along += (high * high - low * low) / (2 * rate)
    cruising = end - along - (peak * peak - leave * leave) / (2 * BRAKING)
    if cruising > 1e-9:
        seconds = cruising / peak
        pieces.append((clock + seconds, clock, along, peak, 0.0))
        clock += seconds
        along += cruising
    if peak > leave:
        seconds = (peak - leave) / BRAKING
        pieces.append((clock + seconds, clock, along, peak, -BRAKING))
        clock += seconds
    return clock


def _peak(entry: float, leave: float, metres: float, cruise: float) -> float:
    """The top speed (m/s) between two marks `metres` apart: cruise when there is room to
    reach it, else where speeding up from `entry` meets braking to `leave`."""
    if _speeding_up_m(entry, cruise) + (cruise * cruise - leave * leave) / (2 * BRAKING) <= metres:
        return cruise
    done = 0.0
    for low, high, rate in _BANDS:
        if high <= entry:
            continue
        low = max(low, entry)
        squared = (metres - done + low * low / (2 * rate) + leave * leave / (2 * BRAKING)) / (
            1 / (2 * rate) + 1 / (2 * BRAKING)
        )
        if squared <= high * high:
            return min(cruise, max(math.sqrt(max(squared, 0.0)), entry, leave))
        done += (high * high - low * low) / (2 * rate)
    return cruise


def _speeding_up_m(speed: float, to: float) -> float:
    metres = 0.0
    for low, high, rate in _BANDS:
        low, high = max(low, speed), min(high, to)
        if high > low:
            metres += (high * high - low * low) / (2 * rate)
    return metres


def _reachable(speed: float, metres: float) -> float:
    """The speed (m/s) a bus reaches speeding up from `speed` over `metres`."""
    for low, high, rate in _BANDS:
        if high <= speed:
            continue
        low = max(low, speed)
        room = (high * high - low * low) / (2 * rate)
        if metres <= room:
            return math.sqrt(low * low + 2 * rate * metres)
        metres -= room
    return math.inf


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


def _lat_lon(x: float, y: float) -> tuple[float, float]:
    return (
        CENTRE[0] + (y - GRID_SIZE / 2) * BLOCK_M * _DEG_LAT_PER_M,
        CENTRE[1] + (x - GRID_SIZE / 2) * BLOCK_M * _DEG_LON_PER_M,
    )
