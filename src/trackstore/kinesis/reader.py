"""One shard's reader: GetRecords in a loop, handing out one batch at a time in order.

The next batch is fetched while the current one is being stored, but handed out only after the
current one was checkpointed, so a shard's records are applied strictly in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from botocore.exceptions import ClientError

from trackstore.aws import error_code
from trackstore.backoff import Backoff
from trackstore.domain import StreamRecord, position_order
from trackstore.errors import CONFLICT, UNAVAILABLE, Error
from trackstore.kinesis.client import translate
from trackstore.kinesis.kpl import deaggregate
from trackstore.leasing import LATEST, SHARD_END, TRIM_HORIZON

log = logging.getLogger(__name__)

MIN_CALL_INTERVAL_S = 0.2  # Kinesis allows 5 GetRecords calls per second per shard


class KinesisBatch:
    def __init__(
        self,
        shard_id: str,
        records: list[StreamRecord],
        millis_behind_latest: int | None,
        commit: Callable[[str, int], Awaitable[None]],
    ) -> None:
        self.shard_id = shard_id
        self.records = records
        self.millis_behind_latest = millis_behind_latest
        self._commit = commit
        self.done = asyncio.Event()
        self.checkpointed = False

    async def checkpoint(self) -> None:
        """Raises Error(CONFLICT) when the lease is lost (the reader then stops), and
        Error(UNAVAILABLE) when the lease table did not answer: the caller may try again."""
        last = self.records[-1]
        try:
            await self._commit(last.sequence_number, last.sub_sequence_number)
        except Error as error:
            if error.code is CONFLICT:
                self.done.set()
            raise
        self.checkpointed = True
        self.done.set()

    def abandon(self) -> None:
        self.done.set()


class ShardReader:
    def __init__(
        self,
        client: Any,
        stream: str,
        shard_id: str,
        checkpoint: str,
        checkpoint_sub: int,
        batch_size: int,
        idle_s: float,
        hand_out: Callable[[KinesisBatch], Awaitable[None]],
        commit: Callable[[str, int], Awaitable[None]],
        backoff: Backoff | None = None,
        on_lag: Callable[[str, int], None] | None = None,
    ) -> None:
        self._client = client
        self._stream = stream
        self.shard_id = shard_id
        self._checkpoint = checkpoint
        # Position of the last record fetched, as (sequence number, sub-sequence number).
        self._after: tuple[str, int] | None = None
        if checkpoint not in (TRIM_HORIZON, LATEST, SHARD_END):
            self._after = (checkpoint, checkpoint_sub)
        self._batch_size = batch_size
        self._idle_s = idle_s
        self._hand_out = hand_out
        self._commit = commit
        self._backoff = backoff or Backoff(base=0.2, cap=10.0)
        self._on_lag = on_lag
        self.reached_end = False

    async def run(self) -> None:
        """Reads until the shard ends (then checkpoints SHARD_END), a batch is not checkpointed
        (lease lost, or the consumer is stopping), or the task is cancelled."""
        iterator: str | None = await self._iterator()
        pending: KinesisBatch | None = None
        last_call = 0.0
        while iterator is not None:
            await asyncio.sleep(max(0.0, last_call + MIN_CALL_INTERVAL_S - time.monotonic()))
            last_call = time.monotonic()
            response, iterator = await self._get_records(iterator)
            records = self._records(response.get("Records", []))
            if self._on_lag is not None and "MillisBehindLatest" in response:
                self._on_lag(self.shard_id, int(response["MillisBehindLatest"]))
            if pending is not None:
                await pending.done.wait()
                if not pending.checkpointed:
                    return
                pending = None
            if records:
                self._after = (records[-1].sequence_number, records[-1].sub_sequence_number)
                pending = KinesisBatch(
                    self.shard_id, records, response.get("MillisBehindLatest"), self._commit
                )
                await self._hand_out(pending)
            if iterator is None:
                if pending is not None:
                    await pending.done.wait()
                    if not pending.checkpointed:
                        return
                await self._commit(SHARD_END, 0)
                self.reached_end = True
                log.info("shard read to its end", extra={"shard": self.shard_id})
                return
            if not records and not response.get("MillisBehindLatest"):
                await asyncio.sleep(self._idle_s)

    async def _iterator(self) -> str:
        request: dict[str, Any] = {"StreamName": self._stream, "ShardId": self.shard_id}
        if self._after is not None:
            # AT, not AFTER: a KPL record checkpointed part-way must be read again; the
            # sub-records already processed are dropped by _records.
            request["ShardIteratorType"] = "AT_SEQUENCE_NUMBER"
            request["StartingSequenceNumber"] = self._after[0]
        else:
            request["ShardIteratorType"] = (
                "LATEST" if self._checkpoint == LATEST else "TRIM_HORIZON"
            )
        response = await self._call("get_shard_iterator", request)
        return str(response["ShardIterator"])

    async def _get_records(self, iterator: str) -> tuple[dict[str, Any], str | None]:
        attempt = 0
        while True:
            try:
                response = await self._client.get_records(
                    ShardIterator=iterator, Limit=self._batch_size
                )
                return response, response.get("NextShardIterator")
            except Exception as exc:
                if isinstance(exc, ClientError) and error_code(exc) == "ExpiredIteratorException":
                    # Rebuilt from the last record fetched, never from LATEST.
                    iterator = await self._iterator()
                    continue
                error = translate(exc, f"read {self.shard_id}")
                if error.code is not UNAVAILABLE:
                    raise error from exc
                # Throttling is normal when readers share a shard: back off, same iterator.
                if attempt in (0, 10) or attempt % 100 == 0:  # seen, without flooding the log
                    log.warning(
                        "GetRecords failed, retrying",
                        extra={"shard": self.shard_id, "attempt": attempt + 1, "error": str(exc)},
                    )
            attempt += 1
            await asyncio.sleep(self._backoff.delay(attempt))

    async def _call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                response: dict[str, Any] = await getattr(self._client, operation)(**request)
                return response
            except Exception as exc:
                error = translate(exc, f"{operation} {self.shard_id}")
                if error.code is not UNAVAILABLE:
                    raise error from exc
            attempt += 1
            await asyncio.sleep(self._backoff.delay(attempt))

    def _records(self, raw: list[dict[str, Any]]) -> list[StreamRecord]:
        records: list[StreamRecord] = []
        after = position_order(f"{self._after[0]}/{self._after[1]}") if self._after else None
        for record in raw:
            sequence = record["SequenceNumber"]
            arrival = record.get("ApproximateArrivalTimestamp")
            arrival_ms = int(arrival.timestamp() * 1000) if arrival is not None else 0
            length, digits, _ = position_order(sequence) if after is not None else (0, "", 0)
            parts = deaggregate(record["Data"])
            if parts is None:
                pieces = [(record["PartitionKey"], record["Data"])]
            else:
                pieces = [(part.partition_key, part.data) for part in parts]
            for sub, (partition_key, data) in enumerate(pieces):
                if after is not None and (length, digits, sub) <= after:
                    continue  # processed before a restart inside this record
                records.append(
                    StreamRecord(
                        data=data,
                        partition_key=partition_key,
                        shard_id=self.shard_id,
                        sequence_number=sequence,
                        sub_sequence_number=sub,
                        arrival_ms=arrival_ms,
                    )
                )
        return records
