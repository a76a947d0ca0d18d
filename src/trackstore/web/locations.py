"""Location queries: a device's history in a time window, and its newest position."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency

from trackstore.domain import HistoryQuery
from trackstore.service import TrackService
from trackstore.web.params import (
    DeviceId,
    EndTime,
    Limit,
    NextToken,
    SortOrder,
    StartTime,
    limit_param,
    order_param,
    time_param,
)
from trackstore.web.problems import BAD_DEVICE, STORE_DOWN, problem_specs
from trackstore.web.wire import HistoryOut, LocationOut, WindowOut, location_out


@get(
    "/locations/{device_id:str}",
    operation_id="getLocationHistory",
    tags=["locations"],
    summary="A device's locations in a time window, one page at a time",
    description=(
        "Without start_time the history starts at the oldest retained location. Follow "
        "nextToken (null on the last page) with the same parameters to read the next page."
    ),
    responses=problem_specs(
        {400: f"{BAD_DEVICE}, or a malformed or out-of-range parameter or token", 503: STORE_DOWN}
    ),
)
async def location_history(
    service: NamedDependency[TrackService],
    device_id: DeviceId,
    start_time: StartTime = None,
    end_time: EndTime = None,
    limit: Limit = None,
    order: SortOrder = None,
    next_token: NextToken = None,
) -> HistoryOut:
    query = HistoryQuery(
        device_id=device_id,
        start=time_param("start_time", start_time),
        end=time_param("end_time", end_time),
        limit=limit_param(limit),
        order=order_param(order),
        token=next_token,
    )
    page = await service.history(query)
    return HistoryOut(
        device_id=device_id,
        locations=[location_out(location) for location in page.items],
        next_token=page.next_token,
    )


@get(
    "/locations",
    operation_id="getFleetWindow",
    tags=["locations"],
    summary="Every device's locations in a time window, oldest first, one page at a time",
    description=(
        "Ordered by timestamp, then device id. Without start_time the window starts at the "
        "oldest retained location, without end_time it ends now. Follow nextToken (null on the "
        "last page; a page may come back empty before it) with the same parameters."
    ),
    responses=problem_specs(
        {400: "A malformed or out-of-range parameter or token", 503: STORE_DOWN}
    ),
)
async def fleet_window(
    service: NamedDependency[TrackService],
    start_time: StartTime = None,
    end_time: EndTime = None,
    limit: Limit = None,
    next_token: NextToken = None,
) -> WindowOut:
    page = await service.window(
        time_param("start_time", start_time),
        time_param("end_time", end_time),
        limit_param(limit),
        next_token,
    )
    return WindowOut(
        locations=[location_out(location) for location in page.items], next_token=page.next_token
    )


@get(
    "/locations/{device_id:str}/latest",
    operation_id="getLatestLocation",
    tags=["locations"],
    summary="A device's newest retained location",
    responses=problem_specs(
        {400: BAD_DEVICE, 404: "The device has no retained location", 503: STORE_DOWN}
    ),
)
async def latest_location(
    service: NamedDependency[TrackService], device_id: DeviceId
) -> LocationOut:
    return location_out(await service.latest(device_id))
