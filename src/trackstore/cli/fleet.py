"""A synthetic bus fleet on a street grid: what `demo`, `simulate` and the benchmarks publish.

The grid, the routes and how a bus drives from one stop to the next are in `bus_routes`; this
module holds the buses and their reports. Each bus drives its route out (directionId 0) and back
(1), trip after trip, at a traffic level drawn for every leg; it dwells 15-45 s at each stop, and
at the terminus it lays over and departs on the next trip, the other way, on a whole minute.

A report gives the bus's mean speed since its previous report (the distance it drove along the
route over the report interval) and the bearing of the street it is on, kept while it stands.
Every bus draws its chances (traffic, dwells, layovers, GPS noise) from a generator of its own:
its reports depend on the seed and their times only, not on how `advance` is called.
"""

from __future__ import annotations

import math
import random
from datetime import date, timedelta

import msgspec

from trackstore.cli.bus_routes import DWELL_S, LAYOVER_S, ROUTES, TRAFFIC, Piece, Route, draw_route

BATTERY_DRAIN = 0.001  # percent a second

_EPOCH = date(1970, 1, 1)
_MINUTE_MS = 60_000
_MASK64 = (1 << 64) - 1


class _Report(msgspec.Struct, gc=False):
    deviceId: str
    timestamp: int
    latitude: float
    longitude: float
    speed: float
    heading: float
    altitude: float
    accuracy: float
    battery: float
    attributes: msgspec.Raw  # encoded once a trip


class _LegacyReport(msgspec.Struct, gc=False):
    """What the platform's legacy producers write; their records cannot carry attributes."""

    busId: str
    lat: float
    lon: float
    ts: float
    speed: float
    heading: float
    region: str
    quality_score: float
    processed_at: int


_encode = msgspec.json.Encoder().encode


class _Vehicle:
    """A bus: where it is on its trip, what it does next, and its own random generator."""

    __slots__ = (
        "along",
        "attributes",
        "base",
        "battery",
        "depart_ms",
        "device_id",
        "direction",
        "heading",
        "hold_until",
        "leg",
        "leg_start",
        "legacy",
        "next_report_ms",
        "path",
        "piece",
        "pieces",
        "rand",
        "route",
        "segment",
        "travelled",
    )

    def __init__(
        self, device_id: str, route: Route, legacy: bool, rand: int, battery: float
    ) -> None:
        self.device_id = device_id
        self.route = route
        self.legacy = legacy
        self.rand = rand
        self.battery = battery
        self.direction = 0
        self.path = route.paths[0]
        self.base = 0.0  # distance driven before this trip
        self.along = 0.0  # distance along this trip
        self.travelled = 0.0  # base + along at the previous report
        self.segment = 0
        self.heading = 0.0
        self.leg = 0  # being driven from stop `leg`, or standing at it
        self.pieces: tuple[Piece, ...] | None = None  # None while standing
        self.piece = 0
        self.leg_start = 0.0
        self.hold_until = 0.0  # seconds since the start; a standing bus leaves then
        self.depart_ms = 0  # the next trip's departure, while laying over
        self.attributes = msgspec.Raw(b"{}")
        self.next_report_ms = 0


