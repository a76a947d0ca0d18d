"""LocationRepository on the Locations table: `deviceId` + `timestamp`, GSI on `date`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from trackstore.domain import Arrival, HistoryQuery, Location, Order, Page, WindowQuery
from trackstore.dynamodb.batch import BatchWriter
from trackstore.dynamodb.client import TableProbe, conditional, translate
from trackstore.dynamodb.items import Item, location_from_item, location_item
from trackstore.dynamodb.window import FleetWindow
from trackstore.paging import decode_token, encode_token, key_field
from trackstore.timefmt import DAY_MS

POSITION_ATTRIBUTE = "streamPosition"  # the stream record a location came from
# `timestamp` and `date` are DynamoDB reserved words: always aliased.
_NAMES = {"#ts": "timestamp", "#dev": "deviceId"}


def _key(item: Item) -> tuple[str, ...]:
    return item["deviceId"]["S"], item["timestamp"]["N"]


class DynamoLocationRepository:
    def __init__(
        self,
        client: Any,
        table: str,
        ttl_days: int,
        date_shards: int,
        concurrency: int = 16,
    ) -> None:
        self._client = client
        self._table = table
        self._ttl_ms = ttl_days * DAY_MS
        self._date_shards = date_shards
        self._writer = BatchWriter(client, table, _key, concurrency=concurrency)
        self._limit = asyncio.Semaphore(concurrency)
        self._probe = TableProbe(client, table)
        self._window = FleetWindow(client, table, date_shards)

    def _item(self, arrival: Arrival) -> Item:
        item = location_item(arrival.location, self._ttl_ms, self._date_shards)
        item[POSITION_ATTRIBUTE] = {"S": arrival.position}
        return item

    async def put_many(self, arrivals: Sequence[Arrival]) -> None:
        await self._writer.put([self._item(arrival) for arrival in arrivals])

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
        scope = f"dynamodb:{self._table}:{query.device_id}:{query.order.value}"
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#dev = :dev AND #ts BETWEEN :start AND :end",
            "ExpressionAttributeNames": _NAMES,
            "ExpressionAttributeValues": {
                ":dev": {"S": query.device_id},
                ":start": {"N": str(query.start if query.start is not None else 0)},
                ":end": {"N": str(query.end if query.end is not None else 2**53)},
            },
            "ScanIndexForward": query.order is Order.ASC,
            "Limit": query.limit,
        }
        if query.token is not None:
            after = key_field(decode_token(query.token, scope), "t", int)
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
        response = await self._query(
            {
                "TableName": self._table,
                "KeyConditionExpression": "#dev = :dev",
                "ExpressionAttributeNames": {"#dev": "deviceId"},
                "ExpressionAttributeValues": {":dev": {"S": device_id}},
                "ScanIndexForward": False,
                "Limit": 1,
            }
        )
        items = response.get("Items", [])
        return location_from_item(items[0]) if items else None

    async def ping(self) -> None:
        await self._probe.ping()

    async def _query(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            response: dict[str, Any] = await self._client.query(**request)
        except Exception as exc:
            raise translate(exc, f"query {self._table}") from exc
        return response
