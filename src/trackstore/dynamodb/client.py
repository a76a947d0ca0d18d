"""The aiobotocore DynamoDB client, opened once per process, and a cheap health probe."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
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
)
from trackstore.aws_direct import DirectClient
from trackstore.errors import INVALID, Error
from trackstore.metrics import Metrics

log = logging.getLogger(__name__)

# Sent straight (trackstore.aws_direct): the calls of every batch the consumer stores and of
# every DynamoDB read `serve` answers.
HOT_OPERATIONS = ("GetItem", "Query", "BatchWriteItem", "BatchGetItem", "UpdateItem", "PutItem")


@asynccontextmanager
async def dynamodb_client(
    region: str, endpoint_url: str | None = None, metrics: Metrics | None = None
) -> AsyncIterator[Any]:
    """A traced DynamoDB client; without `endpoint_url`, botocore's AWS_ENDPOINT_URL(_DYNAMODB)
    or AWS itself."""
    # Enough connections for every call the repositories allow in flight at once (32 device
    # updates, 16 batch writes, 16 conditional puts), so none waits for a connection.
    config = client_config(max_pool=64).merge(AioConfig(parameter_validation=False))
    async with aws_session().create_client(
        "dynamodb", region_name=region, endpoint_url=endpoint_url, config=config
    ) as client:
        client._serializer = JsonBodySerializer(client._serializer)
        client.meta.events.register("before-parse.dynamodb.*", decode_json_body)
        direct = DirectClient(client, HOT_OPERATIONS)
        try:
            yield TracedClient(direct, "DynamoDB", metrics)
        finally:
            direct.close()


# Unlike botocore's, the answer keeps timestamps (DescribeTable's CreationDateTime) as epoch
# numbers and binary attributes as base64: nothing in TrackStore reads either.
decode_json_body = answer_decoder()


def translate(exc: Exception, what: str) -> Error:
    return aws.translate(exc, what, "DynamoDB")


def translate_write(exc: Exception, what: str) -> Error:
    """As `translate`, except that a ValidationException (a value DynamoDB cannot store: no
    retry fixes it) is Error(INVALID), so the caller can set the offending record aside
    instead of retrying the batch for ever."""
    if isinstance(exc, ClientError) and aws.error_code(exc) == "ValidationException":
        log.warning(
            "DynamoDB refused a write as invalid",
            extra={"what": what, "error": str(exc.response.get("Error", {}).get("Message"))},
        )
        return Error(INVALID, f"{what}: DynamoDB refused a value as invalid")
    return translate(exc, what)


async def conditional(write: Awaitable[dict[str, Any]], what: str) -> dict[str, Any] | None:
    """The response of a conditional write, or None when its condition did not hold: an
    expected outcome (someone else got there first), not an error."""
    try:
        return await write
    except ClientError as exc:
        if aws.error_code(exc) == "ConditionalCheckFailedException":
            return None
        raise translate_write(exc, what) from exc
    except Exception as exc:
        raise translate(exc, what) from exc


class TableProbe:
    """Answers health checks from a recent success: load balancers ask every few seconds per
    task, and DescribeTable is a rate-limited control-plane call."""

    def __init__(self, client: Any, table: str, cache_s: float = 5.0) -> None:
        self._client = client
        self._table = table
        self._cache_s = cache_s
        self._ok_at = -cache_s

    async def ping(self) -> None:
        if time.monotonic() - self._ok_at < self._cache_s:
            return
        try:
            await self._client.describe_table(TableName=self._table)
        except Exception as exc:
            raise translate(exc, f"describe {self._table}") from exc
        self._ok_at = time.monotonic()
