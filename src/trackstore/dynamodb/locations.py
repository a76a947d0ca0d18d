"""LocationRepository on the Locations table: `deviceId` + `timestamp`, GSI on `date`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from trackstore.clock import wall_clock_ms
from trackstore.domain import Arrival, HistoryQuery, Location, Order, Page, WindowQuery
from trackstore.dynamodb.batch import BatchWriter
from trackstore.dynamodb.client import TableProbe, conditional, translate
from trackstore.dynamodb.item_json import put_request
from trackstore.dynamodb.items import Item, location_from_item, location_item
from trackstore.dynamodb.tables import TTL_ATTRIBUTE
from trackstore.dynamodb.window import FleetWindow
from trackstore.paging import MAX_KEY_INT, decode_token, encode_token, key_field
from trackstore.ports import Clock
from trackstore.timefmt import DAY_MS

POSITION_ATTRIBUTE = "streamPosition"  # the stream record a location came from
# DynamoDB deletes an item within about 48 hours of its expiresAt; until then reads return it.
ALIVE = "#exp > :now"
MAX_LATEST_LOOKS = 4
# `timestamp` and `date` are DynamoDB reserved words: always aliased.
_NAMES = {"#ts": "timestamp", "#dev": "deviceId"}


class DynamoLocationRepository:
    def __init__(
        self,
        client: Any,
        table: str,
        ttl_days: int,
        date_shards: int,
        concurrency: int = 16,
        clock: Clock = wall_clock_ms,
    ) -> None:
        self._client = client
        self._clock = clock
        self._table = table
        self._ttl_ms = ttl_days * DAY_MS
        self._date_shards = date_shards
        self._writer = BatchWriter(client, table, concurrency=concurrency)
        self._limit = asyncio.Semaphore(concurrency)
        self._probe = TableProbe(client, table)
        self._window = FleetWindow(client, table, date_shards, clock)

    def _item(self, arrival: Arrival) -> Item:
        item = location_item(arrival.location, self._ttl_ms, self._date_shards)
        item[POSITION_ATTRIBUTE] = {"S": arrival.position}
        return item

    async def put_many(self, arrivals: Sequence[Arrival]) -> None:
        # Rendered straight to DynamoDB JSON (item_json): this runs for every record stored. A
        # repeated key keeps its last arrival.
        ttl_ms, date_shards = self._ttl_ms, self._date_shards
        requests = {
            (arrival.location.device_id, arrival.location.timestamp): put_request(
                arrival.location, arrival.position, ttl_ms, date_shards
            )
            for arrival in arrivals
        }
        await self._writer.put(requests.values())

    async def put_new(self, arrivals: Sequence[Arrival]) -> list[Location]:
        decided = await asyncio.gather(*(self._put_if_absent(a) for a in arrivals))
        return [arrival.location for arrival, new in zip(arrivals, decided, strict=True) if new]

    async def _put_if_absent(self, arrival: Arrival) -> bool:
        item = self._item(arrival)
        async with self._limit:
            stored = await conditional(
                self._client.put_item(
                    TableName=self._table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(#dev) OR #pos = :pos",
                    ExpressionAttributeNames={"#dev": "deviceId", "#pos": POSITION_ATTRIBUTE},
                    ExpressionAttributeValues={":pos": {"S": arrival.position}},
                ),
                f"put to {self._table}",
            )
        return stored is not None

    async def history(self, query: HistoryQuery) -> Page[Location]:
        scope = f"locations:{query.device_id}:{query.order.value}:{query.binding}"
        start = query.start if query.start is not None else 0
        end = query.end if query.end is not None else MAX_KEY_INT
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#dev = :dev AND #ts BETWEEN :start AND :end",
            "FilterExpression": ALIVE,
            "ExpressionAttributeNames": {**_NAMES, "#exp": TTL_ATTRIBUTE},
            "ExpressionAttributeValues": {
                ":dev": {"S": query.device_id},
                ":start": {"N": str(start)},
                ":end": {"N": str(end)},
                ":now": {"N": str(self._clock() // 1000)},
            },
            "ScanIndexForward": query.order is Order.ASC,
            "Limit": query.limit,
        }
        if query.token is not None:
            after = key_field(decode_token(query.token, scope), "t", int)
            # The window may have moved since the token was made (its start follows the
            # retention edge): a cursor outside it either ends the listing or is not needed.
            ascending = query.order is Order.ASC
            if (after >= end) if ascending else (after <= start):
                return Page(items=[])
            if start <= after <= end:
                request["ExclusiveStartKey"] = {
                    "deviceId": {"S": query.device_id},
                    "timestamp": {"N": str(after)},
                }
        response = await self._query(request)
        items = [location_from_item(item) for item in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        token = encode_token(scope, {"t": int(last["timestamp"]["N"])}) if last else None
        return Page(items=items, next_token=token)

    async def window(self, query: WindowQuery) -> Page[Location]:
        return await self._window.page(query)

    async def latest(self, device_id: str) -> Location | None:
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#dev = :dev",
            "FilterExpression": ALIVE,
            "ExpressionAttributeNames": {"#dev": "deviceId", "#exp": TTL_ATTRIBUTE},
            "ExpressionAttributeValues": {
                ":dev": {"S": device_id},
                ":now": {"N": str(self._clock() // 1000)},
            },
            "ScanIndexForward": False,
            "Limit": 1,
        }
        # An expired newest item is skipped; a few more looks find a live one, if any is near.
        for _ in range(MAX_LATEST_LOOKS):
            response = await self._query(request)
            items = response.get("Items", [])
            if items:
                return location_from_item(items[0])
            last = response.get("LastEvaluatedKey")
            if not last:
                return None
            request["ExclusiveStartKey"] = last
            request["Limit"] = 25
        return None

    async def stored_count(self, device_id: str, before: int | None) -> int:
        request = self._stored(device_id, before) | {"Select": "COUNT"}
        count = 0
        while True:
            response = await self._query(request)
            count += int(response.get("Count", 0))
            last = response.get("LastEvaluatedKey")
            if not last:
                return count
            request["ExclusiveStartKey"] = last

    async def oldest_timestamps(self, device_id: str, before: int | None, limit: int) -> list[int]:
        request = self._stored(device_id, before) | {"ProjectionExpression": "#ts", "Limit": limit}
        request["ExpressionAttributeNames"]["#ts"] = "timestamp"
        response = await self._query(request)
        return [int(item["timestamp"]["N"]) for item in response.get("Items", [])]

    def _stored(self, device_id: str, before: int | None) -> dict[str, Any]:
        """A strongly consistent Query for the device's items before `before`, expired or not."""
        condition = "#dev = :dev"
        values: dict[str, Any] = {":dev": {"S": device_id}}
        names = {"#dev": "deviceId"}
        if before is not None:
            condition += " AND #ts < :before"
            values[":before"] = {"N": str(before)}
            names["#ts"] = "timestamp"
        return {
            "TableName": self._table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ConsistentRead": True,
        }

    async def delete(self, device_id: str, timestamps: Sequence[int]) -> None:
        keys = [{"deviceId": {"S": device_id}, "timestamp": {"N": str(t)}} for t in set(timestamps)]
        await self._writer.delete(keys)

    async def ping(self) -> None:
        await self._probe.ping()

    async def _query(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            response: dict[str, Any] = await self._client.query(**request)
        except Exception as exc:
            raise translate(exc, f"query {self._table}") from exc
        return response
