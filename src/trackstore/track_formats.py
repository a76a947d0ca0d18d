"""A device's track in file formats: GeoJSON, GPX 1.1, CSV and NDJSON, written page by page.

Pure and framework-free: a writer turns pages of Locations into chunks of bytes (`begin`, one
`write` per page, `end`), and keeps no more than a page's worth of them, so that a whole history
can be streamed in constant memory. When the history cannot be read to its end, `fail` gives the
format's error marker: a last line for the line formats (NDJSON, CSV); nothing for the document
formats (GeoJSON, GPX), whose missing close already makes the document invalid.

Format rules:
- GeoJSON (RFC 7946): positions are `[longitude, latitude]` or `[longitude, latitude, altitude]`,
  rounded to 7 decimals (about a centimetre). `points`: a FeatureCollection of Point Features
  whose properties are the location's other fields (`time` for its timestamp). `line`: one
  Feature with a LineString and, in `properties.coordinateProperties`, arrays `times` and
  `speeds` (null where unknown) parallel to its positions. A LineString needs two positions: a
  track of fewer than two locations is a Feature with a null geometry (RFC 7946 3.2), the arrays
  still there. An empty window is an empty FeatureCollection (points) or that null Feature.
- GPX 1.1: one `trk` named after the device; a new `trkseg` wherever two consecutive fixes are
  more than `gap_s` apart; each `trkpt` has `ele` (when the altitude is known) then `time`.
  GPX 1.1 has no speed or heading: use another format for them.
- CSV (RFC 4180, CRLF line ends): a header row, then one row per location; empty cells for
  unknown values, `attributes` as a JSON object. An error ends it with a row
  `#error,<status>,<title>,<detail>`.
- NDJSON: one JSON object per line, as the caller's `to_wire` makes it; an error ends it with a
  line `{"error": <problem details>}`.
"""

from __future__ import annotations

import csv
import io
import math
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import IO, Any
from xml.sax.saxutils import escape

import msgspec

from trackstore.domain import Location
from trackstore.timefmt import format_ms

COORDINATE_DECIMALS = 7
DEFAULT_GAP_S = 300
GPX_NAMESPACE = "http://www.topografix.com/GPX/1/1"
CSV_COLUMNS = (
    *("deviceId", "timestamp", "latitude", "longitude", "speed", "heading", "altitude"),
    *("accuracy", "battery", "receivedAt", "attributes"),
)
CSV_ERROR_MARK = "#error"
_SPOOL_BYTES = 1 << 20  # a line's times and speeds stay in memory up to this, then go to disk
_COPY_BYTES = 1 << 16
_UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9._-]")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_encode = msgspec.json.Encoder().encode


class TrackFormat(StrEnum):
    JSON = "json"  # the paged JSON answer: no writer here
    GEOJSON = "geojson"
    GPX = "gpx"
    CSV = "csv"
    NDJSON = "ndjson"


MEDIA_TYPES: dict[TrackFormat, str] = {
    TrackFormat.JSON: "application/json",
    TrackFormat.GEOJSON: "application/geo+json",
    TrackFormat.GPX: "application/gpx+xml",
    TrackFormat.CSV: "text/csv",
    TrackFormat.NDJSON: "application/x-ndjson",
}
EXTENSIONS: dict[TrackFormat, str] = {
    TrackFormat.GEOJSON: "geojson",
    TrackFormat.GPX: "gpx",
    TrackFormat.CSV: "csv",
    TrackFormat.NDJSON: "ndjson",
}


class Geometry(StrEnum):
    POINTS = "points"
    LINE = "line"


class TrackWriter:
    """Writes one track: `begin()`, `write(page)` for each page in order, then `end()`; or,
    when the pages stop coming, `fail(problem)` instead of `end()`. `close()` in every case."""

    def begin(self) -> bytes:
        return b""

    def write(self, locations: Sequence[Location]) -> bytes:
        raise NotImplementedError

    def end(self) -> Iterator[bytes]:
        yield b""

    def fail(self, problem: Mapping[str, Any]) -> bytes:
        """The marker that tells a reader the track is incomplete; b"" where an unfinished
        document is that marker already."""
        return b""

    def close(self) -> None:
        """Releases what the writer holds (a line's spooled arrays)."""


# -- GeoJSON ---------------------------------------------------------------------------------


def position(location: Location) -> list[float]:
    """A GeoJSON position: longitude first, 7 decimals at most."""
    coordinates = [
        round(location.longitude, COORDINATE_DECIMALS),
        round(location.latitude, COORDINATE_DECIMALS),
    ]
    if location.altitude is not None:
        coordinates.append(round(location.altitude, COORDINATE_DECIMALS))
    return coordinates


