"""Client-side CPU per AWS call: DynamoDB GetItem, Query, BatchWriteItem, UpdateItem, PutItem and
Kinesis GetRecords, PutRecords, through the clients TrackStore opens. Not part of CI.

    .venv/bin/python benchmarks/aws_calls.py [--calls 3000] [--profile Query]

The endpoint is benchmarks/aws_stub.py in a process of its own, answering at once from canned
bodies (100 items for Query, 100 records for GetRecords), so this process's CPU time over N
sequential calls is the client's alone: building and signing the request, aiohttp, botocore's
events, retries bookkeeping, parsing. Reported per call, median of 5 rounds: through
aiobotocore, sent straight (trackstore.aws_direct), and straight with the TracedClient wrapper (a
span and counters per call), as TrackStore calls them. `--profile OP` prints cProfile's top
functions for one operation.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.aws_stub import location_item
from tests.aws_emulators import DUMMY_CREDENTIALS, free_port, wait_for_port

from trackstore.dynamodb.client import dynamodb_client
from trackstore.kinesis.client import kinesis_client

ROUNDS = 5


def calls(dynamodb: Any, kinesis: Any) -> dict[str, Callable[[], Awaitable[Any]]]:
    # As TrackStore sends them: each PutRequest already DynamoDB JSON (dynamodb/item_json.py),
    # written while the batch is ingested (benchmarks/ingest.py counts that), not by the call.
    batch = {
        "locations": [
            msgspec.Raw(msgspec.json.encode({"PutRequest": {"Item": location_item(n)}}))
            for n in range(25)
        ]
    }
    records = [
        {"Data": b'{"deviceId":"bus-1"}' * 5, "PartitionKey": f"bus-{n}"} for n in range(100)
    ]
    return {
        "GetItem": lambda: dynamodb.get_item(
            TableName="devices", Key={"deviceId": {"S": "bus-0001"}}
        ),
        "Query": lambda: dynamodb.query(
            TableName="locations",
            KeyConditionExpression="#dev = :dev AND #ts BETWEEN :start AND :end",
            FilterExpression="#exp > :now",
            ExpressionAttributeNames={"#dev": "deviceId", "#ts": "timestamp", "#exp": "expiresAt"},
            ExpressionAttributeValues={
                ":dev": {"S": "bus-0001"},
                ":start": {"N": "0"},
                ":end": {"N": "9999999999999"},
                ":now": {"N": "1800000000"},
            },
            Limit=100,
        ),
        "BatchWriteItem": lambda: dynamodb.batch_write_item(RequestItems=batch),
        "UpdateItem": lambda: dynamodb.update_item(
            TableName="devices",
            Key={"deviceId": {"S": "bus-0001"}},
            UpdateExpression="SET lastSeen = :ts ADD totalUpdates :n",
            ConditionExpression="lastSeen = :prev",
            ExpressionAttributeValues={
                ":ts": {"N": "1800000000000"},
                ":n": {"N": "3"},
                ":prev": {"N": "1799999990000"},
            },
        ),
        "PutItem": lambda: dynamodb.put_item(
            TableName="locations",
            Item=location_item(0),
            ConditionExpression="attribute_not_exists(deviceId)",
        ),
        "GetRecords": lambda: kinesis.get_records(ShardIterator="AAAA" * 50, Limit=1000),
        "PutRecords": lambda: kinesis.put_records(StreamName="gps", Records=records),
    }


async def floors(endpoint: str, direct: Any) -> dict[str, Callable[[], Awaitable[Any]]]:
    """What any client pays per exchange: a raw HTTP/1.1 request on an asyncio stream (the event
    loop and the kernel's loopback, both ends of which the sender's CPU pays), and the same
    through the client's aiohttp session without signing."""
    host, port = endpoint.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"TableName":"devices","Key":{"deviceId":{"S":"bus-0001"}}}'
    head = (
        f"POST / HTTP/1.1\r\nHost: {host}:{port}\r\nX-Amz-Target: DynamoDB_20120810.GetItem\r\n"
        f"Content-Type: application/x-amz-json-1.0\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()

    async def raw() -> None:
        writer.write(head + body)
        answer = await reader.readuntil(b"\r\n\r\n")
        length = int(answer.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)

    session = await direct._client._endpoint.http_session._get_session(None)
    headers = {
        "X-Amz-Target": "DynamoDB_20120810.GetItem",
        "Content-Type": "application/x-amz-json-1.0",
    }

    async def unsigned() -> None:
        async with session.post(endpoint, data=body, headers=headers) as response:
            await response.read()

    return {"raw HTTP on an asyncio stream": raw, "aiohttp POST, unsigned": unsigned}


async def cpu_per_call(call: Callable[[], Awaitable[Any]], count: int) -> float:
    """Microseconds of this process's CPU per call, the median of ROUNDS rounds."""
    for _ in range(100):
        await call()
    rounds = []
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(count):
            await call()
        rounds.append((time.process_time() - started) / count * 1e6)
    return statistics.median(rounds)


async def measure(endpoint: str, count: int, profile: str | None) -> None:
    async with (
        dynamodb_client("us-east-1", endpoint_url=endpoint) as dynamodb,
        kinesis_client("us-east-1", endpoint_url=endpoint) as kinesis,
    ):
        traced = calls(dynamodb, kinesis)
        # TracedClient keeps the aiobotocore client as _client: the same calls without spans.
        bare = calls(dynamodb._client, kinesis._client)
        if profile is not None:
            await cpu_per_call(bare[profile], 100)
            profiler = cProfile.Profile()
            profiler.enable()
            await cpu_per_call(bare[profile], count // ROUNDS)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
            return
        print(f"{'floor':30} {'us':>6}   (CPU per exchange, median of 5)")
        for name, floor in (await floors(endpoint, dynamodb._client)).items():
            print(f"{name:30} {await cpu_per_call(floor, count):6.0f}")
        # Under the DirectClient, the aiobotocore client itself: every call through botocore.
        botocore_only = calls(dynamodb._client._client, kinesis._client._client)
        print(
            f"{'call':16} {'aiobotocore':>12} {'direct':>8} {'traced':>8}"
            "   (us of CPU per call, median of 5)"
        )
        for name in traced:
            through_botocore = await cpu_per_call(botocore_only[name], count)
            direct = await cpu_per_call(bare[name], count)
            with_spans = await cpu_per_call(traced[name], count)
            print(f"{name:16} {through_botocore:12.0f} {direct:8.0f} {with_spans:8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--profile", default=None)
    args = parser.parse_args()
    for name, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    port = free_port()
    stub = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("aws_stub.py")), str(port)]
    )
    try:
        wait_for_port(port, stub)
        asyncio.run(measure(f"http://127.0.0.1:{port}", args.calls, args.profile))
    finally:
        stub.terminate()
        stub.wait()


if __name__ == "__main__":
    main()
