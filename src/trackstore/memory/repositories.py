"""Location and device repositories over one in-process store.

Nothing here awaits between reading and writing, so every method is atomic on the event loop,
as each DynamoDB call is.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Sequence

import msgspec

from trackstore.clock import wall_clock_ms
from trackstore.domain import (
    Arrival,
    Device,
    DeviceActivity,
    DeviceMark,
    HistoryQuery,
    Location,
    Order,
    Page,
    WindowQuery,
)
from trackstore.errors import CONFLICT, INVALID, UNAVAILABLE, Error
from trackstore.paging import decode_token, encode_token, key_field
from trackstore.ports import Clock
from trackstore.values import location_problem


class _Track:
    """One device's locations, kept sorted by timestamp."""

    __slots__ = ("by_time", "positions", "times")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.by_time: dict[int, Location] = {}
        self.positions: dict[int, str] = {}  # the stream position each location came from

    def put(self, location: Location) -> bool:
        """Stores the location; True when its timestamp was not stored before."""
        new = location.timestamp not in self.by_time
        if new:
            bisect.insort(self.times, location.timestamp)
        self.by_time[location.timestamp] = location
        return new


class MemoryStore:
    def __init__(self) -> None:
        self.tracks: dict[str, _Track] = {}
        self.devices: dict[str, Device] = {}
        self.marks: dict[str, DeviceMark] = {}
        self.changed_at: dict[str, int] = {}  # device id -> when its position or name changed
        self.available = True  # tests switch it off to see how callers cope with an outage

    def check(self) -> None:
        if not self.available:
            raise Error(UNAVAILABLE, "memory store is switched off", retry_after=1)

    def track(self, device_id: str) -> _Track:
        track = self.tracks.get(device_id)
        if track is None:
            track = self.tracks[device_id] = _Track()
        return track


class MemoryLocationRepository:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def put_many(self, arrivals: Sequence[Arrival]) -> None:
        self._store.check()
        _refuse_unstorable(arrivals)
        for arrival in arrivals:
            track = self._store.track(arrival.location.device_id)
            track.put(arrival.location)
            track.positions[arrival.location.timestamp] = arrival.position

    async def put_new(self, arrivals: Sequence[Arrival]) -> list[Location]:
        self._store.check()
        _refuse_unstorable(arrivals)
        counted = []
        for arrival in arrivals:
            location = arrival.location
            track = self._store.track(location.device_id)
            stored_from = track.positions.get(location.timestamp)
            if location.timestamp not in track.by_time:
                track.put(location)
                track.positions[location.timestamp] = arrival.position
                counted.append(location)
            elif stored_from == arrival.position:
                counted.append(location)
        return counted

    async def history(self, query: HistoryQuery) -> Page[Location]:
        self._store.check()
        scope = f"locations:{query.device_id}:{query.order.value}:{query.binding}"
        track = self._store.tracks.get(query.device_id)
        times = track.times if track else []
        low = -(2**63) if query.start is None else query.start
        high = 2**63 if query.end is None else query.end
        lo = bisect.bisect_left(times, low)
        hi = bisect.bisect_right(times, high)
        if query.token is not None:
            after = key_field(decode_token(query.token, scope), "t", int)
            if query.order is Order.ASC:
                lo = max(lo, bisect.bisect_right(times, after))
            else:
                hi = min(hi, bisect.bisect_left(times, after))
        window = times[lo:hi] if query.order is Order.ASC else times[lo:hi][::-1]
        chosen = window[: query.limit]
        token = None
        if len(window) > query.limit:
            token = encode_token(scope, {"t": chosen[-1]})
        items = [track.by_time[t] for t in chosen] if track else []
        return Page(items=items, next_token=token)

    async def window(self, query: WindowQuery) -> Page[Location]:
        self._store.check()
        after: tuple[int, str] | None = None
        if query.token is not None:
            key = decode_token(query.token, f"window:{query.binding}")
            after = (key_field(key, "t", int), key_field(key, "d", str))
        found: list[Location] = []
        for track in self._store.tracks.values():
            lo = bisect.bisect_left(track.times, query.start)
            hi = bisect.bisect_right(track.times, query.end)
            found.extend(track.by_time[t] for t in track.times[lo:hi])
        found.sort(key=lambda loc: (loc.timestamp, loc.device_id))
        if after is not None:
            found = [loc for loc in found if (loc.timestamp, loc.device_id) > after]
        chosen = found[: query.limit]
        token = None
        if len(found) > query.limit:
            last = chosen[-1]
            token = encode_token(
                f"window:{query.binding}", {"t": last.timestamp, "d": last.device_id}
            )
        return Page(items=chosen, next_token=token)

    async def latest(self, device_id: str) -> Location | None:
        self._store.check()
        track = self._store.tracks.get(device_id)
        if not track or not track.times:
            return None
        return track.by_time[track.times[-1]]

    async def stored_count(self, device_id: str, before: int | None) -> int:
        self._store.check()
        times = self._store.tracks[device_id].times if device_id in self._store.tracks else []
        return len(times) if before is None else bisect.bisect_left(times, before)

    async def oldest_timestamps(self, device_id: str, before: int | None, limit: int) -> list[int]:
        count = await self.stored_count(device_id, before)
        return self._store.tracks[device_id].times[: min(count, limit)] if count else []

    async def delete(self, device_id: str, timestamps: Sequence[int]) -> None:
        self._store.check()
        track = self._store.tracks.get(device_id)
        if track is None:
            return
        gone = {t for t in timestamps if track.by_time.pop(t, None) is not None}
        for t in gone:
            track.positions.pop(t, None)
        track.times = [t for t in track.times if t not in gone]
        if not track.times:
            del self._store.tracks[device_id]

    async def ping(self) -> None:
        self._store.check()