class Fleet:
    """`devices` buses reporting `rate` records per second in total, starting at `start_ms`."""

    def __init__(
        self,
        devices: int,
        rate: float,
        start_ms: int,
        seed: int = 7,
        legacy_share: float = 0.0,
        prefix: str = "bus-",
    ) -> None:
        if devices < 1 or rate <= 0:
            raise ValueError("a fleet needs at least one device and a positive rate")
        rng = random.Random(seed)
        # First, so that the network depends on the seed only, not on the fleet's size.
        self.routes = [Route(f"R{n + 1}", *draw_route(rng)) for n in range(ROUTES)]
        self._start_ms = start_ms
        self._interval_ms = max(1, round(devices / rate * 1000))
        self._kmh_per_m = 3.6 / (self._interval_ms / 1000)
        self.vehicles: list[_Vehicle] = []
        for i in range(devices):
            vehicle = _Vehicle(
                f"{prefix}{i:04d}",
                self.routes[i % ROUTES],
                legacy=rng.random() < legacy_share,
                rand=rng.getrandbits(64),
                battery=rng.uniform(60, 100),
            )
            vehicle.next_report_ms = start_ms + self._interval_ms * i // devices
            self._place(vehicle, rng.randrange(2), rng.random())
            self.vehicles.append(vehicle)

    def advance(self, now_ms: int) -> list[tuple[str, bytes]]:
        """Returns (partition key, data) of the reports due up to `now_ms`, in bus order."""
        reports: list[tuple[str, bytes]] = []
        interval = self._interval_ms
        for vehicle in self.vehicles:
            due = vehicle.next_report_ms
            while due <= now_ms:
                reports.append((vehicle.device_id, self._report(vehicle, due)))
                due += interval
            vehicle.next_report_ms = due
        return reports

    def _place(self, vehicle: _Vehicle, direction: int, phase: float) -> None:
        """Puts the bus somewhere along its route one interval before its first report (its
        first speed is a mean over that interval like any other)."""
        before_ms = vehicle.next_report_ms - self._interval_ms
        elapsed_s = phase * vehicle.route.cycle_s[direction]
        departed_ms = int((before_ms - elapsed_s * 1000) // _MINUTE_MS * _MINUTE_MS)
        self._start_trip(vehicle, direction, departed_ms, first=True)
        self._move(vehicle, (before_ms - self._start_ms) / 1000)
        _, _, vehicle.segment = vehicle.path.locate(vehicle.along)
        vehicle.heading = vehicle.path.headings[vehicle.segment]
        vehicle.travelled = vehicle.base + vehicle.along

    def _start_trip(self, vehicle: _Vehicle, direction: int, depart_ms: int, first: bool) -> None:
        if not first:
            vehicle.base += vehicle.path.length
        vehicle.direction = direction
        vehicle.path = vehicle.route.paths[direction]
        vehicle.along = 0.0
        vehicle.segment = 0
        vehicle.leg = 0
        vehicle.pieces = None
        vehicle.hold_until = (depart_ms - self._start_ms) / 1000
        days, ms_of_day = divmod(depart_ms, 86_400_000)
        day = _EPOCH + timedelta(days=days)
        hours, seconds = divmod(ms_of_day // 1000, 3600)
        minutes, seconds = divmod(seconds, 60)
        route_id = vehicle.route.route_id
        attributes = {
            "routeId": route_id,
            "tripId": f"{route_id}-{direction}-{hours:02d}{minutes:02d}-{vehicle.device_id}",
            "directionId": direction,
            "startDate": f"{day.year:04d}{day.month:02d}{day.day:02d}",
            "startTime": f"{hours:02d}:{minutes:02d}:{seconds:02d}",
        }
        vehicle.attributes = msgspec.Raw(_encode(attributes))

    def _move(self, vehicle: _Vehicle, now: float) -> None:
        """Takes the bus along its route to `now` (seconds since the start)."""
        while True:
            pieces = vehicle.pieces
            if pieces is None:
                if now < vehicle.hold_until:
                    return
                path = vehicle.path
                if vehicle.leg == len(path.stops) - 1:
                    self._start_trip(vehicle, 1 - vehicle.direction, vehicle.depart_ms, False)
                    path = vehicle.path
                traffic = int(_draw(vehicle) * len(TRAFFIC))
                vehicle.pieces = pieces = path.profile(vehicle.leg, traffic)
                vehicle.piece = 0
                vehicle.leg_start = vehicle.hold_until
            into = now - vehicle.leg_start
            if into >= pieces[-1][0]:
                self._arrive(vehicle, vehicle.leg_start + pieces[-1][0])
                continue
            i = vehicle.piece
            while into >= pieces[i][0]:
                i += 1
            vehicle.piece = i
            _, begins, along, speed, acceleration = pieces[i]
            into -= begins
            vehicle.along = along + (speed + 0.5 * acceleration * into) * into
            return

    def _arrive(self, vehicle: _Vehicle, arrival: float) -> None:
        vehicle.leg += 1
        vehicle.pieces = None
        stops = vehicle.path.stops
        vehicle.along = stops[vehicle.leg]
        if vehicle.leg < len(stops) - 1:
            vehicle.hold_until = arrival + _uniform(vehicle, *DWELL_S)
            return
        # Trips leave on the minute, as a timetable has them.
        ready_ms = self._start_ms + (arrival + _uniform(vehicle, *LAYOVER_S)) * 1000
        vehicle.depart_ms = math.ceil(ready_ms / _MINUTE_MS) * _MINUTE_MS
        vehicle.hold_until = (vehicle.depart_ms - self._start_ms) / 1000

    def _report(self, vehicle: _Vehicle, now_ms: int) -> bytes:
        seconds = (now_ms - self._start_ms) / 1000
        self._move(vehicle, seconds)
        along = vehicle.along
        path = vehicle.path
        lat, lon, vehicle.segment = path.locate(along, vehicle.segment)
        travelled = vehicle.base + along
        moved = travelled - vehicle.travelled
        vehicle.travelled = travelled
        speed = round(moved * self._kmh_per_m, 1) if moved > 0 else 0.0
        if speed > 0:  # a bus pulling away reports no turn before it shows any speed
            vehicle.heading = path.headings[vehicle.segment]
        noise = _next(vehicle)
        accuracy = round(3 + 9 * (noise >> 40) / 16_777_216, 1)
        battery = round(max(5.0, vehicle.battery - BATTERY_DRAIN * seconds), 1)
        if vehicle.legacy:
            return _encode(
                _LegacyReport(
                    vehicle.device_id,
                    round(lat, 6),
                    round(lon, 6),
                    now_ms / 1000,
                    speed,
                    vehicle.heading,
                    "eu-west",
                    round(1 - accuracy / 20, 2),
                    now_ms,
                )
            )
        altitude = round(1 + 2 * ((noise >> 16) & 0xFFFFFF) / 16_777_216, 1)
        return _encode(
            _Report(
                vehicle.device_id,
                now_ms,
                round(lat, 6),
                round(lon, 6),
                speed,
                vehicle.heading,
                altitude,
                accuracy,
                battery,
                vehicle.attributes,
            )
        )


def _next(vehicle: _Vehicle) -> int:
    """The bus's next 64 random bits: a 64-bit LCG, small enough to give every bus its own."""
    vehicle.rand = (vehicle.rand * 6364136223846793005 + 1442695040888963407) & _MASK64
    return vehicle.rand


def _draw(vehicle: _Vehicle) -> float:
    return (_next(vehicle) >> 11) / 9_007_199_254_740_992  # the high 53 bits, in [0, 1)


def _uniform(vehicle: _Vehicle, low: float, high: float) -> float:
    return low + (high - low) * _draw(vehicle)
