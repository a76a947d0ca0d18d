"""The HTTP API as a client sees it: create_app over a TrackService on the in-memory adapters and
a fake clock."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

import trackstore
from tests.unit.memory_api import MemoryApi
from trackstore.clock import FakeClock
from trackstore.domain import Location, StreamRecord
from trackstore.memory import MemoryLocationRepository
from trackstore.timefmt import format_ms, parse_iso

NOW = parse_iso("2026-11-28T12:00:00Z")
MINUTE = 60_000
PROBLEM = "application/problem+json"

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


def record(device_id: str, timestamp: int, **fields: Any) -> dict[str, Any]:
    return {
        "deviceId": device_id,
        "timestamp": timestamp,
        "latitude": 52.5,
        "longitude": 13.4,
        **fields,
    }


async def ingest(api: MemoryApi, *records: dict[str, Any]) -> None:
    stream_records = [
        StreamRecord(
            data=msgspec.json.encode(data),
            partition_key=data["deviceId"],
            shard_id="shardId-000000000000",
            sequence_number=f"{number:021d}",
            arrival_ms=NOW,
        )
        for number, data in enumerate(records)
    ]
    result = await api.service.ingest(stream_records)
    assert not result.rejections, result.rejections


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """The RFC 9457 shape every error must have; returns the body for further checks."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["type"] == "about:blank"
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["instance"] == response.request.url.path
    return body


def timestamps(body: dict[str, Any]) -> list[str]:
    return [location["timestamp"] for location in body["locations"]]


# -- system -------------------------------------------------------------------------------------


async def test_index_names_the_service_and_links_that_work(client: Client) -> None:
    response = await client.get("/")

    assert response.status_code == 200
    body = response.json()
    assert body["service"] == "trackstore"
    assert body["version"] == trackstore.__version__
    for name in ("health", "metrics", "openapi", "devices"):
        assert (await client.get(body["links"][name])).status_code == 200, name
    assert body["links"]["locations"] == "/locations/{device_id}"


async def test_health_is_ok_when_stores_answer(client: Client) -> None:
    response = await client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"locations": "ok", "devices": "ok"}}


async def test_health_is_503_with_retry_after_when_a_store_is_down(
    client: Client, api: MemoryApi
) -> None:
    api.store.available = False

    response = await client.get("/health")

    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()
    body = response.json()
    assert body["status"] == "unavailable"
    assert set(body["checks"]) == {"locations", "devices"}
    assert all(message != "ok" for message in body["checks"].values())


async def test_queries_are_503_problems_with_retry_after_when_a_store_is_down(
    client: Client, api: MemoryApi
) -> None:
    api.store.available = False

    for path in ("/devices", "/devices/bus-1", "/locations/bus-1", "/locations/bus-1/latest"):
        response = await client.get(path)
        assert_problem(response, 503)
        assert int(response.headers["retry-after"]) >= 1


# -- locations ----------------------------------------------------------------------------------


async def test_location_carries_the_optional_fields_it_was_sent_with_and_no_others(
    client: Client, api: MemoryApi
) -> None:
    await ingest(
        api,
        record(
            "bus-1",
            NOW - 2 * MINUTE + 123,
            speed=42.5,
            heading=90.0,
            altitude=35.0,
            accuracy=4.0,
            battery=80.0,
            attributes={"route": "M10"},
        ),
        record("bus-1", NOW - MINUTE),
    )

    response = await client.get("/locations/bus-1")

    assert response.status_code == 200
    assert response.json() == {
        "deviceId": "bus-1",
        "locations": [
            {
                "deviceId": "bus-1",
                "timestamp": "2026-11-28T11:58:00.123Z",
                "latitude": 52.5,
                "longitude": 13.4,
                "speed": 42.5,
                "heading": 90.0,
                "altitude": 35.0,
                "accuracy": 4.0,
                "battery": 80.0,
                "attributes": {"route": "M10"},
                "receivedAt": "2026-11-28T12:00:00.000Z",
            },
            {
                "deviceId": "bus-1",
                "timestamp": "2026-11-28T11:59:00.000Z",
                "latitude": 52.5,
                "longitude": 13.4,
                "receivedAt": "2026-11-28T12:00:00.000Z",
            },
        ],
        "nextToken": None,
    }