class MemoryDeviceRepository:
    def __init__(self, store: MemoryStore, clock: Clock = wall_clock_ms) -> None:
        self._store = store
        self._clock = clock

    async def marks(self, device_ids: Collection[str]) -> dict[str, DeviceMark]:
        self._store.check()
        marks = self._store.marks
        return {device_id: marks[device_id] for device_id in device_ids if device_id in marks}

    async def apply_activity(self, activities: Sequence[DeviceActivity]) -> None:
        self._store.check()
        moved: list[str] = []
        for activity in activities:
            device_id = activity.device_id
            mark = self._store.marks.get(device_id, DeviceMark())
            if not _still(mark, activity):
                moved.append(device_id)
                continue
            device = self._store.devices.get(device_id) or Device(device_id=device_id)
            newest = activity.newest
            if newest is not None and (
                device.last_seen is None or newest.timestamp > device.last_seen
            ):
                device = msgspec.structs.replace(
                    device, last_seen=newest.timestamp, last_location=newest
                )
                self._store.changed_at[device_id] = self._clock()
            self._store.devices[device_id] = msgspec.structs.replace(
                device, total_updates=device.total_updates + activity.added
            )
            self._store.marks[device_id] = DeviceMark(
                last_seen=device.last_seen,
                applied_through={**(mark.applied_through or {}), **activity.applied_through},
            )
        if moved:
            raise Error(CONFLICT, f"lastSeen moved under this batch for {', '.join(moved)}")

    async def get(self, device_id: str) -> Device | None:
        self._store.check()
        return self._store.devices.get(device_id)

    async def list(self, limit: int, token: str | None) -> Page[Device]:
        self._store.check()
        scope = f"devices:{limit}"
        ids = sorted(self._store.devices)
        start = 0
        if token is not None:
            after = key_field(decode_token(token, scope), "after", str)
            start = bisect.bisect_right(ids, after)
        chosen = ids[start : start + limit]
        more = start + limit < len(ids)
        return Page(
            items=[self._store.devices[i] for i in chosen],
            next_token=encode_token(scope, {"after": chosen[-1]}) if more else None,
        )

    async def register(
        self, device_id: str, name: str | None, metadata: dict[str, object] | None, now_ms: int
    ) -> Device:
        self._store.check()
        device = self._store.devices.get(device_id) or Device(device_id=device_id)
        if device.registered_at is not None:
            raise Error(CONFLICT, f"device {device_id} is already registered")
        device = msgspec.structs.replace(device, registered_at=now_ms, name=name, metadata=metadata)
        self._store.devices[device_id] = device
        self._store.changed_at[device_id] = self._clock()
        return device

    async def forget_location(self, device_id: str, timestamp: int) -> bool:
        self._store.check()
        device = self._store.devices.get(device_id)
        if device is None or device.last_location is None:
            return False
        if device.last_location.timestamp != timestamp:
            return False
        self._store.devices[device_id] = msgspec.structs.replace(device, last_location=None)
        self._store.changed_at[device_id] = self._clock()
        return True

    async def delete(self, device_id: str) -> bool:
        self._store.check()
        self._store.marks.pop(device_id, None)
        self._store.changed_at.pop(device_id, None)
        return self._store.devices.pop(device_id, None) is not None

    async def changed_since(self, since_ms: int | None) -> Sequence[Device]:
        self._store.check()
        devices = self._store.devices
        if since_ms is None:
            return list(devices.values())
        changed = self._store.changed_at
        return [devices[d] for d, at in changed.items() if at >= since_ms]

    async def ping(self) -> None:
        self._store.check()


def _still(mark: DeviceMark, activity: DeviceActivity) -> bool:
    """Whether the device's mark is still what the activity's batch read: `lastSeen`, whether
    per-shard marks exist, and the marks of the activity's shards (others may have moved)."""
    expected = activity.expected or DeviceMark()
    if mark.last_seen != expected.last_seen:
        return False
    if (mark.applied_through is None) != (expected.applied_through is None):
        return False
    return all(mark.through(shard) == expected.through(shard) for shard in activity.applied_through)


def _refuse_unstorable(arrivals: Sequence[Arrival]) -> None:
    # As DynamoDB does: one value it cannot hold fails the whole write.
    for arrival in arrivals:
        if problem := location_problem(arrival.location):
            raise Error(INVALID, f"the store refuses a location: {problem}")
