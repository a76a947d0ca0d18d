"""A device's history as a file: GeoJSON, GPX, CSV or NDJSON, streamed in one answer.

The format comes from the `format` parameter, else from the Accept header, else it is the paged
JSON answer. An export reads the history page by page (MAX_PAGE_SIZE locations a call, each call
within the service's deadline) and writes each page as it comes (trackstore.track_formats), so a
month of fixes streams in constant memory.

The first page is read before the answer starts: a bad parameter is a 400 and an outage a 503, as
for the JSON answer. Once the first bytes are out the status is sent; a later failure is logged,
and the body shows it: NDJSON and CSV end with an error line (`{"error": {...}}`,
`#error,<status>,<title>,<detail>`), GeoJSON and GPX end unclosed, so no parser takes them for a
whole document.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any

import msgspec
from litestar import Request
from litestar.datastructures import Accept
from litestar.openapi.spec import (
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Schema,
)
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import QueryParameter
from litestar.response import Stream

from trackstore.domain import MAX_PAGE_SIZE, HistoryQuery, Location, Order, Page
from trackstore.errors import INVALID, UNAVAILABLE, Error
from trackstore.service import TrackService
from trackstore.track_formats import (
    DEFAULT_GAP_S,
    MEDIA_TYPES,
    CsvWriter,
    GeoJsonLineWriter,
    GeoJsonPointsWriter,
    Geometry,
    GpxWriter,
    NdjsonWriter,
    TrackFormat,
    TrackWriter,
    export_filename,
)
from trackstore.track_simplification import Simplification, kept_timestamps
from trackstore.web.fleet_stream import HEAD_SCOPE_KEY
from trackstore.web.problems import STATUS, UNAVAILABLE_DETAIL
from trackstore.web.wire import location_out

MAX_GAP_S = 30 * 24 * 3600
_MAX_SHOWN = 64
# What each media type a client may ask for in Accept means; the JSON answer first, so that
# `*/*` and `application/*` keep getting it.
_ACCEPTED: dict[str, TrackFormat] = {
    "application/json": TrackFormat.JSON,
    "application/geo+json": TrackFormat.GEOJSON,
    "application/gpx+xml": TrackFormat.GPX,
    "text/csv": TrackFormat.CSV,
    "application/x-ndjson": TrackFormat.NDJSON,
    "application/ndjson": TrackFormat.NDJSON,
}
_CONTENT_TYPES: dict[TrackFormat, str] = {
    **MEDIA_TYPES,
    TrackFormat.CSV: "text/csv; charset=utf-8; header=present",
}

FormatParam = Annotated[
    str | None,
    QueryParameter(
        description=(
            "'json' (the default: pages), or a file of the whole window in one answer: "
            "'geojson', 'gpx', 'csv' or 'ndjson'. Without it, the Accept header chooses "
            "(application/geo+json, application/gpx+xml, text/csv, application/x-ndjson). "
            "Files take neither limit nor next_token."
        ),
        schema_extra={"enum": [f.value for f in TrackFormat]},
    ),
]
GeometryParam = Annotated[
    str | None,
    QueryParameter(
        description=(
            "GeoJSON only: 'points' (the default; a FeatureCollection of Point Features) or "
            "'line' (one LineString Feature, its times and speeds in "
            "properties.coordinateProperties; a null geometry below two locations)"
        ),
        schema_extra={"enum": [g.value for g in Geometry]},
    ),
]
GapParam = Annotated[
    str | None,
    QueryParameter(
        description=(
            f"GPX only: seconds between two fixes beyond which a new trkseg starts; an integer "
            f"1..{MAX_GAP_S}, default {DEFAULT_GAP_S}"
        )
    ),
]

_log = logging.getLogger(__name__)


def negotiate(format_text: str | None, accept: Accept) -> TrackFormat:
    """The format asked for: the `format` parameter wins over the Accept header; JSON when
    neither names one of the formats."""
    if format_text is not None:
        try:
            return TrackFormat(format_text.strip().lower())
        except ValueError:
            choices = ", ".join(f"'{f.value}'" for f in TrackFormat)
            raise Error(
                INVALID, f"format must be one of {choices}, got {_shorten(format_text)!r}"
            ) from None
    best = accept.best_match(list(_ACCEPTED), default=MEDIA_TYPES[TrackFormat.JSON])
    return _ACCEPTED.get(best.split(";")[0].strip().lower(), TrackFormat.JSON)


def check_json_options(geometry: str | None, gap_s: str | None) -> None:
    if geometry is not None:
        raise Error(INVALID, "geometry applies to format=geojson only")
    if gap_s is not None:
        raise Error(INVALID, "gap_s applies to format=gpx only")


@dataclass(frozen=True)
class ExportRequest:
    device_id: str
    start: int | None
    end: int | None
    order: Order
    track_format: TrackFormat
    geometry: str | None
    gap_s: str | None
    limit: str | None
    next_token: str | None
    simplification: Simplification


async def export_history(
    request: Request[Any, Any, Any], service: TrackService, asked: ExportRequest
) -> Stream:
    """The whole window as one streamed file; its first page read before anything is sent."""
    if asked.limit is not None or asked.next_token is not None:
        raise Error(
            INVALID,
            f"limit and next_token page the JSON answer; format={asked.track_format.value} "
            "sends the whole window in one answer: leave them out",
        )
    writer = _writer(asked)
    select: Callable[[Sequence[Location]], Sequence[Location]] = _all
    try:
        query = HistoryQuery(
            device_id=asked.device_id,
            start=asked.start,
            end=asked.end,
            limit=MAX_PAGE_SIZE,
            order=asked.order,
        )
        if asked.simplification and not request.scope.get(HEAD_SCOPE_KEY):
            # Both passes must read the same window: its end is fixed now.
            query = msgspec.structs.replace(query, end=asked.end or service.now_ms())
            select = (await kept_timestamps(service, query, asked.simplification)).select
        first = await service.history(query)
        filename = export_filename(
            asked.device_id,
            await _start_for_name(service, query, first),
            service.now_ms() if query.end is None else query.end,
            asked.track_format,
        )
    except BaseException:
        writer.close()
        raise
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Vary": "Accept",
        "Cache-Control": "no-store",
    }
    media_type = _CONTENT_TYPES[asked.track_format]
    if request.scope.get(HEAD_SCOPE_KEY):  # the headers only: no need to read the whole window
        writer.close()
        return Stream(content=_nothing(), media_type=media_type, headers=headers)
    body = _body(service, query, first, writer, request.url.path, select)
    return Stream(content=body, media_type=media_type, headers=headers)


def _writer(asked: ExportRequest) -> TrackWriter:
    if asked.track_format is not TrackFormat.GEOJSON and asked.geometry is not None:
        raise Error(INVALID, "geometry applies to format=geojson only")
    if asked.track_format is not TrackFormat.GPX and asked.gap_s is not None:
        raise Error(INVALID, "gap_s applies to format=gpx only")
    if asked.track_format is TrackFormat.GEOJSON:
        try:
            geometry = Geometry(asked.geometry or Geometry.POINTS)
        except ValueError:
            raise Error(
                INVALID,
                f"geometry must be 'points' or 'line', got {_shorten(asked.geometry or '')!r}",
            ) from None
        if geometry is Geometry.LINE:
            return GeoJsonLineWriter(asked.device_id)
        return GeoJsonPointsWriter()
    if asked.track_format is TrackFormat.GPX:
        return GpxWriter(asked.device_id, _gap_param(asked.gap_s))
    if asked.track_format is TrackFormat.CSV:
        return CsvWriter()
    return NdjsonWriter(location_out)


def _gap_param(text: str | None) -> int:
    if text is None:
        return DEFAULT_GAP_S
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 8):
        raise Error(INVALID, f"gap_s must be an integer between 1 and {MAX_GAP_S}")
    gap = int(digits)
    if not 1 <= gap <= MAX_GAP_S:
        raise Error(INVALID, f"gap_s must be an integer between 1 and {MAX_GAP_S}")
    return gap


async def _start_for_name(service: TrackService, query: HistoryQuery, first: Page[Location]) -> int:
    """The window's start for the file name: as asked, else its oldest location (else now)."""
    if query.start is not None:
        return query.start
    if query.order is Order.DESC:
        oldest = await service.history(msgspec.structs.replace(query, limit=1, order=Order.ASC))
        first = oldest
    return first.items[0].timestamp if first.items else service.now_ms()