@pytest.fixture
async def five_minutes(api: MemoryApi) -> None:
    """bus-1 at 11:55, 11:56, 11:57, 11:58 and 11:59."""
    await ingest(api, *(record("bus-1", NOW - m * MINUTE) for m in range(1, 6)))


@pytest.mark.usefixtures("five_minutes")
async def test_history_window_includes_both_ends(client: Client) -> None:
    # ISO-8601 with an offset at one end, epoch milliseconds at the other.
    start = "2026-11-28T12:56:00+01:00"
    end = str(NOW - 2 * MINUTE)

    response = await client.get("/locations/bus-1", params={"start_time": start, "end_time": end})

    assert response.status_code == 200
    assert timestamps(response.json()) == [
        "2026-11-28T11:56:00.000Z",
        "2026-11-28T11:57:00.000Z",
        "2026-11-28T11:58:00.000Z",
    ]


@pytest.mark.usefixtures("five_minutes")
async def test_history_is_oldest_first_by_default_and_newest_first_on_desc(client: Client) -> None:
    ascending = (await client.get("/locations/bus-1")).json()
    descending = (await client.get("/locations/bus-1", params={"order": "desc"})).json()

    assert timestamps(ascending)[0] == "2026-11-28T11:55:00.000Z"
    assert timestamps(descending) == timestamps(ascending)[::-1]


@pytest.mark.usefixtures("five_minutes")
async def test_history_limit_cuts_the_page_and_offers_a_next_token(client: Client) -> None:
    response = await client.get("/locations/bus-1", params={"limit": "2", "order": "desc"})

    body = response.json()
    assert timestamps(body) == ["2026-11-28T11:59:00.000Z", "2026-11-28T11:58:00.000Z"]
    assert isinstance(body["nextToken"], str)


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_history_pages_through_every_location_exactly_once(
    client: Client, api: MemoryApi, order: str
) -> None:
    times = [NOW - 30 * MINUTE + 17 * second for second in range(25)]
    await ingest(api, *(record("bus-7", t) for t in times))
    params = {"limit": "7", "order": order, "start_time": str(times[0])}

    seen: list[str] = []
    pages = 0
    while True:
        body = (await client.get("/locations/bus-7", params=params)).json()
        seen += timestamps(body)
        pages += 1
        if body["nextToken"] is None:
            break
        params["next_token"] = body["nextToken"]

    expected = [format_ms(t) for t in times]
    assert seen == (expected if order == "asc" else expected[::-1])
    assert pages == 4  # 7 + 7 + 7 + 4: the last page is not followed by an empty one


async def test_history_of_a_device_that_never_reported_is_empty(client: Client) -> None:
    response = await client.get("/locations/ghost")

    assert response.status_code == 200
    assert response.json() == {"deviceId": "ghost", "locations": [], "nextToken": None}


@pytest.mark.parametrize(
    ("params", "mentions"),
    [
        ({"start_time": "yesterday"}, "start_time"),
        ({"start_time": "2026-11-28T12:00:00"}, "start_time"),  # no offset: ambiguous
        ({"end_time": "12:00"}, "end_time"),
        ({"end_time": "99999999999999999999"}, "end_time"),
        ({"start_time": str(NOW), "end_time": str(NOW - 1)}, "start_time"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "-5"}, "limit"),
        ({"order": "newest"}, "order"),
        ({"next_token": "not-a-token"}, "next_token"),
    ],
)
@pytest.mark.usefixtures("five_minutes")
async def test_bad_history_parameters_are_400_naming_the_parameter(
    client: Client, params: dict[str, str], mentions: str
) -> None:
    response = await client.get("/locations/bus-1", params=params)

    assert mentions in assert_problem(response, 400)["detail"]


