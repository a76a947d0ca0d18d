"""GTFS-Realtime VehiclePositions from the fleet snapshot, at GET /gtfs-rt/vehicle-positions.

The feed's rules:

- One FULL_DATASET FeedMessage (gtfs_realtime_version 2.0) per snapshot version, stamped with
  the snapshot's time (POSIX seconds): it is encoded at the first request after a refresh (on
  a thread, once however many requests wait for it) and served from memory until the next, as
  protobuf bytes and, for `?format=json`, the same message as JSON (rendered on first demand).
- One entity per device whose last fix is at most `max_age_s` older than the snapshot's time,
  ordered by device id. The entity id and the vehicle id are the device id (unique, and stable
  from one snapshot to the next); the vehicle's label is its registered name.
- A fix more than FUTURE_TOLERANCE_S ahead of the snapshot's time is left out: a clock that far
  ahead says nothing trustworthy about when the vehicle was there. One less far ahead (a fix
  written while the snapshot was being read) is stamped with the feed's time, since no
  timestamp in a feed may be later than its header's.
- Position: latitude, longitude, bearing (the heading, degrees clockwise from true north) and
  speed in m/s (the heading and speed only when the fix has them).
- A TripDescriptor from the fix's attributes tripId, routeId, directionId (0 or 1), startDate
  (YYYYMMDD) and startTime (HH:MM:SS, hours past 23 for trips after midnight), when at least
  a tripId or a routeId is usable: the others identify no trip alone. A value of the wrong type
  or format is left out, never fails the feed. No other attribute is published.
- ETag (strong: a digest of the bytes served, so it changes exactly when they do) and
  Last-Modified (the snapshot's time), with If-None-Match (or, without it, If-Modified-Since)
  answered 304; Cache-Control: no-cache, since the feed changes with every refresh and a
  revalidation costs a string comparison.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date
from email.utils import formatdate, parsedate_to_datetime
from typing import Annotated

from google.protobuf import json_format  # type: ignore[import-untyped]
from google.transit import gtfs_realtime_pb2
from litestar import Response, get
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import HeaderParameter, QueryParameter

from trackstore.domain import Device, Location, Scalar
from trackstore.errors import INVALID, Error
from trackstore.snapshot import FleetSnapshot
from trackstore.web.problems import problem_specs

GTFS_REALTIME_VERSION = "2.0"
PROTOBUF_MEDIA_TYPE = "application/x-protobuf"
JSON_MEDIA_TYPE = "application/json"
FUTURE_TOLERANCE_S = 30
CACHE_CONTROL = "no-cache"
KMH_PER_MS = 3.6

_START_DATE = re.compile(r"[0-9]{8}")
_START_TIME = re.compile(r"[0-9]{2}:[0-5][0-9]:[0-5][0-9]")
_ENTITY_TAG = re.compile(r'(?:W/)?"[^"]*"|\*')

FeedMessage = gtfs_realtime_pb2.FeedMessage


class EncodedFeed:
    """One snapshot version's feed as served: its bytes, the validators that go with them, and
    the JSON rendering once someone asked for it."""

    def __init__(self, version: int, protobuf: bytes, taken_at_s: int) -> None:
        self.version = version
        self.protobuf = protobuf
        self.taken_at_s = taken_at_s
        digest = hashlib.sha256(protobuf).hexdigest()[:32]
        self.etag = f'"{digest}"'
        # A strong ETag names one representation: the JSON rendering needs its own.
        self.json_etag = f'"{digest}-json"'
        self.last_modified = formatdate(taken_at_s, usegmt=True)
        self._json: asyncio.Future[bytes] | None = None

    async def json(self) -> bytes:
        if self._json is None:
            # About 0.1 ms a vehicle: on a thread, so the other requests go on meanwhile.
            self._json = asyncio.ensure_future(asyncio.to_thread(self._render_json))
        # One rendering for everyone asking; a caller that goes away must not cancel it.
        return await asyncio.shield(self._json)

    def _render_json(self) -> bytes:
        # Rendered from the bytes served, so the two formats cannot disagree.
        message = FeedMessage.FromString(self.protobuf)
        text: str = json_format.MessageToJson(message, preserving_proto_field_name=True)
        return text.encode()


class GtfsFeed:
    """The feed over `fleet`, encoded once per snapshot version."""

    def __init__(self, fleet: FleetSnapshot, max_age_s: int) -> None:
        self.fleet = fleet
        self.max_age_s = max_age_s
        self._latest: tuple[int, asyncio.Future[EncodedFeed]] | None = None

    async def current(self) -> EncodedFeed:
        """The feed of the snapshot as it is now; Error(UNAVAILABLE) until it has loaded."""
        self.fleet.ready()
        taken_at = self.fleet.taken_at
        assert taken_at is not None  # ready() said so
        version = self.fleet.version
        latest = self._latest
        if latest is None or latest[0] != version:
            # The thread gets a list: a refresh may change the snapshot's dict meanwhile (the
            # devices themselves are immutable).
            devices = list(self.fleet.devices.values())
            encoding = asyncio.to_thread(encode_feed, version, devices, taken_at, self.max_age_s)
            latest = self._latest = (version, asyncio.ensure_future(encoding))
        return await asyncio.shield(latest[1])


def encode_feed(
    version: int, devices: Iterable[Device], taken_at_ms: int, max_age_s: int
) -> EncodedFeed:
    message = build_feed(devices, taken_at_ms, max_age_s)
    protobuf: bytes = message.SerializeToString()
    return EncodedFeed(version, protobuf, taken_at_ms // 1000)


def build_feed(devices: Iterable[Device], taken_at_ms: int, max_age_s: int) -> FeedMessage:
    """The FeedMessage of `devices` as of the snapshot time `taken_at_ms`."""
    feed = FeedMessage()
    header = feed.header
    header.gtfs_realtime_version = GTFS_REALTIME_VERSION
    header.incrementality = gtfs_realtime_pb2.FeedHeader.FULL_DATASET
    feed_s = taken_at_ms // 1000
    header.timestamp = feed_s
    oldest = taken_at_ms - max_age_s * 1000
    newest = taken_at_ms + FUTURE_TOLERANCE_S * 1000
    shown = [
        (device, location)
        for device in devices
        if (location := device.last_location) is not None and oldest <= location.timestamp <= newest
    ]
    shown.sort(key=lambda row: row[0].device_id)
    for device, location in shown:
        entity = feed.entity.add()
        entity.id = device.device_id
        _vehicle_position(entity.vehicle, device, location, feed_s)
    return feed


def _vehicle_position(
    vehicle: gtfs_realtime_pb2.VehiclePosition, device: Device, location: Location, feed_s: int
) -> None:
    vehicle.timestamp = min(location.timestamp // 1000, feed_s)
    vehicle.vehicle.id = device.device_id
    if device.name:
        vehicle.vehicle.label = device.name
    position = vehicle.position
    position.latitude = location.latitude
    position.longitude = location.longitude
    heading = location.heading
    if heading is not None and 0.0 <= heading < 360.0:
        position.bearing = heading
    speed = location.speed
    if speed is not None and math.isfinite(speed):
        position.speed = max(0.0, speed / KMH_PER_MS)
    if location.attributes:
        _trip(vehicle.trip, location.attributes)
        if not vehicle.trip.trip_id and not vehicle.trip.route_id:
            vehicle.ClearField("trip")


def _trip(trip: gtfs_realtime_pb2.TripDescriptor, attributes: Mapping[str, Scalar]) -> None:
    """Fills `trip` from the attributes that fit the spec's formats."""
    if (trip_id := _identifier(attributes.get("tripId"))) is not None:
        trip.trip_id = trip_id
    if (route_id := _identifier(attributes.get("routeId"))) is not None:
        trip.route_id = route_id
    direction = attributes.get("directionId")
    # bool is an int to Python, not a direction to anyone.
    if isinstance(direction, int) and not isinstance(direction, bool) and direction in (0, 1):
        trip.direction_id = direction
    start_date = attributes.get("startDate")
    if isinstance(start_date, str) and _is_start_date(start_date):
        trip.start_date = start_date
    start_time = attributes.get("startTime")
    if isinstance(start_time, str) and _START_TIME.fullmatch(start_time):
        trip.start_time = start_time


