"""`GET /locations/{device_id}` as a file: GeoJSON, GPX, CSV and NDJSON exports of a whole window,
streamed page by page. Over HTTP (Litestar's test client) on the in-memory adapters; the memory
test drives the ASGI app directly, since the test client gathers the whole body."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
import tracemalloc
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.memory_watch import drain, reset_peak_rss, status_kb
from tests.unit.memory_api import MemoryApi
from trackstore import track_formats
from trackstore.clock import FakeClock
from trackstore.domain import HistoryQuery, Location, Page, StreamRecord
from trackstore.memory import MemoryLocationRepository, MemoryStore
from trackstore.timefmt import format_ms, parse_iso
from trackstore.track_formats import (
    CSV_COLUMNS,
    GpxWriter,
    TrackFormat,
    compact_utc,
    export_filename,
    xsd_decimal,
)

NOW = parse_iso("2026-11-28T12:00:00Z")
SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
POINTS = 2_500  # three export pages of 1,000
START = NOW - 10 * HOUR
GPX_NS = "http://www.topografix.com/GPX/1/1"
G = f"{{{GPX_NS}}}"

Client = AsyncTestClient[Litestar]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def api(clock: FakeClock) -> MemoryApi:
    return MemoryApi(clock)


@pytest.fixture
async def client(api: MemoryApi) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=api.app()) as client:
        yield client


def record(device: str, n: int, t: int) -> StreamRecord:
    """A varied location: every optional field present on some, missing on others."""
    body: dict[str, Any] = {
        "deviceId": device,
        "timestamp": t,
        "latitude": 52.123456789 + n * 1.234567e-5,
        "longitude": 13.987654321 - n * 2.345678e-5,
    }
    if n % 2:
        body["speed"] = 30.5 + n % 7
    if n % 3:
        body["heading"] = (n * 7.5) % 360
    if n % 4:
        body["altitude"] = 34.25 + n % 11
    if n % 5 == 0:
        body.update(accuracy=4.5, battery=87.0)
    if n % 6 == 0:
        body["attributes"] = {"door": "open", "note": 'a "quoted", <tagged> & comma\nline'}
    return StreamRecord(
        data=msgspec.json.encode(body),
        partition_key=device,
        shard_id="shardId-000000000000",
        sequence_number=f"{n:021d}",
        arrival_ms=NOW,
    )


async def ingest(api: MemoryApi, device: str, times: list[int]) -> None:
    for offset in range(0, len(times), 500):
        batch = [record(device, offset + i, t) for i, t in enumerate(times[offset : offset + 500])]
        result = await api.service.ingest(batch)
        assert not result.rejections


def every(count: int, step: int = 10 * SECOND, start: int = START) -> list[int]:
    return [start + i * step for i in range(count)]


async def json_history(client: Client, device: str, query: str = "") -> list[dict[str, Any]]:
    """The whole window read page by page through the JSON answer."""
    locations: list[dict[str, Any]] = []
    token = None
    while True:
        url = f"/locations/{device}?limit=1000{query}"
        if token:
            url += f"&next_token={token}"
        response = await client.get(url)
        assert response.status_code == 200, response.text
        body = response.json()
        locations += body["locations"]
        token = body["nextToken"]
        if token is None:
            return locations


async def export(client: Client, device: str, query: str, **headers: str) -> Any:
    response = await client.get(f"/locations/{device}?{query}", headers=headers)
    assert response.status_code == 200, response.text
    return response


WINDOW = f"&start_time={START}&end_time={NOW}"


@pytest.fixture
async def track(api: MemoryApi) -> list[int]:
    times = every(POINTS)
    await ingest(api, "bus-1", times)
    return times


# -- NDJSON and CSV -------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["", "&order=desc"])
async def test_ndjson_is_the_json_history_one_object_a_line(
    client: Client, track: list[int], order: str
) -> None:
    response = await export(client, "bus-1", f"format=ndjson{WINDOW}{order}")

    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.content.endswith(b"\n")
    lines = response.content.decode().split("\n")[:-1]
    assert [json.loads(line) for line in lines] == await json_history(
        client, "bus-1", WINDOW + order
    )
    assert len(lines) == POINTS


async def test_csv_reads_back_as_the_json_history(client: Client, track: list[int]) -> None:
    response = await export(client, "bus-1", f"format=csv{WINDOW}")

    assert response.headers["content-type"].startswith("text/csv")
    text = response.content.decode()
    assert text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    expected = await json_history(client, "bus-1", WINDOW)
    assert len(rows) == 1 + POINTS
    for row, location in zip(rows[1:], expected, strict=True):
        cells = dict(zip(CSV_COLUMNS, row, strict=True))
        assert cells["deviceId"] == location["deviceId"]
        assert cells["timestamp"] == location["timestamp"]
        assert cells["receivedAt"] == location["receivedAt"]
        for name in ("latitude", "longitude", "speed", "heading", "altitude", "accuracy"):
            assert (float(cells[name]) if cells[name] else None) == location.get(name), name
        assert (float(cells["battery"]) if cells["battery"] else None) == location.get("battery")
        attributes = json.loads(cells["attributes"]) if cells["attributes"] else None
        assert attributes == location.get("attributes")


async def test_csv_line_ends_are_crlf_outside_quoted_values(
    client: Client, track: list[int]
) -> None:
    body = (await export(client, "bus-1", f"format=csv{WINDOW}")).content

    # The attribute with a newline in it is quoted; every record ends with CRLF.
    assert body.count(b"\r\n") == 1 + POINTS
    assert b'"{""door"":""open"",""note"":""a \\""quoted\\"", <tagged> & comma\\nline""}"' in body


# -- GeoJSON --------------------------------------------------------------------------------

_NUMBER = re.compile(rb"-?\d+\.(\d+)")


def decimals_at_most(text: bytes, places: int) -> bool:
    return all(len(fraction) <= places for fraction in _NUMBER.findall(text))


async def test_geojson_points_are_the_json_history_lon_first(
    client: Client, track: list[int]
) -> None:
    response = await export(client, "bus-1", f"format=geojson{WINDOW}")

    assert response.headers["content-type"] == "application/geo+json"
    collection = response.json()
    assert collection["type"] == "FeatureCollection"
    expected = await json_history(client, "bus-1", WINDOW)
    assert len(collection["features"]) == POINTS
    for feature, location in zip(collection["features"], expected, strict=True):
        assert feature["type"] == "Feature"
        assert feature["geometry"]["type"] == "Point"
        coordinates = feature["geometry"]["coordinates"]
        assert coordinates[:2] == [round(location["longitude"], 7), round(location["latitude"], 7)]
        if "altitude" in location:
            assert coordinates[2] == round(location["altitude"], 7)
        else:
            assert len(coordinates) == 2
        properties = dict(feature["properties"])
        assert properties.pop("time") == location["timestamp"]
        rest = {
            k: v for k, v in location.items() if k not in ("timestamp", "latitude", "longitude")
        }
        assert properties == rest


async def test_geojson_coordinates_have_at_most_seven_decimals(
    client: Client, track: list[int]
) -> None:
    body = (await export(client, "bus-1", f"format=geojson&geometry=line{WINDOW}")).content
    coordinates = body[: body.index(b"]]") + 2]

    assert decimals_at_most(coordinates, 7)
    assert not decimals_at_most(coordinates, 6)  # the data has them: nothing cut to fewer


async def test_geojson_line_is_one_linestring_with_times_and_speeds(
    client: Client, track: list[int]
) -> None:
    feature = (await export(client, "bus-1", f"format=geojson&geometry=line{WINDOW}")).json()

    expected = await json_history(client, "bus-1", WINDOW)
    assert feature["type"] == "Feature"
    assert feature["geometry"]["type"] == "LineString"
    assert [c[:2] for c in feature["geometry"]["coordinates"]] == [
        [round(loc["longitude"], 7), round(loc["latitude"], 7)] for loc in expected
    ]
    properties = feature["properties"]
    assert properties["deviceId"] == "bus-1"
    assert properties["startTime"] == expected[0]["timestamp"]
    assert properties["endTime"] == expected[-1]["timestamp"]
    assert properties["coordinateProperties"] == {
        "times": [loc["timestamp"] for loc in expected],
        "speeds": [loc.get("speed") for loc in expected],
    }


async def test_an_empty_window_is_an_empty_collection_or_a_null_line(client: Client) -> None:
    points = (await export(client, "bus-9", "format=geojson")).json()
    line = (await export(client, "bus-9", "format=geojson&geometry=line")).json()

    assert points == {"type": "FeatureCollection", "features": []}
    assert line["type"] == "Feature"
    assert line["geometry"] is None
    assert line["properties"]["coordinateProperties"] == {"times": [], "speeds": []}


async def test_one_location_is_a_line_with_null_geometry(client: Client, api: MemoryApi) -> None:
    await ingest(api, "bus-1", [NOW - MINUTE])

    line = (await export(client, "bus-1", "format=geojson&geometry=line")).json()

    assert line["geometry"] is None  # RFC 7946: a LineString needs two positions
    assert line["properties"]["coordinateProperties"]["times"] == [format_ms(NOW - MINUTE)]


async def test_two_locations_make_a_line(client: Client, api: MemoryApi) -> None:
    await ingest(api, "bus-1", [NOW - 2 * MINUTE, NOW - MINUTE])

    line = (await export(client, "bus-1", "format=geojson&geometry=line")).json()

    assert line["geometry"]["type"] == "LineString"
    assert len(line["geometry"]["coordinates"]) == 2


# -- GPX ------------------------------------------------------------------------------------


def gpx_points(root: ET.Element) -> list[list[ET.Element]]:
    """The trkpt elements of each trkseg."""
    return [seg.findall(f"{G}trkpt") for seg in root.findall(f"{G}trk/{G}trkseg")]


async def test_gpx_is_the_json_history_in_gpx_1_1_structure(
    client: Client, track: list[int]
) -> None:
    response = await export(client, "bus-1", f"format=gpx{WINDOW}")

    assert response.headers["content-type"] == "application/gpx+xml"
    root = ET.fromstring(response.content)
    assert root.tag == f"{G}gpx"
    assert root.attrib["version"] == "1.1"
    assert root.attrib["creator"] == "TrackStore"
    (trk,) = root.findall(f"{G}trk")
    assert [child.tag for child in trk] == [f"{G}name", f"{G}trkseg"]
    assert trk.findtext(f"{G}name") == "bus-1"
    (points,) = gpx_points(root)
    expected = await json_history(client, "bus-1", WINDOW)
    for point, location in zip(points, expected, strict=True):
        assert float(point.attrib["lat"]) == location["latitude"]
        assert float(point.attrib["lon"]) == location["longitude"]
        tags = [child.tag for child in point]
        if "altitude" in location:
            assert tags == [f"{G}ele", f"{G}time"]  # the XSD's order
            assert float(point.findtext(f"{G}ele") or "") == location["altitude"]
        else:
            assert tags == [f"{G}time"]
        assert point.findtext(f"{G}time") == location["timestamp"]
    assert len(points) == POINTS


async def test_gpx_starts_a_segment_where_fixes_are_further_apart_than_gap_s(
    client: Client, api: MemoryApi
) -> None:
    times = [
        *every(5, step=MINUTE, start=NOW - 3 * HOUR),  # 11:00..11:04 a minute apart
        NOW - 3 * HOUR + 4 * MINUTE + 301 * SECOND,  # 301 s later: a new segment
        NOW - HOUR,  # far later: another
        NOW - HOUR + 5 * MINUTE,  # exactly 300 s: the same segment
    ]
    await ingest(api, "bus-1", times)

    default = ET.fromstring((await export(client, "bus-1", "format=gpx")).content)
    narrow = ET.fromstring((await export(client, "bus-1", "format=gpx&gap_s=59")).content)
    backwards = ET.fromstring((await export(client, "bus-1", "format=gpx&order=desc")).content)

    assert [len(seg) for seg in gpx_points(default)] == [5, 1, 2]
    assert [len(seg) for seg in gpx_points(narrow)] == [1] * 8
    assert [len(seg) for seg in gpx_points(backwards)] == [2, 1, 5]


async def test_an_empty_gpx_has_a_track_without_segments(client: Client) -> None:
    root = ET.fromstring((await export(client, "bus-9", "format=gpx")).content)

    assert [child.tag for child in root.findall(f"{G}trk/*")] == [f"{G}name"]


def test_gpx_escapes_what_it_writes() -> None:
    writer = GpxWriter("<&>\"'")
    document = writer.begin() + b"".join(writer.end())

    assert ET.fromstring(document).findtext(f"{G}trk/{G}name") == "<&>\"'"


@pytest.mark.parametrize(
    ("value", "text"),
    [(1e-07, "0.0000001"), (-1e-05, "-0.00001"), (1e16, "10000000000000000"), (52.5, "52.5")],
)
def test_gpx_numbers_are_xsd_decimals(value: float, text: str) -> None:
    assert xsd_decimal(value) == text
    assert Decimal(text) == Decimal(repr(value))


async def test_gpxpy_reads_the_track(client: Client, track: list[int]) -> None:
    gpxpy = pytest.importorskip("gpxpy")  # a dev tool: not a dependency of the service
    body = (await export(client, "bus-1", f"format=gpx{WINDOW}")).content

    gpx = gpxpy.parse(body.decode())

    expected = await json_history(client, "bus-1", WINDOW)
    assert gpx.version == "1.1"
    assert gpx.creator == "TrackStore"
    (trk,) = gpx.tracks
    assert trk.name == "bus-1"
    points = [point for segment in trk.segments for point in segment.points]
    assert [(p.latitude, p.longitude) for p in points] == [
        (loc["latitude"], loc["longitude"]) for loc in expected
    ]
    assert [p.elevation for p in points] == [loc.get("altitude") for loc in expected]
    assert [p.time.timestamp() * 1000 for p in points] == [
        parse_iso(loc["timestamp"]) for loc in expected
    ]


# The rules of the GPX 1.1 schema (topografix.com/GPX/1/1/gpx.xsd) that the export touches,
# written out here: the tests reach no network. Element order, types and ranges as there.
GPX_XSD = f"""<?xml version="1.0" encoding="UTF-8"?>
<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns="{GPX_NS}"
    targetNamespace="{GPX_NS}" elementFormDefault="qualified">
  <xsd:element name="gpx" type="gpxType"/>
  <xsd:complexType name="gpxType">
    <xsd:sequence>
      <xsd:element name="metadata" type="xsd:anyType" minOccurs="0"/>
      <xsd:element name="wpt" type="wptType" minOccurs="0" maxOccurs="unbounded"/>
      <xsd:element name="rte" type="xsd:anyType" minOccurs="0" maxOccurs="unbounded"/>
      <xsd:element name="trk" type="trkType" minOccurs="0" maxOccurs="unbounded"/>
      <xsd:element name="extensions" type="xsd:anyType" minOccurs="0"/>
    </xsd:sequence>
    <xsd:attribute name="version" type="xsd:string" use="required" fixed="1.1"/>
    <xsd:attribute name="creator" type="xsd:string" use="required"/>
  </xsd:complexType>
  <xsd:complexType name="trkType">
    <xsd:sequence>
      <xsd:element name="name" type="xsd:string" minOccurs="0"/>
      <xsd:element name="cmt" type="xsd:string" minOccurs="0"/>
      <xsd:element name="desc" type="xsd:string" minOccurs="0"/>
      <xsd:element name="src" type="xsd:string" minOccurs="0"/>
      <xsd:element name="link" type="xsd:anyType" minOccurs="0" maxOccurs="unbounded"/>
      <xsd:element name="number" type="xsd:nonNegativeInteger" minOccurs="0"/>
      <xsd:element name="type" type="xsd:string" minOccurs="0"/>
      <xsd:element name="extensions" type="xsd:anyType" minOccurs="0"/>
      <xsd:element name="trkseg" type="trksegType" minOccurs="0" maxOccurs="unbounded"/>
    </xsd:sequence>
  </xsd:complexType>
  <xsd:complexType name="trksegType">
    <xsd:sequence>
      <xsd:element name="trkpt" type="wptType" minOccurs="0" maxOccurs="unbounded"/>
      <xsd:element name="extensions" type="xsd:anyType" minOccurs="0"/>
    </xsd:sequence>
  </xsd:complexType>
  <xsd:complexType name="wptType">
    <xsd:sequence>
      <xsd:element name="ele" type="xsd:decimal" minOccurs="0"/>
      <xsd:element name="time" type="xsd:dateTime" minOccurs="0"/>
      <xsd:element name="magvar" type="xsd:decimal" minOccurs="0"/>
      <xsd:element name="geoidheight" type="xsd:decimal" minOccurs="0"/>
      <xsd:element name="name" type="xsd:string" minOccurs="0"/>
      <xsd:element name="cmt" type="xsd:string" minOccurs="0"/>
      <xsd:element name="desc" type="xsd:string" minOccurs="0"/>
      <xsd:element name="src" type="xsd:string" minOccurs="0"/>
      <xsd:element name="link" type="xsd:anyType" minOccurs="0" maxOccurs="unbounded"/>
      <xsd:element name="sym" type="xsd:string" minOccurs="0"/>
      <xsd:element name="type" type="xsd:string" minOccurs="0"/>
      <xsd:element name="fix" type="xsd:string" minOccurs="0"/>
      <xsd:element name="sat" type="xsd:nonNegativeInteger" minOccurs="0"/>
      <xsd:element name="hdop" type="xsd:decimal" minOccurs="0"/>
      <xsd:element name="vdop" type="xsd:decimal" minOccurs="0"/>
      <xsd:element name="pdop" type="xsd:decimal" minOccurs="0"/>
      <xsd:element name="ageofdgpsdata" type="xsd:decimal" minOccurs="0"/>
      <xsd:element name="dgpsid" type="xsd:integer" minOccurs="0"/>
      <xsd:element name="extensions" type="xsd:anyType" minOccurs="0"/>
    </xsd:sequence>
    <xsd:attribute name="lat" type="latitudeType" use="required"/>
    <xsd:attribute name="lon" type="longitudeType" use="required"/>
  </xsd:complexType>
  <xsd:simpleType name="latitudeType">
    <xsd:restriction base="xsd:decimal">
      <xsd:minInclusive value="-90.0"/>
      <xsd:maxInclusive value="90.0"/>
    </xsd:restriction>
  </xsd:simpleType>
  <xsd:simpleType name="longitudeType">
    <xsd:restriction base="xsd:decimal">
      <xsd:minInclusive value="-180.0"/>
      <xsd:maxExclusive value="180.0"/>
    </xsd:restriction>
  </xsd:simpleType>
