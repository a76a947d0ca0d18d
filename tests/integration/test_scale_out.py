"""Several `trackstore consume` processes sharing one 6-shard stream (kinesis-local + dynalite):
leases spread evenly, a killed worker's shards are taken over after the failover time, a stopped
worker releases its shards for the others to take at once, and every record is still stored
exactly once: one Locations item per report, and exact device counters."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.integration.conftest import TRACKSTORE, start_consumer
from trackstore.dynamodb import DynamoDeviceRepository, dynamodb_client
from trackstore.dynamodb.leases import DynamoLeaseStore
from trackstore.kinesis.client import kinesis_client
from trackstore.kinesis.producer import Producer
from trackstore.leasing import Lease

FAILOVER_S = 3
SHARDS = 6
DEVICES = 30


@pytest.fixture
def env(stream_env: dict[str, str]) -> dict[str, str]:
    return {**stream_env, "LEASE_FAILOVER_SECONDS": str(FAILOVER_S), "LOG_LEVEL": "INFO"}


@pytest.fixture
def workers(
    processes: list[subprocess.Popen[bytes]],
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    started: dict[str, subprocess.Popen[bytes]] = {}
    yield started
    processes.extend(started.values())


class Producing:
    """Reports of DEVICES devices, one second apart in device time, sent in rounds."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.start_ms = int(time.time() * 1000) - 3600 * 1000
        self.rounds = 0

    def expected(self) -> Counter[tuple[str, int]]:
        """Every (device, timestamp) sent so far, once each: what the Locations table must hold."""
        return Counter(
            (f"car-{d:03d}", self.start_ms + r * 1000)
            for r in range(self.rounds)
            for d in range(DEVICES)
        )

    async def round(self, count: int = 5) -> None:
        entries = []
        for _ in range(count):
            timestamp = self.start_ms + self.rounds * 1000
            for d in range(DEVICES):
                body = {
                    "deviceId": f"car-{d:03d}",
                    "timestamp": timestamp,
                    "latitude": 1.0,
                    "longitude": 2.0,
                }
                entries.append((f"car-{d:03d}", msgspec.json.encode(body)))
            self.rounds += 1
        async with kinesis_client(
            "us-east-1", endpoint_url=self.env["AWS_ENDPOINT_URL_KINESIS"]
        ) as c:
            await Producer(c, self.env["KINESIS_STREAM_NAME"]).put(entries)


async def leases(env: dict[str, str]) -> list[Lease]:
    async with dynamodb_client("us-east-1", endpoint_url=env["AWS_ENDPOINT_URL_DYNAMODB"]) as c:
        return await DynamoLeaseStore(c, env["LEASE_TABLE_NAME"]).list()


async def owners(env: dict[str, str]) -> Counter[str | None]:
    return Counter(lease.owner for lease in await leases(env))