async def test_next_token_of_another_device_or_order_is_400(client: Client, api: MemoryApi) -> None:
    await ingest(api, *(record(d, NOW - m * MINUTE) for d in ("a", "b") for m in (1, 2, 3)))
    token = (await client.get("/locations/a", params={"limit": "1"})).json()["nextToken"]
    assert isinstance(token, str)

    other_device = await client.get("/locations/b", params={"limit": "1", "next_token": token})
    other_order = await client.get(
        "/locations/a", params={"limit": "1", "order": "desc", "next_token": token}
    )
    device_listing = await client.get("/devices", params={"next_token": token})

    assert_problem(other_device, 400)
    assert_problem(other_order, 400)
    assert_problem(device_listing, 400)


async def test_latest_is_the_newest_location(client: Client, api: MemoryApi) -> None:
    # Out of order on purpose: the newest is the one with the latest timestamp, not the last sent.
    await ingest(api, record("bus-1", NOW - MINUTE, speed=30.0), record("bus-1", NOW - 2))

    response = await client.get("/locations/bus-1/latest")

    assert response.status_code == 200
    assert response.json() == {
        "deviceId": "bus-1",
        "timestamp": "2026-11-28T11:59:59.998Z",
        "latitude": 52.5,
        "longitude": 13.4,
        "receivedAt": "2026-11-28T12:00:00.000Z",
    }


async def test_latest_of_a_device_without_locations_is_404(client: Client) -> None:
    body = assert_problem(await client.get("/locations/ghost/latest"), 404)

    assert body["title"] == "Not Found"
    assert "ghost" in body["detail"]


@pytest.mark.parametrize(
    "device_id", ["a" * 129, "bus!1", "bus%201", "bus%C3%A91"], ids=["129", "!", "space", "é"]
)
@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("GET", "/locations/{}"),
        ("GET", "/locations/{}/latest"),
        ("GET", "/devices/{}"),
        ("POST", "/devices/{}/register"),
    ],
)
async def test_bad_device_id_is_400(
    client: Client, device_id: str, method: str, template: str
) -> None:
    response = await client.request(method, template.format(device_id))

    assert "device id" in assert_problem(response, 400)["detail"]


async def test_longest_legal_device_id_is_accepted(client: Client) -> None:
    device_id = "A-z0.9_:" * 16  # 128 characters, every kind allowed

    assert (await client.get(f"/locations/{device_id}")).status_code == 200


# -- devices ------------------------------------------------------------------------------------


async def test_device_reports_its_activity_with_every_key(
    client: Client, api: MemoryApi, clock: FakeClock
) -> None:
    await ingest(api, record("bus-1", NOW - 2 * MINUTE), record("bus-1", NOW - MINUTE))

    body = (await client.get("/devices/bus-1")).json()

    assert body == {
        "deviceId": "bus-1",
        "status": "active",
        "lastSeen": "2026-11-28T11:59:00.000Z",
        "lastLocation": {
            "deviceId": "bus-1",
            "timestamp": "2026-11-28T11:59:00.000Z",
            "latitude": 52.5,
            "longitude": 13.4,
            "receivedAt": "2026-11-28T12:00:00.000Z",
        },
        "totalUpdates": 2,
        "registeredAt": None,
        "name": None,
        "metadata": None,
    }
    clock.advance(5 * MINUTE)
    assert (await client.get("/devices/bus-1")).json()["status"] == "inactive"


async def test_unknown_device_is_404(client: Client) -> None:
    body = assert_problem(await client.get("/devices/ghost"), 404)

    assert "ghost" in body["detail"]