</xsd:schema>
"""


async def test_the_gpx_is_valid_against_the_gpx_1_1_schema_rules(
    client: Client, track: list[int], api: MemoryApi
) -> None:
    etree = pytest.importorskip("lxml.etree")  # a dev tool: not a dependency of the service
    schema = etree.XMLSchema(etree.fromstring(GPX_XSD.encode()))
    await ingest(api, "tiny", [NOW - MINUTE])  # extremes: a number repr() writes as 1e-07
    api.store.track("tiny").put(
        Location(
            device_id="tiny",
            timestamp=NOW - 1,
            latitude=1e-7,
            longitude=-179.9999999,
            altitude=1e-9,
            received_at=NOW,
        )
    )

    for device, query in (("bus-1", WINDOW), ("tiny", ""), ("bus-9", "")):
        document = etree.fromstring((await export(client, device, f"format=gpx{query}")).content)
        assert schema.validate(document), schema.error_log


# -- choosing the format --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        ("application/geo+json", "application/geo+json"),
        ("application/gpx+xml", "application/gpx+xml"),
        ("text/csv", "text/csv; charset=utf-8"),
        ("application/x-ndjson", "application/x-ndjson"),
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        ("application/*", "application/json"),
        ("text/html", "application/json"),  # nothing it can give: the JSON page, as before
        ("text/csv;q=0.5, application/gpx+xml", "application/gpx+xml"),
        ("text/csv, application/json;q=0.9", "text/csv; charset=utf-8"),
    ],
)
async def test_the_accept_header_chooses_the_format(
    client: Client, api: MemoryApi, accept: str, media_type: str
) -> None:
    await ingest(api, "bus-1", [NOW - MINUTE])

    response = await export(client, "bus-1", "", accept=accept)

    assert response.headers["content-type"].startswith(media_type)
    assert response.headers["vary"] == "Accept"
    assert ("content-disposition" in response.headers) is (media_type != "application/json")


async def test_the_format_parameter_wins_over_accept(client: Client, api: MemoryApi) -> None:
    await ingest(api, "bus-1", [NOW - MINUTE])

    as_csv = await export(client, "bus-1", "format=csv", accept="application/geo+json")
    as_json = await export(client, "bus-1", "format=json", accept="text/csv")

    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_json.json()["locations"][0]["deviceId"] == "bus-1"


async def problem(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    detail: str = response.json()["detail"]
    return detail


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("format=kml", ["format", "'geojson'", "'kml'"]),
        ("format=csv&limit=10", ["limit", "next_token"]),
        ("format=ndjson&next_token=abc", ["limit", "next_token"]),
        ("format=csv&geometry=line", ["geometry"]),
        ("geometry=line", ["geometry"]),
        ("format=geojson&geometry=polygon", ["geometry", "polygon"]),
        ("format=geojson&gap_s=60", ["gap_s"]),
        ("format=gpx&gap_s=0", ["gap_s"]),
        ("format=gpx&gap_s=1e3", ["gap_s"]),
        ("format=csv&start_time=soon", ["start_time"]),
        ("format=csv&start_time=2026-11-28T12:00:00Z&end_time=2026-11-28T11:00:00Z", ["after"]),
    ],
)
async def test_bad_export_parameters_are_a_400_that_names_them(
    client: Client, query: str, words: list[str]
) -> None:
    detail = await problem(await client.get(f"/locations/bus-1?{query}"), 400)

    for word in words:
        assert word in detail


async def test_a_bad_device_id_is_a_400_before_any_byte(client: Client) -> None:
    assert "device id" in await problem(await client.get("/locations/bus%20one?format=csv"), 400)


# -- the file name --------------------------------------------------------------------------


async def test_the_attachment_is_named_after_the_device_and_the_window(
    client: Client, api: MemoryApi
) -> None:
    await ingest(api, "bus:7.a", [NOW - MINUTE])

    response = await export(
        client,
        "bus:7.a",
        "format=gpx&start_time=2026-11-28T08:00:00Z&end_time=2026-11-28T11:59:30Z",
    )

    assert response.headers["content-disposition"] == (
        'attachment; filename="bus_7.a_20261128T0800Z_20261128T115930Z.gpx"'
    )


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_without_times_the_name_spans_the_oldest_location_to_now(
    client: Client, api: MemoryApi, order: str
) -> None:
    await ingest(api, "bus-1", [NOW - 2 * HOUR, NOW - MINUTE])

    response = await export(client, "bus-1", f"format=ndjson&order={order}")

    assert response.headers["content-disposition"] == (
        'attachment; filename="bus-1_20261128T1000Z_20261128T1200Z.ndjson"'
    )


def test_file_names_carry_only_safe_characters() -> None:
    assert compact_utc(parse_iso("2026-12-05T08:00:00.999Z")) == "20261205T0800Z"
    assert compact_utc(parse_iso("0001-01-01T00:00:00Z")) == "00010101T0000Z"
    name = export_filename("a:b", 0, 1000, TrackFormat.CSV)
    assert name == "a_b_19700101T0000Z_19700101T000001Z.csv"


# -- failures -------------------------------------------------------------------------------


class OutageAfterFirstPage(MemoryLocationRepository):
    """The store goes down right after answering the first page of a history."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.store = store

    async def history(self, query: HistoryQuery) -> Page[Location]:
        page = await super().history(query)
        self.store.available = False
        return page


