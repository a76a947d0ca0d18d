"""Fleet-wide time windows over the `date-timestamp-index` GSI.

The GSI's partition key is the UTC day with a write-shard suffix (`2026-11-28#03`), so one day's
writes spread over several partitions. A window is read day by day; within a day every shard is
queried concurrently and the results merged by (timestamp, deviceId). A page's token is the day
and the (timestamp, deviceId) of its last location.

TrackService bounds a window to a day, so a page costs at most two days' shard queries (16 with
the default 8 write shards) plus their follow-up pages, each bounded by the page size.
"""

from __future__ import annotations

import asyncio
import heapq
from datetime import UTC, datetime, timedelta
from typing import Any

from trackstore.domain import Location, Page, WindowQuery
from trackstore.dynamodb.client import translate
from trackstore.dynamodb.items import location_from_item
from trackstore.dynamodb.tables import DATE_INDEX, TTL_ATTRIBUTE
from trackstore.errors import INVALID, Error
from trackstore.paging import decode_token, encode_token, key_field
from trackstore.ports import Clock
from trackstore.timefmt import utc_date

Cursor = tuple[int, str]  # (timestamp, deviceId) of the last location handed out


class FleetWindow:
    def __init__(self, client: Any, table: str, date_shards: int, clock: Clock) -> None:
        self._client = client
        self._table = table
        self._shards = date_shards
        self._clock = clock

    async def page(self, query: WindowQuery) -> Page[Location]:
        scope = f"window:{query.binding}"
        first_day = day = utc_date(query.start)
        after: Cursor | None = None
        if query.token is not None:
            day, after = self._decode(query.token, scope)
            # The window's start may have moved on since (it follows the clock): resume at it.
            day = max(day, first_day)
            if after[0] > query.end:  # the window ends before the cursor: nothing follows
                return Page(items=[])
        last_day = utc_date(query.end)
        now_s = self._clock() // 1000
        found: list[Location] = []
        while day <= last_day:
            need = query.limit - len(found)
            shard_pages = await asyncio.gather(
                *(
                    self._shard(f"{day}#{n:02d}", query, after, need, now_s)
                    for n in range(self._shards)
                )
            )
            merged = list(heapq.merge(*shard_pages, key=lambda loc: (loc.timestamp, loc.device_id)))
            found.extend(merged[:need])
            if len(merged) >= need:
                # The page is full; whether more follow is for the next page to find out.
                last = found[-1]
                cursor = {"day": day, "t": last.timestamp, "d": last.device_id}
                return Page(items=found, next_token=encode_token(scope, cursor))
            day, after = _next_day(day), None
        return Page(items=found)

    async def _shard(
        self, partition: str, query: WindowQuery, after: Cursor | None, need: int, now_s: int
    ) -> list[Location]:
        """Up to `need` + 1 locations of one GSI partition past the cursor, in order."""
        low = query.start if after is None else max(query.start, after[0])
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": DATE_INDEX,
            "KeyConditionExpression": "#date = :p AND #ts BETWEEN :low AND :high",
            "FilterExpression": "#exp > :now",  # expired, not yet deleted: never shown
            "ExpressionAttributeNames": {
                "#date": "date",
                "#ts": "timestamp",
                "#exp": TTL_ATTRIBUTE,
            },
            "ExpressionAttributeValues": {
                ":p": {"S": partition},
                ":low": {"N": str(low)},
                ":high": {"N": str(query.end)},
                ":now": {"N": str(now_s)},
            },
            "Limit": need + 1,
        }
        found: list[Location] = []
        while True:
            try:
                response = await self._client.query(**request)
            except Exception as exc:
                raise translate(exc, f"query {self._table} by date") from exc
            items = response.get("Items", [])
            for item in items:
                location = location_from_item(item)
                if after is None or (location.timestamp, location.device_id) > after:
                    found.append(location)
            found.sort(key=lambda loc: (loc.timestamp, loc.device_id))
            last = response.get("LastEvaluatedKey")
            if not last:
                return found
            # Locations of one timestamp come in any device order within a partition: read on
            # until past the timestamp of the last one this page may use.
            if (
                len(found) > need
                and items
                and int(items[-1]["timestamp"]["N"]) > found[need].timestamp
            ):
                return found
            request["ExclusiveStartKey"] = last

    def _decode(self, token: str, scope: str) -> tuple[str, Cursor]:
        key = decode_token(token, scope)
        day = key_field(key, "day", str)
        timestamp, device_id = key_field(key, "t", int), key_field(key, "d", str)
        try:
            datetime.strptime(day, "%Y-%m-%d")
        except ValueError:
            raise Error(INVALID, "next_token is not valid") from None
        return day, (timestamp, device_id)


def _next_day(day: str) -> str:
    moment = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC) + timedelta(days=1)
    return moment.strftime("%Y-%m-%d")
