"""`trackstore erase` as an operator runs it, against dynalite: it prints what it erased, shows a
progress bar, leaves other devices alone, and when killed half-way finishes on the next run."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from tests.unit.test_cli import TRACKSTORE, process_env
from trackstore.clock import wall_clock_ms
from trackstore.domain import HistoryQuery, StreamRecord
from trackstore.dynamodb import DynamoDeviceRepository, DynamoLocationRepository, dynamodb_client
from trackstore.dynamodb.tables import TTL_ATTRIBUTE, devices_table, ensure_table, locations_table
from trackstore.service import TrackService

pytestmark = pytest.mark.integration

POINTS = 3_000
NOW = wall_clock_ms()
START = NOW - POINTS * 1000


class Tables(msgspec.Struct):
    endpoint: str
    locations: str
    devices: str

    def env(self, tmp_path: Path) -> dict[str, str]:
        return process_env(
            tmp_path,
            TRACKSTORE_BACKEND="aws",
            AWS_REGION="us-east-1",
            AWS_ENDPOINT_URL=self.endpoint,
            LOCATION_TABLE_NAME=self.locations,
            DEVICE_TABLE_NAME=self.devices,
        )


def records(device_id: str, count: int) -> list[StreamRecord]:
    return [
        StreamRecord(
            data=msgspec.json.encode(
                {
                    "deviceId": device_id,
                    "timestamp": START + n * 1000,
                    "latitude": 52.5 + n * 1e-5,
                    "longitude": 13.4,
                }
            ),
            partition_key=device_id,
            shard_id="shardId-000000000000",
            sequence_number=f"{n + (10**6 if device_id == 'bus-2' else 0):021d}",
            arrival_ms=START + n * 1000 + 200,
        )
        for n in range(count)
    ]


@pytest.fixture
async def tables(dynalite_endpoint: str) -> AsyncIterator[Tables]:
    suffix = uuid.uuid4().hex[:10]
    built = Tables(dynalite_endpoint, f"locations-{suffix}", f"devices-{suffix}")
    async with dynamodb_client("us-east-1", endpoint_url=dynalite_endpoint) as client:
        await ensure_table(client, locations_table(built.locations), TTL_ATTRIBUTE)
        await ensure_table(client, devices_table(built.devices))
        service = TrackService(
            DynamoLocationRepository(client, built.locations, 30, 4),
            DynamoDeviceRepository(client, built.devices),
            wall_clock_ms,
            ttl_days=30,
        )
        for device, count in (("bus-1", POINTS), ("bus-2", 50)):
            batch = records(device, count)
            for at in range(0, count, 500):
                result = await service.ingest(batch[at : at + 500])
                assert not result.rejections
        yield built


async def stored(tables: Tables, device_id: str) -> tuple[int, dict[str, object] | None]:
    """How many locations the device has (expired or not), and its device record as stored."""
    async with dynamodb_client("us-east-1", endpoint_url=tables.endpoint) as client:
        locations = DynamoLocationRepository(client, tables.locations, 30, 4)
        count = await locations.stored_count(device_id, None)
        item = await client.get_item(
            TableName=tables.devices, Key={"deviceId": {"S": device_id}}, ConsistentRead=True
        )
        history = await locations.history(HistoryQuery(device_id=device_id, limit=5))
        assert len(history.items) == min(count, 5)
        return count, item.get("Item")


def erase(tables: Tables, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRACKSTORE, "erase", *argv],
        env=tables.env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_erase_deletes_a_device_and_reports_it(tables: Tables, tmp_path: Path) -> None:
    done = await asyncio.to_thread(erase, tables, tmp_path, "--device", "bus-1")

    assert done.returncode == 0, done.stderr
    assert f"erased {POINTS:,} locations of bus-1" in done.stdout
    assert "lastLocation cleared" in done.stdout
    assert "device record deleted" in done.stdout
    assert f"{POINTS}/{POINTS}" in done.stderr  # the progress bar, finished
    assert await stored(tables, "bus-1") == (0, None)
    count, other = await stored(tables, "bus-2")
    assert count == 50
    assert other is not None

    again = await asyncio.to_thread(erase, tables, tmp_path, "--device", "bus-1")
    assert again.returncode == 0
    assert "erased 0 locations of bus-1" in again.stdout


async def test_erase_before_keeps_the_newer_locations_and_the_record(
    tables: Tables, tmp_path: Path
) -> None:
    before = START + 1000 * 1000
    dry = await asyncio.to_thread(
        erase, tables, tmp_path, "--device", "bus-1", "--before", str(before), "--dry-run"
    )
    assert dry.returncode == 0
    assert "would erase 1,000 of bus-1's locations" in dry.stdout
    assert (await stored(tables, "bus-1"))[0] == POINTS

    done = await asyncio.to_thread(
        erase, tables, tmp_path, "--device", "bus-1", "--before", str(before)
    )

    assert done.returncode == 0, done.stderr
    assert "erased 1,000 locations of bus-1" in done.stdout
    assert "device record kept" in done.stdout
    count, item = await stored(tables, "bus-1")
    assert count == POINTS - 1000
    assert item is not None
    assert "lastLocation" in item
    assert item["totalUpdates"] == {"N": str(POINTS)}


async def test_an_erase_killed_half_way_finishes_when_run_again(
    tables: Tables, tmp_path: Path
) -> None:
    process = await asyncio.create_subprocess_exec(
        *TRACKSTORE,
        "erase",
        "--device",
        "bus-1",
        env=tables.env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while (await stored(tables, "bus-1"))[0] == POINTS:  # wait for the first batch to go
            assert time.monotonic() < deadline, "nothing was erased"
            await asyncio.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL
    left, record = await stored(tables, "bus-1")
    assert 0 < left < POINTS
    assert record is not None

    done = await asyncio.to_thread(erase, tables, tmp_path, "--device", "bus-1")

    assert done.returncode == 0, done.stderr
    assert f"erased {left:,} locations of bus-1" in done.stdout
    assert await stored(tables, "bus-1") == (0, None)


async def test_a_bad_device_id_or_time_exits_2_with_one_line(
    tables: Tables, tmp_path: Path
) -> None:
    bad_id = await asyncio.to_thread(erase, tables, tmp_path, "--device", "bus 1")
    bad_time = await asyncio.to_thread(
        erase, tables, tmp_path, "--device", "bus-1", "--before", "yesterday"
    )

    assert bad_id.returncode == 2
    assert bad_id.stderr.count("\n") == 1
    assert bad_time.returncode == 2
    assert "--before" in bad_time.stderr
    assert (await stored(tables, "bus-1"))[0] == POINTS