@pytest.fixture
async def failing(clock: FakeClock) -> AsyncIterator[tuple[MemoryApi, Client]]:
    api = MemoryApi(clock, locations=OutageAfterFirstPage)
    await ingest(api, "bus-1", every(POINTS))
    api.store.available = True
    async with AsyncTestClient(app=api.app()) as client:
        yield api, client


async def test_a_failure_mid_stream_ends_ndjson_with_an_error_line(
    failing: tuple[MemoryApi, Client], caplog: pytest.LogCaptureFixture
) -> None:
    _, client = failing
    with caplog.at_level(logging.ERROR, logger="trackstore.web.exports"):
        response = await export(client, "bus-1", f"format=ndjson{WINDOW}")

    lines = response.content.decode().split("\n")[:-1]
    assert len(lines) == 1000 + 1
    error = json.loads(lines[-1])["error"]
    assert error["status"] == 503
    assert error["title"] == "Service Unavailable"
    assert "switched off" not in error["detail"]  # store details are for the logs only
    assert any("after 1000 locations" in r.getMessage() for r in caplog.records)
    assert any("switched off" in r.getMessage() for r in caplog.records)


async def test_a_failure_mid_stream_ends_csv_with_an_error_row(
    failing: tuple[MemoryApi, Client],
) -> None:
    _, client = failing
    response = await export(client, "bus-1", f"format=csv{WINDOW}")

    rows = list(csv.reader(io.StringIO(response.content.decode(), newline="")))
    assert len(rows) == 1 + 1000 + 1
    assert rows[-1][:3] == ["#error", "503", "Service Unavailable"]


