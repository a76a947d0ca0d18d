"""Reports computed from a device's history: daily summaries, stops and trips (the rules are in
`trackstore.trips`). Each reads the history once, oldest first, page by page, and keeps only the
rules' bounded state; the whole report is due within the service's request deadline.

A device that never reported (or is not known) has an empty history, as GET /locations/{id}
answers: its reports are empty (days of zeros), not a 404.
"""

from __future__ import annotations

import asyncio
import csv
import datetime
import io
import math
import re
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, TypeVar

import msgspec
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import QueryParameter
from litestar.types import ControllerRouterHandler

from trackstore.domain import MAX_PAGE_SIZE, HistoryQuery, Location, Order
from trackstore.errors import INVALID, UNAVAILABLE, Error
from trackstore.service import REQUEST_DEADLINE_S, TrackService
from trackstore.timefmt import DAY_MS, HOUR_MS, format_ms
from trackstore.trips import (
    DEFAULT_MAX_SPEED_KMH,
    DEFAULT_STOP_MIN_DURATION_MS,
    DEFAULT_STOP_RADIUS_M,
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
from trackstore.web.wire import IsoTime

MAX_REPORT_DAYS = 31
MAX_REPORT_WINDOW_MS = MAX_REPORT_DAYS * DAY_MS
DEFAULT_REPORT_WINDOW_MS = 24 * HOUR_MS
MAX_RADIUS_M = 10_000.0
MAX_MIN_DURATION_S = 86_400
MAX_SPEED_LIMIT_KMH = 2_000.0
CSV_MEDIA_TYPE = "text/csv"
T = TypeVar("T")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()

# -- parameters -----------------------------------------------------------------------------------

Date = Annotated[
    str | None,
    QueryParameter(
        description="A UTC day, YYYY-MM-DD; not with start_time or end_time. Without any of "
        "them: today (UTC)",
    ),
]
SummaryStart = Annotated[
    str | None,
    QueryParameter(
        description="With end_time instead of date: the summary covers every UTC day the window "
        f"touches (at most {MAX_REPORT_DAYS}), each day whole. ISO-8601 date-time with a UTC "
        "offset (encode '+' as %2B) or epoch seconds or milliseconds; default: end_time's day",
    ),
]
SummaryEnd = Annotated[
    str | None,
    QueryParameter(description="The window's end, as start_time; default: now"),
]
MaxSpeed = Annotated[
    str | None,
    QueryParameter(
        description="km/h: a step between two fixes implying more is a GPS jump, skipped and "
        f"counted; a number above 0, at most {MAX_SPEED_LIMIT_KMH:g}; default "
        f"{DEFAULT_MAX_SPEED_KMH:g}",
    ),
]
Radius = Annotated[
    str | None,
    QueryParameter(
        description="Metres: a stop keeps within this distance of its first fix; a number above "
        f"0, at most {MAX_RADIUS_M:g}; default {DEFAULT_STOP_RADIUS_M:g}",
    ),
]
MinDuration = Annotated[
    str | None,
    QueryParameter(
        description="Seconds a device must stay within radius_m for a stop; an integer 1.."
        f"{MAX_MIN_DURATION_S}; default {DEFAULT_STOP_MIN_DURATION_MS // 1000}",
    ),
]
Format = Annotated[
    str | None,
    QueryParameter(
        name="format",
        enum=["json", "csv"],
        description="'json' (the default) or 'csv' (RFC 4180, a header row, ISO-8601 times)",
    ),
]


def _shorten(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def date_param(text: str) -> int:
    """`YYYY-MM-DD` to days since the epoch."""
    try:
        if not _DATE.fullmatch(text):
            raise ValueError
        day = datetime.date.fromisoformat(text)
    except ValueError:
        raise Error(
            INVALID, f"date must be a UTC day as YYYY-MM-DD, got {_shorten(text)!r}"
        ) from None
    return day.toordinal() - _EPOCH_ORDINAL


def number_param(name: str, text: str | None, default: float, maximum: float) -> float:
    """A number above 0 and at most `maximum`."""
    if text is None:
        return default
    stripped = text.strip()
    try:
        number = float(stripped)
    except ValueError:
        number = math.nan
    if "_" in stripped or not math.isfinite(number) or not 0.0 < number <= maximum:
        raise Error(
            INVALID,
            f"{name} must be a number above 0 and at most {maximum:g}, got {_shorten(stripped)!r}",
        )
    return number


def seconds_param(name: str, text: str | None, default: int, maximum: int) -> int:
    if text is None:
        return default
    digits = text.strip()
    plain = digits.isascii() and digits.isdigit() and len(digits) <= 6
    number = int(digits) if plain else -1
    if not 1 <= number <= maximum:
        raise Error(INVALID, f"{name} must be an integer 1..{maximum}, got {_shorten(digits)!r}")
    return number


def csv_param(text: str | None) -> bool:
    """True for CSV."""
    if text is None or text == "json":
        return False
    if text == "csv":
        return True
    raise Error(INVALID, f"format must be 'json' or 'csv', got {_shorten(text)!r}")


def summary_days(day: str | None, start: int | None, end: int | None, now: int) -> tuple[int, int]:
    """The first and last UTC day (days since the epoch) a summary covers."""
    if day is not None:
        if start is not None or end is not None:
            raise Error(INVALID, "give either date or start_time/end_time, not both")
        first = date_param(day)
        return first, first
    if start is None and end is None:
        return now // DAY_MS, now // DAY_MS
    last_ms = now if end is None else end
    first_ms = last_ms if start is None else start
    if first_ms > last_ms:
        raise Error(INVALID, "start_time is after end_time")
    first, last = first_ms // DAY_MS, last_ms // DAY_MS
    if last - first + 1 > MAX_REPORT_DAYS:
        raise Error(
            INVALID,
            f"a summary covers at most {MAX_REPORT_DAYS} UTC days: give start_time and end_time "
            "closer together (end_time defaults to now)",
        )
    return first, last


def report_window(start: int | None, end: int | None, now: int) -> tuple[int, int]:
    """A stops or trips window: by default the last 24 hours; at most 31 days."""
    until = now if end is None else end
    since = until - DEFAULT_REPORT_WINDOW_MS if start is None else start
    if since > until:
        raise Error(INVALID, "start_time is after end_time")
    if until - since > MAX_REPORT_WINDOW_MS:
        raise Error(
            INVALID,
            f"a window spans at most {MAX_REPORT_DAYS} days: give start_time and end_time "
            "closer together (end_time defaults to now)",
        )
    return since, until


# -- reading the history --------------------------------------------------------------------------


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


class _Out(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    pass


class DayOut(_Out, frozen=True):
    """One UTC day. Distances in metres, durations in seconds, speeds in km/h."""

    date: str
    fixes: int
    first_fix: IsoTime | None
    last_fix: IsoTime | None
    distance_m: float
    moving_s: float
    idle_s: float
    max_speed_kmh: float | None
    avg_moving_speed_kmh: float | None
    gaps: int
    gap_s: float
    jumps_skipped: int


class SummaryOut(_Out, frozen=True):
    device_id: str
    start: IsoTime  # the first day's first millisecond
    end: IsoTime  # the last day's last millisecond
    max_speed_kmh: float
    days: list[DayOut]


class StopOut(_Out, frozen=True):
    arrival: IsoTime
    departure: IsoTime
    duration_s: float
    latitude: float
    longitude: float
    fixes: int


class StopsOut(_Out, frozen=True):
    device_id: str
    start: IsoTime
    end: IsoTime
    radius_m: float
    min_duration_s: int
    stops: list[StopOut]


class TripOut(_Out, frozen=True):
    start: IsoTime
    end: IsoTime
    duration_s: float
    start_latitude: float
    start_longitude: float
    end_latitude: float
    end_longitude: float
    distance_m: float
    max_speed_kmh: float | None
    avg_speed_kmh: float | None
    fixes: int
    jumps_skipped: int


class TripsOut(_Out, frozen=True):
    device_id: str
    start: IsoTime
    end: IsoTime
    radius_m: float
    min_duration_s: int
    max_speed_kmh: float
    trips: list[TripOut]


def _r(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def day_out(day: DaySummary) -> DayOut:
    return DayOut(
        date=day.date,
        fixes=day.fixes,
        first_fix=None if day.first_fix is None else format_ms(day.first_fix),
        last_fix=None if day.last_fix is None else format_ms(day.last_fix),
        distance_m=round(day.distance_m, 1),
        moving_s=day.moving_ms / 1000,
        idle_s=day.idle_ms / 1000,
        max_speed_kmh=_r(day.max_speed_kmh, 2),
        avg_moving_speed_kmh=_r(day.avg_moving_speed_kmh, 2),
        gaps=day.gaps,
        gap_s=day.gap_ms / 1000,
        jumps_skipped=day.jumps_skipped,
    )


def stop_out(stop: Stop) -> StopOut:
    return StopOut(
        arrival=format_ms(stop.arrival),
        departure=format_ms(stop.departure),
        duration_s=stop.duration_ms / 1000,
        latitude=round(stop.latitude, 7),
        longitude=round(stop.longitude, 7),
        fixes=stop.fixes,
    )


def trip_out(trip: Trip) -> TripOut:
    return TripOut(
        start=format_ms(trip.start),
        end=format_ms(trip.end),
        duration_s=trip.duration_ms / 1000,
        start_latitude=trip.start_latitude,
        start_longitude=trip.start_longitude,
        end_latitude=trip.end_latitude,
        end_longitude=trip.end_longitude,
        distance_m=round(trip.distance_m, 1),
        max_speed_kmh=_r(trip.max_speed_kmh, 2),
        avg_speed_kmh=_r(trip.avg_speed_kmh, 2),
        fixes=trip.fixes,
        jumps_skipped=trip.jumps_skipped,
    )


def csv_response(device_id: str, rows: Sequence[_Out], row_type: type[_Out]) -> Response[str]:
    """RFC 4180: CRLF line ends, a header row of the JSON field names, a deviceId column first;
    an empty cell for null."""
    fields = [field.encode_name for field in msgspec.structs.fields(row_type)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["deviceId", *fields])
    for row in rows:
        values: Iterable[object] = msgspec.structs.astuple(row)
        writer.writerow([device_id, *("" if value is None else value for value in values)])
    return Response(out.getvalue(), media_type=CSV_MEDIA_TYPE)


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
    start, end, radius, min_s, _ = _itinerary_params(
        service, start_time, end_time, radius_m, min_duration_s, None
    )
    found: list[Stop | Trip] = await _within_deadline(
        compute_itinerary(service, device_id, start, end, Itinerary(radius, min_s * 1000))
    )
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
    start, end, radius, min_s, limit = _itinerary_params(
        service, start_time, end_time, radius_m, min_duration_s, max_speed_kmh
    )
    found: list[Stop | Trip] = await _within_deadline(
        compute_itinerary(service, device_id, start, end, Itinerary(radius, min_s * 1000, limit))
    )
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


def _itinerary_params(
    service: TrackService,
    start_time: str | None,
    end_time: str | None,
    radius_m: str | None,
    min_duration_s: str | None,
    max_speed_kmh: str | None,
) -> tuple[int, int, float, int, float]:
    start, end = report_window(
        time_param("start_time", start_time), time_param("end_time", end_time), service.now_ms()
    )
    radius = number_param("radius_m", radius_m, DEFAULT_STOP_RADIUS_M, MAX_RADIUS_M)
    min_s = seconds_param(
        "min_duration_s", min_duration_s, DEFAULT_STOP_MIN_DURATION_MS // 1000, MAX_MIN_DURATION_S
    )
    limit = number_param("max_speed_kmh", max_speed_kmh, DEFAULT_MAX_SPEED_KMH, MAX_SPEED_LIMIT_KMH)
    return start, end, radius, min_s, limit


REPORT_ROUTES: list[ControllerRouterHandler] = [device_summary, device_stops, device_trips]
