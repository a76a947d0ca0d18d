"""`simplify` and `max_points` on `GET /locations/{device_id}`: per page on the JSON answer, over
the whole window on a file (two passes, flat memory). The rules themselves are tested in
test_simplify.py; here, that the API applies them to the right points and refuses bad values."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import xml.etree.ElementTree as ET
from array import array
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.memory_watch import drain, reset_peak_rss, status_kb
from tests.unit.memory_api import MemoryApi
from tests.unit.test_exports import (
    MANY,
    NOW,
    RSS_GROWTH_LIMIT,
    SECOND,
    Client,
)
from trackstore.clock import FakeClock
from trackstore.domain import Location, Order
from trackstore.memory import MemoryStore
from trackstore.simplify import douglas_peucker, most_significant
from trackstore.timefmt import format_ms
from trackstore.track_formats import compact_utc
from trackstore.track_simplification import KeptTimestamps

POINTS = 2_500  # three pages of an export
STEP = 10 * SECOND
START = NOW - POINTS * STEP
WINDOW = f"start_time={START}&end_time={NOW}"


def wander(store: MemoryStore, device: str, count: int, seed: int = 7) -> list[Location]:
    """A bus wandering through a city with GPS noise, a fix every 10 s, straight into the store."""
    rng = random.Random(seed)
    track = store.track(device)
    lat, lon, heading = 52.52, 13.40, 0.0
    locations = []
    for n in range(count):
        heading += rng.gauss(0, 0.3)
        lat += math.cos(heading) * 80 / 111_000 + rng.gauss(0, 4 / 111_000)
        lon += math.sin(heading) * 80 / 68_000 + rng.gauss(0, 4 / 68_000)
        t = NOW - (count - n) * STEP
        location = Location(
            device_id=device, timestamp=t, latitude=lat, longitude=lon, speed=28.8, received_at=t
        )
        track.times.append(t)
        track.by_time[t] = location
        locations.append(location)
    return locations


@pytest.fixture
def api() -> MemoryApi:
    return MemoryApi(FakeClock(NOW))


@pytest.fixture
async def client(api: MemoryApi) -> Any:
    async with AsyncTestClient(app=api.app()) as client:
        yield client


@pytest.fixture
def track(api: MemoryApi) -> list[Location]:
    return wander(api.store, "bus-1", POINTS)


def points(locations: list[Location]) -> list[tuple[float, float]]:
    return [(location.latitude, location.longitude) for location in locations]


def timestamps_of(locations: list[Location], kept: list[int]) -> list[str]:
    return [format_ms(locations[i].timestamp) for i in kept]


async def ndjson_times(client: Client, query: str) -> list[str]:
    response = await client.get(f"/locations/bus-1?format=ndjson&{WINDOW}&{query}")
    assert response.status_code == 200, response.text
    lines = response.content.decode().splitlines()
    return [json.loads(line)["timestamp"] for line in lines]


# -- JSON: per page ------------------------------------------------------------------------


async def test_json_simplifies_each_page_on_its_own(client: Client, track: list[Location]) -> None:
    plain = (await client.get(f"/locations/bus-1?limit=500&{WINDOW}")).json()
    response = await client.get(f"/locations/bus-1?limit=500&simplify=25&{WINDOW}")

    assert response.status_code == 200
    body = response.json()
    page = track[:500]
    kept = douglas_peucker(points(page), 25)
    assert 2 < len(body["locations"]) < 500
    assert [loc["timestamp"] for loc in body["locations"]] == [
        plain["locations"][i]["timestamp"] for i in kept
    ]
    assert body["nextToken"] == plain["nextToken"]  # the pages stay the same pages

    second = (
        await client.get(
            f"/locations/bus-1?limit=500&simplify=25&{WINDOW}&next_token={body['nextToken']}"
        )
    ).json()
    kept = douglas_peucker(points(track[500:1000]), 25)
    assert len(second["locations"]) == len(kept)
    assert second["locations"][0]["timestamp"] == format_ms(track[500].timestamp)


async def test_json_max_points_keeps_that_many_with_the_page_ends(
    client: Client, track: list[Location]
) -> None:
    body = (await client.get(f"/locations/bus-1?limit=1000&max_points=50&{WINDOW}")).json()

    times = [loc["timestamp"] for loc in body["locations"]]
    assert len(times) == 50
    assert times[0] == format_ms(track[0].timestamp)
    assert times[-1] == format_ms(track[999].timestamp)
    assert times == timestamps_of(track, most_significant(points(track[:1000]), 50))


async def test_json_descending_pages_are_simplified_in_their_order(
    client: Client, track: list[Location]
) -> None:
    body = (await client.get(f"/locations/bus-1?limit=300&order=desc&simplify=25&{WINDOW}")).json()

    newest = list(reversed(track[-300:]))
    assert [loc["timestamp"] for loc in body["locations"]] == timestamps_of(
        newest, douglas_peucker(points(newest), 25)
    )


# -- files: the whole window ---------------------------------------------------------------


async def test_an_export_is_simplified_over_the_whole_window(
    client: Client, track: list[Location]
) -> None:
    times = await ndjson_times(client, "simplify=25")

    assert times == timestamps_of(track, douglas_peucker(points(track), 25))
    # Not page by page: pages of 1,000 would keep their own ends.
    per_page = [
        t
        for at in range(0, POINTS, 1000)
        for t in timestamps_of(
            track[at : at + 1000], douglas_peucker(points(track[at : at + 1000]), 25)
        )
    ]
    assert times != per_page


async def test_an_export_with_max_points_has_that_many_the_most_significant(
    client: Client, track: list[Location]
) -> None:
    times = await ndjson_times(client, "max_points=100")

    assert times == timestamps_of(track, most_significant(points(track), 100))


async def test_simplify_then_max_points(client: Client, track: list[Location]) -> None:
    simplified = await ndjson_times(client, "simplify=10")
    both = await ndjson_times(client, "simplify=10&max_points=40")

    assert len(simplified) > 40
    assert len(both) == 40
    assert set(both) <= set(simplified)
    assert both[0] == format_ms(track[0].timestamp)
    assert both[-1] == format_ms(track[-1].timestamp)


async def test_a_descending_export_is_the_ascending_one_reversed(
    client: Client, track: list[Location]
) -> None:
    ascending = await ndjson_times(client, "simplify=25")
    descending = await ndjson_times(client, "simplify=25&order=desc")

    assert descending == list(reversed(ascending))


async def test_every_format_carries_the_simplified_track(
    client: Client, track: list[Location]
) -> None:
    kept = len(douglas_peucker(points(track), 25))
    query = f"/locations/bus-1?{WINDOW}&simplify=25&format="

    rows = list(csv.reader(io.StringIO((await client.get(query + "csv")).text, newline="")))
    features = (await client.get(query + "geojson")).json()["features"]
    line = (await client.get(query + "geojson&geometry=line")).json()
    gpx = ET.fromstring((await client.get(query + "gpx")).content)

    assert len(rows) == 1 + kept
    assert len(features) == kept
    assert len(line["geometry"]["coordinates"]) == kept
    assert len(gpx.findall(".//{http://www.topografix.com/GPX/1/1}trkpt")) == kept


async def test_without_an_end_time_both_passes_read_the_same_window(
    api: MemoryApi, client: Client, track: list[Location]
) -> None:
    response = await client.get("/locations/bus-1?format=ndjson&max_points=10")

    times = [json.loads(line)["timestamp"] for line in response.content.decode().splitlines()]
    assert times == timestamps_of(track, most_significant(points(track), 10))
    assert response.headers["content-disposition"].endswith(f'_{compact_utc(NOW)}.ndjson"')


def test_the_second_pass_skips_what_expired_and_what_arrived_since() -> None:
    def at(*stamps: int) -> list[Location]:
        return [
            Location(device_id="d", timestamp=t, latitude=0.0, longitude=0.0, received_at=t)
            for t in stamps
        ]

    ascending = KeptTimestamps(array("q", [10, 20, 30, 40]), Order.ASC)
    # 20 expired between the passes, 25 arrived late; pages split anywhere.
    assert [loc.timestamp for loc in ascending.select(at(10, 15, 25))] == [10]
    assert [loc.timestamp for loc in ascending.select(at(30, 35, 40, 45))] == [30, 40]

    descending = KeptTimestamps(array("q", [40, 30, 20, 10]), Order.DESC)
    assert [loc.timestamp for loc in descending.select(at(45, 40, 35))] == [40]
    assert [loc.timestamp for loc in descending.select(at(25, 20, 10))] == [20, 10]


async def test_a_store_outage_in_the_first_pass_is_a_503_before_any_byte(
    api: MemoryApi, client: Client, track: list[Location]
) -> None:
    api.store.available = False

    response = await client.get(f"/locations/bus-1?format=csv&simplify=5&{WINDOW}")

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"


# -- bad values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("simplify=0", "simplify"),
        ("simplify=-5", "simplify"),
        ("simplify=abc", "simplify"),
        ("simplify=nan", "simplify"),
        ("simplify=inf", "simplify"),
        ("simplify=1e3", "simplify"),
        ("simplify=1_0", "simplify"),
        ("simplify=100000.5", "simplify"),
        ("simplify=", "simplify"),
        ("max_points=1", "max_points"),
        ("max_points=0", "max_points"),
        ("max_points=2.5", "max_points"),
        ("max_points=x", "max_points"),
        ("max_points=100001", "max_points"),
        ("max_points=99999999999999999999", "max_points"),
    ],
)
@pytest.mark.parametrize("fmt", ["json", "csv"])
async def test_bad_values_are_a_400_that_names_the_parameter(
    client: Client, track: list[Location], query: str, named: str, fmt: str
) -> None:
    response = await client.get(f"/locations/bus-1?format={fmt}&{query}")

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"].startswith(f"{named} must be")


@pytest.mark.parametrize("query", ["simplify=0.5", "simplify=100000", "max_points=2"])
async def test_edge_values_are_taken(client: Client, track: list[Location], query: str) -> None:
    response = await client.get(f"/locations/bus-1?{query}&{WINDOW}")

    assert response.status_code == 200
    assert len(response.json()["locations"]) >= 2


async def test_openapi_documents_both_parameters(client: Client) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    parameters = {
        p["name"]: p for p in document["paths"]["/locations/{device_id}"]["get"]["parameters"]
    }

    assert "each page is simplified on its own" in parameters["simplify"]["description"]
    assert "whole window" in parameters["max_points"]["description"]


# -- memory --------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["format=ndjson&simplify=5", "format=csv&max_points=100000"])
async def test_memory_a_month_simplified_stays_within_the_export_budget(query: str) -> None:
    """MEMORY TEST: 259,200 wandering locations simplified over the whole window (two passes)
    with the peak RSS under 30 MB above where it started. Several seconds."""
    api = MemoryApi(FakeClock(NOW))
    wander(api.store, "bus-1", MANY)
    app = api.app()
    await drain(app, "/locations/bus-1", "format=csv&max_points=10&end_time=0")  # warm up
    before = status_kb("VmRSS")
    if before is None:
        pytest.skip("no /proc/self/status: cannot read the RSS")
    peak_known = reset_peak_rss()

    status, size = await drain(app, "/locations/bus-1", query)

    after = status_kb("VmHWM" if peak_known else "VmRSS") or 0
    assert status == 200
    assert size > 1000 * 30
    assert (after - before) * 1024 < RSS_GROWTH_LIMIT, f"RSS grew {(after - before) / 1024:.1f} MB"