@pytest.mark.parametrize("query", ["format=geojson", "format=geojson&geometry=line"])
async def test_a_failure_mid_stream_leaves_geojson_invalid(
    failing: tuple[MemoryApi, Client], query: str
) -> None:
    _, client = failing
    response = await export(client, "bus-1", f"{query}{WINDOW}")

    assert response.content.startswith(b'{"type":')
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


async def test_a_failure_mid_stream_leaves_gpx_unclosed(
    failing: tuple[MemoryApi, Client],
) -> None:
    _, client = failing
    response = await export(client, "bus-1", f"format=gpx{WINDOW}")

    assert response.content.count(b"<trkpt ") == 1000
    with pytest.raises(ET.ParseError):
        ET.fromstring(response.content)


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "geojson", "gpx"])
async def test_a_failure_before_the_first_byte_is_a_503_problem(
    client: Client, api: MemoryApi, fmt: str
) -> None:
    await ingest(api, "bus-1", [NOW - MINUTE])
    api.store.available = False

    response = await client.get(f"/locations/bus-1?format={fmt}")

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"


async def test_head_answers_the_headers_without_reading_the_window(
    client: Client, api: MemoryApi
) -> None:
    await ingest(api, "bus-1", [NOW - MINUTE])

    response = await client.head("/locations/bus-1?format=csv")

    assert response.status_code == 200
    assert response.headers["content-disposition"].endswith('.csv"')
    assert response.content == b""


