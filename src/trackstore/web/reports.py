"""Reports computed from a device's history: daily summaries, stops and trips (the rules are in
`trackstore.trips`). Each reads the history once, oldest first, page by page, and keeps only the
rules' bounded state; the whole report is due within the service's request deadline.

A device that never reported (or is not known) has an empty history, as GET /locations/{id}
answers: its reports are empty (days of zeros), not a 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.types import ControllerRouterHandler

from trackstore.domain import MAX_PAGE_SIZE, HistoryQuery, Location, Order
from trackstore.errors import UNAVAILABLE, Error
from trackstore.service import REQUEST_DEADLINE_S, TrackService
from trackstore.timefmt import DAY_MS, HOUR_MS, format_ms
from trackstore.trips import (
    DEFAULT_MAX_SPEED_KMH,
    GAP_MS,
    IDLE_SPEED_KMH,
    DaySummaries,
    DaySummary,
    Itinerary,
    Stop,
    Trip,
)
from trackstore.web.params import DeviceId, EndTime, StartTime, time_param
from trackstore.web.problems import BAD_DEVICE, STORE_DOWN, problem_specs
from trackstore.web.report_params import (
    CSV_MEDIA_TYPE,
    DEFAULT_REPORT_WINDOW_MS,
    MAX_REPORT_DAYS,
    MAX_SPEED_LIMIT_KMH,
    Date,
    Format,
    MaxSpeed,
    MinDuration,
    Radius,
    SummaryEnd,
    SummaryStart,
    csv_param,
    itinerary_params,
    number_param,
    summary_days,
)
from trackstore.web.report_wire import (
    DayOut,
    StopOut,
    StopsOut,
    SummaryOut,
    TripOut,
    TripsOut,
    csv_response,
    day_out,
    stop_out,
    trip_out,
)

T = TypeVar("T")


async def history(
    service: TrackService, device_id: str, start: int, end: int
) -> AsyncIterator[Location]:
    """The device's fixes with start <= timestamp <= end, oldest first, page by page."""
    token: str | None = None
    while True:
        page = await service.history(
            HistoryQuery(
                device_id=device_id,
                start=start,
                end=end,
                limit=MAX_PAGE_SIZE,
                order=Order.ASC,
                token=token,
            )
        )
        for location in page.items:
            yield location
        token = page.next_token
        if token is None:
            return


async def neighbour(
    service: TrackService, device_id: str, *, before: int | None = None, after: int | None = None
) -> Location | None:
    """The device's last fix before `before`, or its first after `after`."""
    if before is not None:
        query = HistoryQuery(device_id=device_id, end=before - 1, limit=1, order=Order.DESC)
    else:
        assert after is not None
        query = HistoryQuery(device_id=device_id, start=after + 1, limit=1, order=Order.ASC)
    page = await service.history(query)
    return page.items[0] if page.items else None


async def _within_deadline(work: Awaitable[T]) -> T:
    try:
        async with asyncio.timeout(REQUEST_DEADLINE_S):
            return await work
    except TimeoutError:
        raise Error(
            UNAVAILABLE,
            f"the report took longer than {REQUEST_DEADLINE_S:g} s; try a narrower window",
            retry_after=1,
        ) from None


async def compute_summaries(
    service: TrackService, device_id: str, first_day: int, last_day: int, max_speed_kmh: float
) -> list[DaySummary]:
    """Every day first_day..last_day from its whole UTC day's fixes, plus the fixes either side
    that close the steps crossing the window's midnights."""
    summaries = DaySummaries(first_day, last_day, max_speed_kmh)
    start, end = first_day * DAY_MS, (last_day + 1) * DAY_MS - 1
    days: list[DaySummary] = []
    before = await neighbour(service, device_id, before=start)
    if before is not None:
        days += summaries.add(before)
    async for location in history(service, device_id, start, end):
        days += summaries.add(location)
    after = await neighbour(service, device_id, after=end)
    if after is not None:
        days += summaries.add(after)
    return days + summaries.finish()


async def _itinerary(
    service: TrackService, device_id: str, start: int, end: int, rules: Itinerary
) -> list[Stop | Trip]:
    """Stops and trips in [start, end], within the request deadline."""
    return await _within_deadline(compute_itinerary(service, device_id, start, end, rules))


async def compute_itinerary(
    service: TrackService,
    device_id: str,
    start: int,
    end: int,
    itinerary: Itinerary,
) -> list[Stop | Trip]:
    found: list[Stop | Trip] = []
    async for location in history(service, device_id, start, end):
        found += itinerary.add(location)
    return found + itinerary.finish()


# -- the answers ----------------------------------------------------------------------------------


