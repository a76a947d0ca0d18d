"""Location queries: a device's history in a time window, and its newest position."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.di import NamedDependency

from trackstore.domain import HistoryQuery
from trackstore.service import TrackService
from trackstore.track_formats import TrackFormat
from trackstore.web.exports import (
    ExportRequest,
    FormatParam,
    GapParam,
    GeometryParam,
    HistoryOperation,
    check_json_options,
    export_history,
    negotiate,
)
from trackstore.web.params import (
    DeviceId,
    EndTime,
    Limit,
    MaxPoints,
    NextToken,
    Simplify,
    SortOrder,
    StartTime,
    limit_param,
    order_param,
    simplification_param,
    time_param,
)
from trackstore.web.problems import BAD_DEVICE, STORE_DOWN, problem_specs
from trackstore.web.wire import HistoryOut, LocationOut, WindowOut, location_out


@get(
    "/locations/{device_id:str}",
    operation_id="getLocationHistory",
    tags=["locations"],
    summary="A device's locations in a time window, one page at a time, or as one file",
    description=(
        "Without start_time the history starts at the oldest retained location. Follow "
        "nextToken (null on the last page) with the same parameters to read the next page.\n\n"
        "With format (or an Accept header naming one of the file types) the whole window comes "
        "in one streamed answer instead, as an attachment: GeoJSON, GPX 1.1, CSV or NDJSON, "
        "oldest first unless order=desc. Should the store fail once it has started, the answer "
        "ends early: CSV with a last row `#error,<status>,<title>,<detail>`, NDJSON with a last "
        'line `{"error": <problem>}`, GeoJSON and GPX unclosed (not a valid document).'
    ),
    responses=problem_specs(
        {400: f"{BAD_DEVICE}, or a malformed or out-of-range parameter or token", 503: STORE_DOWN}
    ),
    operation_class=HistoryOperation,
)
async def location_history(
    request: Request[Any, Any, Any],
    service: NamedDependency[TrackService],
    device_id: DeviceId,
    start_time: StartTime = None,
    end_time: EndTime = None,
    limit: Limit = None,
    order: SortOrder = None,
    next_token: NextToken = None,
    format: FormatParam = None,
    geometry: GeometryParam = None,
    gap_s: GapParam = None,
    simplify: Simplify = None,
    max_points: MaxPoints = None,
) -> Response[HistoryOut]:
    track_format = negotiate(format, request.accept)
    start = time_param("start_time", start_time)
    end = time_param("end_time", end_time)
    sort = order_param(order)
    simplification = simplification_param(simplify, max_points)
    if track_format is not TrackFormat.JSON:
        asked = ExportRequest(
            device_id=device_id,
            start=start,
            end=end,
            order=sort,
            track_format=track_format,
            geometry=geometry,
            gap_s=gap_s,
            limit=limit,
            next_token=next_token,
            simplification=simplification,
        )
        # A Stream is a Response like the page's: Litestar sends whichever comes back.
        return await export_history(request, service, asked)  # type: ignore[return-value]
    check_json_options(geometry, gap_s)
    query = HistoryQuery(
        device_id=device_id,
        start=start,
        end=end,
        limit=limit_param(limit),
        order=sort,
        token=next_token,
    )
    page = await service.history(query)
    locations = simplification.page(page.items) if simplification else page.items
    body = HistoryOut(
        device_id=device_id,
        locations=[location_out(location) for location in locations],
        next_token=page.next_token,
    )
    # The answer depends on Accept too (a file type there gets a file).
    return Response(body, headers={"Vary": "Accept"})


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
