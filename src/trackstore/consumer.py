"""The consume loop: batch -> ingest -> checkpoint, until stopped. A failed batch is retried, never
skipped; a stop finishes the batch in hand and checkpoints it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from trackstore.backoff import Backoff
from trackstore.errors import CONFLICT, Error
from trackstore.metrics import Metrics
from trackstore.ports import Batch, StreamSource
from trackstore.service import IngestResult, TrackService

log = logging.getLogger(__name__)


class Consumer:
    def __init__(
        self,
        source: StreamSource,
        service: TrackService,
        metrics: Metrics,
        backoff: Backoff | None = None,
    ) -> None:
        self._source = source
        self._service = service
        self._metrics = metrics
        self._backoff = backoff or Backoff(base=0.1, cap=10.0)
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        async for batch in self._source.batches():
            await self._process(batch)
        log.info("consumer stopped")

    async def stop(self) -> None:
        """Asks the loop to end once the batch in hand is stored and checkpointed."""
        self._stopping.set()
        await self._source.stop()

    async def _process(self, batch: Batch) -> None:
        result = await self._ingest(batch)
        if result is None:
            return
        self._count(batch, result)
        try:
            await batch.checkpoint()
        except Error as error:
            if error.code is not CONFLICT:
                raise
            # Another worker holds the shard now; it replays from the last good checkpoint.
            log.warning("lease lost, batch not checkpointed", extra={"shard": batch.shard_id})
            return
        self._metrics.batches.inc()

    async def _ingest(self, batch: Batch) -> IngestResult | None:
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                result = await self._service.ingest(batch.records)
            except Exception as exc:
                # Retried until it succeeds, since skipping would lose the batch's records.
                attempt += 1
                self._metrics.batch_failures.inc()
                log.warning(
                    "batch failed, retrying",
                    extra={"shard": batch.shard_id, "attempt": attempt, "error": str(exc)},
                    exc_info=not isinstance(exc, Error),
                )
                if await self._stopped_within(self._backoff.delay(attempt)):
                    log.warning(
                        "stopping with a failed batch; it is replayed on restart",
                        extra={"shard": batch.shard_id},
                    )
                    return None
                continue
            self._metrics.batch_seconds.observe(time.perf_counter() - started)
            return result

    def _count(self, batch: Batch, result: IngestResult) -> None:
        metrics = self._metrics
        metrics.records_received.inc(result.received)
        metrics.records_stored.inc(result.stored)
        metrics.records_duplicate.inc(result.duplicates)
        if batch.millis_behind_latest is not None:
            metrics.millis_behind_latest.labels(shard=batch.shard_id).set(
                batch.millis_behind_latest
            )
        for rejection in result.rejections:
            metrics.records_rejected.labels(reason=rejection.reason.value).inc()
            log.warning(
                "record rejected",
                extra={
                    "reason": rejection.reason.value,
                    "detail": rejection.detail,
                    "shard": rejection.record.shard_id,
                    "sequenceNumber": rejection.record.sequence_number,
                    "subSequenceNumber": rejection.record.sub_sequence_number,
                },
            )

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()
