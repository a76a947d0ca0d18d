"""The GTFS-Realtime VehiclePositions feed as a consumer sees it: decoded with MobilityData's
bindings and checked against the JSON API's view of the same snapshot, over HTTP on the
in-memory adapters with a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import msgspec
import pytest
from google.protobuf import json_format  # type: ignore[import-untyped]
from google.transit import gtfs_realtime_pb2
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.unit.memory_api import MemoryApi
from trackstore.clock import FakeClock
from trackstore.domain import StreamRecord
from trackstore.timefmt import parse_iso
from trackstore.web import gtfs_realtime

NOW = parse_iso("2026-11-28T12:00:00Z")
SECOND = 1000
MINUTE = 60 * SECOND
MAX_AGE_S = 90
FEED = "/gtfs-rt/vehicle-positions"
PROBLEM = "application/problem+json"

Client = AsyncTestClient[Litestar]
FeedMessage = gtfs_realtime_pb2.FeedMessage

_sequence = itertools.count()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def api(clock: FakeClock) -> MemoryApi:
    return MemoryApi(clock)


@pytest.fixture
async def client(api: MemoryApi) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=api.app(gtfs_max_age_s=MAX_AGE_S)) as client:
        yield client


async def ingest(api: MemoryApi, device: str, timestamp: int, **fields: Any) -> None:
    data = {"deviceId": device, "timestamp": timestamp, "latitude": 52.5, "longitude": 13.4}
    record = StreamRecord(
        data=msgspec.json.encode({**data, **fields}),
        partition_key=device,
        shard_id="shardId-000000000000",
        # Growing across calls: a record at or before a device's mark counts as applied.
        sequence_number=f"{next(_sequence):021d}",
        arrival_ms=NOW,
    )
    result = await api.service.ingest([record])
    assert not result.rejections, result.rejections


async def feed(client: Client, **params: str) -> FeedMessage:
    response = await client.get(FEED, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-protobuf"
    message = FeedMessage()
    message.ParseFromString(response.content)
    return message


def ids(message: FeedMessage) -> list[str]:
    return [entity.id for entity in message.entity]


def assert_problem(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    detail: str = response.json()["detail"]
    return detail


# -- content --------------------------------------------------------------------------------------


async def test_each_vehicle_is_what_the_device_api_shows_in_gtfs_units(
    client: Client, api: MemoryApi
) -> None:
    await ingest(api, "bus-2", NOW - 5 * SECOND, latitude=48.137154, longitude=11.576124)
    await ingest(api, "bus-1", NOW - 20 * SECOND, speed=36.0, heading=270.5)
    await ingest(
        api,
        "tram:7",
        NOW - 1_500,
        latitude=-33.8688,
        longitude=151.2093,
        speed=51.3,
        heading=0.0,
    )
    assert (await client.post("/devices/bus-1/register", json={"name": "Line 100"})).is_success
    await api.fleet.refresh()

    message = await feed(client)

    assert ids(message) == ["bus-1", "bus-2", "tram:7"]
    for entity in message.entity:
        device = (await client.get(f"/devices/{entity.id}")).json()
        location = device["lastLocation"]
        vehicle = entity.vehicle
        assert vehicle.vehicle.id == entity.id == device["deviceId"]
        if device["name"] is None:
            assert not vehicle.vehicle.HasField("label")
        else:
            assert vehicle.vehicle.label == device["name"]
        # Positions are 32-bit floats in GTFS-Realtime: about 0.5 m at these latitudes.
        assert vehicle.position.latitude == pytest.approx(location["latitude"], abs=1e-5)
        assert vehicle.position.longitude == pytest.approx(location["longitude"], abs=1e-5)
        assert vehicle.timestamp == parse_iso(location["timestamp"]) // 1000
        if "heading" in location:
            assert vehicle.position.bearing == pytest.approx(location["heading"])
        else:
            assert not vehicle.position.HasField("bearing")
        if "speed" in location:
            assert vehicle.position.speed == pytest.approx(location["speed"] / 3.6)
        else:
            assert not vehicle.position.HasField("speed")
        assert not vehicle.HasField("trip")
    assert message.entity[0].vehicle.position.speed == pytest.approx(10.0)  # 36 km/h


async def test_the_header_is_a_full_dataset_of_version_2_at_the_snapshots_time(
    client: Client, api: MemoryApi, clock: FakeClock
) -> None:
    await ingest(api, "bus-1", NOW - SECOND)
    clock.advance(1_700)  # the header is in whole seconds, cut down
    await api.fleet.refresh()

    header = (await feed(client)).header

    assert header.gtfs_realtime_version == "2.0"
    assert header.incrementality == gtfs_realtime_pb2.FeedHeader.FULL_DATASET
    assert header.timestamp == (NOW + 1_700) // 1000


async def test_an_empty_fleet_is_a_valid_feed_without_entities(
    client: Client, api: MemoryApi
) -> None:
    await api.fleet.refresh()

    message = await feed(client)

    assert message.header.timestamp == NOW // 1000
    assert len(message.entity) == 0


async def test_devices_not_heard_from_within_the_max_age_are_left_out(
    client: Client, api: MemoryApi
) -> None:
    await ingest(api, "at-the-limit", NOW - MAX_AGE_S * SECOND)
    await ingest(api, "just-past-it", NOW - MAX_AGE_S * SECOND - 1)
    await ingest(api, "an-hour-ago", NOW - 60 * MINUTE)
    assert (await client.post("/devices/never-reported/register")).is_success
    await api.fleet.refresh()

    assert ids(await feed(client)) == ["at-the-limit"]


async def test_the_max_age_counts_from_the_snapshot_not_from_the_request(
    client: Client, api: MemoryApi, clock: FakeClock
) -> None:
    await ingest(api, "bus-1", NOW - 30 * SECOND)
    await api.fleet.refresh()
    clock.advance(10 * MINUTE)  # no refresh since: the feed is still that snapshot's

    assert ids(await feed(client)) == ["bus-1"]

    await api.fleet.refresh()
    assert ids(await feed(client)) == []


async def test_no_timestamp_is_later_than_the_header_and_fixes_far_ahead_are_left_out(
    client: Client, api: MemoryApi
) -> None:
    await ingest(api, "a-bit-ahead", NOW + 10 * SECOND)  # written while the snapshot was read
    await ingest(api, "far-ahead", NOW + 4 * MINUTE)  # a clock that is wrong
    await ingest(api, "on-time", NOW - SECOND)
    await api.fleet.refresh()

    message = await feed(client)

    assert ids(message) == ["a-bit-ahead", "on-time"]
    assert message.header.timestamp <= NOW // 1000  # not in the future
    assert message.entity[0].vehicle.timestamp == message.header.timestamp
    assert all(e.vehicle.timestamp <= message.header.timestamp for e in message.entity)


async def test_entity_and_vehicle_ids_are_unique_and_stable_across_snapshots(
    client: Client, api: MemoryApi, clock: FakeClock
) -> None:
    devices = [f"bus-{n:03d}" for n in range(40)]
    for device in reversed(devices):
        await ingest(api, device, NOW - SECOND)
    await api.fleet.refresh()
    first = await feed(client)
    for device in devices[::3]:
        await ingest(api, device, NOW + SECOND, latitude=52.6)
    clock.advance(5 * SECOND)
    await api.fleet.refresh()
    second = await feed(client)

    for message in (first, second):
        assert ids(message) == devices  # in device id order
        assert [e.vehicle.vehicle.id for e in message.entity] == devices
    assert second.entity[0].vehicle.position.latitude == pytest.approx(52.6)
    assert second.entity[1].vehicle.position.latitude == pytest.approx(52.5)


async def test_speed_is_never_negative_and_zero_is_kept(client: Client, api: MemoryApi) -> None:
    await ingest(api, "standing", NOW - SECOND, speed=0.0, heading=0.0)
    await api.fleet.refresh()

    position = (await feed(client)).entity[0].vehicle.position

    assert position.HasField("speed")
    assert position.speed == 0.0
    assert position.HasField("bearing")
    assert position.bearing == 0.0


# -- the trip -------------------------------------------------------------------------------------

TRIP = {
    "tripId": "T-1042",
    "routeId": "100",
    "directionId": 1,
    "startDate": "20261128",
    "startTime": "25:10:00",  # after midnight, on the service day that started the 28th
}


async def test_the_trip_comes_from_the_locations_attributes(client: Client, api: MemoryApi) -> None:
    await ingest(api, "bus-1", NOW - SECOND, attributes=TRIP)
    await api.fleet.refresh()

    trip = (await feed(client)).entity[0].vehicle.trip

    assert trip.trip_id == "T-1042"
    assert trip.route_id == "100"
    assert trip.direction_id == 1
    assert trip.start_date == "20261128"
    assert trip.start_time == "25:10:00"
    assert not trip.HasField("schedule_relationship")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("tripId", ""),
        ("tripId", "   "),
        ("tripId", 1042),
        ("directionId", 2),
        ("directionId", -1),
        ("directionId", True),
        ("directionId", "1"),
        ("directionId", 1.5),
        ("startDate", "2026-11-28"),
        ("startDate", "20261301"),
        ("startDate", "20260230"),
        ("startDate", 20261128),
        ("startDate", "\uff12\uff10\uff12\uff16\uff11\uff11\uff12\uff18"),  # fullwidth digits
        ("startTime", "9:10:00"),
        ("startTime", "09:60:00"),
        ("startTime", "09:10"),
        ("startTime", "09:10:00.5"),
        ("startTime", None),
    ],
)
async def test_an_attribute_that_does_not_fit_the_spec_is_left_out_of_the_trip(
    client: Client, api: MemoryApi, name: str, value: object
) -> None:
    await ingest(api, "bus-1", NOW - SECOND, attributes={**TRIP, name: value})
    await api.fleet.refresh()

    trip = (await feed(client)).entity[0].vehicle.trip

    field = {
        "tripId": "trip_id",
        "directionId": "direction_id",
        "startDate": "start_date",
        "startTime": "start_time",
    }[name]
    assert not trip.HasField(field)
    assert trip.route_id == "100"  # the rest is kept


@pytest.mark.parametrize(
    "attributes",
    [
        {"routeId": "100"},
        {"routeId": "100", "directionId": 0},
        {"tripId": "T-1"},
        {"tripId": "T-1", "startTime": "07:00:00"},
    ],
)
async def test_a_trip_or_route_id_alone_makes_a_trip(
    client: Client, api: MemoryApi, attributes: dict[str, object]
) -> None:
    await ingest(api, "bus-1", NOW - SECOND, attributes=attributes)
    await api.fleet.refresh()

    vehicle = (await feed(client)).entity[0].vehicle

    assert vehicle.HasField("trip")
    assert vehicle.trip.trip_id == attributes.get("tripId", "")
    assert vehicle.trip.route_id == attributes.get("routeId", "")


@pytest.mark.parametrize(
    "attributes",
    [
        {"directionId": 0, "startDate": "20261128", "startTime": "07:00:00"},
        {"tripId": "", "routeId": 100},
        {"line": "100", "run": 7},
    ],
)
async def test_without_a_usable_trip_or_route_id_there_is_no_trip(
    client: Client, api: MemoryApi, attributes: dict[str, object]
) -> None:
    await ingest(api, "bus-1", NOW - SECOND, attributes=attributes)
    await api.fleet.refresh()

    vehicle = (await feed(client)).entity[0].vehicle

    assert not vehicle.HasField("trip")


async def test_other_and_legacy_attributes_are_not_published(
    client: Client, api: MemoryApi
) -> None:
    await ingest(
        api,
        "bus-1",
        NOW - SECOND,
        region="north",
        quality_score=0.9,
        attributes={"driver": "Jane Doe", **TRIP},
        altitude=35.0,
        battery=80.0,
    )
    await api.fleet.refresh()

    text = (await client.get(FEED, params={"format": "json"})).text
    raw = (await client.get(FEED)).content

    for secret in ("north", "Jane Doe", "driver", "region", "quality", "battery", "altitude"):
        assert secret not in text
        assert secret.encode() not in raw


# -- formats --------------------------------------------------------------------------------------


async def test_json_is_the_same_feed_message_with_the_specs_field_names(
    client: Client, api: MemoryApi
) -> None:
    await ingest(api, "bus-1", NOW - SECOND, speed=20.0, heading=90.0, attributes=TRIP)
    await ingest(api, "bus-2", NOW - 2 * SECOND)
    await api.fleet.refresh()

    binary = await feed(client)
    response = await client.get(FEED, params={"format": "json"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert json_format.Parse(response.text, FeedMessage()) == binary
    body = response.json()
    assert body == json_format.MessageToDict(binary, preserving_proto_field_name=True)
    assert body["header"]["gtfs_realtime_version"] == "2.0"
    assert body["header"]["incrementality"] == "FULL_DATASET"
    assert body["entity"][0]["vehicle"]["trip"]["start_date"] == "20261128"
    assert await feed(client, format="protobuf") == binary


@pytest.mark.parametrize("value", ["xml", "JSON", "", "pb", "x" * 500])
async def test_another_format_is_a_400_naming_the_choices(client: Client, value: str) -> None:
    response = await client.get(FEED, params={"format": value})

    detail = assert_problem(response, 400)
    assert "'protobuf'" in detail
    assert "'json'" in detail
    assert len(detail) < 200


# -- loading --------------------------------------------------------------------------------------


@pytest.fixture
async def loading(api: MemoryApi) -> AsyncIterator[Client]:
    """A client of an app whose snapshot could not load at start: the store was down."""
    await ingest(api, "bus-1", NOW - SECOND)
    api.store.available = False
    async with AsyncTestClient(app=api.app(gtfs_max_age_s=MAX_AGE_S)) as client:
        api.store.available = True
        yield client


async def test_the_feed_is_a_503_until_the_snapshot_has_loaded(
    loading: Client, api: MemoryApi
) -> None:
    response = await loading.get(FEED)

    assert_problem(response, 503)
    assert int(response.headers["retry-after"]) >= 1
    await api.fleet.refresh()
    assert ids(await feed(loading)) == ["bus-1"]


async def test_a_bad_format_is_a_400_even_while_loading(loading: Client) -> None:
    assert_problem(await loading.get(FEED, params={"format": "xml"}), 400)


# -- caching and validators -----------------------------------------------------------------------


async def test_each_snapshot_version_is_encoded_once_and_json_only_on_demand(
    client: Client, api: MemoryApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[int] = []
    renders: list[int] = []
    build = gtfs_realtime.build_feed
    render = json_format.MessageToJson

    def counted_build(*args: Any) -> Any:
        builds.append(1)
        return build(*args)

    def counted_render(*args: Any, **kwargs: Any) -> Any:
        renders.append(1)
        return render(*args, **kwargs)

    monkeypatch.setattr(gtfs_realtime, "build_feed", counted_build)
    monkeypatch.setattr(json_format, "MessageToJson", counted_render)
    await ingest(api, "bus-1", NOW - SECOND)
    await api.fleet.refresh()

    for _ in range(3):
        await feed(client)
    assert (len(builds), len(renders)) == (1, 0)
    for _ in range(3):
        assert (await client.get(FEED, params={"format": "json"})).status_code == 200
    assert (len(builds), len(renders)) == (1, 1)

    await api.fleet.refresh()
    together = [client.get(FEED, params={"format": "json"}) for _ in range(5)]
    assert all(r.status_code == 200 for r in await asyncio.gather(*together))
    assert (len(builds), len(renders)) == (2, 2)


async def test_validators_name_the_content_and_the_snapshots_time(
    client: Client, api: MemoryApi, clock: FakeClock
) -> None:
    await ingest(api, "bus-1", NOW - SECOND)
    clock.advance(400)
    await api.fleet.refresh()

    response = await client.get(FEED)
    again = await client.get(FEED)

    etag = response.headers["etag"]
    assert etag.startswith('"')  # strong
    assert etag.endswith('"')
    assert again.headers["etag"] == etag
    assert again.content == response.content
    assert response.headers["last-modified"] == formatdate(NOW // 1000, usegmt=True)
    assert response.headers["last-modified"] == "Sat, 28 Nov 2026 12:00:00 GMT"
    cache_control = response.headers["cache-control"]
    assert cache_control == "no-cache" or int(cache_control.split("=")[1]) <= 5


async def test_if_none_match_with_the_current_etag_is_a_304_without_a_body(
    client: Client, api: MemoryApi
) -> None:
    await ingest(api, "bus-1", NOW - SECOND)
    await api.fleet.refresh()
    first = await client.get(FEED)
    etag = first.headers["etag"]

    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = await client.get(FEED, headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert response.headers["last-modified"] == first.headers["last-modified"]
        assert "cache-control" in response.headers
    for header in ('"other"', etag[:-2] + '"', "", "garbage"):
        response = await client.get(FEED, headers={"If-None-Match": header})
        assert response.status_code == 200, header
        assert response.content == first.content


async def test_a_refresh_that_changes_a_device_changes_the_etag(
    client: Client, api: MemoryApi, clock: FakeClock
) -> None:
    await ingest(api, "bus-1", NOW - SECOND)
    await api.fleet.refresh()
    etag = (await client.get(FEED)).headers["etag"]
    await api.fleet.refresh()  # nothing changed, in the same second: the same bytes

    assert (await client.get(FEED, headers={"If-None-Match": etag})).status_code == 304

    await ingest(api, "bus-1", NOW, latitude=52.51)
    await api.fleet.refresh()
    response = await client.get(FEED, headers={"If-None-Match": etag})

    assert response.status_code == 200
    assert response.headers["etag"] != etag
    clock.advance(5 * SECOND)  # a later snapshot: a new header timestamp, so a new ETag too
    await api.fleet.refresh()
    later = await client.get(FEED, headers={"If-None-Match": response.headers["etag"]})
    assert later.status_code == 200
    assert later.headers["last-modified"] == formatdate(NOW // 1000 + 5, usegmt=True)


async def test_json_has_its_own_etag(client: Client, api: MemoryApi) -> None:
    await ingest(api, "bus-1", NOW - SECOND)
    await api.fleet.refresh()
    binary = await client.get(FEED)
    text = await client.get(FEED, params={"format": "json"})

    assert binary.headers["etag"] != text.headers["etag"]
    cached = await client.get(
        FEED, params={"format": "json"}, headers={"If-None-Match": text.headers["etag"]}
    )
    assert cached.status_code == 304
    crossed = await client.get(
        FEED, params={"format": "json"}, headers={"If-None-Match": binary.headers["etag"]}
    )
    assert crossed.status_code == 200
    assert json.loads(crossed.content) == text.json()


async def test_if_modified_since_counts_only_without_if_none_match(
    client: Client, api: MemoryApi
) -> None:
    await ingest(api, "bus-1", NOW - SECOND)
    await api.fleet.refresh()
    modified = (await client.get(FEED)).headers["last-modified"]

    def status_with(**headers: str) -> Any:
        return client.get(FEED, headers=headers)

    assert (await status_with(**{"If-Modified-Since": modified})).status_code == 304
    later = formatdate(NOW // 1000 + 60, usegmt=True)
    assert (await status_with(**{"If-Modified-Since": later})).status_code == 304
    earlier = formatdate(NOW // 1000 - 1, usegmt=True)
    assert (await status_with(**{"If-Modified-Since": earlier})).status_code == 200
    for bad in ("yesterday", "", "Sat, 99 Nov 2026 12:00:00 GMT"):
        assert (await status_with(**{"If-Modified-Since": bad})).status_code == 200, bad
    for obsolete in ("Saturday, 28-Nov-26 12:00:00 GMT", "Sat Nov 28 12:00:00 2026"):
        assert (await status_with(**{"If-Modified-Since": obsolete})).status_code == 304, obsolete
    both = {"If-Modified-Since": modified, "If-None-Match": '"other"'}
    assert (await status_with(**both)).status_code == 200


async def test_head_has_the_validators_and_no_body(client: Client, api: MemoryApi) -> None:
    await ingest(api, "bus-1", NOW - SECOND)
    await api.fleet.refresh()

    got = await client.get(FEED)
    head = await client.head(FEED)

    assert head.status_code == 200
    assert head.content == b""
    for name in ("etag", "last-modified", "content-type", "content-length"):
        assert head.headers[name] == got.headers[name], name


# -- documentation --------------------------------------------------------------------------------


async def test_the_openapi_document_describes_both_renderings_and_the_errors(
    client: Client,
) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    operation = document["paths"][FEED]["get"]

    assert operation["tags"] == ["fleet"]
    assert operation["summary"]
    assert set(operation["responses"]["200"]["content"]) == {
        "application/x-protobuf",
        "application/json",
    }
    assert {"304", "400", "503"} <= set(operation["responses"])
    assert operation["responses"]["503"]["content"].keys() == {PROBLEM}
    query = [p["name"] for p in operation["parameters"] if p["in"] == "query"]
    assert query == ["format"]
