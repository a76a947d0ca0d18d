"""The report routes over HTTP on the in-memory adapters: /devices/{id}/summary, /stops, /trips;
their windows, parameters, CSV, paging through long histories, outages and the deadline."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.unit.memory_api import MemoryApi
from tests.unit.test_trips import ROUND, busy_days, drive
from trackstore.clock import FakeClock
from trackstore.domain import HistoryQuery, Location, Page, StreamRecord
from trackstore.memory import MemoryLocationRepository, MemoryStore
from trackstore.timefmt import DAY_MS, format_ms, parse_iso
from trackstore.web import reports

NOW = parse_iso("2026-11-30T12:00:00Z")
DAY = parse_iso("2026-11-27T00:00:00Z") // DAY_MS  # the day test_trips' tracks are on
PROBLEM = "application/problem+json"

Client = AsyncTestClient[Litestar]


@pytest.fixture
def api() -> MemoryApi:
    return MemoryApi(FakeClock(NOW))


@pytest.fixture
async def client(api: MemoryApi) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=api.app()) as client:
        yield client


async def ingest(api: MemoryApi, fixes: Sequence[Location], device: str = "bus-1") -> None:
    records = []
    for n, location in enumerate(fixes):
        body: dict[str, Any] = {
            "deviceId": device,
            "timestamp": location.timestamp,
            "latitude": location.latitude,
            "longitude": location.longitude,
        }
        if location.speed is not None:
            body["speed"] = location.speed
        records.append(
            StreamRecord(
                data=msgspec.json.encode(body),
                partition_key=device,
                shard_id="shardId-000000000000",
                sequence_number=f"{n:021d}",
                arrival_ms=NOW,
            )
        )
    result = await api.service.ingest(records)
    assert not result.rejections


def problem(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    detail: str = response.json()["detail"]
    return detail


def rows(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.text.endswith("\r\n")
    return list(csv.DictReader(io.StringIO(response.text, newline="")))


# -- summary ---------------------------------------------------------------------------------------


async def test_a_summary_defaults_to_today_and_an_unknown_device_has_empty_days(
    client: Client,
) -> None:
    body = (await client.get("/devices/nobody/summary")).json()

    assert body["deviceId"] == "nobody"
    assert body["start"] == "2026-11-30T00:00:00.000Z"
    assert body["end"] == "2026-11-30T23:59:59.999Z"
    assert body["maxSpeedKmh"] == 250.0
    (day,) = body["days"]
    assert day == {
        "date": "2026-11-30",
        "fixes": 0,
        "firstFix": None,
        "lastFix": None,
        "distanceM": 0.0,
        "movingS": 0.0,
        "idleS": 0.0,
        "maxSpeedKmh": None,
        "avgMovingSpeedKmh": None,
        "gaps": 0,
        "gapS": 0.0,
        "jumpsSkipped": 0,
    }


async def test_a_summary_of_a_day(client: Client, api: MemoryApi) -> None:
    await ingest(api, drive(DAY * DAY_MS + 8 * 3_600_000, 0.0, 10_000, 36.0, 10))

    body = (await client.get("/devices/bus-1/summary?date=2026-11-27")).json()

    (day,) = body["days"]
    assert day["fixes"] == 101
    assert day["distanceM"] == 10_000.0
    assert (day["movingS"], day["idleS"]) == (1000.0, 0.0)
    assert (day["maxSpeedKmh"], day["avgMovingSpeedKmh"]) == (36.0, 36.0)
    assert (day["firstFix"], day["lastFix"]) == (
        "2026-11-27T08:00:00.000Z",
        "2026-11-27T08:16:40.000Z",
    )


async def test_a_day_is_the_same_asked_alone_or_in_a_window(client: Client, api: MemoryApi) -> None:
    await ingest(api, busy_days(3, seed=5))  # from 2026-11-26T22:00Z to 2026-11-30T02:00Z

    window = (
        await client.get(
            "/devices/bus-1/summary?start_time=2026-11-27T13:00:00Z&end_time=2026-11-29T01:00:00Z"
        )
    ).json()["days"]
    alone = [
        (await client.get(f"/devices/bus-1/summary?date={day}")).json()["days"][0]
        for day in ("2026-11-27", "2026-11-28", "2026-11-29")
    ]

    assert [day["date"] for day in window] == ["2026-11-27", "2026-11-28", "2026-11-29"]
    assert window == alone
    assert all(day["fixes"] > 1000 for day in window)  # several pages each


async def test_a_summary_with_start_time_only_runs_to_today(client: Client) -> None:
    body = (await client.get("/devices/bus-1/summary?start_time=2026-11-28T23:00:00Z")).json()

    assert [day["date"] for day in body["days"]] == ["2026-11-28", "2026-11-29", "2026-11-30"]


async def test_a_summary_as_csv(client: Client, api: MemoryApi) -> None:
    await ingest(api, ROUND)

    table = rows(
        await client.get(
            "/devices/bus-1/summary?start_time=2026-11-26T12:00:00Z"
            "&end_time=2026-11-27T12:00:00Z&format=csv"
        )
    )

    assert [row["date"] for row in table] == ["2026-11-26", "2026-11-27"]
    assert table[0]["firstFix"] == ""
    assert table[1]["deviceId"] == "bus-1"
    assert table[1]["firstFix"] == "2026-11-27T08:00:00.000Z"
    assert table[1]["fixes"] == str(len(ROUND))
    assert float(table[1]["distanceM"]) == pytest.approx(9600)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("date=2026-11-27&start_time=2026-11-27T00:00:00Z", "either date or start_time"),
        ("date=2026-11-27&end_time=2026-11-27T00:00:00Z", "either date or start_time"),
        ("date=27.11.2026", "date must be a UTC day as YYYY-MM-DD"),
        ("date=2026-02-30", "date must be"),
        ("start_time=2026-10-01T00:00:00Z&end_time=2026-11-01T00:00:00Z", "at most 31 UTC days"),
        ("start_time=2026-11-28T00:00:00Z&end_time=2026-11-27T00:00:00Z", "after end_time"),
        ("start_time=yesterday", "start_time must be"),
        ("max_speed_kmh=0", "max_speed_kmh must be a number above 0"),
        ("max_speed_kmh=fast", "max_speed_kmh must be"),
        ("format=xml", "format must be 'json' or 'csv'"),
        ("radius_m=100", "unknown query parameter 'radius_m'"),
    ],
)
async def test_bad_summary_parameters_are_400s_naming_them(
    client: Client, query: str, expected: str
) -> None:
    assert expected in problem(await client.get(f"/devices/bus-1/summary?{query}"), 400)


async def test_a_window_of_31_days_is_allowed(client: Client) -> None:
    response = await client.get(
        "/devices/bus-1/summary?start_time=2026-10-31T00:00:00Z&end_time=2026-11-30T23:00:00Z"
    )

    assert response.status_code == 200, response.text
    assert len(response.json()["days"]) == 31


# -- stops and trips ----------------------------------------------------------------------------

ROUND_WINDOW = "start_time=2026-11-27T07:00:00Z&end_time=2026-11-27T09:00:00Z"


async def test_stops_of_a_known_track(client: Client, api: MemoryApi) -> None:
    await ingest(api, ROUND)

    body = (await client.get(f"/devices/bus-1/stops?{ROUND_WINDOW}")).json()

    assert (body["start"], body["end"]) == ("2026-11-27T07:00:00.000Z", "2026-11-27T09:00:00.000Z")
    assert (body["radiusM"], body["minDurationS"]) == (200.0, 180)
    assert [(s["arrival"], s["departure"], s["durationS"], s["fixes"]) for s in body["stops"]] == [
        ("2026-11-27T08:00:00.000Z", "2026-11-27T08:05:00.000Z", 300.0, 6),
        ("2026-11-27T08:15:00.000Z", "2026-11-27T08:20:00.000Z", 300.0, 6),
    ]
    assert body["stops"][0]["latitude"] == pytest.approx(52.0)
    assert body["stops"][0]["longitude"] == pytest.approx(13.4)


async def test_trips_of_a_known_track(client: Client, api: MemoryApi) -> None:
    await ingest(api, ROUND)

    body = (await client.get(f"/devices/bus-1/trips?{ROUND_WINDOW}")).json()

    first, second = body["trips"]
    assert (first["start"], first["end"], first["durationS"]) == (
        "2026-11-27T08:05:00.000Z",
        "2026-11-27T08:15:00.000Z",
        600.0,
    )
    assert (first["distanceM"], first["fixes"], first["jumpsSkipped"]) == (6000.0, 11, 0)
    assert (first["maxSpeedKmh"], first["avgSpeedKmh"]) == (36.0, 36.0)
    assert first["startLatitude"] == pytest.approx(52.0)
    assert (second["start"], second["end"], second["distanceM"]) == (
        "2026-11-27T08:20:00.000Z",
        "2026-11-27T08:26:00.000Z",
        3600.0,
    )


async def test_stops_and_trips_as_csv(client: Client, api: MemoryApi) -> None:
    await ingest(api, ROUND)

    stops = rows(await client.get(f"/devices/bus-1/stops?{ROUND_WINDOW}&format=csv"))
    trips = rows(await client.get(f"/devices/bus-1/trips?{ROUND_WINDOW}&format=csv"))

    assert list(stops[0]) == [
        *("deviceId", "arrival", "departure", "durationS", "latitude", "longitude", "fixes")
    ]
    assert [row["arrival"] for row in stops] == [
        "2026-11-27T08:00:00.000Z",
        "2026-11-27T08:15:00.000Z",
    ]
    assert [row["distanceM"] for row in trips] == ["6000.0", "3600.0"]


async def test_stop_parameters_change_what_is_a_stop(client: Client, api: MemoryApi) -> None:
    await ingest(api, ROUND)

    longer = (await client.get(f"/devices/bus-1/stops?{ROUND_WINDOW}&min_duration_s=301")).json()
    wide = (await client.get(f"/devices/bus-1/trips?{ROUND_WINDOW}&radius_m=10000")).json()

    assert longer["stops"] == []
    assert len(wide["trips"]) == 0  # everything within 10 km: one long stop


async def test_stops_default_to_the_last_24_hours(client: Client, api: MemoryApi) -> None:
    await ingest(api, ROUND)  # two days before now

    body = (await client.get("/devices/bus-1/stops")).json()

    assert (body["start"], body["end"]) == ("2026-11-29T12:00:00.000Z", "2026-11-30T12:00:00.000Z")
    assert body["stops"] == []


@pytest.mark.parametrize("route", ["stops", "trips"])
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("start_time=2026-10-01T00:00:00Z", "at most 31 days"),
        ("start_time=2026-11-28T00:00:00Z&end_time=2026-11-27T00:00:00Z", "after end_time"),
        ("radius_m=-1", "radius_m must be a number above 0"),
        ("radius_m=1e9", "at most 10000"),
        ("min_duration_s=0", "min_duration_s must be an integer"),
        ("min_duration_s=1.5", "min_duration_s must be an integer"),
        ("format=pdf", "format must be"),
        ("date=2026-11-27", "unknown query parameter 'date'"),
    ],
)
async def test_bad_stop_and_trip_parameters_are_400s(
    client: Client, route: str, query: str, expected: str
) -> None:
    assert expected in problem(await client.get(f"/devices/bus-1/{route}?{query}"), 400)


@pytest.mark.parametrize("route", ["summary", "stops", "trips"])
async def test_a_bad_device_id_is_a_400(client: Client, route: str) -> None:
    assert "device id" in problem(await client.get(f"/devices/bus%201/{route}"), 400)


# -- reading, outages, deadline -------------------------------------------------------------


class CountingLocations(MemoryLocationRepository):
    """Counts and checks the history pages the reports ask for; optionally slow."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.queries: list[HistoryQuery] = []
        self.delay_s = 0.0

    async def history(self, query: HistoryQuery) -> Page[Location]:
        self.queries.append(query)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return await super().history(query)