async def test_the_paged_json_answer_is_unchanged(client: Client, api: MemoryApi) -> None:
    await ingest(api, "bus-1", every(3))

    body = (await client.get("/locations/bus-1?limit=2")).json()

    assert set(body) == {"deviceId", "locations", "nextToken"}
    assert len(body["locations"]) == 2
    assert body["nextToken"]


async def test_openapi_documents_the_formats_and_their_parameters(client: Client) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    operation = document["paths"]["/locations/{device_id}"]["get"]

    names = {parameter["name"] for parameter in operation["parameters"]}
    assert {"format", "geometry", "gap_s"} <= names
    assert set(operation["responses"]["200"]["content"]) == {
        "application/json",
        "application/geo+json",
        "application/gpx+xml",
        "text/csv",
        "application/x-ndjson",
    }


# -- memory ---------------------------------------------------------------------------------

# 30 days at one fix every 10 s: a month of one bus.
MANY = 259_200
RSS_GROWTH_LIMIT = 30 * 1024 * 1024


def fill(store: MemoryStore, device: str, count: int) -> None:
    """`count` locations straight into the memory store: ingesting them would take minutes."""
    track = store.track(device)
    start = NOW - count * 10 * SECOND
    for n in range(count):
        t = start + n * 10 * SECOND
        track.times.append(t)
        track.by_time[t] = Location(
            device_id=device,
            timestamp=t,
            latitude=52.123456789 + n * 1e-7,
            longitude=13.987654321 - n * 1e-7,
            speed=float(n % 90),
            heading=float(n % 360),
            altitude=34.0 + n % 10,
            received_at=t + 500,
        )