@dataclass
class _ReportOperation(Operation):
    """The 200 comes as JSON or, with format=csv, as CSV: both are documented."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if not isinstance(ok, OpenAPIResponse) or not ok.content:
            return
        json_content = ok.content.get("application/json")
        schema = json_content.schema if json_content else None
        if isinstance(schema, Schema) and schema.one_of:  # JSON's Struct, and the CSV Response
            json_content.schema = schema.one_of[0]  # type: ignore[union-attr]
        ok.content[CSV_MEDIA_TYPE] = OpenAPIMediaType(
            schema=Schema(
                type=OpenAPIType.STRING,
                description="With format=csv: RFC 4180, a header row naming the JSON fields "
                "(deviceId first), one row per item, ISO-8601 times, empty cells for null",
            )
        )


_ERRORS = problem_specs(
    {
        400: f"{BAD_DEVICE}, a malformed or out-of-range parameter, or a window too long",
        503: f"{STORE_DOWN}; also when the report takes longer than the request deadline",
    }
)
_STEPS = (
    "Between two fixes: a step implying more than max_speed_kmh is a GPS jump (skipped, "
    f"counted); fixes more than {GAP_MS // 60_000} minutes apart are a gap (its straight-line "
    "distance counts, its time is gap time); otherwise idle when the speed is under "
    f"{IDLE_SPEED_KMH:g} km/h, else moving. The speed is the one the later fix reports, or, "
    "when it reports none, the step's distance over its time."
)


@get(
    "/devices/{device_id:str}/summary",
    operation_id="getDeviceSummary",
    tags=["reports"],
    summary="A device's distance, moving and idle time, speeds and gaps per UTC day",
    description=(
        "One entry per UTC day asked (date, or every day start_time..end_time touches, at most "
        f"{MAX_REPORT_DAYS}; default today), each computed from that whole day's fixes, so a "
        "day's figures never depend on the window. " + _STEPS + " A step crossing midnight is "
        "split there by time (its distance in proportion); a gap crossing midnight counts in "
        "both days. Average moving speed is the moving steps' distance over their time."
    ),
    operation_class=_ReportOperation,
    responses=_ERRORS,
)
async def device_summary(
    service: NamedDependency[TrackService],
    device_id: DeviceId,
    date: Date = None,
    start_time: SummaryStart = None,
    end_time: SummaryEnd = None,
    max_speed_kmh: MaxSpeed = None,
    output: Format = None,
) -> SummaryOut | Response[str]:
    as_csv = csv_param(output)
    first, last = summary_days(
        date,
        time_param("start_time", start_time),
        time_param("end_time", end_time),
        service.now_ms(),
    )
    limit = number_param("max_speed_kmh", max_speed_kmh, DEFAULT_MAX_SPEED_KMH, MAX_SPEED_LIMIT_KMH)
    days: list[DaySummary] = await _within_deadline(
        compute_summaries(service, device_id, first, last, limit)
    )
    rows = [day_out(day) for day in days]
    if as_csv:
        return csv_response(device_id, rows, DayOut)
    return SummaryOut(
        device_id=device_id,
        start=format_ms(first * DAY_MS),
        end=format_ms((last + 1) * DAY_MS - 1),
        max_speed_kmh=limit,
        days=rows,
    )


_STOPS = (
    f"The window defaults to the {DEFAULT_REPORT_WINDOW_MS // HOUR_MS} hours before end_time "
    f"(default now) and spans at most {MAX_REPORT_DAYS} days. A stop: the device stayed within "
    "radius_m of the stop's first fix for at least min_duration_s (first to last fix; silence "
    "there counts); its position is the centroid of its fixes. Read in one pass, a stop's "
    "first fix may be one taken while pulling in, within radius_m: the arrival can be early by "
    "radius_m over the speed. Stops are cut at the window's edges."
)


@get(
    "/devices/{device_id:str}/stops",
    operation_id="getDeviceStops",
    tags=["reports"],
    summary="Where a device stayed put in a time window",
    description=_STOPS,
    operation_class=_ReportOperation,
    responses=_ERRORS,
)
async def device_stops(
    service: NamedDependency[TrackService],
    device_id: DeviceId,
    start_time: StartTime = None,
    end_time: EndTime = None,
    radius_m: Radius = None,
    min_duration_s: MinDuration = None,
    output: Format = None,
) -> StopsOut | Response[str]:
    as_csv = csv_param(output)
    start, end, radius, min_s, _ = itinerary_params(
        service, start_time, end_time, radius_m, min_duration_s, None
    )
    found = await _itinerary(service, device_id, start, end, Itinerary(radius, min_s * 1000))
    rows = [stop_out(item) for item in found if isinstance(item, Stop)]
    if as_csv:
        return csv_response(device_id, rows, StopOut)
    return StopsOut(
        device_id=device_id,
        start=format_ms(start),
        end=format_ms(end),
        radius_m=radius,
        min_duration_s=min_s,
        stops=rows,
    )


@get(
    "/devices/{device_id:str}/trips",
    operation_id="getDeviceTrips",
    tags=["reports"],
    summary="A device's movements between its stops in a time window",
    description=(
        "A trip runs from a stop's departure to the next stop's arrival (both fixes counted); "
        "at the window's edges from its first fix or to its last. Stops as GET "
        "/devices/{device_id}/stops finds them. " + _STEPS + " Its maximum speed is over "
        "its steps but jumps and gaps; its average speed is its distance over its duration. "
        + _STOPS
    ),
    operation_class=_ReportOperation,
    responses=_ERRORS,
)
async def device_trips(
    service: NamedDependency[TrackService],
    device_id: DeviceId,
    start_time: StartTime = None,
    end_time: EndTime = None,
    radius_m: Radius = None,
    min_duration_s: MinDuration = None,
    max_speed_kmh: MaxSpeed = None,
    output: Format = None,
) -> TripsOut | Response[str]:
    as_csv = csv_param(output)
    start, end, radius, min_s, limit = itinerary_params(
        service, start_time, end_time, radius_m, min_duration_s, max_speed_kmh
    )
    found = await _itinerary(service, device_id, start, end, Itinerary(radius, min_s * 1000, limit))
    rows = [trip_out(item) for item in found if isinstance(item, Trip)]
    if as_csv:
        return csv_response(device_id, rows, TripOut)
    return TripsOut(
        device_id=device_id,
        start=format_ms(start),
        end=format_ms(end),
        radius_m=radius,
        min_duration_s=min_s,
        max_speed_kmh=limit,
        trips=rows,
    )


REPORT_ROUTES: list[ControllerRouterHandler] = [device_summary, device_stops, device_trips]
