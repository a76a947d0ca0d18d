"""The Devices table read as the fleet views need it: the devices changed since a moment, from
the sparse index FLEET_INDEX (`fleetBucket`, `changedAt`), or all of them by a parallel Scan
where that index does not exist yet. DynamoDeviceRepository writes the index's keys."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError

from trackstore.aws import error_code
from trackstore.domain import Device
from trackstore.dynamodb.client import translate
from trackstore.dynamodb.items import device_from_item
from trackstore.dynamodb.tables import FLEET_ATTRIBUTES, FLEET_INDEX

log = logging.getLogger(__name__)

FLEET_BUCKETS = 16  # fixed: readers query every bucket, so changing it needs a new index
_FLEET_PROJECTION = ", ".join(["deviceId", *(f"#f{i}" for i in range(len(FLEET_ATTRIBUTES)))])
_FLEET_NAMES = {f"#f{i}": name for i, name in enumerate(FLEET_ATTRIBUTES)}
SCAN_SEGMENTS = 4  # a full read at start scans in parallel


def fleet_bucket(device_id: str) -> str:
    return str(zlib.crc32(device_id.encode()) % FLEET_BUCKETS)


class FleetChanges:
    def __init__(self, client: Any, table: str, limit: asyncio.Semaphore) -> None:
        self._client = client
        self._table = table
        self._limit = limit  # the repository's: one bound on calls in flight
        self._index_missing_logged = False

    async def changed_since(self, since_ms: int | None) -> Sequence[Device]:
        if since_ms is not None:
            try:
                found = await asyncio.gather(
                    *(self._changed_in(str(b), since_ms) for b in range(FLEET_BUCKETS))
                )
                return [device for bucket in found for device in bucket]
            except ClientError as exc:
                if not _index_missing(exc):
                    raise translate(exc, f"query {self._table}") from exc
                if not self._index_missing_logged:
                    self._index_missing_logged = True
                    log.warning(
                        "the Devices table has no fleet index: every refresh reads the whole "
                        "table; `trackstore init` adds the index",
                        extra={"table": self._table, "index": FLEET_INDEX},
                    )
        found = await asyncio.gather(*(self._scan(s) for s in range(SCAN_SEGMENTS)))
        return [device for segment in found for device in segment]

    async def _changed_in(self, bucket: str, since_ms: int) -> Sequence[Device]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": FLEET_INDEX,
            "KeyConditionExpression": "fleetBucket = :b AND changedAt >= :since",
            "ExpressionAttributeValues": {":b": {"S": bucket}, ":since": {"N": str(since_ms)}},
        }
        return await self._read_all("query", request)

    async def _scan(self, segment: int) -> Sequence[Device]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "ProjectionExpression": _FLEET_PROJECTION,
            "ExpressionAttributeNames": _FLEET_NAMES,
            "Segment": segment,
            "TotalSegments": SCAN_SEGMENTS,
        }
        try:
            return await self._read_all("scan", request)
        except ClientError as exc:
            raise translate(exc, f"scan {self._table}") from exc

    async def _read_all(self, operation: str, request: dict[str, Any]) -> Sequence[Device]:
        """Every page of a query or scan. A ClientError is left to the caller, who knows
        which ones it can handle (an index that does not exist yet)."""
        call = getattr(self._client, operation)
        devices: list[Device] = []
        while True:
            async with self._limit:
                try:
                    response = await call(**request)
                except ClientError:
                    raise
                except Exception as exc:
                    raise translate(exc, f"{operation} {self._table}") from exc
            devices.extend(device_from_item(item) for item in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if not last:
                return devices
            request["ExclusiveStartKey"] = last


def _index_missing(exc: ClientError) -> bool:
    # DynamoDB and dynalite: ValidationException "The table does not have the specified
    # index"; moto: ResourceNotFoundException "Invalid index". A missing table names no index.
    return error_code(exc) in {"ValidationException", "ResourceNotFoundException"} and (
        "index" in str(exc).lower()
    )