def _all(locations: Sequence[Location]) -> Sequence[Location]:
    return locations


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def _body(
    service: TrackService,
    query: HistoryQuery,
    first: Page[Location],
    writer: TrackWriter,
    path: str,
    select: Callable[[Sequence[Location]], Sequence[Location]],
) -> AsyncIterator[bytes]:
    sent = 0
    try:
        locations = select(first.items)
        yield writer.begin() + writer.write(locations)
        sent = len(locations)
        token = first.next_token
        while token is not None:
            page = await service.history(msgspec.structs.replace(query, token=token))
            locations = select(page.items)
            chunk = writer.write(locations)
            sent += len(locations)
            if chunk:
                yield chunk
            token = page.next_token
        for chunk in writer.end():
            if chunk:
                yield chunk
    except Exception as exc:
        # The status went out with the first bytes: the body must say it is incomplete.
        status, detail = _problem_of(exc)
        _log.error(
            "export of %s's history failed after %d locations: %s",
            query.device_id,
            sent,
            exc.message if isinstance(exc, Error) else repr(exc),
            exc_info=not isinstance(exc, Error),
        )
        problem = {
            "type": "about:blank",
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": detail,
            "instance": path,
        }
        marker = writer.fail(problem)
        if marker:
            yield marker
    finally:
        writer.close()


