"""The three tables as the contract defines them, and `trackstore init`'s idempotent creation."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from botocore.exceptions import ClientError

from trackstore.aws import error_code
from trackstore.dynamodb.client import translate

log = logging.getLogger(__name__)

DATE_INDEX = "date-timestamp-index"
TTL_ATTRIBUTE = "expiresAt"


def locations_table(name: str) -> dict[str, Any]:
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": "deviceId", "AttributeType": "S"},
            {"AttributeName": "timestamp", "AttributeType": "N"},
            {"AttributeName": "date", "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": "deviceId", "KeyType": "HASH"},
            {"AttributeName": "timestamp", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": DATE_INDEX,
                "KeySchema": [
                    {"AttributeName": "date", "KeyType": "HASH"},
                    {"AttributeName": "timestamp", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    }


def devices_table(name: str) -> dict[str, Any]:
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": "deviceId", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "deviceId", "KeyType": "HASH"}],
    }


def leases_table(name: str) -> dict[str, Any]:
    """The KCL lease table: hash key `leaseKey`, the shard id."""
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": "leaseKey", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "leaseKey", "KeyType": "HASH"}],
    }


async def ensure_table(client: Any, definition: dict[str, Any], ttl: str | None = None) -> bool:
    """Creates the table unless it exists, waits until it is active, enables TTL on `ttl`.

    Returns True when it created the table. An emulator without TTL support gets a warning.
    """
    name = definition["TableName"]
    created = False
    try:
        await client.create_table(**definition)
        created = True
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":
            raise translate(exc, f"create table {name}") from exc
    except Exception as exc:
        raise translate(exc, f"create table {name}") from exc
    await _wait_active(client, name)
    if ttl is not None:
        await _enable_ttl(client, name, ttl)
    return created


async def _wait_active(client: Any, name: str, timeout_s: float = 300.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            table = (await client.describe_table(TableName=name))["Table"]
        except Exception as exc:
            raise translate(exc, f"describe table {name}") from exc
        indexes = table.get("GlobalSecondaryIndexes", [])
        if table["TableStatus"] == "ACTIVE" and all(
            i.get("IndexStatus", "ACTIVE") == "ACTIVE" for i in indexes
        ):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"table {name} is not active after {timeout_s:.0f} s")
        await asyncio.sleep(1)


async def _enable_ttl(client: Any, name: str, attribute: str) -> None:
    try:
        described = await client.describe_time_to_live(TableName=name)
        status = described.get("TimeToLiveDescription", {})
        if status.get("TimeToLiveStatus") in {"ENABLED", "ENABLING"}:
            return
        await client.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute},
        )
    except ClientError as exc:
        if error_code(exc) in {"UnknownOperationException", "UnrecognizedClientException"} or (
            "not supported" in str(exc).lower()
        ):
            log.warning(
                "this DynamoDB does not support TTL; expired locations stay until deleted, "
                "and are hidden from queries",
                extra={"table": name},
            )
            return
        raise translate(exc, f"enable TTL on {name}") from exc