@pytest.mark.parametrize(
    "query",
    ["format=ndjson", "format=csv", "format=geojson", "format=geojson&geometry=line", "format=gpx"],
)
async def test_memory_a_month_of_fixes_streams_in_constant_memory(
    clock: FakeClock, query: str
) -> None:
    """MEMORY TEST: 259,200 locations (30 days, one fix every 10 s) stream with the process's
    peak RSS under 30 MB above where it started. A few seconds per format."""
    api = MemoryApi(clock)
    fill(api.store, "bus-1", MANY)
    app = api.app()
    await drain(app, "/locations/bus-1", "format=csv&end_time=0")  # warm up: imports, caches
    before = status_kb("VmRSS")
    if before is None:
        pytest.skip("no /proc/self/status: cannot read the RSS")
    peak_known = reset_peak_rss()

    started = time.perf_counter()
    status, size = await drain(app, "/locations/bus-1", query)
    seconds = time.perf_counter() - started

    after = status_kb("VmHWM" if peak_known else "VmRSS") or 0
    assert status == 200
    assert size > MANY * 30  # the whole month went out
    assert (after - before) * 1024 < RSS_GROWTH_LIMIT, f"RSS grew {(after - before) / 1024:.1f} MB"
    assert seconds < 20, f"{MANY / seconds:.0f} locations/s"


