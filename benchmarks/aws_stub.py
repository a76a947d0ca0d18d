"""A stub AWS endpoint to measure clients against: every DynamoDB and Kinesis call answered with
a canned body at once, so that neither an emulator's time nor the network counts. Not part of CI.

    .venv/bin/python benchmarks/aws_stub.py PORT        # serves until killed

HTTP/1.1 keep-alive, one canned answer per X-Amz-Target (with DynamoDB's x-amz-crc32 header, which
botocore checks), built once. It runs in its own process, so its CPU is not the client's.
"""

from __future__ import annotations

import asyncio
import base64
import sys
import zlib
from typing import Any

import msgspec


def location_item(n: int) -> dict[str, Any]:
    return {
        "deviceId": {"S": "bus-0001"},
        "timestamp": {"N": str(1_800_000_000_000 + n * 10_000)},
        "latitude": {"N": "52.520008"},
        "longitude": {"N": "13.404954"},
        "speed": {"N": "31.5"},
        "heading": {"N": "270"},
        "receivedAt": {"N": str(1_800_000_000_500 + n * 10_000)},
        "date": {"S": "2027-01-15#01"},
        "expiresAt": {"N": "1802592000"},
        "streamPosition": {"S": "shardId-000000000000:49650000000000000000000000000000000001"},
    }


def _record(n: int) -> dict[str, Any]:
    data = msgspec.json.encode(
        {
            "deviceId": f"bus-{n % 50:04d}",
            "timestamp": 1_800_000_000_000 + n,
            "latitude": 52.5,
            "longitude": 13.4,
            "speed": 30.0,
        }
    )
    return {
        "SequenceNumber": f"{49650000000000000000000000000000000000 + n}",
        "ApproximateArrivalTimestamp": 1800000000.123,
        "Data": base64.b64encode(data).decode(),
        "PartitionKey": f"bus-{n % 50:04d}",
    }


ANSWERS: dict[str, dict[str, Any]] = {
    "DynamoDB_20120810.GetItem": {"Item": {**location_item(0), "totalUpdates": {"N": "1234"}}},
    "DynamoDB_20120810.Query": {
        "Items": [location_item(n) for n in range(100)],
        "Count": 100,
        "ScannedCount": 100,
        "LastEvaluatedKey": {"deviceId": {"S": "bus-0001"}, "timestamp": {"N": "1800000990000"}},
    },
    "DynamoDB_20120810.BatchWriteItem": {"UnprocessedItems": {}},
    "DynamoDB_20120810.UpdateItem": {},
    "DynamoDB_20120810.PutItem": {},
    "DynamoDB_20120810.BatchGetItem": {"Responses": {"devices": []}, "UnprocessedKeys": {}},
    "Kinesis_20131202.GetRecords": {
        "Records": [_record(n) for n in range(100)],
        "NextShardIterator": "AAAAAAAAAAE" + "x" * 200,
        "MillisBehindLatest": 0,
    },
    "Kinesis_20131202.PutRecords": {
        "FailedRecordCount": 0,
        "Records": [
            {
                "SequenceNumber": f"{49650000000000000000000000000000000000 + n}",
                "ShardId": "shardId-000000000000",
            }
            for n in range(100)
        ],
    },
}


def _response(target: str) -> bytes:
    body = msgspec.json.encode(ANSWERS.get(target, {}))
    kind = "1.0" if target.startswith("DynamoDB") else "1.1"
    head = (
        "HTTP/1.1 200 OK\r\n"
        f"Content-Type: application/x-amz-json-{kind}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "x-amzn-RequestId: STUBSTUBSTUBSTUBSTUBSTUBSTUBSTUBSTUBSTUBSTUBSTUBSTUB\r\n"
        f"x-amz-crc32: {zlib.crc32(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


RESPONSES = {target: _response(target) for target in ANSWERS}
UNKNOWN = _response("unknown")


class StubProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            target = ""
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "x-amz-target":
                    target = value.strip()
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            assert self.transport is not None
            self.transport.write(RESPONSES.get(target, UNKNOWN))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StubProtocol, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