def _identifier(value: Scalar) -> str | None:
    """A GTFS id: any non-blank string (taken as it is: it must match the static feed's)."""
    if isinstance(value, str) and value.strip():
        return value
    return None


def _is_start_date(text: str) -> bool:
    if not _START_DATE.fullmatch(text):
        return False
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:  # 20260230, month 13, year 0
        return False
    return True


# -- HTTP -----------------------------------------------------------------------------------------

Format = Annotated[
    str | None,
    QueryParameter(
        name="format",
        enum=["protobuf", "json"],
        description="'protobuf' (the default: what GTFS-Realtime consumers read) or 'json' "
        "(the same FeedMessage as JSON with the spec's field names, for debugging)",
    ),
]
IfNoneMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-None-Match",
        description="ETags of copies the client holds: 304 when the current one is among them",
    ),
]
IfModifiedSince = Annotated[
    str | None,
    HeaderParameter(
        name="If-Modified-Since",
        description="An HTTP date; without If-None-Match, 304 when the feed is not newer",
    ),
]

# Set by the handler on each answer; listed here for the OpenAPI document only.
_VALIDATORS = [
    ResponseHeader(
        name="ETag", description="Strong; changes with the feed's content", documentation_only=True
    ),
    ResponseHeader(
        name="Last-Modified", description="The snapshot's time", documentation_only=True
    ),
]