@pytest.fixture
def counted() -> tuple[MemoryApi, list[CountingLocations]]:
    made: list[CountingLocations] = []

    def factory(store: MemoryStore) -> CountingLocations:
        made.append(CountingLocations(store))
        return made[-1]

    return MemoryApi(FakeClock(NOW), locations=factory), made


async def test_a_long_history_is_read_once_in_pages_of_1000_oldest_first(
    counted: tuple[MemoryApi, list[CountingLocations]],
) -> None:
    api, (locations,) = counted
    track = drive(DAY * DAY_MS + 3_600_000, 0.0, 50_000, 36.0, 2)  # 2501 fixes
    await ingest(api, track)

    async with AsyncTestClient(app=api.app()) as client:
        body = (await client.get("/devices/bus-1/trips?start_time=2026-11-27T00:00:00Z")).json()

    (trip,) = body["trips"]
    assert trip["fixes"] == 2501
    assert trip["distanceM"] == pytest.approx(50_000)
    pages = [q for q in locations.queries if q.limit != 1]
    assert len(pages) == 3
    assert all(q.limit == 1000 and q.order.value == "asc" for q in pages)


async def test_the_summary_reads_one_fix_each_side_of_its_days(
    counted: tuple[MemoryApi, list[CountingLocations]],
) -> None:
    api, (locations,) = counted

    async with AsyncTestClient(app=api.app()) as client:
        await client.get("/devices/bus-1/summary?date=2026-11-27")

    neighbours = [q for q in locations.queries if q.limit == 1]
    assert (neighbours[0].order.value, neighbours[0].end) == ("desc", DAY * DAY_MS - 1)
    assert neighbours[1].order.value == "asc"
    assert neighbours[1].start == (DAY + 1) * DAY_MS


