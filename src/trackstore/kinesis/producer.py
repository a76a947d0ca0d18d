"""PutRecords done right: at most 500 records and 5 MiB per call, failed records retried with
capped exponential backoff and jitter until a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from trackstore.backoff import Backoff
from trackstore.errors import UNAVAILABLE, Error
from trackstore.kinesis.client import translate

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024


class Producer:
    def __init__(
        self, client: Any, stream: str, deadline_s: float = 30.0, backoff: Backoff | None = None
    ) -> None:
        self._client = client
        self._stream = stream
        self._deadline_s = deadline_s
        self._backoff = backoff or Backoff(base=0.1, cap=5.0)
        # Records a call did not take (refused one by one when throttled, or the whole call
        # failed), and records sent again after that: the two differ by those given up at the
        # deadline.
        self.refused = 0
        self.retried = 0

    async def put(self, entries: Sequence[tuple[str, bytes]]) -> None:
        """Publishes (partition key, data) entries; raises Error(UNAVAILABLE) if some are still
        refused at the deadline. Order is kept per partition key within a call only."""
        deadline = time.monotonic() + self._deadline_s
        for chunk in _chunks(entries):
            await self._put_chunk(chunk, deadline)

    async def _put_chunk(self, chunk: list[tuple[str, bytes]], deadline: float) -> None:
        pending = chunk
        attempt = 0
        while pending:
            try:
                response = await self._client.put_records(
                    StreamName=self._stream,
                    Records=[{"PartitionKey": key, "Data": data} for key, data in pending],
                )
                results = response.get("Records", [])
                pending = [
                    entry
                    for entry, result in zip(pending, results, strict=True)
                    if "ErrorCode" in result
                ]
            except Exception as exc:
                error = translate(exc, f"put records to {self._stream}")
                if error.code is not UNAVAILABLE:
                    raise error from exc
            if not pending:
                return
            self.refused += len(pending)
            attempt += 1
            delay = self._backoff.delay(attempt)
            if time.monotonic() + delay > deadline:
                raise Error(
                    UNAVAILABLE,
                    f"{len(pending)} records to {self._stream} still refused at the deadline",
                    retry_after=1,
                )
            await asyncio.sleep(delay)
            self.retried += len(pending)


def _chunks(entries: Sequence[tuple[str, bytes]]) -> list[list[tuple[str, bytes]]]:
    chunks: list[list[tuple[str, bytes]]] = []
    current: list[tuple[str, bytes]] = []
    size = 0
    for key, data in entries:
        entry_size = len(key.encode()) + len(data)
        if current and (
            len(current) == MAX_RECORDS_PER_CALL or size + entry_size > MAX_BYTES_PER_CALL
        ):
            chunks.append(current)
            current, size = [], 0
        current.append((key, data))
        size += entry_size
    if current:
        chunks.append(current)
    return chunks
