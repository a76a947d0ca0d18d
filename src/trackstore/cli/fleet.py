"""A synthetic fleet driving a street grid at plausible speeds: demo, `simulate`, benchmarks.

Vehicles follow a Manhattan-like grid of roads around a city centre: at each junction they go on,
turn or (rarely) turn back, and their speed eases towards a limit that depends on the road. With the
same seed the same fleet drives the same tracks.
"""

from __future__ import annotations

import math
import random

import msgspec

EARTH_RADIUS_M = 6_371_000.0
GRID_SIZE = 24  # junctions per side
BLOCK_M = 400.0  # distance between junctions
CENTRE = (52.3676, 4.9041)
ARTERIAL_EVERY = 4  # every 4th road is an arterial with a higher limit
_STEPS = ((0, 1), (1, 0), (0, -1), (-1, 0))


class _Vehicle:
    __slots__ = (
        "battery",
        "device_id",
        "heading",
        "legacy",
        "next_report_ms",
        "progress_m",
        "source",
        "speed_kmh",
        "target",
    )

    def __init__(self, device_id: str, rng: random.Random, legacy: bool, first_report_ms: int):
        self.device_id = device_id
        self.legacy = legacy
        self.source = (rng.randrange(GRID_SIZE), rng.randrange(GRID_SIZE))
        self.target = _neighbour(self.source, rng.choice(_STEPS))
        self.progress_m = rng.uniform(0, BLOCK_M)
        self.speed_kmh = rng.uniform(15, 45)
        self.heading = 0.0
        self.battery = rng.uniform(60, 100)
        self.next_report_ms = first_report_ms


class Fleet:
    """`devices` vehicles reporting `rate` records per second in total."""

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
        self._rng = random.Random(seed)
        self._interval_ms = max(1, round(devices / rate * 1000))
        self._now_ms = start_ms
        self.vehicles = [
            _Vehicle(
                f"{prefix}{i:04d}",
                self._rng,
                legacy=self._rng.random() < legacy_share,
                first_report_ms=start_ms + self._interval_ms * i // devices,
            )
            for i in range(devices)
        ]

    def advance(self, now_ms: int) -> list[tuple[str, bytes]]:
        """Drives every vehicle up to `now_ms`; returns (partition key, data) of the reports due."""
        reports: list[tuple[str, bytes]] = []
        for vehicle in self.vehicles:
            clock = self._now_ms
            while vehicle.next_report_ms <= now_ms:
                self._drive(vehicle, (vehicle.next_report_ms - clock) / 1000)
                clock = vehicle.next_report_ms
                reports.append((vehicle.device_id, self._report(vehicle, clock)))
                vehicle.next_report_ms += self._interval_ms
            self._drive(vehicle, (now_ms - clock) / 1000)
        self._now_ms = now_ms
        return reports

    def _drive(self, vehicle: _Vehicle, seconds: float) -> None:
        rng = self._rng
        while seconds > 0:
            limit = _speed_limit(vehicle.source, vehicle.target)
            # Ease towards the limit with some noise: traffic, lights, drivers.
            vehicle.speed_kmh += (limit * rng.uniform(0.6, 1.05) - vehicle.speed_kmh) * min(
                1.0, seconds / 10
            )
            vehicle.speed_kmh = max(0.0, vehicle.speed_kmh)
            speed_ms = max(vehicle.speed_kmh / 3.6, 0.5)
            to_go = BLOCK_M - vehicle.progress_m
            step = min(seconds, to_go / speed_ms)
            vehicle.progress_m += step * speed_ms
            seconds -= step
            if vehicle.progress_m >= BLOCK_M - 1e-6:
                self._turn(vehicle)
        vehicle.battery = max(5.0, vehicle.battery - rng.uniform(0, 0.002))

    def _turn(self, vehicle: _Vehicle) -> None:
        came = (vehicle.target[0] - vehicle.source[0], vehicle.target[1] - vehicle.source[1])
        ahead = [
            s
            for s in _STEPS
            if s != (-came[0], -came[1]) and _on_grid(_neighbour(vehicle.target, s))
        ]
        if not ahead or self._rng.random() < 0.02:
            step = (-came[0], -came[1])
        elif came in ahead and self._rng.random() < 0.6:
            step = came
        else:
            step = self._rng.choice(ahead)
        vehicle.source, vehicle.target = vehicle.target, _neighbour(vehicle.target, step)
        vehicle.progress_m = 0.0
        if self._rng.random() < 0.1:  # a stop at a junction
            vehicle.speed_kmh = 0.0

    def _report(self, vehicle: _Vehicle, now_ms: int) -> bytes:
        lat, lon, heading = _position(vehicle)
        accuracy = round(self._rng.uniform(3, 12), 1)
        if vehicle.legacy:
            return msgspec.json.encode(
                {
                    "busId": vehicle.device_id,
                    "lat": round(lat, 6),
                    "lon": round(lon, 6),
                    "ts": now_ms / 1000,
                    "speed": round(vehicle.speed_kmh, 1),
                    "heading": heading,
                    "region": "eu-west",
                    "quality_score": round(1 - accuracy / 20, 2),
                    "processed_at": now_ms,
                }
            )
        return msgspec.json.encode(
            {
                "deviceId": vehicle.device_id,
                "timestamp": now_ms,
                "latitude": round(lat, 6),
                "longitude": round(lon, 6),
                "speed": round(vehicle.speed_kmh, 1),
                "heading": heading,
                "altitude": round(2 + self._rng.uniform(-1, 1), 1),
                "accuracy": accuracy,
                "battery": round(vehicle.battery, 1),
            }
        )


def _neighbour(node: tuple[int, int], step: tuple[int, int]) -> tuple[int, int]:
    return node[0] + step[0], node[1] + step[1]


def _on_grid(node: tuple[int, int]) -> bool:
    return 0 <= node[0] < GRID_SIZE and 0 <= node[1] < GRID_SIZE


def _speed_limit(source: tuple[int, int], target: tuple[int, int]) -> float:
    road = source[0] if source[0] == target[0] else source[1]
    return 70.0 if road % ARTERIAL_EVERY == 0 else 40.0


def _position(vehicle: _Vehicle) -> tuple[float, float, float]:
    """Latitude, longitude and heading (degrees) of the vehicle on its block."""
    fraction = min(vehicle.progress_m / BLOCK_M, 1.0)
    x = vehicle.source[0] + (vehicle.target[0] - vehicle.source[0]) * fraction
    y = vehicle.source[1] + (vehicle.target[1] - vehicle.source[1]) * fraction
    north_m = (y - GRID_SIZE / 2) * BLOCK_M
    east_m = (x - GRID_SIZE / 2) * BLOCK_M
    lat = CENTRE[0] + math.degrees(north_m / EARTH_RADIUS_M)
    lon = CENTRE[1] + math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(CENTRE[0]))))
    dx, dy = vehicle.target[0] - vehicle.source[0], vehicle.target[1] - vehicle.source[1]
    heading = math.degrees(math.atan2(dx, dy)) % 360.0
    return lat, lon, heading
