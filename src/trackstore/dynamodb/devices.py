"""DeviceRepository on the Devices table (`deviceId`).

Besides the contract's attributes, an item carries `appliedThrough`: a map from shard id to the
stream position up to which that shard's records of the device have been counted. Every activity
update is conditional on `lastSeen` and on the marks of the batch's shards being what the batch
read, which is what makes a replayed batch change nothing.

A write that changes what a fleet view shows (a new last location, a registration) also sets
`changedAt` (the writer's clock, epoch ms) and `fleetBucket`, one of FLEET_BUCKETS values fixed
by the device id: the keys of the sparse index FLEET_INDEX, which `changed_since` queries so a
refresh reads the devices that changed, not the fleet. The buckets spread those index writes
over partitions (a DynamoDB partition takes about 1,000 writes a second).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Sequence
from typing import Any

from trackstore.backoff import Backoff
from trackstore.clock import wall_clock_ms
from trackstore.domain import Device, DeviceActivity, DeviceMark, Page, check_device_id
from trackstore.dynamodb.client import TableProbe, conditional, translate, translate_write
from trackstore.dynamodb.fleet_changes import FleetChanges, fleet_bucket
from trackstore.dynamodb.items import device_from_item, location_attributes, to_value
from trackstore.errors import CONFLICT, UNAVAILABLE, Error
from trackstore.paging import decode_token, encode_token, key_field
from trackstore.ports import Clock

MAX_BATCH_GET = 100  # DynamoDB's limit per BatchGetItem
APPLIED_THROUGH = "appliedThrough"


class DynamoDeviceRepository:
    def __init__(
        self,
        client: Any,
        table: str,
        concurrency: int = 32,
        deadline_s: float = 20.0,
        clock: Clock = wall_clock_ms,
    ) -> None:
        # A batch updates each of its devices with one call: with a few hundred devices per
        # batch, the consumer waits on round trips, not CPU, unless many are in flight.
        self._client = client
        self._table = table
        self._limit = asyncio.Semaphore(concurrency)
        self._deadline_s = deadline_s
        self._backoff = Backoff(base=0.05, cap=2.0)
        self._probe = TableProbe(client, table)
        self._clock = clock
        self._fleet = FleetChanges(client, table, self._limit)

    async def marks(self, device_ids: Collection[str]) -> dict[str, DeviceMark]:
        ids = list(dict.fromkeys(device_ids))
        chunks = [ids[i : i + MAX_BATCH_GET] for i in range(0, len(ids), MAX_BATCH_GET)]
        marks: dict[str, DeviceMark] = {}
        for items in await asyncio.gather(*(self._get_marks(chunk) for chunk in chunks)):
            for item in items:
                # A string is a mark from before marks were kept per shard: no shard is known.
                through = item.get(APPLIED_THROUGH, {}).get("M")
                if "lastSeen" not in item and through is None:
                    continue  # registered, never reported
                marks[item["deviceId"]["S"]] = DeviceMark(
                    last_seen=int(item["lastSeen"]["N"]) if "lastSeen" in item else None,
                    applied_through=None
                    if through is None
                    else {shard: value["S"] for shard, value in through.items()},
                )
        return marks

    async def _get_marks(self, device_ids: list[str]) -> list[dict[str, Any]]:
        keys: dict[str, Any] = {
            self._table: {
                "Keys": [{"deviceId": {"S": d}} for d in device_ids],
                "ConsistentRead": True,
                "ProjectionExpression": "deviceId, lastSeen, #at",
                "ExpressionAttributeNames": {"#at": APPLIED_THROUGH},
            }
        }
        items: list[dict[str, Any]] = []
        deadline = time.monotonic() + self._deadline_s
        attempt = 0
        while keys:
            async with self._limit:
                try:
                    response = await self._client.batch_get_item(RequestItems=keys)
                except Exception as exc:
                    raise translate(exc, f"read {self._table}") from exc
            items.extend(response.get("Responses", {}).get(self._table, []))
            keys = response.get("UnprocessedKeys") or {}
            if keys:
                attempt += 1
                delay = self._backoff.delay(attempt)
                if time.monotonic() + delay > deadline:
                    raise Error(UNAVAILABLE, f"{self._table} keeps throttling reads", retry_after=1)
                await asyncio.sleep(delay)
        return items

    async def apply_activity(self, activities: Sequence[DeviceActivity]) -> None:
        applied = await asyncio.gather(*(self._apply(a) for a in activities))
        moved = [a.device_id for a, ok in zip(activities, applied, strict=True) if not ok]
        if moved:
            raise Error(CONFLICT, f"lastSeen moved under this batch for {', '.join(moved)}")

    async def _apply(self, activity: DeviceActivity) -> bool:
        names = {"#at": APPLIED_THROUGH}
        values: dict[str, Any] = {":added": {"N": str(activity.added)}}
        updates: list[str] = []
        expected = activity.expected or DeviceMark()
        if expected.last_seen is None:
            conditions = ["attribute_not_exists(lastSeen)"]
        else:
            values[":seen"] = {"N": str(expected.last_seen)}
            conditions = ["lastSeen = :seen"]
        if expected.applied_through is None:
            # No per-shard marks yet: the map is written whole (a nested SET needs its parent).
            values[":at"] = {"M": {s: {"S": p} for s, p in activity.applied_through.items()}}
            values[":string"] = {"S": "S"}
            updates.append("#at = :at")
            conditions.append("(attribute_not_exists(#at) OR attribute_type(#at, :string))")
        else:
            values[":map"] = {"S": "M"}
            conditions.append("attribute_type(#at, :map)")
            for i, (shard, position) in enumerate(activity.applied_through.items()):
                names[f"#s{i}"] = shard
                values[f":p{i}"] = {"S": position}
                updates.append(f"#at.#s{i} = :p{i}")
                was = expected.through(shard)
                if was is None:
                    conditions.append(f"attribute_not_exists(#at.#s{i})")
                else:
                    values[f":w{i}"] = {"S": was}
                    conditions.append(f"#at.#s{i} = :w{i}")
        condition = " AND ".join(conditions)
        newest = activity.newest
        last_seen = expected.last_seen
        if newest is not None and (last_seen is None or newest.timestamp > last_seen):
            updates += ["lastSeen = :ls", "lastLocation = :loc", "#st = :active", *_CHANGED]
            names["#st"] = "status"
            values[":ls"] = {"N": str(newest.timestamp)}
            values[":loc"] = {"M": location_attributes(newest)}
            values[":active"] = {"S": "active"}
            values |= self._changed(activity.device_id)
        async with self._limit:
            applied = await conditional(
                self._client.update_item(
                    TableName=self._table,
                    Key={"deviceId": {"S": activity.device_id}},
                    UpdateExpression=f"SET {', '.join(updates)} ADD totalUpdates :added",
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                ),
                f"update {self._table}",
            )
        return applied is not None

    async def get(self, device_id: str) -> Device | None:
        try:
            response = await self._client.get_item(
                TableName=self._table, Key={"deviceId": {"S": device_id}}
            )
        except Exception as exc:
            raise translate(exc, f"read {self._table}") from exc
        item = response.get("Item")
        return device_from_item(item) if item else None

    async def list(self, limit: int, token: str | None) -> Page[Device]:
        scope = f"devices:{limit}"
        request: dict[str, Any] = {"TableName": self._table, "Limit": limit}
        if token is not None:
            after = check_device_id(key_field(decode_token(token, scope), "d", str))
            request["ExclusiveStartKey"] = {"deviceId": {"S": after}}
        try:
            response = await self._client.scan(**request)
        except Exception as exc:
            raise translate(exc, f"scan {self._table}") from exc
        last = response.get("LastEvaluatedKey")
        return Page(
            items=[device_from_item(item) for item in response.get("Items", [])],
            next_token=encode_token(scope, {"d": last["deviceId"]["S"]}) if last else None,
        )

    async def register(
        self, device_id: str, name: str | None, metadata: dict[str, object] | None, now_ms: int
    ) -> Device:
        updates = ["registeredAt = :now", "#st = if_not_exists(#st, :registered)", *_CHANGED]
        values: dict[str, Any] = {":now": {"N": str(now_ms)}, ":registered": {"S": "registered"}}
        values |= self._changed(device_id)
        if name is not None:
            updates.append("#name = :name")
            values[":name"] = {"S": name}
        if metadata is not None:
            updates.append("metadata = :meta")
            values[":meta"] = to_value(metadata)
        names = {"#st": "status"} | ({"#name": "name"} if name is not None else {})
        response = await conditional(
            self._client.update_item(
                TableName=self._table,
                Key={"deviceId": {"S": device_id}},
                UpdateExpression=f"SET {', '.join(updates)}",
                ConditionExpression="attribute_not_exists(registeredAt)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            ),
            f"register in {self._table}",
        )
        if response is None:
            raise Error(CONFLICT, f"device {device_id} is already registered")
        return device_from_item(response["Attributes"])

    async def forget_location(self, device_id: str, timestamp: int) -> bool:
        response = await conditional(
            self._client.update_item(
                TableName=self._table,
                Key={"deviceId": {"S": device_id}},
                UpdateExpression=f"REMOVE lastLocation SET {', '.join(_CHANGED)}",
                ConditionExpression="lastLocation.#ts = :ts",
                ExpressionAttributeNames={"#ts": "timestamp"},
                ExpressionAttributeValues={":ts": {"N": str(timestamp)}} | self._changed(device_id),
            ),
            f"update {self._table}",
        )
        return response is not None

    async def delete(self, device_id: str) -> bool:
        try:
            response = await self._client.delete_item(
                TableName=self._table, Key={"deviceId": {"S": device_id}}, ReturnValues="ALL_OLD"
            )
        except Exception as exc:
            raise translate_write(exc, f"delete from {self._table}") from exc
        return bool(response.get("Attributes"))

    def _changed(self, device_id: str) -> dict[str, Any]:
        return {":fb": {"S": fleet_bucket(device_id)}, ":ca": {"N": str(self._clock())}}

    async def changed_since(self, since_ms: int | None) -> Sequence[Device]:
        return await self._fleet.changed_since(since_ms)

    async def ping(self) -> None:
        await self._probe.ping()


_CHANGED = ("fleetBucket = :fb", "changedAt = :ca")