@pytest.mark.parametrize("route", ["summary", "stops", "trips"])
async def test_an_outage_is_a_503(client: Client, api: MemoryApi, route: str) -> None:
    api.store.available = False

    response = await client.get(f"/devices/bus-1/{route}")

    assert response.status_code == 503, response.text
    assert response.headers["retry-after"]


@pytest.mark.parametrize("route", ["summary", "stops", "trips"])
async def test_a_report_over_the_deadline_is_a_503(
    counted: tuple[MemoryApi, list[CountingLocations]],
    monkeypatch: pytest.MonkeyPatch,
    route: str,
) -> None:
    """Each page within the service's deadline, the whole report not within the request's."""
    api, (locations,) = counted
    await ingest(api, drive(NOW - 3_600_000, 0.0, 30_000, 36.0, 2))  # 1501 fixes: 2 pages
    locations.delay_s = 0.05
    monkeypatch.setattr(reports, "REQUEST_DEADLINE_S", 0.08)

    async with AsyncTestClient(app=api.app()) as client:
        response = await client.get(f"/devices/bus-1/{route}")

    assert response.status_code == 503, response.text


# -- OpenAPI --------------------------------------------------------------------------------------


async def test_the_reports_are_documented(client: Client) -> None:
    paths = (await client.get("/schema/openapi.json")).json()["paths"]

    for path, operation_id in [
        ("/devices/{device_id}/summary", "getDeviceSummary"),
        ("/devices/{device_id}/stops", "getDeviceStops"),
        ("/devices/{device_id}/trips", "getDeviceTrips"),
    ]:
        operation = paths[path]["get"]
        assert operation["operationId"] == operation_id
        assert operation["summary"]
        assert set(operation["responses"]) >= {"200", "400", "503"}
        assert operation["responses"]["400"]["content"][PROBLEM]
        ok = operation["responses"]["200"]["content"]
        assert set(ok) == {"application/json", "text/csv"}
        assert "$ref" in ok["application/json"]["schema"]
        for parameter in operation["parameters"]:
            assert parameter.get("description"), (operation_id, parameter["name"])
        names = {parameter["name"] for parameter in operation["parameters"]}
        assert {"device_id", "start_time", "end_time", "format"} <= names


def test_iso_times_in_reports_are_the_api_format() -> None:
    assert format_ms(DAY * DAY_MS) == "2026-11-27T00:00:00.000Z"
