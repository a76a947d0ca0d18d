"""The aiobotocore Kinesis client and stream setup."""

from __future__ import annotations

import asyncio
import binascii
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from trackstore import aws
from trackstore.aws import (
    JsonBodySerializer,
    TracedClient,
    answer_decoder,
    aws_session,
    client_config,
    error_code,
)
from trackstore.aws_direct import DirectClient
from trackstore.errors import Error
from trackstore.metrics import Metrics

# Sent straight (trackstore.aws_direct): every batch the consumer reads, every put of the
# simulator and the dead-letter stream.
HOT_OPERATIONS = ("GetRecords", "PutRecords")


def translate(exc: Exception, what: str) -> Error:
    return aws.translate(exc, what, "Kinesis")


@asynccontextmanager
async def kinesis_client(
    region: str, endpoint_url: str | None = None, metrics: Metrics | None = None
) -> AsyncIterator[Any]:
    """A traced Kinesis client; without `endpoint_url`, botocore's AWS_ENDPOINT_URL(_KINESIS) or
    AWS itself."""
    config = client_config().merge(AioConfig(parameter_validation=False))
    async with aws_session().create_client(
        "kinesis", region_name=region, endpoint_url=endpoint_url, config=config
    ) as client:
        client._serializer = JsonBodySerializer(client._serializer)
        client.meta.events.register("before-parse.kinesis.GetRecords", decode_get_records)
        client.meta.events.register("before-parse.kinesis.PutRecords", decode_put_records)
        direct = DirectClient(
            client,
            HOT_OPERATIONS,
            {"GetRecords": _as_botocore_reads_them, "PutRecords": _without_nulls},
        )
        try:
            yield TracedClient(direct, "Kinesis", metrics)
        finally:
            direct.close()


def _as_botocore_reads_them(answer: dict[str, Any]) -> None:
    """GetRecords' Data as bytes and arrival times as datetimes, what the reader expects."""
    for record in answer.get("Records", ()):
        record["Data"] = binascii.a2b_base64(record["Data"])
        arrival = record.get("ApproximateArrivalTimestamp")
        if arrival is not None:
            record["ApproximateArrivalTimestamp"] = datetime.fromtimestamp(arrival, UTC)


decode_get_records = answer_decoder(_as_botocore_reads_them)


def _without_nulls(answer: dict[str, Any]) -> None:
    """PutRecords' results without the null ErrorCode/ErrorMessage some servers send for records
    that were stored (kinesis-local does): botocore's parser leaves nulls out, and a result with
    an ErrorCode is a refused record."""
    for result in answer.get("Records", ()):
        for key in [key for key, value in result.items() if value is None]:
            del result[key]


decode_put_records = answer_decoder(_without_nulls)


async def ensure_stream(client: Any, name: str, shards: int, timeout_s: float = 300.0) -> bool:
    """Creates the stream unless it exists and waits until it is ACTIVE; True when created."""
    created = False
    try:
        await client.create_stream(StreamName=name, ShardCount=shards)
        created = True
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":
            raise translate(exc, f"create stream {name}") from exc
    except Exception as exc:
        raise translate(exc, f"create stream {name}") from exc
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            summary = await client.describe_stream_summary(StreamName=name)
        except Exception as exc:
            raise translate(exc, f"describe stream {name}") from exc
        status = summary["StreamDescriptionSummary"]["StreamStatus"]
        if status in {"ACTIVE", "UPDATING"}:
            return created
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"stream {name} is {status} after {timeout_s:.0f} s")
        await asyncio.sleep(0.5)
