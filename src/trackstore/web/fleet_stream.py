"""`GET /fleet/stream`: the fleet's positions pushed as Server-Sent Events.

A connection first gets one `snapshot` event with every matching device, then a `position` event
for each device that changed at each refresh of the fleet snapshot, and a `leave` event when a
device it was shown stops matching (it left the bbox, or its status changed). Comment lines every
HEARTBEAT_S keep proxies from closing a quiet connection. Every event has an id (the snapshot's
version); a client reconnecting with Last-Event-ID gets the whole state again, never a gap.

Written here rather than with Litestar's ServerSentEvent so that each change is encoded once per
refresh, and a refresh's events go out as one write per subscriber (the same bytes for every
unfiltered one): with 1,000 subscribers and 1,000 changes a refresh, one write per event cost
most of a core and made refreshes late (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.response import Stream

from trackstore.domain import Device
from trackstore.snapshot import FleetFilter, FleetSnapshot, Refresh
from trackstore.timefmt import format_ms
from trackstore.web.fleet_filters import BBoxParam, StatusParam, fleet_filter
from trackstore.web.problems import problem_specs
from trackstore.web.wire import DeviceOut, device_out

HEARTBEAT_S = 15.0
# Set by the app on the GET it routes for a HEAD: the answer's headers, and no endless body.
HEAD_SCOPE_KEY = "trackstore.head"
RETRY_MS = 3000  # how soon a browser's EventSource reconnects after losing the connection
_CACHED_REFRESHES = 8

DeviceIds = Annotated[
    list[str] | None,
    QueryParameter(description="Only these devices; repeat the parameter for several"),
]
AccessToken = Annotated[
    str | None,
    QueryParameter(
        description="The API key, for browsers' EventSource, which cannot send headers. It "
        "ends up in proxies' and load balancers' access logs: prefer the Authorization header "
        "wherever the client can set one."
    ),
]


class SnapshotOut(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    time: str
    devices: list[DeviceOut]


class LeaveOut(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    device_id: str


_encode = msgspec.json.Encoder().encode


def _event(kind: str, version: int, data: msgspec.Struct) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (version, kind.encode(), _encode(data))


class FleetEvents:
    """The event streams of one snapshot. What every subscriber gets alike (a refresh's
    position events, the unfiltered snapshot event) is encoded once and the bytes shared."""

    def __init__(self, fleet: FleetSnapshot, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.fleet = fleet
        self.heartbeat_s = heartbeat_s
        self._changes: OrderedDict[tuple[int, int], list[tuple[Device, bytes]]] = OrderedDict()
        self._whole: tuple[int, bytes] | None = None
        self._joins: OrderedDict[tuple[int, int], bytes] = OrderedDict()

    async def stream(self, chosen: FleetFilter | None) -> AsyncIterator[bytes]:
        fleet = self.fleet
        yield b"retry: %d\n\n" % RETRY_MS
        version, shown, event = self._snapshot(chosen)
        yield event
        written = time.monotonic()  # a heartbeat is due heartbeat_s after the last write
        while not fleet.closed:
            quiet_s = time.monotonic() - written
            try:
                refresh = await asyncio.wait_for(
                    fleet.changes(version), max(self.heartbeat_s - quiet_s, 0.0)
                )
            except TimeoutError:
                yield b": heartbeat\n\n"
                written = time.monotonic()
                continue
            if fleet.closed:
                return
            if refresh is None:  # fell too far behind: the whole state again
                version, shown, event = self._snapshot(chosen)
                yield event
                written = time.monotonic()
                continue
            if chosen is None:
                chunk = self._joined(version, refresh)
            else:
                parts: list[bytes] = []
                for device, event in self._positions(version, refresh):
                    if chosen.matches(device, refresh.taken_at):
                        shown.add(device.device_id)
                        parts.append(event)
                    elif device.device_id in shown:
                        shown.discard(device.device_id)
                        leave = LeaveOut(device_id=device.device_id)
                        parts.append(_event("leave", refresh.version, leave))
                chunk = b"".join(parts)
            if chunk:
                yield chunk
                written = time.monotonic()
            version = refresh.version

    def _snapshot(self, chosen: FleetFilter | None) -> tuple[int, set[str], bytes]:
        """The snapshot's version, the devices matching, and the event that shows them."""
        fleet = self.fleet
        version, now, devices = fleet.version, fleet.taken_at or 0, fleet.devices
        shown = {i for i, d in devices.items() if chosen is None or chosen.matches(d, now)}
        if chosen is None and self._whole is not None and self._whole[0] == version:
            return version, shown, self._whole[1]
        body = SnapshotOut(
            time=format_ms(now), devices=[device_out(devices[i], now) for i in sorted(shown)]
        )
        event = _event("snapshot", version, body)
        if chosen is None:
            self._whole = (version, event)
        return version, shown, event

    def _joined(self, after: int, refresh: Refresh) -> bytes:
        """Every position event of the refresh in one chunk: what an unfiltered subscriber gets,
        joined once for all of them."""
        key = (after, refresh.version)
        found = self._joins.get(key)
        if found is None:
            found = b"".join(event for _, event in self._positions(after, refresh))
            self._joins[key] = found
            while len(self._joins) > _CACHED_REFRESHES:
                self._joins.popitem(last=False)
        return found

    def _positions(self, after: int, refresh: Refresh) -> list[tuple[Device, bytes]]:
        key = (after, refresh.version)
        found = self._changes.get(key)
        if found is None:
            found = [
                (device, _event("position", refresh.version, device_out(device, refresh.taken_at)))
                for device in refresh.changed
            ]
            self._changes[key] = found
            while len(self._changes) > _CACHED_REFRESHES:
                self._changes.popitem(last=False)
        return found


@get(
    "/fleet/stream",
    operation_id="streamFleet",
    tags=["fleet"],
    summary="Every device's position, pushed as it changes (Server-Sent Events)",
    description="text/event-stream: a `snapshot` event (every matching device), then a "
    "`position` event per device that changed at each refresh of the fleet snapshot "
    "(FLEET_REFRESH_SECONDS), a `leave` event when a device shown stops matching, and a "
    f"comment every {HEARTBEAT_S:.0f} s. Reconnecting (Last-Event-ID) sends the whole state "
    "again. With API keys: the Authorization header, or access_token in the query.",
    media_type="text/event-stream",
    responses=problem_specs({400: "A malformed filter", 503: "The fleet snapshot is loading"}),
)
async def fleet_stream(
    request: Request[Any, Any, Any],
    fleet_events: NamedDependency[FleetEvents],
    device_id: DeviceIds = None,
    bbox: BBoxParam = None,
    status: StatusParam = None,
    access_token: AccessToken = None,  # read by the API-key middleware
) -> Stream:
    chosen = fleet_filter(bbox=bbox, status=status, device_ids=device_id)
    fleet_events.fleet.ready()
    head = request.scope.get(HEAD_SCOPE_KEY, False)
    return Stream(
        iter(()) if head else fleet_events.stream(chosen),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
