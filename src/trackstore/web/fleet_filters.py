"""The fleet's filters as query parameters (`bbox`, `near` + `radius_m`, `status`, `device_id`),
parsed into the core's FleetFilter; and the answer of a filtered listing."""

from __future__ import annotations

from typing import Annotated

from litestar.params import QueryParameter

from trackstore.domain import DeviceStatus, check_device_id
from trackstore.errors import INVALID, Error
from trackstore.geo import parse_bbox, parse_near
from trackstore.geo_areas import Area
from trackstore.snapshot import FleetFilter, Placed
from trackstore.web.wire import DevicesOut, listed_out

MAX_DEVICE_IDS = 1000  # device_id repeated on one stream

BBoxParam = Annotated[
    str | None,
    QueryParameter(
        description="minLon,minLat,maxLon,maxLat (GeoJSON's order; minLon > maxLon crosses the "
        "antimeridian): devices whose latest position is inside, edges included",
        examples=[],
    ),
]
NearParam = Annotated[
    str | None,
    QueryParameter(
        description="lat,lon: devices within radius_m of this point, nearest first, each "
        "with its distanceM; needs radius_m"
    ),
]
RadiusParam = Annotated[
    str | None, QueryParameter(description="metres, with near: 0 < radius_m <= 20037509")
]
StatusParam = Annotated[
    str | None, QueryParameter(description="active, inactive or registered (never reported)")
]


def fleet_filter(
    *,
    bbox: str | None = None,
    near: str | None = None,
    radius_m: str | None = None,
    status: str | None = None,
    device_ids: list[str] | None = None,
    area: Area | None = None,
) -> FleetFilter | None:
    """The filter the parameters ask for; None when they ask for none."""
    if radius_m is not None and near is None:
        raise Error(INVALID, "radius_m needs near=lat,lon")
    ids = None
    if device_ids is not None:
        if len(device_ids) > MAX_DEVICE_IDS:
            raise Error(INVALID, f"at most {MAX_DEVICE_IDS} device_id parameters")
        ids = frozenset(check_device_id(device_id) for device_id in device_ids)
    chosen = FleetFilter(
        bbox=None if bbox is None else parse_bbox(bbox),
        near=None if near is None else parse_near(near, radius_m),
        area=area,
        status=None if status is None else status_param(status),
        device_ids=ids,
    )
    return None if chosen == FleetFilter() else chosen


def status_param(text: str) -> DeviceStatus:
    try:
        return DeviceStatus(text)
    except ValueError:
        shown = text if len(text) <= 64 else text[:64] + "..."
        raise Error(
            INVALID, f"status must be active, inactive or registered, got {shown!r}"
        ) from None


def placed_out(found: list[Placed], next_token: str | None, now_ms: int) -> DevicesOut:
    return DevicesOut(
        devices=[listed_out(p.device, now_ms, p.distance_m) for p in found],
        next_token=next_token,
    )
