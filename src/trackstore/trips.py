"""Reports over one device's track: daily summaries, stops and trips.

Pure rules, fed a device's Location objects one at a time, oldest first, in bounded memory: the
web adapter streams a history through them page by page. A fix not newer than the one before it
is ignored (a history never repeats a timestamp).

Between two consecutive fixes lies a *step*, and each step is exactly one of:

- a **jump** when the distance over the time implies more than `max_speed_kmh` (a GPS outlier):
  its distance and its time count nowhere, and it is counted as a skipped jump (in the day of
  its end fix). The next step starts from the jumped-to fix, so a single outlier fix (out and
  back) costs two skipped steps.
- a **gap** when the fixes are more than GAP_MS (5 minutes) apart: the device was silent. Its
  straight-line distance counts (a lower bound of what was driven), its time is neither moving
  nor idle but gap time.
- otherwise **moving** or **idle**: idle when the speed is under IDLE_SPEED_KMH (3 km/h). The
  speed is the one the end fix reports; when it reports none, the speed derived from the step's
  distance over its time.

Daily summaries (DaySummaries) are per UTC day, and a step crossing midnight is split there: each
day gets the part of the step's time that falls in it, and that share of its distance (the
device is taken to move evenly between fixes). A gap crossing midnight counts as a gap in each
day it overlaps, with the part in that day as its duration. A day's figures therefore depend only
on the fixes of that day plus the last fix before it and the first fix after it: the same day
comes out identical whether asked alone or within a longer window, as long as the caller feeds
those two neighbours too (see `DaySummaries`).

Stops and trips (Itinerary): a stop is a place where the device stayed within `radius_m` of a
cluster's *anchor*, the cluster's first fix, for at least `min_duration_ms` (its first to its
last fix). One pass: each fix either joins the open cluster (within the radius of its anchor) or
closes it and anchors the next one. A closed cluster that lasted long enough is a stop: arrival
is its first fix, departure its last, its position the centroid (mean of the fixes' unit
vectors, so right across the antimeridian too). Since the anchor is the cluster's first fix, a
fix taken while pulling in, within the radius of where the device then stood, makes the arrival
early by at most radius/speed (20 s at 36 km/h for 200 m). Silence within the radius (a parked
bus switched off) is part of the stop. A trip is the movement between two stops: from a stop's
departure fix to the next stop's arrival fix, both counted in its fixes; at a window's edges a
trip starts at the first fix or ends at the last one, and a stop is cut at the window's edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import msgspec

from trackstore.domain import Location
from trackstore.geo import haversine_m
from trackstore.timefmt import DAY_MS, utc_date

IDLE_SPEED_KMH = 3.0
GAP_MS = 5 * 60_000
DEFAULT_MAX_SPEED_KMH = 250.0
DEFAULT_STOP_RADIUS_M = 200.0
DEFAULT_STOP_MIN_DURATION_MS = 180_000
# metres per millisecond to km/h
_KMH_PER_M_PER_MS = 3600.0


class StepKind(Enum):
    MOVING = "moving"
    IDLE = "idle"
    GAP = "gap"
    JUMP = "jump"


class Step(msgspec.Struct, frozen=True, gc=False):
    """What lies between two consecutive fixes (start < end, epoch ms)."""

    start: int
    end: int
    distance_m: float
    speed_kmh: float  # reported at the end fix, else derived
    kind: StepKind


def step_between(previous: Location, current: Location, max_speed_kmh: float) -> Step:
    """The step from `previous` to `current`, which must be later."""
    elapsed = current.timestamp - previous.timestamp
    distance = haversine_m(
        previous.latitude, previous.longitude, current.latitude, current.longitude
    )
    derived = distance / elapsed * _KMH_PER_M_PER_MS
    speed = derived if current.speed is None else current.speed
    if derived > max_speed_kmh:
        kind = StepKind.JUMP
    elif elapsed > GAP_MS:
        kind = StepKind.GAP
    elif speed < IDLE_SPEED_KMH:
        kind = StepKind.IDLE
    else:
        kind = StepKind.MOVING
    return Step(previous.timestamp, current.timestamp, distance, speed, kind)


# -- daily summaries -----------------------------------------------------------------------------


class DaySummary(msgspec.Struct, frozen=True, kw_only=True):
    """One UTC day of a device's track. Times are epoch ms, durations ms."""

    day: int  # days since the epoch
    fixes: int = 0
    first_fix: int | None = None
    last_fix: int | None = None
    distance_m: float = 0.0
    moving_ms: int = 0
    idle_ms: int = 0
    moving_distance_m: float = 0.0
    max_speed_kmh: float | None = None  # over the moving steps
    gaps: int = 0
    gap_ms: int = 0
    jumps_skipped: int = 0

    @property
    def date(self) -> str:
        return utc_date(self.day * DAY_MS)

    @property
    def avg_moving_speed_kmh(self) -> float | None:
        """The distance of the moving steps over their time; None when it never moved."""
        if self.moving_ms == 0:
            return None
        return self.moving_distance_m / self.moving_ms * _KMH_PER_M_PER_MS


