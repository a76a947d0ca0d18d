"""The fleet over HTTP (Litestar's test client, memory adapters): `GET /devices` with area and
status filters, `POST /devices/search` with a GeoJSON polygon, and the live stream's events and
key handling."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.helpers import MINUTE_MS, NOW_MS, activity, location
from tests.unit.memory_api import MemoryApi
from trackstore.clock import FakeClock
from trackstore.geo import parse_bbox
from trackstore.memory import MemoryDeviceRepository
from trackstore.snapshot import FleetFilter
from trackstore.web.auth import key_digest
from trackstore.web.fleet_stream import FleetEvents

Client = AsyncTestClient[Litestar]
KEY = "a-key-of-sixteen-chars"
PROBLEM = "application/problem+json"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW_MS)


@pytest.fixture
def api(clock: FakeClock) -> MemoryApi:
    return MemoryApi(clock)


@pytest.fixture
def devices(api: MemoryApi, clock: FakeClock) -> MemoryDeviceRepository:
    return MemoryDeviceRepository(api.store, clock)


@pytest.fixture
async def client(api: MemoryApi) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=api.app()) as client:
        yield client


async def move(
    devices: MemoryDeviceRepository, device_id: str, lat: float, lon: float, at_ms: int
) -> None:
    marks = await devices.marks([device_id])
    newest = location(device_id, at_ms, latitude=lat, longitude=lon, speed=36.0, heading=90.0)
    await devices.apply_activity([activity(device_id, marks.get(device_id), newest=newest)])


async def city(api: MemoryApi, devices: MemoryDeviceRepository, clock: FakeClock) -> None:
    """Amsterdam's buses bus-00..bus-08 on a 3 x 3 grid 0.01 degrees apart from (52.37, 4.89),
    a quiet one, one only registered; and two ferries either side of the antimeridian."""
    for i in range(9):
        await move(devices, f"bus-{i:02d}", 52.37 + (i // 3) / 100, 4.89 + (i % 3) / 100, clock())
    await move(devices, "bus-quiet", 52.38, 4.90, clock() - 30 * MINUTE_MS)
    await devices.register("bus-new", "New bus", None, clock())
    await move(devices, "ferry-east", -17.0, 179.5, clock())
    await move(devices, "ferry-west", -17.0, -179.5, clock())
    await api.fleet.refresh()


def listed(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [d["deviceId"] for d in response.json()["devices"]]


async def test_bbox_status_and_near_filter_the_listing(
    client: Client, api: MemoryApi, devices: MemoryDeviceRepository, clock: FakeClock
) -> None:
    await city(api, devices, clock)
    box = "4.885,52.365,4.905,52.385"  # the grid's lower-left 2 x 2, and the quiet bus
    assert listed(await client.get("/devices", params={"bbox": box})) == [
        "bus-00",
        "bus-01",
        "bus-03",
        "bus-04",
        "bus-quiet",
    ]
    assert listed(await client.get("/devices", params={"bbox": box, "status": "active"})) == [
        "bus-00",
        "bus-01",
        "bus-03",
        "bus-04",
    ]
    assert listed(await client.get("/devices", params={"status": "registered"})) == ["bus-new"]
    crossing = await client.get("/devices", params={"bbox": "179,-18,-179,-16"})
    assert listed(crossing) == ["ferry-east", "ferry-west"]

    near = await client.get("/devices", params={"near": "52.38,4.90", "radius_m": "800"})
    found = near.json()["devices"]
    # Both at the centre first (by id among equals); then 0.01 degree of longitude (679 m)
    # away; 0.01 degree of latitude (1,112 m) is too far.
    # Equal distances (as shown, to the decimetre) by id, as a client sorting them would find.
    assert [(d["distanceM"], d["deviceId"]) for d in found] == [
        (0.0, "bus-04"),
        (0.0, "bus-quiet"),
        (678.8, "bus-03"),
        (678.8, "bus-05"),
    ]
    unfiltered = await client.get("/devices")
    assert all("distanceM" not in d for d in unfiltered.json()["devices"])
    assert len(unfiltered.json()["devices"]) == 13


async def test_filtered_pages_follow_next_token_and_keep_their_query(
    client: Client, api: MemoryApi, devices: MemoryDeviceRepository, clock: FakeClock
) -> None:
    await city(api, devices, clock)
    query = {"bbox": "4,52,5,53", "limit": "4"}
    seen: list[str] = []
    token = None
    for _ in range(5):
        page = await client.get("/devices", params=query | ({"next_token": token} if token else {}))
        seen += listed(page)
        token = page.json()["nextToken"]
        if token is None:
            break
    assert seen == [f"bus-{i:02d}" for i in range(9)] + ["bus-quiet"]
    first = await client.get("/devices", params=query)
    other = await client.get(
        "/devices",
        params={"bbox": "4,52,5,54", "limit": "4", "next_token": first.json()["nextToken"]},
    )
    assert other.status_code == 400
    assert "another query" in other.json()["detail"]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"bbox": "1,2,3"}, "bbox"),
        ({"bbox": "4,53,5,52"}, "bbox"),
        ({"bbox": "4,52,5,nan"}, "bbox"),
        ({"near": "52,4"}, "radius_m"),
        ({"radius_m": "100"}, "near"),
        ({"near": "91,4", "radius_m": "100"}, "near"),
        ({"near": "52,4", "radius_m": "-1"}, "radius_m"),
        ({"status": "sleeping"}, "status"),
        ({"bbox": "4,52,5,53", "limit": "0"}, "limit"),
        ({"bbox": "4,52,5,53", "next_token": "garbage"}, "next_token"),
    ],
)
async def test_bad_filters_are_400s_that_say_what_to_fix(
    client: Client, api: MemoryApi, params: dict[str, str], says: str
) -> None:
    await api.fleet.refresh()
    response = await client.get("/devices", params=params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert says in response.json()["detail"]


def square(lon: float, lat: float, size: float) -> list[list[float]]:
    return [
        [lon, lat],
        [lon + size, lat],
        [lon + size, lat + size],
        [lon, lat + size],
        [lon, lat],
    ]


async def test_search_by_polygon_with_a_hole_and_across_the_antimeridian(
    client: Client, api: MemoryApi, devices: MemoryDeviceRepository, clock: FakeClock
) -> None:
    await city(api, devices, clock)
    ring = square(4.885, 52.365, 0.03)  # the whole grid
    hole = square(4.895, 52.375, 0.01)  # around bus-04 and the quiet bus
    polygon = {"type": "Polygon", "coordinates": [ring, hole]}
    found = await client.post("/devices/search", json=polygon)
    assert listed(found) == [f"bus-{i:02d}" for i in range(9) if i != 4]
    active = await client.post("/devices/search", json=polygon, params={"status": "inactive"})
    assert listed(active) == []

    pacific = [[179.0, -18.0], [-179.0, -18.0], [-179.0, -16.0], [179.0, -16.0], [179.0, -18.0]]
    feature = {
        "type": "Feature",
        "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [pacific]},
    }
    assert listed(await client.post("/devices/search", json=feature)) == [
        "ferry-east",
        "ferry-west",
    ]
    both = {"type": "MultiPolygon", "coordinates": [[ring], [pacific]]}
    seen: list[str] = []
    token = None
    for _ in range(4):
        paged = await client.post(
            "/devices/search",
            json=both,
            params={"limit": "5"} | ({"next_token": token} if token else {}),
        )
        seen += listed(paged)
        if (token := paged.json()["nextToken"]) is None:
            break
        first_token = token
    assert len(seen) == 12
    assert len(set(seen)) == 12
    token = first_token
    moved = await client.post("/devices/search", json=polygon, params={"next_token": token})
    assert moved.status_code == 400, "a token belongs to its polygon"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"not json", "JSON"),
        (json.dumps({"type": "Point", "coordinates": [4, 52]}).encode(), "Polygon"),
        (
            json.dumps({"type": "Polygon", "coordinates": [[[4, 52], [5, 52], [5, 53]]]}).encode(),
            "4",
        ),
        (
            json.dumps(
                {"type": "Polygon", "coordinates": [[[4, 52], [5, 52], [5, 53], [4, 53]]]}
            ).encode(),
            "closed",
        ),
        (
            json.dumps(
                {
                    "type": "Polygon",
                    "coordinates": [[[i / 1000, 0] for i in range(1001)] + [[0, 1], [0, 0]]],
                }
            ).encode(),
            "1000",
        ),
    ],
)
async def test_bad_polygons_are_400s_that_say_what_to_fix(
    client: Client, api: MemoryApi, body: bytes, says: str
) -> None:
    await api.fleet.refresh()
    response = await client.post(
        "/devices/search", content=body, headers={"content-type": "application/geo+json"}
    )
    assert response.status_code == 400, response.text
    assert says.lower() in response.json()["detail"].lower().replace(",", "")


async def test_a_huge_search_body_is_refused_unread(client: Client, api: MemoryApi) -> None:
    await api.fleet.refresh()
    response = await client.post("/devices/search", content=b" " * (1024 * 1024))
    assert response.status_code == 413


async def test_before_the_first_read_fleet_queries_are_503s(api: MemoryApi) -> None:
    api.store.available = False  # the first read at start fails
    async with AsyncTestClient(app=api.app()) as client:
        response = await client.get("/devices", params={"status": "active"})
        assert response.status_code == 503
        assert response.headers["retry-after"]
        api.store.available = True
        await api.fleet.refresh()
        assert (await client.get("/devices", params={"status": "active"})).status_code == 200


# -- the live stream ------------------------------------------------------------------------------


def parse(chunk: bytes) -> list[dict[str, str]]:
    events = []
    for block in chunk.decode().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            fields[name] = value
        if fields:
            events.append(fields)
    return events


async def next_event(stream: AsyncIterator[bytes], unread: list[dict[str, str]]) -> dict[str, str]:
    """The stream's next event (or comment), however the server groups events into chunks;
    `unread` keeps the rest of the last chunk for the next call."""
    while not unread:
        chunk = await asyncio.wait_for(anext(stream), 2)
        unread.extend(e for e in parse(chunk) if "event" in e or "" in e)
    return unread.pop(0)


async def test_the_stream_sends_the_state_then_changes_then_leaves(
    api: MemoryApi, devices: MemoryDeviceRepository, clock: FakeClock
) -> None:
    await city(api, devices, clock)
    events = FleetEvents(api.fleet, heartbeat_s=60)
    box = FleetFilter(bbox=parse_bbox("4.885,52.365,4.905,52.385"))
    stream = events.stream(box)
    assert (await anext(stream)).startswith(b"retry: ")
    unread: list[dict[str, str]] = []
    first = await next_event(stream, unread)
    assert first["event"] == "snapshot"
    assert first["id"] == str(api.fleet.version)
    shown = json.loads(first["data"])["devices"]
    assert [d["deviceId"] for d in shown] == ["bus-00", "bus-01", "bus-03", "bus-04", "bus-quiet"]

    clock.advance(10_000)
    await move(devices, "bus-00", 52.371, 4.891, clock())  # moves within the box
    await move(devices, "bus-08", 52.391, 4.911, clock())  # moves, outside it
    await move(devices, "bus-01", 52.5, 4.5, clock())  # leaves it
    await api.fleet.refresh()
    got = [await next_event(stream, unread), await next_event(stream, unread)]
    assert got[0]["event"] == "position"
    assert json.loads(got[0]["data"])["deviceId"] == "bus-00"
    assert json.loads(got[0]["data"])["lastLocation"]["latitude"] == 52.371
    assert got[1]["event"] == "leave"
    assert json.loads(got[1]["data"]) == {"deviceId": "bus-01"}
    assert got[0]["id"] == got[1]["id"] == str(api.fleet.version)
    await stream.aclose()


async def test_a_quiet_stream_sends_heartbeats_and_ends_when_the_server_stops(
    api: MemoryApi,
) -> None:
    await api.fleet.refresh()
    stream = FleetEvents(api.fleet, heartbeat_s=0.01).stream(None)
    await anext(stream)  # retry
    assert (await anext(stream)).startswith(b"id: ")  # the snapshot
    assert await anext(stream) == b": heartbeat\n\n"
    api.fleet.close()
    rest = [chunk async for chunk in stream]  # ends, instead of waiting for ever
    assert all(chunk == b": heartbeat\n\n" for chunk in rest)


async def test_subscribers_share_the_encoded_events(
    api: MemoryApi, devices: MemoryDeviceRepository, clock: FakeClock
) -> None:
    await city(api, devices, clock)
    events = FleetEvents(api.fleet, heartbeat_s=60)
    streams = [events.stream(None) for _ in range(3)]
    snapshots = [[await anext(s), await anext(s)][1] for s in streams]
    assert snapshots[0] is snapshots[1] is snapshots[2], "one encoding for everyone"
    clock.advance(10_000)
    await move(devices, "bus-00", 52.371, 4.891, clock())
    await api.fleet.refresh()
    changes = [await anext(s) for s in streams]
    assert changes[0] is changes[1] is changes[2]


async def test_the_stream_takes_the_key_in_the_query_for_eventsource(api: MemoryApi) -> None:
    app = api.app(api_keys=[key_digest(KEY)])
    async with AsyncTestClient(app=app) as client:
        # A bad filter answers at once: 400 means the key was taken, 401 that it was not.
        bad = {"status": "bogus"}
        assert (await client.get("/fleet/stream", params=bad)).status_code == 401
        assert (
            await client.get("/fleet/stream", params=bad | {"access_token": "wrong-key-of-16chars"})
        ).status_code == 401
        assert (
            await client.get("/fleet/stream", params=bad | {"access_token": KEY})
        ).status_code == 400
        assert (
            await client.get(
                "/fleet/stream", params=bad, headers={"Authorization": f"Bearer {KEY}"}
            )
        ).status_code == 400
        # Only there: a key in the query of any other route is refused.
        assert (await client.get("/devices", params={"access_token": KEY})).status_code == 401


async def test_a_filtered_stream_that_matches_nothing_still_gets_heartbeats(
    api: MemoryApi, devices: MemoryDeviceRepository, clock: FakeClock
) -> None:
    """Refreshes come more often than the heartbeat, but bring this subscriber nothing: a
    proxy must still see bytes within the heartbeat interval, or it closes the connection."""
    await city(api, devices, clock)
    stream = FleetEvents(api.fleet, heartbeat_s=0.2).stream(
        FleetFilter(device_ids=frozenset({"x"}))
    )
    await anext(stream)  # retry
    await anext(stream)  # the (empty) snapshot

    async def refresh_often() -> None:
        for step in range(40):
            clock.advance(1000)
            await move(devices, "bus-00", 52.37 + step / 1e4, 4.89, clock())
            await api.fleet.refresh()
            await asyncio.sleep(0.02)

    refreshing = asyncio.create_task(refresh_often())
    assert await asyncio.wait_for(anext(stream), 0.6) == b": heartbeat\n\n"
    refreshing.cancel()
