"""`serve --seed-devices N --seed-points M`: a memory backend filled with N devices' tracks of M
points 10 s apart ending now, for benchmarks and demos of the API alone."""

from __future__ import annotations

import math

from trackstore.domain import Arrival, DeviceActivity, Location, stream_position
from trackstore.ports import DeviceRepository, LocationRepository

POINT_INTERVAL_MS = 10_000


async def seed(
    locations: LocationRepository,
    devices: DeviceRepository,
    device_count: int,
    points: int,
    now_ms: int,
) -> None:
    sequence = 0
    for d in range(device_count):
        device_id = f"bus-{d:04d}"
        track: list[Arrival] = []
        for p in range(points):
            sequence += 1
            angle = (d * 7 + p) / 50
            track.append(
                Arrival(
                    Location(
                        device_id=device_id,
                        timestamp=now_ms - (points - 1 - p) * POINT_INTERVAL_MS,
                        latitude=round(52.37 + 0.05 * math.sin(angle) + d / 10_000, 6),
                        longitude=round(4.9 + 0.05 * math.cos(angle), 6),
                        speed=round(30 + 20 * math.sin(angle * 3), 1),
                        heading=round(math.degrees(angle) % 360, 1),
                        received_at=now_ms - (points - 1 - p) * POINT_INTERVAL_MS + 150,
                    ),
                    stream_position("seed", str(sequence), 0),
                )
            )
        await locations.put_many(track)
        newest = track[-1]
        await devices.apply_activity(
            [
                DeviceActivity(
                    device_id=device_id,
                    expected=None,
                    newest=newest.location,
                    added=points,
                    applied_through={"seed": newest.position},
                )
            ]
        )
