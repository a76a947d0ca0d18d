"""The live fleet on the real DynamoDB adapters: `trackstore serve` on dynalite, its snapshot kept
fresh from the Devices table's change index while devices move (written in-process by the
consumer's own write path), seen through area queries, the live stream and the GTFS-RT feed.

Its AWS call counters show that after the first read, refreshes query the index and never scan
the table again."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.transit import gtfs_realtime_pb2
from prometheus_client.parser import text_string_to_metric_families

from tests.aws_emulators import DUMMY_CREDENTIALS
from tests.helpers import activity
from tests.integration.test_serve_dynamodb import Server, running_server, stop_with_sigterm
from trackstore.clock import wall_clock_ms
from trackstore.domain import Location
from trackstore.dynamodb import DynamoDeviceRepository, dynamodb_client
from trackstore.dynamodb.tables import devices_table, ensure_table, locations_table

pytestmark = pytest.mark.integration

DEVICES = [f"bus-{n:02d}" for n in range(30)]
CENTRE = (52.37, 4.90)
REFRESH_S = 1


def place(n: int, moved: int = 0) -> tuple[float, float]:
    """Device n's position: on a line going east, 0.001 degrees apart; `moved` steps north."""
    return CENTRE[0] + moved * 0.01, CENTRE[1] + n * 0.001


@pytest.fixture
def env(dynalite_endpoint: str, tmp_path: Path) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        **DUMMY_CREDENTIALS,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_REGION": "us-east-1",
        "TRACKSTORE_BACKEND": "aws",
        "AWS_ENDPOINT_URL": dynalite_endpoint,
        "DEVICE_TABLE_NAME": f"live-devices-{suffix}",
        "LOCATION_TABLE_NAME": f"live-locations-{suffix}",
        "FLEET_REFRESH_SECONDS": str(REFRESH_S),
        "LOG_LEVEL": "WARNING",
    }


async def move_devices(env: dict[str, str], moves: dict[str, tuple[float, float]]) -> None:
    """What the consumer does for a batch: one conditional update per device."""
    async with dynamodb_client("us-east-1", endpoint_url=env["AWS_ENDPOINT_URL"]) as client:
        devices = DynamoDeviceRepository(client, env["DEVICE_TABLE_NAME"])
        marks = await devices.marks(list(moves))
        now = wall_clock_ms()
        await devices.apply_activity(
            [
                activity(
                    device_id,
                    marks.get(device_id),
                    newest=Location(
                        device_id=device_id,
                        timestamp=now,
                        latitude=lat,
                        longitude=lon,
                        speed=36.0,
                        heading=0.0,
                        received_at=now,
                        attributes={"routeId": "R1", "tripId": f"R1-{device_id}"},
                    ),
                    added=1,
                )
                for device_id, (lat, lon) in moves.items()
            ]
        )


async def create_tables(env: dict[str, str]) -> None:
    async with dynamodb_client("us-east-1", endpoint_url=env["AWS_ENDPOINT_URL"]) as client:
        await ensure_table(client, devices_table(env["DEVICE_TABLE_NAME"]))
        await ensure_table(client, locations_table(env["LOCATION_TABLE_NAME"]))


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    asyncio.run(create_tables(env))
    asyncio.run(move_devices(env, {d: place(n) for n, d in enumerate(DEVICES)}))
    with running_server(env, tmp_path, "serve") as server:
        assert server.get_when_up("/health/live").status_code == 200
        yield server


def dynamodb_calls(server: Server) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    calls: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "trackstore_aws_calls_total"
                and sample.labels["service"] == "DynamoDB"
            ):
                operation = sample.labels["operation"]
                calls[operation] = calls.get(operation, 0.0) + sample.value
    return calls


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


def listed(server: Server, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.url}/devices", params=params, timeout=10)
    assert response.status_code == 200, response.text
    devices: list[dict[str, Any]] = response.json()["devices"]
    return devices


def test_the_snapshot_follows_the_table_through_its_change_index(
    env: dict[str, str], server: Server
) -> None:
    box = "4.8995,52.3695,4.9105,52.3705"  # the first eleven devices, where they start
    assert [d["deviceId"] for d in listed(server, bbox=box)] == DEVICES[:11]
    after_start = dynamodb_calls(server)
    assert after_start.get("Scan", 0) >= 1, after_start  # the full read at start

    with httpx.stream(
        "GET", f"{server.url}/fleet/stream", params={"bbox": box}, timeout=30
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        events = sse_events(lines)
        first = next(events)
        assert first["event"] == "snapshot"
        shown = json.loads(first["data"])["devices"]
        assert [d["deviceId"] for d in shown] == DEVICES[:11]

        # Three devices move: two leave the box northwards, one stays in it.
        asyncio.run(
            move_devices(env, {"bus-01": place(1, 1), "bus-02": place(2, 1), "bus-03": place(3)})
        )
        got: dict[str, str] = {}
        deadline = time.monotonic() + 10 * REFRESH_S + 5
        while len(got) < 3:
            assert time.monotonic() < deadline, got
            event = next(events)
            if event.get("event") in {"position", "leave"}:
                got[json.loads(event["data"])["deviceId"]] = event["event"]
        assert got == {"bus-01": "leave", "bus-02": "leave", "bus-03": "position"}

    moved = wait_for(
        lambda: (
            [d["deviceId"] for d in listed(server, bbox=box)]
            == [d for d in DEVICES[:11] if d not in {"bus-01", "bus-02"}]
        ),
        10,
        "the area query to follow the moves",
    )
    assert moved
    near = listed(server, near=f"{place(1, 1)[0]},{place(1, 1)[1]}", radius_m="50")
    assert [(d["deviceId"], d["distanceM"]) for d in near] == [("bus-01", 0.0)]

    feed = gtfs_realtime_pb2.FeedMessage()
    feed.ParseFromString(httpx.get(f"{server.url}/gtfs-rt/vehicle-positions", timeout=10).content)
    entities = {e.vehicle.vehicle.id: e.vehicle for e in feed.entity}
    assert set(entities) == set(DEVICES)
    assert round(entities["bus-01"].position.latitude, 4) == round(place(1, 1)[0], 4)
    assert entities["bus-01"].position.speed == pytest.approx(10.0)  # 36 km/h
    assert entities["bus-01"].trip.route_id == "R1"

    # A few seconds of refreshes: each queried the index; none scanned the table again.
    time.sleep(3 * REFRESH_S)
    later = dynamodb_calls(server)
    assert later.get("Scan", 0) == after_start.get("Scan", 0), (after_start, later)
    assert later.get("Query", 0) > after_start.get("Query", 0) + 16, (after_start, later)
    stop_with_sigterm(server)


def test_a_stream_open_when_serve_stops_ends_and_serve_exits_cleanly(
    env: dict[str, str], server: Server
) -> None:
    with httpx.stream("GET", f"{server.url}/fleet/stream", timeout=30) as stream:
        events = sse_events(stream.iter_lines())
        assert next(events)["event"] == "snapshot"
        stop_with_sigterm(server)  # within 10 s, exit 0, though a client is connected
        rest = list(events)  # the stream ends rather than hanging
        assert all(e.get("event") != "snapshot" for e in rest)


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if "event" in fields:  # not the `retry:` advice
                yield fields
            fields = {}
            continue
        name, _, value = line.partition(":")
        if name:  # a line starting with ':' is a comment (the heartbeat)
            fields[name] = value.removeprefix(" ")