@dataclass
class _FeedOperation(Operation):
    """Documents the two renderings of the 200, which Litestar would give one media type."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse):
            ok.description = "The feed: a GTFS-Realtime FeedMessage"
            ok.content = {
                PROTOBUF_MEDIA_TYPE: OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.STRING,
                        format=OpenAPIFormat.BINARY,
                        description="The FeedMessage in protobuf encoding (gtfs-realtime.proto)",
                    )
                ),
                JSON_MEDIA_TYPE: OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        description="With format=json: the same FeedMessage in protobuf's JSON "
                        "mapping, fields named as in gtfs-realtime.proto (64-bit timestamps as "
                        "strings)",
                    )
                ),
            }


@get(
    "/gtfs-rt/vehicle-positions",
    operation_id="gtfsVehiclePositions",
    tags=["fleet"],
    summary="Every vehicle's position as a GTFS-Realtime VehiclePositions feed",
    description="A FULL_DATASET FeedMessage (GTFS-Realtime 2.0) from the fleet snapshot, "
    "refreshed every FLEET_REFRESH_SECONDS: one entity per device heard from within "
    "GTFS_RT_MAX_AGE_SECONDS of the snapshot's time, with position, bearing, speed (m/s), "
    "the vehicle's registered name as label, and a trip when the locations carry tripId, "
    "routeId, directionId, startDate, startTime attributes. application/x-protobuf, or JSON "
    "with format=json. Send the ETag back in If-None-Match for a 304 while it is unchanged.",
    media_type=PROTOBUF_MEDIA_TYPE,
    response_headers=_VALIDATORS,
    operation_class=_FeedOperation,
    responses={
        304: ResponseSpec(
            data_container=None,
            description="The copy named in If-None-Match (or If-Modified-Since) is current",
            generate_examples=False,
        ),
        **problem_specs(
            {400: "format is neither 'protobuf' nor 'json'", 503: "The fleet snapshot is loading"}
        ),
    },
)
async def vehicle_positions(
    gtfs_feed: NamedDependency[GtfsFeed],
    output: Format = None,
    if_none_match: IfNoneMatch = None,
    if_modified_since: IfModifiedSince = None,
) -> Response[bytes]:
    as_json = _wants_json(output)
    encoded = await gtfs_feed.current()
    etag = encoded.json_etag if as_json else encoded.etag
    headers = {
        "ETag": etag,
        "Last-Modified": encoded.last_modified,
        "Cache-Control": CACHE_CONTROL,
    }
    if _not_modified(etag, encoded.taken_at_s, if_none_match, if_modified_since):
        return Response(b"", status_code=304, headers=headers)
    if as_json:
        return Response(await encoded.json(), media_type=JSON_MEDIA_TYPE, headers=headers)
    return Response(encoded.protobuf, media_type=PROTOBUF_MEDIA_TYPE, headers=headers)


def _wants_json(output: str | None) -> bool:
    if output is None or output == "protobuf":
        return False
    if output == "json":
        return True
    shown = output if len(output) <= 32 else f"{output[:32]}..."
    raise Error(INVALID, f"format must be 'protobuf' (the default) or 'json', not {shown!r}")


def _not_modified(
    etag: str, modified_s: int, if_none_match: str | None, if_modified_since: str | None
) -> bool:
    """RFC 9110 13.1.2 and 13.1.3: If-None-Match compared weakly; If-Modified-Since only when
    there is no If-None-Match, and ignored when it is no valid date (any of HTTP's three
    formats)."""
    if if_none_match is not None:
        for tag in _ENTITY_TAG.findall(if_none_match):
            if tag == "*" or tag.removeprefix("W/") == etag:
                return True
        return False
    if if_modified_since is None:
        return False
    try:
        since = parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    if since.tzinfo is None:
        # asctime dates and "-0000" carry no zone; HTTP dates are all in GMT.
        since = since.replace(tzinfo=UTC)
    return modified_s <= since.timestamp()
