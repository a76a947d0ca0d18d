"""Device listing (all of them, or filtered by place and status), lookup and registration."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec
from litestar import get, post
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import RawBody

from trackstore.domain import MAX_METADATA_BYTES, MAX_NAME_LENGTH
from trackstore.errors import INVALID, Error
from trackstore.geo_areas import MAX_AREA_VERTICES, parse_area
from trackstore.service import TrackService
from trackstore.snapshot import FleetSnapshot
from trackstore.web.fleet_filters import (
    BBoxParam,
    NearParam,
    RadiusParam,
    StatusParam,
    fleet_filter,
    placed_out,
)
from trackstore.web.params import DeviceId, Limit, NextToken, limit_param
from trackstore.web.problems import BAD_DEVICE, STORE_DOWN, problem_specs
from trackstore.web.wire import DeviceOut, DevicesOut, RegisterIn, device_out, listed_out

# Metadata is capped at 4 KiB encoded by the service; a body far past that is refused unread.
MAX_REGISTER_BODY = 16 * 1024

# A GeoJSON body of MAX_AREA_VERTICES positions is about 50 KB; room for whitespace and
# properties, not for a megabyte of them.
MAX_SEARCH_BODY = 256 * 1024
SNAPSHOT_NOTE = (
    "Filtered listings are answered from the fleet snapshot, which is at most "
    "FLEET_REFRESH_SECONDS behind the table."
)

_decode_register = msgspec.json.Decoder(RegisterIn).decode


@get(
    "/devices",
    operation_id="listDevices",
    tags=["devices"],
    summary="Every device, or those in an area or with a status, one page at a time",
    description="Filters combine with AND. Pages are in device id order, or nearest first "
    f"with near. {SNAPSHOT_NOTE}",
    responses=problem_specs({400: "A malformed limit, next_token or filter", 503: STORE_DOWN}),
)
async def list_devices(
    service: NamedDependency[TrackService],
    fleet: NamedDependency[FleetSnapshot],
    limit: Limit = None,
    next_token: NextToken = None,
    bbox: BBoxParam = None,
    near: NearParam = None,
    radius_m: RadiusParam = None,
    status: StatusParam = None,
) -> DevicesOut:
    page_size = limit_param(limit)
    chosen = fleet_filter(bbox=bbox, near=near, radius_m=radius_m, status=status)
    now = service.now_ms()
    if chosen is not None:
        binding = f"{bbox}|{near}|{radius_m}|{status}"
        found = fleet.select(chosen, page_size, next_token, binding)
        return placed_out(found.items, found.next_token, now)
    page = await service.devices(page_size, next_token)
    return DevicesOut(
        devices=[listed_out(device, now) for device in page.items],
        next_token=page.next_token,
    )


@get("/devices/search", include_in_schema=False)
async def get_device_named_search(service: NamedDependency[TrackService]) -> DeviceOut:
    """`GET /devices/search` is the device called "search", as for any other id: the search's
    own route (POST) would otherwise answer it 405."""
    return device_out(await service.device("search"), service.now_ms())


@dataclass
class _SearchOperation(Operation):
    """Documents the GeoJSON body that the handler decodes itself."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="A GeoJSON Polygon or MultiPolygon (or a Feature of one): holes "
            f"respected, at most {MAX_AREA_VERTICES} positions, edges longer than 180 degrees "
            "of longitude taken to cross the antimeridian",
            content={
                "application/geo+json": OpenAPIMediaType(schema=_GEOMETRY),
                "application/json": OpenAPIMediaType(schema=_GEOMETRY),
            },
        )


_GEOMETRY = Schema(
    type=OpenAPIType.OBJECT,
    required=["type"],
    properties={
        "type": Schema(type=OpenAPIType.STRING, enum=["Polygon", "MultiPolygon", "Feature"]),
        "coordinates": Schema(type=OpenAPIType.ARRAY, items=Schema()),
        "geometry": Schema(type=OpenAPIType.OBJECT),
    },
)


@post(
    "/devices/search",
    operation_id="searchDevices",
    tags=["devices"],
    summary="Devices whose latest position is inside a polygon, one page at a time",
    description="Send the same body with the query's next_token for the next page. "
    + SNAPSHOT_NOTE,
    status_code=200,
    request_max_body_size=MAX_SEARCH_BODY,
    operation_class=_SearchOperation,
    responses=problem_specs(
        {
            400: "A malformed or too large polygon, limit, status or next_token",
            413: "The body is too large",
            503: "The fleet snapshot is still loading",
        }
    ),
)
async def search_devices(
    service: NamedDependency[TrackService],
    fleet: NamedDependency[FleetSnapshot],
    body: RawBody,
    limit: Limit = None,
    next_token: NextToken = None,
    status: StatusParam = None,
) -> DevicesOut:
    try:
        geometry = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise Error(INVALID, "request body is not valid JSON") from None
    chosen = fleet_filter(status=status, area=parse_area(geometry))
    assert chosen is not None  # an area was given
    binding = f"{hashlib.sha256(body).hexdigest()}|{status}"
    found = fleet.select(chosen, limit_param(limit), next_token, binding)
    return placed_out(found.items, found.next_token, service.now_ms())


@get(
    "/devices/{device_id:str}",
    operation_id="getDevice",
    tags=["devices"],
    summary="One device: status, last location, counters, registration",
    responses=problem_specs({400: BAD_DEVICE, 404: "The device is not known", 503: STORE_DOWN}),
)
async def get_device(service: NamedDependency[TrackService], device_id: DeviceId) -> DeviceOut:
    device = await service.device(device_id)
    return device_out(device, service.now_ms())


@dataclass
class _RegisterOperation(Operation):
    """Documents the body that the handler decodes itself (Litestar sees only raw bytes)."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=False,
            description="Optional; an empty body registers the device without name or metadata",
            content={
                "application/json": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        additional_properties=False,
                        properties={
                            "name": Schema(
                                type=OpenAPIType.STRING, min_length=1, max_length=MAX_NAME_LENGTH
                            ),
                            "metadata": Schema(
                                type=OpenAPIType.OBJECT,
                                description=f"At most {MAX_METADATA_BYTES} bytes as JSON",
                            ),
                        },
                    )
                )
            },
        )


@post(
    "/devices/{device_id:str}/register",
    operation_id="registerDevice",
    tags=["devices"],
    summary="Register a device, optionally with a name and metadata",
    description="A device that already reported keeps its locations, lastSeen and counters.",
    status_code=201,
    request_max_body_size=MAX_REGISTER_BODY,
    operation_class=_RegisterOperation,
    responses=problem_specs(
        {
            400: f"{BAD_DEVICE}, or a malformed body",
            409: "The device is registered already",
            413: "The body is too large",
            503: STORE_DOWN,
        }
    ),
)
async def register_device(
    service: NamedDependency[TrackService], device_id: DeviceId, body: RawBody
) -> DeviceOut:
    request = _register_body(body)
    device = await service.register(device_id, request.name, request.metadata)
    return device_out(device, service.now_ms())


def _register_body(body: bytes) -> RegisterIn:
    # Decoded here, not by Litestar, so each kind of bad body gets a message saying what to fix.
    if not body.strip():
        return RegisterIn()
    try:
        return _decode_register(body)
    except msgspec.ValidationError as error:  # well-formed JSON of the wrong shape
        raise Error(INVALID, f"request body: {error}") from None
    except msgspec.DecodeError:
        raise Error(INVALID, "request body is not valid JSON") from None