@dataclass
class _Day:
    day: int
    fixes: int = 0
    first_fix: int | None = None
    last_fix: int | None = None
    distance_m: float = 0.0
    moving_ms: int = 0
    idle_ms: int = 0
    moving_distance_m: float = 0.0
    max_speed_kmh: float | None = None
    gaps: int = 0
    gap_ms: int = 0
    jumps_skipped: int = 0

    def fix(self, timestamp: int) -> None:
        self.fixes += 1
        if self.first_fix is None:
            self.first_fix = timestamp
        self.last_fix = timestamp

    def add(self, step: Step, part_ms: int) -> None:
        """`part_ms` of the step's time falls in this day, and that share of its distance."""
        distance = step.distance_m * (part_ms / (step.end - step.start))
        self.distance_m += distance
        if step.kind is StepKind.GAP:
            self.gaps += 1
            self.gap_ms += part_ms
        elif step.kind is StepKind.IDLE:
            self.idle_ms += part_ms
        else:
            self.moving_ms += part_ms
            self.moving_distance_m += distance
            if self.max_speed_kmh is None or step.speed_kmh > self.max_speed_kmh:
                self.max_speed_kmh = step.speed_kmh

    def summary(self) -> DaySummary:
        return DaySummary(
            day=self.day,
            fixes=self.fixes,
            first_fix=self.first_fix,
            last_fix=self.last_fix,
            distance_m=self.distance_m,
            moving_ms=self.moving_ms,
            idle_ms=self.idle_ms,
            moving_distance_m=self.moving_distance_m,
            max_speed_kmh=self.max_speed_kmh,
            gaps=self.gaps,
            gap_ms=self.gap_ms,
            jumps_skipped=self.jumps_skipped,
        )


