"""`trackstore consume` end to end, as operators run it: a subprocess reading kinesis-local (which
reshards faithfully) into DynamoDB on dynalite, while records flow, through a kill -9, a restart
and a shard split. Afterwards the tables must hold exactly what was produced."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.integration.conftest import TRACKSTORE, start_consumer
from trackstore.domain import HistoryQuery
from trackstore.dynamodb import DynamoDeviceRepository, DynamoLocationRepository, dynamodb_client
from trackstore.kinesis.client import kinesis_client
from trackstore.kinesis.kpl import aggregate
from trackstore.kinesis.producer import Producer

DEVICES = 16  # every kind of record below among them (KPL, resends, stragglers)
PER_DEVICE = 120


class Fleet:
    """What the test produces and what the tables must end up holding."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.start_ms = int(time.time() * 1000) - 2 * 3600 * 1000
        self.expected: dict[str, dict[int, tuple[float, float]]] = {}
        self.bad = 0

    def location(self, device: str, index: int) -> tuple[int, dict[str, Any]]:
        timestamp = self.start_ms + index * 1000
        lat, lon = 52.0 + index / 10_000, 13.0 + int(device[4:]) / 100
        self.expected.setdefault(device, {})[timestamp] = (lat, lon)
        if index % 5 == 0:  # a legacy producer: aliases and epoch seconds
            return timestamp, {"busId": device, "lat": lat, "lon": lon, "ts": timestamp / 1000}
        return timestamp, {
            "deviceId": device,
            "timestamp": timestamp,
            "latitude": lat,
            "longitude": lon,
        }

    def round(self, first: int, last: int) -> list[tuple[str, bytes]]:
        """Reports `first`..`last` of every device, with resends, stragglers, KPL aggregates and
        bad records mixed in."""
        entries: list[tuple[str, bytes]] = []
        for d in range(DEVICES):
            device = f"bus-{d:03d}"
            bodies = [self.location(device, i)[1] for i in range(first, last)]
            if d % 4 == 0:  # KPL-aggregated, 10 sub-records a record
                for start in range(0, len(bodies), 10):
                    chunk = [(device, msgspec.json.encode(b)) for b in bodies[start : start + 10]]
                    entries.append((device, aggregate(chunk)))
            else:
                entries += [(device, msgspec.json.encode(b)) for b in bodies]
            if d % 3 == 0:  # a producer's resend of an earlier report
                entries.append((device, msgspec.json.encode(bodies[0])))
            if d % 5 == 0 and first > 0:  # a straggler from an earlier round, sent again late
                entries.append((device, msgspec.json.encode(self.location(device, first - 7)[1])))
        for _ in range(5):
            entries.append(("bus-bad", b"{not json"))
            entries.append(("bus-bad", b'{"deviceId": "bus-bad", "timestamp": 1, "latitude": 99}'))
            self.bad += 2
        return entries


@pytest.fixture
def env(stream_env: dict[str, str]) -> dict[str, str]:
    return {**stream_env, "KINESIS_BATCH_SIZE": "250"}


async def produce(env: dict[str, str], entries: list[tuple[str, bytes]]) -> None:
    async with kinesis_client("us-east-1", endpoint_url=env["AWS_ENDPOINT_URL_KINESIS"]) as c:
        await Producer(c, env["KINESIS_STREAM_NAME"]).put(entries)


async def split(env: dict[str, str]) -> None:
    async with kinesis_client("us-east-1", endpoint_url=env["AWS_ENDPOINT_URL_KINESIS"]) as c:
        await c.update_shard_count(
            StreamName=env["KINESIS_STREAM_NAME"], TargetShardCount=4, ScalingType="UNIFORM_SCALING"
        )
        deadline = time.monotonic() + 30
        while True:
            summary = await c.describe_stream_summary(StreamName=env["KINESIS_STREAM_NAME"])
            status = summary["StreamDescriptionSummary"]["StreamStatus"]
            if status == "ACTIVE":
                return
            assert time.monotonic() < deadline, f"stream {status}, not ACTIVE, 30 s after a split"
            await asyncio.sleep(0.05)


