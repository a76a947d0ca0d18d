"""The dead-letter stream on moto's Kinesis: a rejected record arrives there with its reason,
where it came from and its bytes, as an operator would read it back."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

import msgspec
import pytest

from tests.helpers import stream_record
from trackstore.kinesis.client import ensure_stream, kinesis_client
from trackstore.kinesis.deadletter import DeadLetterStream
from trackstore.records import Reason, Rejection


async def test_rejected_records_land_in_the_dead_letter_stream(moto_endpoint: str) -> None:
    stream = f"rejected-{uuid.uuid4().hex[:8]}"
    bad = stream_record(b"\xff{not json", sequence_number="4711")
    async with kinesis_client("us-east-1", endpoint_url=moto_endpoint) as client:
        await ensure_stream(client, stream, 1)

        await DeadLetterStream(client, stream)(
            [Rejection(reason=Reason.NOT_JSON, detail="data is not UTF-8 JSON", record=bad)]
        )

        shard = (await client.list_shards(StreamName=stream))["Shards"][0]["ShardId"]
        iterator = (
            await client.get_shard_iterator(
                StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        records = (await client.get_records(ShardIterator=iterator))["Records"]

    assert len(records) == 1
    envelope = msgspec.json.decode(records[0]["Data"])
    assert envelope["reason"] == "not_json"
    assert envelope["sequenceNumber"] == "4711"
    assert envelope["shardId"] == bad.shard_id
    assert base64.b64decode(envelope["data"]) == bad.data
    assert envelope["dataTruncated"] is False


@pytest.mark.parametrize("endpoint", ["moto_endpoint", "kinesis_local_endpoint"])
async def test_a_rejected_record_at_kinesiss_size_limit_still_fits_as_a_dead_letter(
    endpoint: str, request: pytest.FixtureRequest
) -> None:
    # The largest record Kinesis accepts: base64 alone would make it a third too big to send.
    data = b"{" + b"x" * (1024 * 1024 - 10)
    bad = stream_record(data, sequence_number="4712")
    stream = f"rejected-{uuid.uuid4().hex[:8]}"
    async with kinesis_client(
        "us-east-1", endpoint_url=request.getfixturevalue(endpoint)
    ) as client:
        await ensure_stream(client, stream, 1)

        await DeadLetterStream(client, stream, deadline_s=5)(
            [Rejection(reason=Reason.NOT_JSON, detail="data is not UTF-8 JSON", record=bad)]
        )

        records = await _read_all(client, stream)

    assert len(records) == 1
    assert len(records[0]["Data"]) < 100 * 1024
    envelope = msgspec.json.decode(records[0]["Data"])
    assert envelope["dataBytes"] == len(data)
    assert envelope["dataSha256"] == hashlib.sha256(data).hexdigest()
    assert envelope["dataTruncated"] is True
    assert base64.b64decode(envelope["data"]) == data[: 64 * 1024]


async def _read_all(client: Any, stream: str) -> list[dict[str, Any]]:
    shard = (await client.list_shards(StreamName=stream))["Shards"][0]["ShardId"]
    iterator = (
        await client.get_shard_iterator(
            StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )
    )["ShardIterator"]
    records: list[dict[str, Any]] = (await client.get_records(ShardIterator=iterator))["Records"]
    return records
