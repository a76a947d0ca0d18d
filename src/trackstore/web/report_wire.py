"""The reports' answers on the wire: JSON structs (camelCase), their rows as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

import msgspec
from litestar import Response

from trackstore.timefmt import format_ms
from trackstore.trips import (
    DaySummary,
    Stop,
    Trip,
)
from trackstore.web.report_params import CSV_MEDIA_TYPE
from trackstore.web.wire import IsoTime


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
