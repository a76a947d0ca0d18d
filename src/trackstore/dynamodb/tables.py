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
FLEET_INDEX = "fleet-changes-index"
# What a fleet view needs, projected into FLEET_INDEX; not the per-shard marks, which change with
# every batch and would make each of them an index write too.
FLEET_ATTRIBUTES = (
    "lastSeen",
    "lastLocation",
    "totalUpdates",
    "registeredAt",
    "name",
    "metadata",
    "status",
)
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
    """Keyed by `deviceId`, with the sparse FLEET_INDEX: (`fleetBucket`, `changedAt`), set by
    every write that changes a device's position or registration (dynamodb/devices.py)."""
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": "deviceId", "AttributeType": "S"},
            {"AttributeName": "fleetBucket", "AttributeType": "S"},
            {"AttributeName": "changedAt", "AttributeType": "N"},
        ],
        "KeySchema": [{"AttributeName": "deviceId", "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": FLEET_INDEX,
                "KeySchema": [
                    {"AttributeName": "fleetBucket", "KeyType": "HASH"},
                    {"AttributeName": "changedAt", "KeyType": "RANGE"},
                ],
                "Projection": {
                    "ProjectionType": "INCLUDE",
                    "NonKeyAttributes": list(FLEET_ATTRIBUTES),
                },
            }
        ],
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
    """Creates the table unless it exists, adds the indexes an existing table lacks (a table
    made by an older release), waits until it is active, enables TTL on `ttl`.

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
    if not created:
        await _add_missing_indexes(client, definition)
    if ttl is not None:
        await _enable_ttl(client, name, ttl)
    return created


async def _add_missing_indexes(client: Any, definition: dict[str, Any]) -> None:
    name = definition["TableName"]
    try:
        table = (await client.describe_table(TableName=name))["Table"]
        present = {index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])}
        for index in definition.get("GlobalSecondaryIndexes", []):
            if index["IndexName"] in present:
                continue
            # DynamoDB adds one index per UpdateTable call, backfilling it from the table.
            await client.update_table(
                TableName=name,
                AttributeDefinitions=definition["AttributeDefinitions"],
                GlobalSecondaryIndexUpdates=[{"Create": index}],
            )
            log.info("index added", extra={"table": name, "index": index["IndexName"]})
            await _wait_active(client, name)
    except Exception as exc:
        raise translate(exc, f"add indexes to {name}") from exc


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