class DaySummaries:
    """Summaries of the UTC days `first_day`..`last_day` (days since the epoch), every one of
    them, in order, including days without a fix.

    Feed it, oldest first, the last fix before `first_day` (if any), every fix of those days,
    and the first fix after `last_day` (if any): those two close the steps that cross the
    window's midnights. Other fixes outside the days are harmless. `add` returns the days it
    completed; `finish` the rest. Memory: the days still open, one fix.
    """

    def __init__(
        self, first_day: int, last_day: int, max_speed_kmh: float = DEFAULT_MAX_SPEED_KMH
    ) -> None:
        if last_day < first_day:
            raise ValueError("last_day is before first_day")
        self._first = first_day
        self._last = last_day
        self._max_speed_kmh = max_speed_kmh
        self._open: dict[int, _Day] = {}
        self._next = first_day  # the first day not yet returned
        self._previous: Location | None = None

    def add(self, fix: Location) -> list[DaySummary]:
        previous = self._previous
        if previous is not None and fix.timestamp <= previous.timestamp:
            return []
        self._previous = fix
        day = fix.timestamp // DAY_MS
        if self._first <= day <= self._last:
            self._day(day).fix(fix.timestamp)
        if previous is not None:
            step = step_between(previous, fix, self._max_speed_kmh)
            if step.kind is StepKind.JUMP:
                if self._first <= day <= self._last:
                    self._day(day).jumps_skipped += 1
            else:
                first = max(previous.timestamp // DAY_MS, self._first)
                for touched in range(first, min(day, self._last) + 1):
                    start = touched * DAY_MS
                    part = min(step.end, start + DAY_MS) - max(step.start, start)
                    if part > 0:
                        self._day(touched).add(step, part)
        return self._close(min(day, self._last + 1))

    def finish(self) -> list[DaySummary]:
        return self._close(self._last + 1)

    def _day(self, day: int) -> _Day:
        found = self._open.get(day)
        if found is None:
            found = self._open[day] = _Day(day)
        return found

    def _close(self, until: int) -> list[DaySummary]:
        """The days before `until` not yet returned: no later fix can change them."""
        closed = []
        while self._next < until:
            closed.append(self._open.pop(self._next, _Day(self._next)).summary())
            self._next += 1
        return closed


# -- stops and trips -----------------------------------------------------------------------------


class Stop(msgspec.Struct, frozen=True, kw_only=True):
    arrival: int  # epoch ms of its first fix
    departure: int  # of its last fix
    latitude: float  # the centroid of its fixes
    longitude: float
    fixes: int

    @property
    def duration_ms(self) -> int:
        return self.departure - self.arrival


class Trip(msgspec.Struct, frozen=True, kw_only=True):
    start: int  # epoch ms of its first fix (a stop's departure)
    end: int  # of its last fix (the next stop's arrival)
    start_latitude: float
    start_longitude: float
    end_latitude: float
    end_longitude: float
    distance_m: float  # over its steps, jumps skipped
    max_speed_kmh: float | None  # over its steps but jumps and gaps
    fixes: int  # both ends included
    jumps_skipped: int

    @property
    def duration_ms(self) -> int:
        return self.end - self.start

    @property
    def avg_speed_kmh(self) -> float | None:
        """Distance over duration, halts on the way (too short to be stops) included."""
        if self.end == self.start:
            return None
        return self.distance_m / (self.end - self.start) * _KMH_PER_M_PER_MS


@dataclass
class _Leg:
    """Consecutive steps from `first` to `last`."""

    first: Location
    last: Location
    distance_m: float = 0.0
    max_speed_kmh: float | None = None
    fixes: int = 1
    jumps: int = 0

    def extend(self, fix: Location, step: Step) -> None:
        self.last = fix
        self.fixes += 1
        if step.kind is StepKind.JUMP:
            self.jumps += 1
            return
        self.distance_m += step.distance_m
        if step.kind is not StepKind.GAP and (
            self.max_speed_kmh is None or step.speed_kmh > self.max_speed_kmh
        ):
            self.max_speed_kmh = step.speed_kmh

    def join(self, other: _Leg) -> None:
        """Appends `other`, which starts where this one ends."""
        self.last = other.last
        self.fixes += other.fixes - 1
        self.distance_m += other.distance_m
        self.jumps += other.jumps
        if other.max_speed_kmh is not None and (
            self.max_speed_kmh is None or other.max_speed_kmh > self.max_speed_kmh
        ):
            self.max_speed_kmh = other.max_speed_kmh

    def trip(self) -> Trip:
        return Trip(
            start=self.first.timestamp,
            end=self.last.timestamp,
            start_latitude=self.first.latitude,
            start_longitude=self.first.longitude,
            end_latitude=self.last.latitude,
            end_longitude=self.last.longitude,
            distance_m=self.distance_m,
            max_speed_kmh=self.max_speed_kmh,
            fixes=self.fixes,
            jumps_skipped=self.jumps,
        )


class _Cluster:
    """Fixes within the radius of the anchor, its first: the centroid's sums and its steps."""

    def __init__(self, anchor: Location) -> None:
        self.anchor = anchor
        self.leg = _Leg(anchor, anchor)
        self.x = self.y = self.z = 0.0
        self._sum(anchor)

    def add(self, fix: Location, step: Step) -> None:
        self.leg.extend(fix, step)
        self._sum(fix)

    def _sum(self, fix: Location) -> None:
        lat, lon = math.radians(fix.latitude), math.radians(fix.longitude)
        self.x += math.cos(lat) * math.cos(lon)
        self.y += math.cos(lat) * math.sin(lon)
        self.z += math.sin(lat)

    @property
    def duration_ms(self) -> int:
        return self.leg.last.timestamp - self.anchor.timestamp

    def stop(self) -> Stop:
        n = self.leg.fixes
        x, y, z = self.x / n, self.y / n, self.z / n
        if n == 1 or math.hypot(x, y) < 1e-12:  # one fix, or at a pole: no longitude to average
            latitude, longitude = self.anchor.latitude, self.anchor.longitude
        else:
            latitude = math.degrees(math.atan2(z, math.hypot(x, y)))
            longitude = math.degrees(math.atan2(y, x))
        return Stop(
            arrival=self.anchor.timestamp,
            departure=self.leg.last.timestamp,
            latitude=latitude,
            longitude=longitude,
            fixes=n,
        )


class Itinerary:
    """Stops and the trips between them, in time order, from a device's fixes (see the module's
    documentation). `add` returns what the fix completed, `finish` the rest; memory: one open
    cluster and one open trip."""

    def __init__(
        self,
        radius_m: float = DEFAULT_STOP_RADIUS_M,
        min_duration_ms: int = DEFAULT_STOP_MIN_DURATION_MS,
        max_speed_kmh: float = DEFAULT_MAX_SPEED_KMH,
    ) -> None:
        self._radius_m = radius_m
        self._min_duration_ms = min_duration_ms
        self._max_speed_kmh = max_speed_kmh
        self._cluster: _Cluster | None = None
        self._trip: _Leg | None = None  # from its first fix to the cluster's anchor

    def add(self, fix: Location) -> list[Stop | Trip]:
        cluster, trip = self._cluster, self._trip
        if cluster is None or trip is None:
            self._cluster = _Cluster(fix)
            self._trip = _Leg(fix, fix)
            return []
        last = cluster.leg.last
        if fix.timestamp <= last.timestamp:
            return []
        step = step_between(last, fix, self._max_speed_kmh)
        anchor = cluster.anchor
        if haversine_m(anchor.latitude, anchor.longitude, fix.latitude, fix.longitude) <= (
            self._radius_m
        ):
            cluster.add(fix, step)
            return []
        done, trip = self._close(cluster, trip)
        trip.extend(fix, step)
        self._cluster, self._trip = _Cluster(fix), trip
        return done

    def finish(self) -> list[Stop | Trip]:
        cluster, trip = self._cluster, self._trip
        if cluster is None or trip is None:
            return []
        done, trip = self._close(cluster, trip)
        if trip.fixes > 1:
            done.append(trip.trip())
        self._cluster = self._trip = None
        return done

    def _close(self, cluster: _Cluster, trip: _Leg) -> tuple[list[Stop | Trip], _Leg]:
        """Closes the cluster: a stop (two fixes at least, `min_duration_ms` apart) ends the
        trip before it, and the next trip starts at its departure; otherwise the cluster's steps
        are part of the trip. Returns what it completed and the trip, which now ends at the
        cluster's last fix."""
        if cluster.leg.fixes > 1 and cluster.duration_ms >= self._min_duration_ms:
            done: list[Stop | Trip] = [trip.trip()] if trip.fixes > 1 else []
            done.append(cluster.stop())
            departure = cluster.leg.last
            return done, _Leg(departure, departure)
        trip.join(cluster.leg)
        return [], trip
