"""Every request has a cost bound and never answers 5xx for bad input: fleet windows, page tokens
of every kind, times in query parameters, registration bodies DynamoDB would refuse, device ids
no URL can carry. Over HTTP (Litestar's test client) on the in-memory adapters."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.unit.memory_api import MemoryApi
from trackstore.clock import FakeClock
from trackstore.domain import StreamRecord
from trackstore.errors import UNAVAILABLE, Error
from trackstore.memory import MemoryLocationRepository, MemoryStore
from trackstore.service import TrackService
from trackstore.timefmt import parse_iso

NOW = parse_iso("2026-11-28T12:00:00Z")
MINUTE = 60_000
HOUR = 60 * MINUTE
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


async def ingest(api: MemoryApi, device: str, *times: int) -> None:
    records = [
        StreamRecord(
            data=msgspec.json.encode(
                {"deviceId": device, "timestamp": t, "latitude": 52.5, "longitude": 13.4}
            ),
            partition_key=device,
            shard_id="shardId-000000000000",
            sequence_number=f"{n:021d}",
            arrival_ms=NOW,
        )
        for n, t in enumerate(times)
    ]
    result = await api.service.ingest(records)
    assert not result.rejections


def problem(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    detail: str = response.json()["detail"]
    return detail


# -- fleet windows --------------------------------------------------------------------------


async def test_a_fleet_window_without_start_time_is_the_last_hour(
    client: Client, api: MemoryApi
) -> None:
    await ingest(api, "bus-1", NOW - 2 * HOUR, NOW - 30 * MINUTE, NOW - MINUTE)

    body = (await client.get("/locations")).json()

    assert [loc["timestamp"] for loc in body["locations"]] == [
        "2026-11-28T11:30:00.000Z",
        "2026-11-28T11:59:00.000Z",
    ]


@pytest.mark.parametrize(
    "query",
    [
        "start_time=2026-11-20T00:00:00Z",  # to now: more than a day
        "start_time=2026-11-26T00:00:00Z&end_time=2026-11-27T00:00:01Z",
        "start_time=0001-01-01T00:00:00Z&end_time=9999-12-31T00:00:00Z",
    ],
)
async def test_a_fleet_window_over_a_day_is_a_400_that_states_the_limit(
    client: Client, query: str
) -> None:
    assert "at most 24 hours" in problem(await client.get(f"/locations?{query}"), 400)


@pytest.mark.parametrize(
    "query",
    [
        "end_time=9999-12-31T00:00:00Z",
        "start_time=9999-12-30T00:00:00Z&end_time=9999-12-31T00:00:00Z",
        "start_time=9999-12-31T00:00:00Z",
        "start_time=0001-01-01T00:00:00Z&end_time=0001-01-01T01:00:00Z",
    ],
)
async def test_windows_at_the_edges_of_time_answer_at_once(client: Client, query: str) -> None:
    response = await asyncio.wait_for(client.get(f"/locations?{query}"), 5)

    assert response.status_code == 200, response.text
    assert response.json()["locations"] == []


async def test_end_time_far_ahead_is_clamped_so_recent_locations_still_show(
    client: Client, api: MemoryApi
) -> None:
    await ingest(api, "bus-1", NOW - 10 * MINUTE)

    body = (await client.get("/locations?end_time=9999-12-31T00:00:00Z")).json()

    assert len(body["locations"]) == 1


# -- tokens ---------------------------------------------------------------------------------


async def pages(client: Client, url: str) -> str:
    body = (await client.get(url)).json()
    token: str = body["nextToken"]
    assert token
    return token


@pytest.mark.parametrize(
    ("first", "changed"),
    [
        ("/locations/bus-1?limit=2", "/locations/bus-1?limit=3"),
        ("/locations/bus-1?limit=2", "/locations/bus-2?limit=2"),
        ("/locations/bus-1?limit=2", "/locations/bus-1?limit=2&order=desc"),
        ("/locations/bus-1?limit=2", "/locations/bus-1?limit=2&start_time=2026-11-28T11:00:00Z"),
        ("/locations/bus-1?limit=2", "/locations/bus-1?limit=2&end_time=2026-11-28T11:58:00Z"),
        ("/locations?limit=2", "/locations?limit=2&start_time=2026-11-28T11:30:00Z"),
        ("/locations?limit=2", "/locations/bus-1?limit=2"),
        ("/devices?limit=1", "/devices?limit=2"),
        ("/devices?limit=1", "/locations?limit=1"),
    ],
)
async def test_a_token_only_works_for_the_query_it_came_from(
    client: Client, api: MemoryApi, first: str, changed: str
) -> None:
    await ingest(api, "bus-1", *(NOW - m * MINUTE for m in range(1, 6)))
    await ingest(api, "bus-2", NOW - MINUTE)
    token = await pages(client, first)

    assert (await client.get(f"{first}&next_token={token}")).status_code == 200
    detail = problem(await client.get(f"{changed}&next_token={token}"), 400)
    assert "next_token" in detail


def forged(token: str, **key: Any) -> str:
    raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw["k"].update(key)
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("/locations/bus-1?limit=2", {"t": 10**40}),
        ("/locations/bus-1?limit=2", {"t": -1}),
        ("/locations/bus-1?limit=2", {"t": "soon"}),
        ("/devices?limit=1", {"after": ""}),
        ("/devices?limit=1", {"after": 5}),
        ("/locations?limit=2", {"t": 2**60}),
        ("/locations?limit=2", {"d": ""}),
    ],
)
async def test_a_tampered_token_is_a_400(
    client: Client, api: MemoryApi, url: str, key: dict[str, Any]
) -> None:
    await ingest(api, "bus-1", *(NOW - m * MINUTE for m in range(1, 6)))
    await ingest(api, "bus-2", NOW - MINUTE)
    token = await pages(client, url)

    assert "next_token" in problem(
        await client.get(f"{url}&next_token={forged(token, **key)}"), 400
    )


async def test_a_token_holds_no_table_name(client: Client, api: MemoryApi) -> None:
    await ingest(api, "bus-1", *(NOW - m * MINUTE for m in range(1, 6)))
    token = await pages(client, "/locations/bus-1?limit=2")

    decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    assert "locations" not in decoded
    assert "bus-1" not in decoded


async def test_paging_without_start_time_survives_the_retention_edge_moving(
    api: MemoryApi, clock: FakeClock
) -> None:
    # The oldest locations sit right at the retention edge.
    edge = NOW - 30 * 24 * HOUR
    await ingest(api, "bus-1", *(edge + s * 1000 for s in range(1, 6)))
    async with AsyncTestClient(app=api.app()) as client:
        token = await pages(client, "/locations/bus-1?limit=2")
        clock.advance(3_500)  # the edge passes the cursor

        response = await client.get(f"/locations/bus-1?limit=2&next_token={token}")

    assert response.status_code == 200, response.text
    assert [loc["timestamp"][-6:] for loc in response.json()["locations"]] == ["4.000Z", "5.000Z"]


# -- times ------------------------------------------------------------------------------------


async def test_epoch_seconds_and_milliseconds_both_mean_the_same_moment(
    client: Client, api: MemoryApi
) -> None:
    await ingest(api, "bus-1", NOW - 10 * MINUTE, NOW - MINUTE)
    seconds = (NOW - 5 * MINUTE) // 1000

    by_seconds = (await client.get(f"/locations/bus-1?start_time={seconds}")).json()
    by_ms = (await client.get(f"/locations/bus-1?start_time={seconds * 1000}")).json()

    assert by_seconds == by_ms
    assert len(by_seconds["locations"]) == 1


async def test_an_unencoded_plus_in_an_offset_gets_a_hint(client: Client) -> None:
    detail = problem(await client.get("/locations/bus-1?start_time=2026-11-28T12:00:00+01:00"), 400)

    assert "%2B" in detail


# -- registration and device ids ---------------------------------------------------------------


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"metadata": {"odometer": 12345678901234567890123456789012345678901}}', "odometer"),
        (b'{"metadata": {"tiny": 1e-200}}', "tiny"),
        (b'{"metadata": {"big": 1e300}}', "big"),
        (msgspec.json.encode({"metadata": nested(32)}), "32 levels"),  # with the item: 33
    ],
)
async def test_registration_values_dynamodb_would_refuse_are_a_400(
    client: Client, body: bytes, where: str
) -> None:
    response = await client.post("/devices/bus-9/register", content=body)

    assert where in problem(response, 400)


@pytest.mark.parametrize(
    "body",
    [
        b'{"metadata": {"odometer": 1e40}}',
        msgspec.json.encode({"metadata": nested(31)}),  # 32 with the item
        b'{"metadata": {"n": 10000000000000000000000000000000000000000}}',
    ],
)
async def test_registration_values_at_dynamodbs_edges_are_stored(
    client: Client, body: bytes
) -> None:
    assert (await client.post("/devices/bus-9/register", content=body)).status_code == 201


@pytest.mark.parametrize("device", ["%2E", "%2E%2E"])
async def test_device_ids_no_url_can_carry_are_a_400(client: Client, device: str) -> None:
    response = await client.post(f"/devices/{device}/register")

    assert "cannot be addressed" in problem(response, 400)


# -- the deadline -----------------------------------------------------------------------------


class SlowLocations(MemoryLocationRepository):
    async def history(self, query: Any) -> Any:
        await asyncio.sleep(60)
        raise AssertionError("never answers")


async def test_a_query_past_its_deadline_is_unavailable_with_retry_after() -> None:
    store = MemoryStore()
    from trackstore.domain import HistoryQuery
    from trackstore.memory import MemoryDeviceRepository

    service = TrackService(
        SlowLocations(store), MemoryDeviceRepository(store), FakeClock(NOW), 30, deadline_s=0.05
    )

    with pytest.raises(Error) as raised:
        await asyncio.wait_for(service.history(HistoryQuery(device_id="bus-1")), 5)

    assert raised.value.code is UNAVAILABLE
    assert raised.value.retry_after is not None
