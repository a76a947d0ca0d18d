"""The fleet snapshot: one `serve` process's view of every device's latest position, status and
name, read by the area queries, the live stream and the GTFS-Realtime feed.

It is kept fresh by asking the device repository, every `refresh_s`, for the devices that changed
since the last refresh (with an overlap, since the store's change index is eventually consistent),
so a refresh costs what changed, not the fleet; it reads the whole fleet at start and every
`full_every_s`, which heals anything a window missed. Several `serve` processes each keep their
own: there is nothing to coordinate, and each is at most one refresh behind the store.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import msgspec

from trackstore.domain import ACTIVE_WINDOW_MS, Device, DeviceStatus, Page, check_limit
from trackstore.errors import INVALID, UNAVAILABLE, Error
from trackstore.geo import EARTH_RADIUS_M, BBox, Circle
from trackstore.geo_areas import Area
from trackstore.paging import decode_token, encode_token, key_field
from trackstore.ports import Clock, DeviceRepository

log = logging.getLogger(__name__)

# A change can reach the store's change index a moment after its writer's clock stamped it
# (index propagation, clock skew between tasks): each window starts this much before the last.
OVERLAP_MS = 5_000
FULL_EVERY_S = 900.0
FIRST_READ_S = 5.0
RECENT_REFRESHES = 64  # how far back a live subscriber may fall and still get every change
DISTANCE_STEP_M = 0.1  # distances are shown (and ordered) to the decimetre
_CHUNK = 512  # positions tested per list comprehension by a query


class FleetFilter(msgspec.Struct, frozen=True, kw_only=True):
    """What a caller wants from the fleet; every filter given must hold (AND). A device without
    a position never matches a geographic filter."""

    bbox: BBox | None = None
    near: Circle | None = None
    area: Area | None = None
    status: DeviceStatus | None = None
    device_ids: frozenset[str] | None = None

    @property
    def geographic(self) -> bool:
        return self.bbox is not None or self.near is not None or self.area is not None

    def matches(self, device: Device, now_ms: int) -> bool:
        if self.device_ids is not None and device.device_id not in self.device_ids:
            return False
        if self.status is not None and device.status(now_ms) is not self.status:
            return False
        if not self.geographic:
            return True
        location = device.last_location
        if location is None:
            return False
        lat, lon = location.latitude, location.longitude
        return (
            (self.bbox is None or self.bbox.contains(lat, lon))
            and (self.near is None or self.near.contains(lat, lon))
            and (self.area is None or self.area.contains(lat, lon))
        )


class Placed(msgspec.Struct, frozen=True, gc=False):
    """A device found by a fleet query, with its distance from `near` when one was given."""

    device: Device
    distance_m: float | None = None


class Refresh(msgspec.Struct, frozen=True):
    """One refresh's outcome: the snapshot's version and time after it, and the devices whose
    position, name, registration or status changed in it."""

    version: int
    taken_at: int
    changed: tuple[Device, ...]


class FleetSnapshot:
    def __init__(
        self,
        devices: DeviceRepository,
        clock: Clock,
        *,
        refresh_s: float = 5.0,
        full_every_s: float = FULL_EVERY_S,
    ) -> None:
        self._repository = devices
        self._clock = clock
        self.refresh_s = refresh_s
        self._full_every_s = full_every_s
        self._devices: dict[str, Device] = {}
        self._index: _Columns | None = None  # built when first needed after a change
        self._since: int | None = None  # None: the next refresh reads everything
        self._full_due = 0.0  # monotonic
        self.version = 0
        self.taken_at: int | None = None
        self._recent: deque[Refresh] = deque(maxlen=RECENT_REFRESHES)
        self._refreshed = asyncio.Event()
        self.closed = False

    # -- reading -------------------------------------------------------------------------------

    @property
    def devices(self) -> Mapping[str, Device]:
        return self._devices

    def ready(self) -> None:
        """Raises Error(UNAVAILABLE) until the first refresh has read the fleet."""
        if self.taken_at is None:
            raise Error(UNAVAILABLE, "the fleet snapshot is still loading", retry_after=1)

    def select(
        self, fleet_filter: FleetFilter, limit: int, token: str | None, binding: str
    ) -> Page[Placed]:
        """The devices matching the filter, a page at a time: by device id, or by distance
        (then id) when `near` is given. `binding` is the query as the caller gave it: a
        token belongs to it. Pages follow the snapshot as it refreshes, as a table scan
        would: a device never comes twice, one that moves across the cursor may be missed."""
        self.ready()
        check_limit(limit)
        scope = f"fleet:{limit}:{binding}"
        key = None if token is None else decode_token(token, scope)
        now = self._clock()
        index = self._columns()
        if fleet_filter.near is not None:
            return self._by_distance(fleet_filter, fleet_filter.near, index, limit, key, scope, now)
        start = 0 if key is None else bisect.bisect_right(index.ids, key_field(key, "i", str))
        found: list[Placed] = []
        devices = self._devices
        for i in index.candidates(fleet_filter, start, now):
            device = devices[index.ids[i]]
            if fleet_filter.matches(device, now):
                if len(found) == limit:
                    return Page(found, encode_token(scope, {"i": found[-1].device.device_id}))
                found.append(Placed(device))
        return Page(found)

    def _by_distance(
        self,
        fleet_filter: FleetFilter,
        near: Circle,
        index: _Columns,
        limit: int,
        key: dict[str, Any] | None,
        scope: str,
        now: int,
    ) -> Page[Placed]:
        """Nearest first, by the distance as shown (to DISTANCE_STEP_M), then by id: the
        order a client sorting the answers would find. Candidates come in chord order, which
        matches the distance's to far better than a step; a few past the page are read, in
        case they round to the same distance as its last."""
        after: tuple[float, str] | None = None
        start: tuple[float, str] | None = None
        if key is not None:
            distance = key.get("d")
            if not isinstance(distance, float | int) or isinstance(distance, bool):
                raise Error(INVALID, "next_token is not valid")
            after = (float(distance), key_field(key, "i", str))
            start = (_squared_chord(after[0] - 2 * DISTANCE_STEP_M), "")
        found: list[tuple[float, str, Device]] = []
        enough: float | None = None  # the chord past which no candidate can still belong
        devices, ids = self._devices, index.ids
        for chord, i in index.nearest(near, start):
            if enough is not None and chord > enough:
                break
            device = devices[ids[i]]
            if not fleet_filter.matches(device, now):
                continue
            location = device.last_location
            assert location is not None  # it has a place: it matched `near`
            shown = shown_distance(near.distance_m(location.latitude, location.longitude))
            if after is not None and (shown, device.device_id) <= after:
                continue
            found.append((shown, device.device_id, device))
            if len(found) == limit + 1:
                enough = _squared_chord(max(d for d, _, _ in found) + 2 * DISTANCE_STEP_M)
        found.sort(key=lambda row: (row[0], row[1]))
        page = [Placed(device, shown) for shown, _, device in found[:limit]]
        if len(found) <= limit:
            return Page(page)
        last = found[limit - 1]
        return Page(page, encode_token(scope, {"d": last[0], "i": last[1]}))

    def _columns(self) -> _Columns:
        """The devices as columns sorted by id, rebuilt after a refresh changed anything:
        queries test 10,000 positions in list comprehensions, not method calls."""
        if self._index is None:
            self._index = _Columns(self._devices)
        return self._index

    # -- keeping fresh -------------------------------------------------------------------------

    async def refresh(self) -> Refresh:
        """Reads what changed since the last refresh (everything, at first and when a full
        read is due) into the snapshot; wakes everyone waiting in `changes`."""
        now = self._clock()
        full = self._since is None or time.monotonic() >= self._full_due
        fetched = await self._repository.changed_since(None if full else self._since)
        changed = self._merge(fetched, now)
        self._since = now - OVERLAP_MS
        if full:
            self._full_due = time.monotonic() + self._full_every_s
        self.taken_at = now
        self.version += 1
        refresh = Refresh(self.version, now, tuple(changed))
        self._recent.append(refresh)
        self._refreshed.set()
        self._refreshed = asyncio.Event()
        return refresh

    def _merge(self, fetched: Iterable[Device], now: int) -> list[Device]:
        previous_at = self.taken_at
        changed: dict[str, Device] = {}
        added = False
        for device in fetched:
            old = self._devices.get(device.device_id)
            if old is None:
                added = True
            elif old == device or (
                old.last_seen is not None
                and (device.last_seen is None or device.last_seen < old.last_seen)
            ):
                continue  # the same, or an older read than one merged already (an overlap)
            self._devices[device.device_id] = device
            if old is None or _shown(old) != _shown(device):
                changed[device.device_id] = device
        if changed or added:
            self._index = None
        if previous_at is not None:
            # Devices that went quiet since the last refresh: their status turned inactive
            # with no write to tell, so the live stream must hear it from here.
            low, high = previous_at - ACTIVE_WINDOW_MS, now - ACTIVE_WINDOW_MS
            for device in self._devices.values():
                seen = device.last_seen
                if seen is not None and low <= seen < high and device.device_id not in changed:
                    changed[device.device_id] = device
        return list(changed.values())

    async def changes(self, after_version: int) -> Refresh | None:
        """Waits for a refresh after `after_version` and returns what changed since then (one
        Refresh covering every refresh missed), or None when that is older than the snapshot
        remembers: the caller then starts again from the whole state."""
        while self.version <= after_version and not self.closed:
            await self._refreshed.wait()
        if self.closed:
            return None
        missed = [r for r in self._recent if r.version > after_version]
        if not missed or missed[0].version != after_version + 1:
            return None
        changed: dict[str, Device] = {}
        for refresh in missed:
            changed.update((d.device_id, d) for d in refresh.changed)
        latest = missed[-1]
        return Refresh(latest.version, latest.taken_at, tuple(changed.values()))

    async def run(self, stop: asyncio.Event) -> None:
        """Refreshes every `refresh_s` until `stop` is set. A failed refresh is logged and the
        snapshot kept as it was: it is retried at the next interval."""
        failing = False
        while not stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.refresh_s)
            if stop.is_set():
                return
            try:
                await self.refresh()
                if failing:
                    log.info("fleet snapshot refreshed again", extra={"devices": len(self)})
                failing = False
            except Error as error:
                if not failing:
                    log.warning("fleet snapshot refresh failed", extra={"error": str(error)})
                failing = True
            except Exception:
                # A bug must not stop the refreshes for the life of the process.
                log.exception("fleet snapshot refresh failed unexpectedly")
                failing = True

    def close(self) -> None:
        """Ends every wait in `changes`, so live streams end and a server can drain."""
        self.closed = True
        self._refreshed.set()

    @asynccontextmanager
    async def running(self, *_: object) -> AsyncIterator[FleetSnapshot]:
        """Keeps the snapshot fresh for the life of the block (a Litestar lifespan). The first
        read is done before the block starts, when the store answers within FIRST_READ_S;
        otherwise queries answer 503 until it does."""
        stop = asyncio.Event()
        try:
            await asyncio.wait_for(self.refresh(), FIRST_READ_S)
        except (Error, TimeoutError) as error:
            log.warning("fleet snapshot not loaded at start", extra={"error": str(error)})
        task = asyncio.create_task(self.run(stop), name="fleet-snapshot")
        try:
            yield self
        finally:
            self.close()
            stop.set()
            # A refresh waiting on a store that does not answer must not hold the stop up.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def __len__(self) -> int:
        return len(self._devices)


def _shown(device: Device) -> tuple[int | None, str | None, int | None]:
    """What a fleet view shows of a device changes with these; counters alone are no news."""
    return device.last_seen, device.name, device.registered_at


class _Columns:
    """Every device's id (sorted), position and last report as parallel lists, and each
    position as a point on the unit sphere: the square of the chord between two such points
    orders them exactly as the great-circle distance does, for a few multiplications."""

    def __init__(self, devices: Mapping[str, Device]) -> None:
        self.ids = sorted(devices)
        nowhere = math.nan  # a device with no position: every comparison with it is False
        self.lats: list[float] = []
        self.lons: list[float] = []
        self.seen: list[int | None] = []
        self.xs: list[float] = []
        self.ys: list[float] = []
        self.zs: list[float] = []
        for device_id in self.ids:
            device = devices[device_id]
            location = device.last_location
            self.seen.append(device.last_seen)
            if location is None:
                x = y = z = lat = lon = nowhere
            else:
                lat, lon = location.latitude, location.longitude
                x, y, z = _unit(lat, lon)
            self.lats.append(lat)
            self.lons.append(lon)
            self.xs.append(x)
            self.ys.append(y)
            self.zs.append(z)

    def candidates(
        self,
        fleet_filter: FleetFilter,
        start: int,
        now: int,
        within: list[BBox] | None = None,
    ) -> Iterator[int]:
        """Indexes from `start` on, in id order, that may match: the cheap tests, run on the
        columns a chunk at a time, so a page found early stops the scan. The caller confirms
        each with FleetFilter.matches. `within`: boxes to use instead of the filter's."""
        boxes = [_box_edges(b) for b in (within or _boxes(fleet_filter) or ())]
        status = fleet_filter.status
        oldest = now - ACTIVE_WINDOW_MS
        for low in range(start, len(self.ids), _CHUNK):
            high = min(low + _CHUNK, len(self.ids))
            chosen: Iterable[int] = range(low, high)
            if boxes:
                lats, lons = self.lats[low:high], self.lons[low:high]
                inside: list[int] = []
                for s, w, n, e in boxes:
                    inside += [
                        i
                        for i, lat, lon in zip(chosen, lats, lons, strict=True)
                        if s <= lat <= n and w <= lon <= e
                    ]
                chosen = sorted(inside) if len(boxes) > 1 else inside
            if status is not None:
                seen = self.seen
                if status is DeviceStatus.REGISTERED:
                    chosen = [i for i in chosen if seen[i] is None]
                elif status is DeviceStatus.ACTIVE:
                    chosen = [i for i in chosen if (t := seen[i]) is not None and t >= oldest]
                else:
                    chosen = [i for i in chosen if (t := seen[i]) is not None and t < oldest]
            yield from chosen

    def nearest(self, near: Circle, after: tuple[float, str] | None) -> Iterator[tuple[float, int]]:
        """(squared chord, index) of the positions within the circle, nearest first (then by
        id), after the cursor `after` (squared chord, id). Sorted a batch at a time, so a page
        near the start costs a pass over the fleet, not a sort of it."""
        cx, cy, cz = _unit(near.lat, near.lon)
        chord = 2 * math.sin(min(near.radius_m / EARTH_RADIUS_M, math.pi) / 2)
        # A hair wider than the circle: the rim is decided by near.contains, exactly.
        reach = chord * chord * (1 + 1e-9) + 1e-12
        # |p - c|^2 = 2 - 2 p.c for unit vectors: a dot product per position.
        points = zip(self.xs, self.ys, self.zs, strict=True)
        chords = [2.0 - 2.0 * (x * cx + y * cy + z * cz) for x, y, z in points]
        chosen = [i for i, c in enumerate(chords) if c <= reach]
        if after is not None:
            chosen = _beyond(chosen, chords, self.ids, *after)
        size = 128
        while chosen:
            batch = heapq.nsmallest(size, chosen, key=lambda i: (chords[i], i))
            for i in batch:
                yield chords[i], i
            if len(batch) < size:
                return
            chosen = _beyond(chosen, chords, self.ids, chords[batch[-1]], self.ids[batch[-1]])
            size *= 4


