"""The consume loop: batch -> ingest -> checkpoint, until stopped.

Batches of different shards are stored concurrently; a shard's next batch is handed out only
after its previous one was checkpointed, so each shard stays in order. A failed batch is retried,
never skipped; a stop lets the batches in hand finish and checkpoint, then releases the leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from opentelemetry.trace import SpanKind

from trackstore.backoff import Backoff
from trackstore.consumer_health import ConsumerHealth
from trackstore.errors import CONFLICT, Error
from trackstore.metrics import Metrics
from trackstore.ports import Batch, DeadLetters, StreamSource
from trackstore.records import Rejection
from trackstore.service import IngestResult, TrackService
from trackstore.telemetry import producer_links, tracer

log = logging.getLogger(__name__)


class Consumer:
    def __init__(
        self,
        source: StreamSource,
        service: TrackService,
        metrics: Metrics,
        backoff: Backoff | None = None,
        dead_letters: DeadLetters | None = None,
        max_in_flight: int = 64,
        health: ConsumerHealth | None = None,
        progress_s: float = 60.0,
    ) -> None:
        self._source = source
        self._service = service
        self._metrics = metrics
        self._backoff = backoff or Backoff(base=0.1, cap=10.0)
        self._dead_letters = dead_letters
        self._slots = asyncio.Semaphore(max_in_flight)
        self._stopping = asyncio.Event()
        self.health = health or ConsumerHealth()
        self._progress_s = progress_s
        self._totals = _Totals()
        self._failing_since: dict[str, float] = {}  # shard -> when its batches began failing

    async def run(self) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        reporter = asyncio.create_task(self._report_progress())
        try:
            async for batch in self._source.batches():
                await self._slots.acquire()
                task = asyncio.create_task(self._process(batch))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        finally:
            # Whatever ended the loop, the batches in hand finish before the leases go.
            await asyncio.gather(*in_flight, return_exceptions=True)
            reporter.cancel()
            await self._source.close()
            log.info("consumer stopped", extra=self._totals.summary())

    async def stop(self) -> None:
        """Asks the loop to end once the batches in hand are stored and checkpointed."""
        self._stopping.set()
        await self._source.stop()

    async def _process(self, batch: Batch) -> None:
        first, last = batch.records[0], batch.records[-1]
        try:
            with tracer().start_as_current_span(
                "consume batch",
                kind=SpanKind.CONSUMER,
                links=producer_links(batch.records),
                attributes={
                    "messaging.system": "aws_kinesis",
                    "aws.kinesis.shard_id": batch.shard_id,
                    "trackstore.first_sequence_number": first.sequence_number,
                    "trackstore.last_sequence_number": last.sequence_number,
                    "trackstore.records": len(batch.records),
                },
            ) as span:
                result = await self._ingest(batch)
                if result is None:
                    span.set_attribute("trackstore.abandoned", True)
                    return
                span.set_attributes(
                    {
                        "trackstore.stored": result.stored,
                        "trackstore.rejected": len(result.rejections),
                        "trackstore.duplicates": result.duplicates,
                    }
                )
                self._count(batch, result)
                if not await self._checkpoint(batch):
                    span.set_attribute("trackstore.checkpointed", False)
                    return
            self._metrics.batches.inc()
            self.health.progressed(batch.shard_id, batch.millis_behind_latest)
        finally:
            self._slots.release()

    async def _ingest(self, batch: Batch) -> IngestResult | None:
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                result = await self._service.ingest(batch.records)
            except Exception as exc:
                # Retried until it succeeds, since skipping would lose the batch's records.
                attempt += 1
                self._failing_since.setdefault(batch.shard_id, time.monotonic())
                self.health.failing(batch.shard_id)
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
            self._recovered(batch.shard_id, attempt)
            if result.rejections and self._dead_letters is not None:
                await self._send_dead_letters(result.rejections)
            return result

    async def _send_dead_letters(self, rejections: Sequence[Rejection]) -> None:
        """Dead letters are for a person to look at later: one that cannot be sent is logged
        and counted, and never holds up the shard (its records are stored already)."""
        assert self._dead_letters is not None
        try:
            await self._dead_letters(rejections)
        except Exception as exc:
            self._metrics.dead_letters_failed.inc(len(rejections))
            log.error(
                "dead letters not sent",
                extra={"records": len(rejections), "error": str(exc)},
                exc_info=not isinstance(exc, Error),
            )

    def _recovered(self, shard_id: str, attempts: int) -> None:
        if attempts == 0:
            return
        since = self._failing_since.pop(shard_id, None)
        log.info(
            "shard recovered",
            extra={
                "shard": shard_id,
                "failedAttempts": attempts,
                "failingSeconds": None if since is None else round(time.monotonic() - since, 1),
            },
        )

    async def _checkpoint(self, batch: Batch) -> bool:
        """Checkpoints the stored batch, retrying while the lease table is unavailable; False
        when the lease was lost (the new owner replays the batch) or the consumer is stopping."""
        attempt = 0
        while True:
            try:
                await batch.checkpoint()
                return True
            except Error as error:
                if error.code is CONFLICT:
                    log.warning(
                        "lease lost, batch not checkpointed", extra={"shard": batch.shard_id}
                    )
                    return False
                attempt += 1
                log.warning(
                    "checkpoint failed, retrying",
                    extra={"shard": batch.shard_id, "attempt": attempt, "error": error.message},
                )
            if await self._stopped_within(self._backoff.delay(attempt)):
                return False

    def _count(self, batch: Batch, result: IngestResult) -> None:
        metrics = self._metrics
        metrics.records_received.inc(result.received)
        metrics.records_stored.inc(result.stored)
        metrics.records_duplicate.inc(result.duplicates)
        metrics.records_foreign_key.inc(result.foreign_keys)
        self._totals.add(result)
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

    async def _report_progress(self) -> None:
        """One INFO line a minute: what a person watching the logs wants to know."""
        last = self._totals.received
        while not await self._stopped_within(self._progress_s):
            state = self.health.source_state() if self.health.source_state else None
            log.info(
                "progress",
                extra={
                    "recordsPerSecond": round((self._totals.received - last) / self._progress_s),
                    **self._totals.summary(),
                    "shardsHeld": None if state is None else state.held,
                    "maxMillisBehind": None if state is None else state.behind_ms,
                    "shardsFailing": len(self._failing_since),
                },
            )
            last = self._totals.received

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()


class _Totals:
    """Records through this process since it started, for the progress lines."""

    def __init__(self) -> None:
        self.received = self.stored = self.duplicates = self.rejected = 0

    def add(self, result: IngestResult) -> None:
        self.received += result.received
        self.stored += result.stored
        self.duplicates += result.duplicates
        self.rejected += len(result.rejections)

    def summary(self) -> dict[str, int]:
        return {
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
        }
