"""An in-process stream with shards, sequence numbers and checkpoints, and a source reading it.

It keeps Kinesis's guarantees that the consumer relies on: order per shard, a device always on the
same shard (partition key hash), and resumption after the last checkpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence

from trackstore.domain import StreamRecord

MAX_RECORDS_PER_SHARD = 1_000_000  # the oldest records are trimmed past this, like retention


class MemoryStream:
    def __init__(self, shard_count: int, clock: Callable[[], int]) -> None:
        self.shard_ids = [f"shardId-{i:012d}" for i in range(shard_count)]
        self._clock = clock
        self._shards: dict[str, list[StreamRecord]] = {s: [] for s in self.shard_ids}
        self._trimmed: dict[str, int] = dict.fromkeys(self.shard_ids, 0)
        self.checkpoints: dict[str, int] = {}  # shard -> count of records processed
        self._changed = asyncio.Event()

    def put_records(self, entries: Sequence[tuple[str, bytes]]) -> list[StreamRecord]:
        """Appends (partition key, data) entries; returns them as the stream stored them."""
        now = self._clock()
        stored = []
        for partition_key, data in entries:
            shard = self.shard_ids[_hash(partition_key) % len(self.shard_ids)]
            records = self._shards[shard]
            number = self._trimmed[shard] + len(records)
            record = StreamRecord(
                data=data,
                partition_key=partition_key,
                shard_id=shard,
                sequence_number=f"{number:021d}",
                arrival_ms=now,
            )
            records.append(record)
            stored.append(record)
            if len(records) > MAX_RECORDS_PER_SHARD:
                del records[: len(records) - MAX_RECORDS_PER_SHARD]
                self._trimmed[shard] = number + 1 - MAX_RECORDS_PER_SHARD
        self._changed.set()
        return stored

    def read(self, shard_id: str, position: int, limit: int) -> list[StreamRecord]:
        """Up to `limit` records of the shard starting at absolute `position`."""
        offset = max(position - self._trimmed[shard_id], 0)
        return self._shards[shard_id][offset : offset + limit]

    def end(self, shard_id: str) -> int:
        return self._trimmed[shard_id] + len(self._shards[shard_id])

    async def wait_for_records(self) -> None:
        """Returns when records are appended after this call began."""
        self._changed.clear()
        await self._changed.wait()


class MemoryBatch:
    def __init__(
        self,
        stream: MemoryStream,
        shard_id: str,
        records: list[StreamRecord],
        end: int,
        finished: asyncio.Event,
    ) -> None:
        self.shard_id = shard_id
        self.records = records
        self.millis_behind_latest: int | None = 0 if end >= stream.end(shard_id) else None
        self.done = False
        self._stream = stream
        self._end = end
        self._finished = finished

    async def checkpoint(self) -> None:
        self._stream.checkpoints[self.shard_id] = self._end
        self.done = True
        self._finished.set()


class MemoryStreamSource:
    """Reads every shard of a MemoryStream from its checkpoint on; one reader per process."""

    def __init__(self, stream: MemoryStream, batch_size: int, idle_seconds: float = 0.2) -> None:
        self._stream = stream
        self._batch_size = batch_size
        self._idle_seconds = idle_seconds
        self._stopping = asyncio.Event()
        self._finished = asyncio.Event()  # a batch was checkpointed: its shard may go on

    async def batches(self) -> AsyncIterator[MemoryBatch]:
        positions = {s: self._stream.checkpoints.get(s, 0) for s in self._stream.shard_ids}
        in_hand: dict[str, MemoryBatch] = {}
        while not self._stopping.is_set():
            handed_out = False
            self._finished.clear()
            for shard_id, position in positions.items():
                if self._stopping.is_set():
                    return
                if shard_id in in_hand and not in_hand[shard_id].done:
                    continue  # a shard's next batch waits for its previous checkpoint
                records = self._stream.read(shard_id, position, self._batch_size)
                if not records:
                    continue
                end = position + len(records)
                positions[shard_id] = end
                handed_out = True
                batch = MemoryBatch(self._stream, shard_id, records, end, self._finished)
                in_hand[shard_id] = batch
                yield batch
            if not handed_out:
                waiter = asyncio.ensure_future(self._stream.wait_for_records())
                stopper = asyncio.ensure_future(self._stopping.wait())
                finisher = asyncio.ensure_future(self._finished.wait())
                await asyncio.wait(
                    {waiter, stopper, finisher},
                    timeout=self._idle_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                waiter.cancel()
                stopper.cancel()
                finisher.cancel()

    async def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        self._stopping.set()

    def state(self) -> None:
        return None  # no leases: this source reads every shard


def _hash(partition_key: str) -> int:
    # Kinesis maps the MD5 of the partition key onto shard hash ranges: same spread here.
    return int.from_bytes(hashlib.md5(partition_key.encode()).digest()[:8], "big")
