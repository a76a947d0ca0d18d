"""KinesisStreamSource: every shard this worker holds a lease on, read in order, checkpointed in
the KCL lease table only when the consumer says the batch is stored.

Background work: shard sync (ListShards -> a lease per shard, children knowing their parents),
lease renewal (each lease failover/3 after its own last write, many at once), and lease taking
(expired and unowned first, then a little stealing, towards an even share). A lease whose renewal
or checkpoint fails was taken by someone else: its reader stops at once and never checkpoints
again. Each take of a lease is a holding of its own: a batch commits only under the holding it was
handed out under, so a batch from before a loss cannot checkpoint after the shard is taken back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from trackstore.errors import CONFLICT, Error
from trackstore.kinesis.reader import KinesisBatch, ShardReader
from trackstore.kinesis.shards import list_shards
from trackstore.leasing import (
    SHARD_END,
    TRIM_HORIZON,
    Lease,
    LeaseTaker,
    RenewalSchedule,
)
from trackstore.metrics import Metrics
from trackstore.ports import LeaseStore, SourceState

log = logging.getLogger(__name__)


class KinesisStreamSource:
    def __init__(
        self,
        client: Any,
        stream: str,
        leases: LeaseStore,
        worker_id: str,
        batch_size: int,
        failover_s: float = 10.0,
        max_leases: int = 1000,
        initial_position: str = TRIM_HORIZON,
        shard_sync_s: float = 60.0,
        idle_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
        max_lease_calls: int = 32,
    ) -> None:
        self._client = client
        self._stream = stream
        self._store = leases
        self.worker_id = worker_id
        self._batch_size = batch_size
        self._failover_s = failover_s
        self._initial = initial_position
        self._shard_sync_s = shard_sync_s
        self._idle_s = idle_s
        self._clock = clock
        self._taker = LeaseTaker(worker_id, failover_s, max_leases, clock)
        self.held: dict[str, Lease] = {}
        # The lease counter right after the take that began the current holding of each shard.
        self._holding: dict[str, int] = {}
        self._schedule = RenewalSchedule(failover_s / 3, clock)
        self._schedule_changed = asyncio.Event()
        # Bounds background lease-table calls (renew, take, release), not checkpoints.
        self._lease_calls = asyncio.Semaphore(max_lease_calls)
        self._renewer: asyncio.Task[None] | None = None
        self._renewals: set[asyncio.Task[None]] = set()
        self._orphaned = 0
        self._behind_ms: dict[str, int] = {}
        self._metrics = metrics
        self._locks: dict[str, asyncio.Lock] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._queue: asyncio.Queue[KinesisBatch] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._sync_now = asyncio.Event()

    # -- StreamSource -----------------------------------------------------------------------

    async def batches(self) -> AsyncIterator[KinesisBatch]:
        await self._sync_shards()
        await self._take_leases()
        # Runs until close(), not until the last batch: batches still in hand need their leases.
        self._renewer = self._renewer or asyncio.create_task(self._keep_renewed())
        housekeeping = asyncio.create_task(self._housekeeping())
        try:
            while not self._stopping.is_set():
                getter = asyncio.ensure_future(self._queue.get())
                stopper = asyncio.ensure_future(self._stopping.wait())
                await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
        finally:
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping

    async def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        """After the last batch: stops the readers and releases every lease still held, so other
        workers take the shards at once instead of after the failover time."""
        self._stopping.set()
        for task in self._readers.values():
            task.cancel()
        await asyncio.gather(*self._readers.values(), return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait().abandon()
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        # Renewals already sent finish, so the releases below write the counters they left.
        await asyncio.gather(*self._renewals, return_exceptions=True)
        held = len(self.held)
        await asyncio.gather(*(self._bounded(self._release(s)) for s in list(self.held)))
        log.info("leases released", extra={"worker": self.worker_id, "leases": held})

    def state(self) -> SourceState:
        behind = max((ms for shard, ms in self._behind_ms.items() if shard in self.held), default=0)
        return SourceState(
            held=len(self.held),
            orphaned=self._orphaned,
            behind_ms=behind,
            shards=frozenset(self.held),
        )

    def _lagging(self, shard_id: str, holding: int, millis_behind: int) -> None:
        if self._holding.get(shard_id) != holding:
            return  # a reader from an earlier holding, stopping
        self._behind_ms[shard_id] = millis_behind
        if self._metrics is not None:
            self._metrics.millis_behind_latest.labels(shard=shard_id).set(millis_behind)

    def _forget_lag(self, shard_id: str) -> None:
        """A shard no longer held has no lag here: a stale series would alert forever."""
        self._behind_ms.pop(shard_id, None)
        if self._metrics is not None:
            self._metrics.millis_behind_latest.remove(shard_id)

    def _count_leases(self) -> None:
        if self._metrics is not None:
            self._metrics.leases_held.set(len(self.held))

    # -- leases -----------------------------------------------------------------------------

    def _lock(self, shard_id: str) -> asyncio.Lock:
        return self._locks.setdefault(shard_id, asyncio.Lock())

    async def _bounded(self, call: Awaitable[object]) -> None:
        async with self._lease_calls:
            await call

    async def _commit(self, shard_id: str, holding: int, checkpoint: str, sub: int) -> None:
        async with self._lock(shard_id):
            lease = self.held.get(shard_id)
            if lease is None or self._holding.get(shard_id) != holding:
                if lease is None:
                    # The consumer may have set this shard's gauge after the lease went.
                    self._forget_lag(shard_id)
                raise Error(CONFLICT, f"the lease of {shard_id} this batch came with is gone")
            sent_at = self._clock()
            updated = await self._store.checkpoint(lease, checkpoint, sub)
            if updated is None:
                self._lose(shard_id)
                raise Error(CONFLICT, f"lease of {shard_id} is held by another worker now")
            self.held[shard_id] = updated
            self._schedule.renewed(shard_id, sent_at)
            if checkpoint == SHARD_END:
                await self._release_locked(shard_id)
        if checkpoint == SHARD_END:
            self._sync_now.set()  # its children may start now

    def _drop(self, shard_id: str) -> Lease | None:
        """Forgets the current holding of the shard; returns its lease, if it was held."""
        lease = self.held.pop(shard_id, None)
        self._holding.pop(shard_id, None)
        self._schedule.forget(shard_id)
        self._forget_lag(shard_id)
        if lease is not None:
            self._count_leases()
        return lease

    def _lose(self, shard_id: str) -> None:
        if self._drop(shard_id) is not None:
            log.info("lease lost", extra={"shard": shard_id, "worker": self.worker_id})
        reader = self._readers.pop(shard_id, None)
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()

    async def _release(self, shard_id: str, holding: int | None = None) -> None:
        async with self._lock(shard_id):
            if holding is None or self._holding.get(shard_id) == holding:
                await self._release_locked(shard_id)

    async def _release_locked(self, shard_id: str) -> None:
        lease = self._drop(shard_id)
        if lease is None:
            return
        try:
            released = await self._store.release(lease)
        except Error as error:
            # Left to expire: the others take it after the failover time instead of at once.
            log.warning(
                "lease release failed",
                extra={"shard": shard_id, "worker": self.worker_id, "error": error.message},
            )
            return
        message = "lease released" if released is not None else "lease lost"
        log.info(message, extra={"shard": shard_id, "worker": self.worker_id})

    async def _keep_renewed(self) -> None:
        while True:
            self._schedule_changed.clear()
            for shard_id in self._schedule.due():
                task = asyncio.create_task(self._bounded(self._renew(shard_id)))
                self._renewals.add(task)
                task.add_done_callback(self._renewals.discard)
            due = self._schedule.next_due()
            # At least a millisecond: a timer may fire a hair before its time, and waking again
            # at once would find nothing due, over and over.
            wait = self._failover_s / 3 if due is None else max(0.001, due - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._schedule_changed.wait(), wait)

    async def _renew(self, shard_id: str) -> None:
        async with self._lock(shard_id):
            lease = self.held.get(shard_id)
            if lease is None:
                return
            sent_at = self._clock()
            try:
                renewed = await self._store.renew(lease)
            except Exception as exc:
                # Whatever it was, the lease is still ours until a write says otherwise: a
                # renewal given up would let it expire under a reader that goes on.
                log.warning(
                    "lease renewal failed, retrying",
                    extra={"shard": shard_id, "worker": self.worker_id, "error": str(exc)},
                    exc_info=not isinstance(exc, Error),
                )
                self._schedule.retry(shard_id, self._failover_s / 30)
                self._schedule_changed.set()
                return
            if renewed is None:
                self._lose(shard_id)
            else:
                self.held[shard_id] = renewed
                self._schedule.renewed(shard_id, sent_at)

    async def _take_leases(self) -> None:
        leases = await self._store.list()
        self._taker.observe(leases)
        # Ours in the table but not held here (a write whose answer was lost): taken back,
        # conditionally, rather than left to expire with nobody reading the shard.
        stray = [
            lease
            for lease in leases
            if lease.owner == self.worker_id
            and lease.shard_id not in self.held
            and not lease.finished
        ]
        self._orphaned = self._taker.orphans(leases)
        chosen = stray + self._taker.choose(leases)
        await asyncio.gather(*(self._bounded(self._take(lease)) for lease in chosen))
        self._count_leases()
        # Readers whose shard is no longer held (lost) are stopped by _lose.

    async def _take(self, lease: Lease) -> None:
        sent_at = self._clock()
        try:
            taken = await self._store.take(lease, self.worker_id)
        except Error as error:
            log.warning(
                "lease take failed",
                extra={"shard": lease.shard_id, "worker": self.worker_id, "error": error.message},
            )
            return
        if taken is None:
            return  # someone was quicker
        self.held[taken.shard_id] = taken
        self._holding[taken.shard_id] = taken.counter
        self._schedule.renewed(taken.shard_id, sent_at)
        self._schedule_changed.set()
        self._start_reader(taken)
        log.info(
            "lease taken",
            extra={"shard": taken.shard_id, "worker": self.worker_id, "previousOwner": lease.owner},
        )

    def _start_reader(self, lease: Lease) -> None:
        shard_id, holding = lease.shard_id, lease.counter

        def commit(checkpoint: str, sub: int) -> Awaitable[None]:
            return self._commit(shard_id, holding, checkpoint, sub)

        reader = ShardReader(
            self._client,
            self._stream,
            shard_id,
            lease.checkpoint,
            lease.checkpoint_sub,
            self._batch_size,
            self._idle_s,
            hand_out=self._queue.put,
            commit=commit,
            on_lag=lambda shard, ms: self._lagging(shard, holding, ms),
        )
        task = asyncio.create_task(self._run_reader(reader, holding))
        self._readers[shard_id] = task

    async def _run_reader(self, reader: ShardReader, holding: int) -> None:
        try:
            await reader.run()
            if not reader.reached_end and not self._stopping.is_set():
                # A batch was given up: let the lease go, so it is taken again and replayed.
                await self._release(reader.shard_id, holding)
        except asyncio.CancelledError:
            raise
        except Error as error:
            if error.code is not CONFLICT:
                log.error(
                    "shard reader failed; the lease is released for a retry",
                    extra={"shard": reader.shard_id, "error": error.message},
                )
                await self._release(reader.shard_id, holding)
        finally:
            if self._readers.get(reader.shard_id) is asyncio.current_task():
                del self._readers[reader.shard_id]

    # -- shard sync -------------------------------------------------------------------------

    async def _sync_shards(self) -> None:
        shards = await list_shards(self._client, self._stream)
        known = {lease.shard_id: lease for lease in await self._store.list()}
        live = {shard.shard_id for shard in shards}
        creates = []
        for shard in shards:
            if shard.shard_id in known:
                continue
            # Children start at the beginning: their parents' records came first.
            start = TRIM_HORIZON if shard.parents & live else self._initial
            lease = Lease(shard_id=shard.shard_id, checkpoint=start, parents=shard.parents)
            creates.append(self._bounded(self._store.create(lease)))
        await asyncio.gather(*creates)
        for shard_id, lease in known.items():
            if shard_id not in live and lease.finished:
                await self._store.delete(lease)  # past retention: gone from the stream

    async def _housekeeping(self) -> None:
        next_sync = self._clock() + self._shard_sync_s
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sync_now.wait(), self._failover_s / 3)
            try:
                if self._sync_now.is_set() or self._clock() >= next_sync:
                    self._sync_now.clear()
                    await self._sync_shards()
                    next_sync = self._clock() + self._shard_sync_s
                if not self._stopping.is_set():
                    await self._take_leases()
            except Error as error:
                log.warning("lease housekeeping failed", extra={"error": error.message})