def _beyond(
    chosen: list[int], chords: list[float], ids: list[str], c0: float, id0: str
) -> list[int]:
    """The indexes after (c0, id0) in (chord, id) order."""
    return [i for i in chosen if (c := chords[i]) > c0 or (c == c0 and ids[i] > id0)]


def shown_distance(metres: float) -> float:
    """A distance as answers show it: to the DISTANCE_STEP_M."""
    return round(metres, 1)


def _squared_chord(metres: float) -> float:
    """The squared chord between two points on the unit sphere `metres` apart."""
    angle = min(max(metres, 0.0) / EARTH_RADIUS_M, math.pi)
    return (2 * math.sin(angle / 2)) ** 2


def _unit(lat: float, lon: float) -> tuple[float, float, float]:
    phi, lam = math.radians(lat), math.radians(lon)
    return math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi)


def _box_edges(box: BBox) -> tuple[float, float, float, float]:
    return box.min_lat, box.min_lon, box.max_lat, box.max_lon


def _boxes(fleet_filter: FleetFilter) -> list[BBox] | None:
    """Boxes, none crossing the antimeridian, outside all of which nothing matches; None when
    the filter is not geographic."""
    if fleet_filter.area is not None:
        return fleet_filter.area.bounds()
    bbox = fleet_filter.bbox
    if bbox is None:
        return None
    if not bbox.crosses_antimeridian:
        return [bbox]
    return [
        BBox(bbox.min_lon, bbox.min_lat, 180.0, bbox.max_lat),
        BBox(-180.0, bbox.min_lat, bbox.max_lon, bbox.max_lat),
    ]