async def traced_peak(clock: FakeClock, query: str, count: int) -> int:
    """The most memory Python held at once (tracemalloc) while streaming `count` locations."""
    api = MemoryApi(clock)
    fill(api.store, "bus-1", count)
    app = api.app()
    await drain(app, "/locations/bus-1", "format=csv&end_time=0")
    tracemalloc.start()
    try:
        status, _ = await drain(app, "/locations/bus-1", query)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 200
    return peak


@pytest.mark.parametrize(
    "query",
    ["format=ndjson", "format=csv", "format=geojson", "format=geojson&geometry=line", "format=gpx"],
)
async def test_memory_an_export_holds_the_same_for_ten_times_the_locations(
    clock: FakeClock, query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MEMORY TEST, exact where RSS is not (memory freed by earlier tests hides growth there):
    what Python allocates while streaming 40,000 locations is no more than for 4,000, give or
    take a page's worth. A body gathered whole would take ten times as much. (A line's times
    and speeds go to disk beyond a threshold, made small here so that it shows.)"""
    monkeypatch.setattr(track_formats, "_SPOOL_BYTES", 64 * 1024)
    small = await traced_peak(clock, query, 4_000)
    large = await traced_peak(clock, query, 40_000)

    assert large < small + 1024 * 1024, f"{small / 1e6:.1f} MB, then {large / 1e6:.1f} MB"
