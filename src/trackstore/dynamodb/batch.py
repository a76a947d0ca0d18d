"""BatchWriteItem done right: chunks of 25 sent concurrently with a bound,
UnprocessedItems retried with capped exponential backoff and jitter until a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Sequence
from typing import Any

import msgspec

from trackstore.backoff import Backoff
from trackstore.dynamodb.client import translate_write
from trackstore.dynamodb.items import Item
from trackstore.errors import UNAVAILABLE, Error

MAX_BATCH_ITEMS = 25  # DynamoDB's limit per BatchWriteItem


class BatchWriter:
    def __init__(
        self,
        client: Any,
        table: str,
        concurrency: int = 8,
        deadline_s: float = 20.0,
        backoff: Backoff | None = None,
    ) -> None:
        self._client = client
        self._table = table
        self._limit = asyncio.Semaphore(concurrency)
        self._deadline_s = deadline_s
        self._backoff = backoff or Backoff(base=0.05, cap=2.0)
        self.retries = 0  # UnprocessedItems rounds, for metrics and tests

    async def put(self, requests: Collection[msgspec.Raw]) -> None:
        """Sends these PutRequests (as DynamoDB JSON, each key once: DynamoDB refuses a batch
        that names one key twice). Writes every item, or raises Error(UNAVAILABLE), or
        Error(INVALID) when DynamoDB refuses a value (then the other chunks may be written)."""
        await self._write(list(requests))

    async def delete(self, keys: Sequence[Item]) -> None:
        """Deletes the items with these keys (each given once), as `put` writes: every one, or
        raises."""
        await self._write([{"DeleteRequest": {"Key": key}} for key in keys])

    async def _write(self, requests: list[Any]) -> None:
        if not requests:
            return
        deadline = time.monotonic() + self._deadline_s
        chunks = [
            requests[i : i + MAX_BATCH_ITEMS] for i in range(0, len(requests), MAX_BATCH_ITEMS)
        ]
        await asyncio.gather(*(self._write_chunk(chunk, deadline) for chunk in chunks))

    async def _write_chunk(self, requests: list[Any], deadline: float) -> None:
        attempt = 0
        while requests:
            async with self._limit:
                try:
                    response = await self._client.batch_write_item(
                        RequestItems={self._table: requests}
                    )
                except Exception as exc:
                    error = translate_write(exc, f"write to {self._table}")
                    if error.code is not UNAVAILABLE or time.monotonic() > deadline:
                        raise error from exc
                    response = {"UnprocessedItems": {self._table: requests}}
            requests = response.get("UnprocessedItems", {}).get(self._table, [])
            if not requests:
                return
            attempt += 1
            self.retries += 1
            delay = self._backoff.delay(attempt)
            if time.monotonic() + delay > deadline:
                raise Error(
                    UNAVAILABLE,
                    f"{len(requests)} items to {self._table} still unprocessed at the deadline",
                    retry_after=1,
                )
            await asyncio.sleep(delay)