def _problem_of(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, Error) and exc.code in STATUS:
        if exc.code is UNAVAILABLE:
            return STATUS[exc.code], UNAVAILABLE_DETAIL
        return STATUS[exc.code], exc.message
    return 500, "Internal error"


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


# -- OpenAPI ---------------------------------------------------------------------------------

_FILE_SCHEMAS: dict[TrackFormat, Schema] = {
    TrackFormat.GEOJSON: Schema(
        type=OpenAPIType.OBJECT,
        description="RFC 7946: a FeatureCollection of Points, or one LineString Feature",
    ),
    TrackFormat.GPX: Schema(type=OpenAPIType.STRING, description="GPX 1.1: one trk"),
    TrackFormat.CSV: Schema(
        type=OpenAPIType.STRING,
        description="RFC 4180 with a header row; a last row #error,<status>,<title>,<detail> "
        "when the history could not be read to its end",
    ),
    TrackFormat.NDJSON: Schema(
        type=OpenAPIType.STRING,
        description='One location object per line; a last line {"error": <problem>} when '
        "the history could not be read to its end",
    ),
}


@dataclass
class HistoryOperation(Operation):
    """The history operation's document: its 200 answer in every format, not only JSON."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if not isinstance(ok, OpenAPIResponse):
            return
        ok.description = "A page of locations (JSON), or the whole window as a file"
        content = dict(ok.content or {})
        for track_format, schema in _FILE_SCHEMAS.items():
            content[MEDIA_TYPES[track_format]] = OpenAPIMediaType(schema=schema)
        ok.content = content
        ok.headers = {
            **(ok.headers or {}),
            "Content-Disposition": OpenAPIHeader(
                description='Files only: attachment; filename="<device>_<start>_<end>.<ext>"',
                schema=Schema(type=OpenAPIType.STRING),
            ),
        }