async def test_register_is_201_with_the_device_then_409(client: Client) -> None:
    body = {"name": "Bus 7", "metadata": {"depot": "north", "seats": 40}}

    created = await client.post("/devices/bus-7/register", json=body)
    again = await client.post("/devices/bus-7/register", json=body)

    assert created.status_code == 201
    assert created.json() == {
        "deviceId": "bus-7",
        "status": "registered",
        "lastSeen": None,
        "lastLocation": None,
        "totalUpdates": 0,
        "registeredAt": "2026-11-28T12:00:00.000Z",
        "name": "Bus 7",
        "metadata": {"depot": "north", "seats": 40},
    }
    assert (await client.get("/devices/bus-7")).json() == created.json()
    assert "bus-7" in assert_problem(again, 409)["detail"]


async def test_register_without_a_body_registers_without_a_name(client: Client) -> None:
    response = await client.post("/devices/bus-8/register")

    assert response.status_code == 201
    assert response.json()["name"] is None
    assert response.json()["registeredAt"] == "2026-11-28T12:00:00.000Z"


async def test_register_after_reporting_keeps_the_activity(client: Client, api: MemoryApi) -> None:
    await ingest(api, record("bus-1", NOW - MINUTE), record("bus-1", NOW - 2 * MINUTE))

    response = await client.post("/devices/bus-1/register", json={"name": "Bus 1"})

    assert response.status_code == 201
    body = response.json()
    assert body["lastSeen"] == "2026-11-28T11:59:00.000Z"
    assert body["lastLocation"]["timestamp"] == "2026-11-28T11:59:00.000Z"
    assert body["totalUpdates"] == 2
    assert body["status"] == "active"
    assert body["name"] == "Bus 1"


@pytest.mark.parametrize(
    ("content", "mentions"),
    [
        (b"{nope", "JSON"),
        (b'{"name": 5}', "name"),
        (b'{"name": "Bus", "colour": "red"}', "colour"),
        (b'{"metadata": [1, 2]}', "metadata"),
        (b"[]", "object"),
        (b'{"name": ""}', "name"),
        (b'{"name": "' + b"x" * 257 + b'"}', "name"),
        (b'{"metadata": {"blob": "' + b"x" * 5000 + b'"}}', "metadata"),
    ],
)
async def test_bad_register_body_is_400_and_registers_nothing(
    client: Client, content: bytes, mentions: str
) -> None:
    response = await client.post(
        "/devices/bus-9/register", content=content, headers={"content-type": "application/json"}
    )

    assert mentions in assert_problem(response, 400)["detail"]
    assert (await client.get("/devices/bus-9")).status_code == 404


async def test_huge_register_body_is_refused(client: Client) -> None:
    response = await client.post("/devices/bus-9/register", content=b" " * 1_000_000)

    assert_problem(response, 413)


async def test_device_list_pages_through_every_device_exactly_once(
    client: Client, api: MemoryApi
) -> None:
    await ingest(api, *(record(f"bus-{n}", NOW - MINUTE) for n in range(5)))
    assert (await client.post("/devices/tram-1/register")).status_code == 201

    seen: list[str] = []
    params = {"limit": "2"}
    while True:
        response = await client.get("/devices", params=params)
        assert response.status_code == 200
        body = response.json()
        seen += [device["deviceId"] for device in body["devices"]]
        if body["nextToken"] is None:
            break
        params["next_token"] = body["nextToken"]

    assert sorted(seen) == ["bus-0", "bus-1", "bus-2", "bus-3", "bus-4", "tram-1"]
    assert len(seen) == len(set(seen))


async def test_device_list_shows_status_of_each(client: Client, api: MemoryApi) -> None:
    await ingest(api, record("bus-1", NOW - MINUTE), record("bus-2", NOW - 20 * MINUTE))
    await client.post("/devices/tram-1/register")

    body = (await client.get("/devices")).json()

    assert {d["deviceId"]: d["status"] for d in body["devices"]} == {
        "bus-1": "active",
        "bus-2": "inactive",
        "tram-1": "registered",
    }
    assert body["nextToken"] is None