def point_properties(location: Location) -> dict[str, Any]:
    """Every field of the location but its coordinates, named as in the JSON answer; its
    timestamp as `time`. Unknown values are left out, as in the JSON answer."""
    properties: dict[str, Any] = {
        "deviceId": location.device_id,
        "time": format_ms(location.timestamp),
    }
    for name, value in (
        ("speed", location.speed),
        ("heading", location.heading),
        ("altitude", location.altitude),
        ("accuracy", location.accuracy),
        ("battery", location.battery),
        ("attributes", location.attributes),
    ):
        if value is not None:
            properties[name] = value
    properties["receivedAt"] = format_ms(location.received_at)
    return properties


class GeoJsonPointsWriter(TrackWriter):
    def __init__(self) -> None:
        self._separator = b""

    def begin(self) -> bytes:
        return b'{"type":"FeatureCollection","features":['

    def write(self, locations: Sequence[Location]) -> bytes:
        if not locations:
            return b""
        features = [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": position(location)},
                "properties": point_properties(location),
            }
            for location in locations
        ]
        chunk = self._separator + _encode(features)[1:-1]  # the array's items, no brackets
        self._separator = b","
        return chunk

    def end(self) -> Iterator[bytes]:
        yield b"]}"


class GeoJsonLineWriter(TrackWriter):
    """One LineString Feature. The positions stream out as they come; the times and speeds,
    which follow them, are spooled (to disk beyond a megabyte) until the end."""

    def __init__(self, device_id: str) -> None:
        self._device_id = device_id
        self._pending: list[Location] = []  # until there are two: a LineString needs them
        self._started = False
        self._count = 0
        self._first_time: int | None = None
        self._last_time: int | None = None
        # Held for the writer's life, not a block: close() releases them.
        self._times: IO[bytes] = tempfile.SpooledTemporaryFile(_SPOOL_BYTES)  # noqa: SIM115
        self._speeds: IO[bytes] = tempfile.SpooledTemporaryFile(_SPOOL_BYTES)  # noqa: SIM115

    def write(self, locations: Sequence[Location]) -> bytes:
        if not locations:
            return b""
        if self._first_time is None:
            self._first_time = locations[0].timestamp
        self._last_time = locations[-1].timestamp
        separator = b"," if self._count else b""
        self._times.write(
            separator + _encode([format_ms(loc.timestamp) for loc in locations])[1:-1]
        )
        self._speeds.write(separator + _encode([loc.speed for loc in locations])[1:-1])
        self._count += len(locations)
        if self._started:
            return b"," + _encode([position(loc) for loc in locations])[1:-1]
        self._pending.extend(locations)
        if len(self._pending) < 2:
            return b""
        self._started = True
        positions = _encode([position(loc) for loc in self._pending])[1:-1]
        self._pending = []
        return b'{"type":"Feature","geometry":{"type":"LineString","coordinates":[' + positions

    def end(self) -> Iterator[bytes]:
        if self._started:
            yield b"]},"
        else:
            yield b'{"type":"Feature","geometry":null,'
        summary = {
            "deviceId": self._device_id,
            "startTime": None if self._first_time is None else format_ms(self._first_time),
            "endTime": None if self._last_time is None else format_ms(self._last_time),
        }
        yield b'"properties":' + _encode(summary)[:-1] + b',"coordinateProperties":{"times":['
        yield from _spooled(self._times)
        yield b'],"speeds":['
        yield from _spooled(self._speeds)
        yield b"]}}}"

    def close(self) -> None:
        self._times.close()
        self._speeds.close()


def _spooled(spool: IO[bytes]) -> Iterator[bytes]:
    spool.seek(0)
    while chunk := spool.read(_COPY_BYTES):
        yield chunk


# -- GPX -------------------------------------------------------------------------------------


def xsd_decimal(value: float) -> str:
    """A float as an xsd:decimal: its shortest round-trip digits, never in exponent notation."""
    if not math.isfinite(value):
        raise ValueError(f"{value} has no xsd:decimal form")
    text = repr(value)
    if "e" in text or "E" in text:
        text = f"{value:.20f}".rstrip("0").rstrip(".")
    return text