async def wait_for(check: Any, timeout_s: float) -> float:
    """Seconds until `check()` (async) is true; fails after `timeout_s`."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout_s, "condition not reached in time"
        await asyncio.sleep(0.25)
    return time.monotonic() - started


async def exact(env: dict[str, str], producing: Producing) -> bool:
    async with dynamodb_client("us-east-1", endpoint_url=env["AWS_ENDPOINT_URL_DYNAMODB"]) as c:
        devices = DynamoDeviceRepository(c, env["DEVICE_TABLE_NAME"])
        newest = producing.start_ms + (producing.rounds - 1) * 1000
        for d in range(DEVICES):
            device = await devices.get(f"car-{d:03d}")
            if device is not None:
                assert device.total_updates <= producing.rounds, "a record was counted twice"
            if device is None or device.total_updates < producing.rounds:
                return False
            if device.last_seen != newest:
                return False
    return True


async def stored_locations(env: dict[str, str]) -> Counter[tuple[str, int]]:
    """Every (device, timestamp) the Locations table holds, with its number of items."""
    stored: Counter[tuple[str, int]] = Counter()
    request: dict[str, Any] = {"TableName": env["LOCATION_TABLE_NAME"], "ConsistentRead": True}
    async with dynamodb_client("us-east-1", endpoint_url=env["AWS_ENDPOINT_URL_DYNAMODB"]) as c:
        while True:
            page = await c.scan(**request)
            for item in page.get("Items", []):
                stored[item["deviceId"]["S"], int(item["timestamp"]["N"])] += 1
            if not page.get("LastEvaluatedKey"):
                return stored
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def worker_id(log: Path) -> str:
    """The worker id a consumer logged when it started."""
    for line in log.read_text(errors="replace").splitlines():
        if '"consumer starting"' in line:
            return str(json.loads(line)["worker"])
    raise AssertionError(f"no worker id in {log}")


async def test_workers_share_shards_fail_over_and_hand_over(
    env: dict[str, str], workers: dict[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    init = await asyncio.to_thread(
        subprocess.run, [*TRACKSTORE, "init", "--shards", str(SHARDS)], env=env, capture_output=True
    )
    assert init.returncode == 0, init.stderr
    producing = Producing(env)
    await producing.round()
    workers["a"] = start_consumer(env, tmp_path / "a.log")
    b_log = tmp_path / "b.log"
    workers["b"] = start_consumer(env, b_log)
    workers["c"] = start_consumer(env, tmp_path / "c.log")

    # Three workers, six shards: two each, once the first takers have been balanced.
    async def even() -> bool:
        counts = await owners(env)
        return None not in counts and sorted(counts.values()) == [2, 2, 2]

    await wait_for(even, timeout_s=10 * FAILOVER_S)
    await producing.round()

    # kill -9: no release; the survivors take its shards once its leases expire.
    workers["c"].send_signal(signal.SIGKILL)
    workers["c"].wait()

    async def survivors_hold_all() -> bool:
        counts = await owners(env)
        return len(counts) == 2 and None not in counts and sorted(counts.values()) == [3, 3]

    await producing.round()
    # Within a deadline of a few failover times (a poll, not a tight bound: a busy machine
    # slows the lease rounds).
    took = await wait_for(survivors_hold_all, timeout_s=4 * FAILOVER_S + 10)
    print(f"kill -9 takeover: {took:.1f} s (failover {FAILOVER_S} s)")

    # SIGTERM: a graceful stop releases the leases, so the other worker may take them at its
    # next lease round instead of after the failover time.
    await producing.round()
    b_held = {lease.shard_id for lease in await leases(env) if lease.owner == worker_id(b_log)}
    assert len(b_held) == 3, b_held
    workers["b"].send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(workers["b"].wait, 30) == 0
    # Released, not left to expire: once it has exited, no lease names it, so no one needs to
    # wait out the failover time (what the lease table says, not a wall-clock bound).
    assert not [lease for lease in await leases(env) if lease.owner == worker_id(b_log)]

    async def a_holds_all() -> bool:
        counts = await owners(env)
        return len(counts) == 1 and None not in counts

    took = await wait_for(a_holds_all, timeout_s=4 * FAILOVER_S + 10)
    print(f"SIGTERM handover: {took:.1f} s")

    # A newcomer gets a fair share.
    workers["d"] = start_consumer(env, tmp_path / "d.log")
    await producing.round()

    async def shared() -> bool:
        counts = await owners(env)
        return None not in counts and sorted(counts.values()) == [3, 3]

    await wait_for(shared, timeout_s=10 * FAILOVER_S)
    await producing.round()

    await wait_for(lambda: exact(env, producing), timeout_s=60)
    assert await stored_locations(env) == producing.expected()
    for name in ("a", "d"):
        workers[name].send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(workers[name].wait, 30) == 0
    assert all(lease.owner is None for lease in await leases(env))
    logs = await asyncio.to_thread(lambda: "".join(p.read_text() for p in tmp_path.glob("*.log")))
    assert "Traceback" not in logs