@pytest.mark.parametrize("limit", ["0", "1001", "ten"])
async def test_bad_device_list_limit_is_400(client: Client, limit: str) -> None:
    response = await client.get("/devices", params={"limit": limit})

    assert "limit" in assert_problem(response, 400)["detail"]


# -- errors of the framework and the unexpected ---------------------------------------------------


async def test_unknown_route_is_a_404_problem(client: Client) -> None:
    assert_problem(await client.get("/buses"), 404)


async def test_wrong_method_is_a_405_problem_saying_what_is_allowed(client: Client) -> None:
    response = await client.delete("/devices/bus-1")

    assert_problem(response, 405)
    assert "GET" in response.headers["allow"]


class ExplodingLocations(MemoryLocationRepository):
    async def latest(self, device_id: str) -> Location | None:
        raise RuntimeError("secret detail at /srv/trackstore/internals.py")


async def test_unexpected_failure_is_a_500_that_reveals_nothing_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)

    async with AsyncTestClient(app=MemoryApi(locations=ExplodingLocations).app()) as client:
        response = await client.get("/locations/bus-1/latest")

    body = assert_problem(response, 500)
    assert body["detail"] == "Internal error"
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    logged = [r for r in caplog.records if r.exc_info and "secret" in str(r.exc_info[1])]
    assert logged, "the failure must reach the log"


# -- metrics and OpenAPI --------------------------------------------------------------------------


async def test_metrics_count_requests_by_route_template(client: Client) -> None:
    await client.get("/locations/bus-1")
    await client.get("/locations/bus-2")
    await client.get("/devices/bus-1")
    await client.get("/no/such/route")

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    requests = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in families["trackstore_http_requests"].samples
        if s.name.endswith("_total")
    }
    assert requests[("/locations/{device_id}", "GET", "200")] == 2
    assert requests[("/devices/{device_id}", "GET", "404")] == 1
    assert requests[("unmatched", "GET", "404")] == 1
    assert not any("bus-" in route for route, _, _ in requests)
    latency = families["trackstore_http_request_seconds"].samples
    assert any(
        s.name.endswith("_count") and s.labels["route"] == "/locations/{device_id}" and s.value == 2
        for s in latency
    )


async def test_openapi_document_names_every_operation(client: Client) -> None:
    response = await client.get("/schema/openapi.json")

    assert response.status_code == 200
    document = response.json()
    assert document["info"]["title"] == "TrackStore"
    assert document["info"]["version"] == trackstore.__version__
    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]
    assert {(path, method) for path, method, _ in operations} == {
        ("/", "get"),
        ("/health", "get"),
        ("/health/live", "get"),
        ("/locations", "get"),
        ("/locations/{device_id}", "get"),
        ("/locations/{device_id}/latest", "get"),
        ("/devices", "get"),
        ("/devices/{device_id}", "get"),
        ("/devices/{device_id}/register", "post"),
        ("/devices/search", "post"),
        ("/fleet/stream", "get"),
        ("/gtfs-rt/vehicle-positions", "get"),
        ("/devices/{device_id}/summary", "get"),
        ("/devices/{device_id}/stops", "get"),
        ("/devices/{device_id}/trips", "get"),
    }
    operation_ids = [operation.get("operationId") for _, _, operation in operations]
    assert all(operation_ids)
    assert len(set(operation_ids)) == len(operation_ids)
    assert all(operation.get("tags") and operation.get("summary") for *_, operation in operations)


async def test_lifespan_runs_around_the_app(api: MemoryApi) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def clients(app: Litestar) -> AsyncIterator[None]:
        events.append("open")
        yield
        events.append("close")

    async with AsyncTestClient(app=api.app(lifespan=[clients])) as client:
        assert events == ["open"]
        assert (await client.get("/health")).status_code == 200
    assert events == ["open", "close"]