class GpxWriter(TrackWriter):
    def __init__(self, device_id: str, gap_s: int = DEFAULT_GAP_S) -> None:
        self._device_id = device_id
        self._gap_ms = gap_s * 1000
        self._previous: int | None = None  # the last fix's timestamp

    def begin(self) -> bytes:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<gpx version="1.1" creator="TrackStore" xmlns="{GPX_NAMESPACE}" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            f'xsi:schemaLocation="{GPX_NAMESPACE} {GPX_NAMESPACE}/gpx.xsd">\n'
            f"<trk><name>{escape(self._device_id)}</name>\n"
        ).encode()

    def write(self, locations: Sequence[Location]) -> bytes:
        parts: list[str] = []
        for location in locations:
            previous = self._previous
            if previous is None:
                parts.append("<trkseg>\n")
            elif abs(location.timestamp - previous) > self._gap_ms:
                parts.append("</trkseg>\n<trkseg>\n")
            self._previous = location.timestamp
            ele = (
                "" if location.altitude is None else f"<ele>{xsd_decimal(location.altitude)}</ele>"
            )
            parts.append(
                f'<trkpt lat="{xsd_decimal(location.latitude)}" '
                f'lon="{xsd_decimal(location.longitude)}">'
                f"{ele}<time>{format_ms(location.timestamp)}</time></trkpt>\n"
            )
        return "".join(parts).encode()

    def end(self) -> Iterator[bytes]:
        close = "</trk>\n</gpx>\n"
        yield (close if self._previous is None else "</trkseg>\n" + close).encode()


# -- CSV -------------------------------------------------------------------------------------


class CsvWriter(TrackWriter):
    """Rows written as strings rather than through csv.writer, which takes 60 % longer: every
    field is a number, a time or a device id (none needs quoting) except the attributes' JSON,
    quoted here by RFC 4180's rule. Floats print as csv.writer prints them (repr)."""

    def begin(self) -> bytes:
        return _csv_rows([CSV_COLUMNS])

    def write(self, locations: Sequence[Location]) -> bytes:
        return "".join(
            [
                f"{_csv_field(loc.device_id)},{format_ms(loc.timestamp)},"
                f"{loc.latitude!r},{loc.longitude!r},"
                f"{'' if loc.speed is None else repr(loc.speed)},"
                f"{'' if loc.heading is None else repr(loc.heading)},"
                f"{'' if loc.altitude is None else repr(loc.altitude)},"
                f"{'' if loc.accuracy is None else repr(loc.accuracy)},"
                f"{'' if loc.battery is None else repr(loc.battery)},"
                f"{format_ms(loc.received_at)},"
                f"{'' if loc.attributes is None else _csv_quoted(_encode(loc.attributes))}\r\n"
                for loc in locations
            ]
        ).encode()

    def end(self) -> Iterator[bytes]:
        yield b""

    def fail(self, problem: Mapping[str, Any]) -> bytes:
        return _csv_rows(
            [
                (
                    CSV_ERROR_MARK,
                    problem.get("status", ""),
                    problem.get("title", ""),
                    problem.get("detail", ""),
                )
            ]
        )


def _csv_field(text: str) -> str:
    """The text as a CSV field: quoted when it holds a separator, a quote or a line end."""
    if "," in text or '"' in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def _csv_quoted(json: bytes) -> str:
    return '"' + json.decode().replace('"', '""') + '"'


def _csv_rows(rows: Sequence[Sequence[object]]) -> bytes:
    if not rows:
        return b""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode()


# -- NDJSON ----------------------------------------------------------------------------------


class NdjsonWriter(TrackWriter):
    def __init__(self, to_wire: Callable[[Location], Any]) -> None:
        self._to_wire = to_wire
        self._encoder = msgspec.json.Encoder()

    def write(self, locations: Sequence[Location]) -> bytes:
        return self._encoder.encode_lines([self._to_wire(location) for location in locations])

    def fail(self, problem: Mapping[str, Any]) -> bytes:
        return self._encoder.encode({"error": problem}) + b"\n"


# -- names -----------------------------------------------------------------------------------


def compact_utc(ms: int) -> str:
    """`20261205T0800Z`; with seconds (`20261205T080030Z`) when they are not zero."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    text = (
        f"{moment.year:04d}{moment.month:02d}{moment.day:02d}T{moment.hour:02d}{moment.minute:02d}"
    )
    if moment.second:
        text += f"{moment.second:02d}"
    return text + "Z"


def export_filename(device_id: str, start_ms: int, end_ms: int, track_format: TrackFormat) -> str:
    """`<device>_<start>_<end>.<ext>`, with nothing a file system or a header could trip on."""
    device = _UNSAFE_IN_FILENAME.sub("_", device_id)
    return f"{device}_{compact_utc(start_ms)}_{compact_utc(end_ms)}.{EXTENSIONS[track_format]}"
