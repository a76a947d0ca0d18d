"""`trackstore consume` on kinesis-local and dynalite against records that once stopped a shard
or broke the counts: numbers DynamoDB cannot store, a rejected record at Kinesis's size limit
with a dead-letter stream, and devices whose records move between shards both ways."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import msgspec

from tests.integration.conftest import TRACKSTORE, start_consumer
from trackstore.domain import Device, HistoryQuery
from trackstore.dynamodb import DynamoDeviceRepository, DynamoLocationRepository, dynamodb_client
from trackstore.kinesis.client import ensure_stream, kinesis_client
from trackstore.kinesis.producer import Producer

FORTY_ONE_DIGITS = "12345678901234567890123456789012345678901"
NOW_MS = int(time.time() * 1000)


def report(device: str, second: int, **fields: Any) -> bytes:
    return msgspec.json.encode(
        {
            "deviceId": device,
            "timestamp": NOW_MS - 600_000 + second * 1000,
            "latitude": 52.5,
            "longitude": 13.4,
            **fields,
        }
    )


# Each passes the old record rules and was refused by DynamoDB, which stopped the shard.
POISON = [
    report("bus-p", 1, altitude=1e200),
    report("bus-p", 2, attributes={"n": 1e-200}),
    report("bus-p", 3, quality_score=1e300),
    report("bus-p", 4, accuracy=1e-140),
    report("bus-p", 5).replace(b'"longitude":13.4', b'"longitude":1e-150'),
    report("bus-p", 6).replace(
        b'"latitude":52.5', b'"latitude":52.5,"odometer":' + FORTY_ONE_DIGITS.encode()
    ),
]


async def init(env: dict[str, str], shards: int) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [*TRACKSTORE, "init", "--shards", str(shards)],
        env=env,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


async def put(env: dict[str, str], entries: list[tuple[str, bytes]], stream: str = "") -> None:
    async with kinesis_client("us-east-1", endpoint_url=env["AWS_ENDPOINT_URL_KINESIS"]) as c:
        await Producer(c, stream or env["KINESIS_STREAM_NAME"]).put(entries)


async def device_state(env: dict[str, str], device: str) -> tuple[Device | None, int]:
    async with dynamodb_client("us-east-1", endpoint_url=env["AWS_ENDPOINT_URL_DYNAMODB"]) as c:
        locations = DynamoLocationRepository(c, env["LOCATION_TABLE_NAME"], 30, 8)
        page = await locations.history(HistoryQuery(device_id=device, limit=1000))
        found = await DynamoDeviceRepository(c, env["DEVICE_TABLE_NAME"]).get(device)
        return found, len(page.items)


async def wait_for(env: dict[str, str], expected: dict[str, int], timeout_s: float = 60) -> None:
    """Until each device has exactly its expected locations stored and counted."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = {d: await device_state(env, d) for d in expected}
        if all(
            device is not None and device.total_updates == n and stored == n
            for (device, stored), n in zip(states.values(), expected.values(), strict=True)
        ):
            return
        assert time.monotonic() < deadline, f"tables never reached {expected}: {states}"
        await asyncio.sleep(0.5)


async def test_poison_values_are_rejected_and_the_records_behind_them_stored(
    stream_env: dict[str, str], processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    env = {**stream_env, "DEAD_LETTER_STREAM_NAME": stream_env["KINESIS_STREAM_NAME"] + "-dlq"}
    await init(env, shards=1)
    async with kinesis_client("us-east-1", endpoint_url=env["AWS_ENDPOINT_URL_KINESIS"]) as c:
        await ensure_stream(c, env["DEAD_LETTER_STREAM_NAME"], 1)
    huge = b'{"deviceId": "bus-h", "x": "' + b"y" * (1024 * 1024 - 100) + b'"'  # not JSON
    entries = [("bus-ok", report("bus-ok", s)) for s in range(10)]
    entries[3:3] = [("bus-p", body) for body in POISON]
    entries.append(("bus-h", huge))
    entries += [("bus-ok", report("bus-ok", s)) for s in range(10, 20)]
    log = tmp_path / "consume.log"
    await put(env, entries)
    processes.append(start_consumer(env, log))

    await wait_for(env, {"bus-ok": 20})

    device, stored = await device_state(env, "bus-p")
    assert (device, stored) == (None, 0)
    # The rejections are logged once the batch is stored: wait for the lines, not only the tables.
    deadline = time.monotonic() + 30
    while log.read_text().count('"record rejected"') < len(POISON) + 1:
        assert time.monotonic() < deadline, log.read_text()
        await asyncio.sleep(0.2)
    text = log.read_text()
    # The rules caught every one before DynamoDB could refuse it (and stop the shard, before).
    assert "DynamoDB refused a write as invalid" not in text
    async with kinesis_client("us-east-1", endpoint_url=env["AWS_ENDPOINT_URL_KINESIS"]) as c:
        shard = (await c.list_shards(StreamName=env["DEAD_LETTER_STREAM_NAME"]))["Shards"][0]
        iterator = (
            await c.get_shard_iterator(
                StreamName=env["DEAD_LETTER_STREAM_NAME"],
                ShardId=shard["ShardId"],
                ShardIteratorType="TRIM_HORIZON",
            )
        )["ShardIterator"]
        letters: list[dict[str, Any]] = []
        while len(letters) < len(POISON) + 1 and time.monotonic() < deadline:
            answer = await c.get_records(ShardIterator=iterator)
            letters += answer["Records"]
            iterator = answer["NextShardIterator"]
    envelopes = [msgspec.json.decode(r["Data"]) for r in letters]
    assert len(envelopes) == len(POISON) + 1
    assert {e["reason"] for e in envelopes[:-1]} == {
        "invalid_altitude",
        "invalid_attributes",
        "invalid_accuracy",
        "invalid_longitude",
    }
    assert envelopes[-1]["dataTruncated"] is True
    assert envelopes[-1]["dataBytes"] == len(huge)


async def test_devices_moving_between_shards_both_ways_are_counted_exactly(
    stream_env: dict[str, str], processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    env = stream_env
    await init(env, shards=2)
    # Partition keys hashing to each of the two shards (kinesis-local hashes as Kinesis does).
    async with kinesis_client("us-east-1", endpoint_url=env["AWS_ENDPOINT_URL_KINESIS"]) as c:
        keys: dict[str, str] = {}
        for n in range(64):
            if len(keys) == 2:
                break
            answer = await c.put_record(
                StreamName=env["KINESIS_STREAM_NAME"], PartitionKey=f"k{n}", Data=b"{}"
            )
            keys.setdefault(answer["ShardId"], f"k{n}")
    first, second = keys.values()
    processes.append(start_consumer(env, tmp_path / "consume.log"))
    # bus-a moves from the first shard to the second and back; bus-b the other way round.
    second_at = 0
    for a_key, b_key in ((first, second), (second, first), (first, second)):
        batch = []
        for _ in range(5):
            second_at += 1
            batch += [(a_key, report("bus-a", second_at)), (b_key, report("bus-b", second_at))]
        await put(env, batch)
        await wait_for(env, {"bus-a": second_at, "bus-b": second_at})

    for device_id in ("bus-a", "bus-b"):
        device, _ = await device_state(env, device_id)
        assert device is not None
        assert device.last_seen == NOW_MS - 600_000 + second_at * 1000