async def tables_state(env: dict[str, str]) -> dict[str, Any]:
    async with dynamodb_client("us-east-1", endpoint_url=env["AWS_ENDPOINT_URL_DYNAMODB"]) as c:
        locations = DynamoLocationRepository(c, env["LOCATION_TABLE_NAME"], 30, 8)
        devices = DynamoDeviceRepository(c, env["DEVICE_TABLE_NAME"])
        state: dict[str, Any] = {}
        for d in range(DEVICES):
            device_id = f"bus-{d:03d}"
            stored: dict[int, tuple[float, float]] = {}
            token = None
            while True:
                page = await locations.history(
                    HistoryQuery(device_id=device_id, limit=1000, token=token)
                )
                stored.update({loc.timestamp: (loc.latitude, loc.longitude) for loc in page.items})
                token = page.next_token
                if token is None:
                    break
            state[device_id] = (stored, await devices.get(device_id))
        return state


async def stored_locations(env: dict[str, str]) -> int:
    """How many items the Locations table holds (a consistent scan)."""
    async with dynamodb_client("us-east-1", endpoint_url=env["AWS_ENDPOINT_URL_DYNAMODB"]) as c:
        count = 0
        request: dict[str, Any] = {
            "TableName": env["LOCATION_TABLE_NAME"],
            "Select": "COUNT",
            "ConsistentRead": True,
        }
        while True:
            page = await c.scan(**request)
            count += page["Count"]
            if not page.get("LastEvaluatedKey"):
                return count
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


async def wait_until_stored(env: dict[str, str], at_least: int, timeout_s: float) -> int:
    """Polls until the Locations table holds `at_least` items; their number then."""
    deadline = time.monotonic() + timeout_s
    while (count := await stored_locations(env)) < at_least:
        assert time.monotonic() < deadline, f"{count} locations stored after {timeout_s} s"
        await asyncio.sleep(0.1)
    return count


async def wait_until_complete(
    env: dict[str, str], fleet: Fleet, timeout_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        state = await tables_state(env)
        done = all(
            state[device][0] == fleet.expected[device]
            and state[device][1] is not None
            and state[device][1].total_updates == len(fleet.expected[device])
            for device in fleet.expected
        )
        if done or time.monotonic() > deadline:
            return state
        await asyncio.sleep(1)


async def test_consume_survives_kill_restart_and_split_with_exact_tables(
    env: dict[str, str], processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    log = tmp_path / "consume.log"
    init = await asyncio.to_thread(
        subprocess.run, [*TRACKSTORE, "init", "--shards", "2"], env=env, capture_output=True
    )
    assert init.returncode == 0, init.stderr
    fleet = Fleet(seed=11)

    await produce(env, fleet.round(0, 30))
    processes.append(start_consumer(env, log))
    await produce(env, fleet.round(30, 60))
    await wait_until_stored(env, at_least=1, timeout_s=60)  # it is under way: kill it

    processes[0].send_signal(signal.SIGKILL)  # mid-stream, no chance to checkpoint or release
    assert processes[0].wait() == -signal.SIGKILL
    await produce(env, fleet.round(60, 80))
    processes.append(start_consumer(env, log))
    await split(env)  # parents close; children must wait for them to be read to the end
    await produce(env, fleet.round(80, PER_DEVICE))

    state = await wait_until_complete(env, fleet, timeout_s=90)

    for device, expected in fleet.expected.items():
        stored, record = state[device]
        assert stored == expected, f"{device}: locations differ"
        newest = max(expected)
        assert record.total_updates == len(expected), device
        assert record.last_seen == newest, device
        assert record.last_location.timestamp == newest, device
    processes[1].send_signal(signal.SIGTERM)
    assert processes[1].wait(timeout=30) == 0
    text = log.read_text()
    assert text.count('"record rejected"') >= fleet.bad
    assert "Traceback" not in text
