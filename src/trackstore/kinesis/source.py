"""KinesisStreamSource: every shard this worker holds a lease on, read in order, checkpointed in
the KCL lease table only when the consumer says the batch is stored.

Background work: shard sync (ListShards -> a lease per shard, children knowing their parents),
lease renewal every failover/3, and lease taking (expired and unowned first, then a little
stealing, towards an even share). A lease whose renewal or checkpoint fails was taken by someone
else: its reader stops at once and never checkpoints again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from trackstore.consumer_health import SourceState
from trackstore.errors import CONFLICT, Error
from trackstore.kinesis.reader import KinesisBatch, ShardReader
from trackstore.kinesis.shards import list_shards
from trackstore.leasing import SHARD_END, TRIM_HORIZON, Lease, LeaseStore, LeaseTaker
from trackstore.metrics import Metrics

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
        self._taker = LeaseTaker(worker_id, failover_s, max_leases, clock)
        self.held: dict[str, Lease] = {}
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
        for shard_id in list(self.held):
            async with self._lock(shard_id):
                lease = self.held.pop(shard_id, None)
                if lease is not None:
                    with contextlib.suppress(Error):
                        await self._store.release(lease)
        log.info("leases released", extra={"worker": self.worker_id})

    def state(self) -> SourceState:
        behind = max((ms for shard, ms in self._behind_ms.items() if shard in self.held), default=0)
        return SourceState(held=len(self.held), orphaned=self._orphaned, behind_ms=behind)

    def _lagging(self, shard_id: str, millis_behind: int) -> None:
        self._behind_ms[shard_id] = millis_behind
        if self._metrics is not None:
            self._metrics.millis_behind_latest.labels(shard=shard_id).set(millis_behind)

    def _count_leases(self) -> None:
        if self._metrics is not None:
            self._metrics.leases_held.set(len(self.held))

    # -- leases -----------------------------------------------------------------------------

    def _lock(self, shard_id: str) -> asyncio.Lock:
        return self._locks.setdefault(shard_id, asyncio.Lock())

    async def _commit(self, shard_id: str, checkpoint: str, sub: int) -> None:
        async with self._lock(shard_id):
            lease = self.held.get(shard_id)
            updated = await self._store.checkpoint(lease, checkpoint, sub) if lease else None
            if updated is None:
                self._lose(shard_id)
                raise Error(CONFLICT, f"lease of {shard_id} is held by another worker now")
            self.held[shard_id] = updated
        if checkpoint == SHARD_END:
            async with self._lock(shard_id):
                lease = self.held.pop(shard_id, None)
                if lease is not None:
                    await self._store.release(lease)
            self._sync_now.set()  # its children may start now

    def _lose(self, shard_id: str) -> None:
        self._behind_ms.pop(shard_id, None)
        if self.held.pop(shard_id, None) is not None:
            self._count_leases()
            log.warning("lease lost", extra={"shard": shard_id, "worker": self.worker_id})
        reader = self._readers.pop(shard_id, None)
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()

    async def _renew(self) -> None:
        for shard_id in list(self.held):
            async with self._lock(shard_id):
                lease = self.held.get(shard_id)
                if lease is None:
                    continue
                renewed = await self._store.renew(lease)
                if renewed is None:
                    self._lose(shard_id)
                else:
                    self.held[shard_id] = renewed

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
        for lease in stray:
            taken = await self._store.take(lease, self.worker_id)
            if taken is not None:
                self.held[taken.shard_id] = taken
                self._start_reader(taken)
        self._orphaned = sum(
            1 for lease in leases if not lease.finished and self._taker.expired(lease)
        )
        for lease in self._taker.choose(leases):
            taken = await self._store.take(lease, self.worker_id)
            if taken is None:
                continue  # someone was quicker
            self.held[taken.shard_id] = taken
            self._start_reader(taken)
        self._count_leases()
        # Readers whose shard is no longer held (lost) are stopped by _lose.

    def _start_reader(self, lease: Lease) -> None:
        reader = ShardReader(
            self._client,
            self._stream,
            lease.shard_id,
            lease.checkpoint,
            lease.checkpoint_sub,
            self._batch_size,
            self._idle_s,
            hand_out=self._queue.put,
            commit=lambda checkpoint, sub: self._commit(lease.shard_id, checkpoint, sub),
            on_lag=self._lagging,
        )
        task = asyncio.create_task(self._run_reader(reader))
        self._readers[lease.shard_id] = task

    async def _run_reader(self, reader: ShardReader) -> None:
        try:
            await reader.run()
            if not reader.reached_end and not self._stopping.is_set():
                # A batch was given up: let the lease go, so it is taken again and replayed.
                await self._give_up(reader.shard_id)
        except asyncio.CancelledError:
            raise
        except Error as error:
            if error.code is not CONFLICT:
                log.error(
                    "shard reader failed; the lease is released for a retry",
                    extra={"shard": reader.shard_id, "error": error.message},
                )
                await self._give_up(reader.shard_id)
        finally:
            if self._readers.get(reader.shard_id) is asyncio.current_task():
                del self._readers[reader.shard_id]

    async def _give_up(self, shard_id: str) -> None:
        async with self._lock(shard_id):
            lease = self.held.pop(shard_id, None)
            if lease is not None:
                with contextlib.suppress(Error):
                    await self._store.release(lease)

    # -- shard sync -------------------------------------------------------------------------

    async def _sync_shards(self) -> None:
        shards = await list_shards(self._client, self._stream)
        known = {lease.shard_id: lease for lease in await self._store.list()}
        live = {shard.shard_id for shard in shards}
        for shard in shards:
            if shard.shard_id in known:
                continue
            # Children start at the beginning: their parents' records came first.
            start = TRIM_HORIZON if shard.parents & live else self._initial
            await self._store.create(
                Lease(shard_id=shard.shard_id, checkpoint=start, parents=shard.parents)
            )
        for shard_id, lease in known.items():
            if shard_id not in live and lease.finished:
                await self._store.delete(lease)  # past retention: gone from the stream

    async def _housekeeping(self) -> None:
        renew_every = self._failover_s / 3
        next_sync = time.monotonic() + self._shard_sync_s
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sync_now.wait(), renew_every)
            try:
                await self._renew()
                if self._sync_now.is_set() or time.monotonic() >= next_sync:
                    self._sync_now.clear()
                    await self._sync_shards()
                    next_sync = time.monotonic() + self._shard_sync_s
                if not self._stopping.is_set():
                    await self._take_leases()
            except Error as error:
                log.warning("lease housekeeping failed", extra={"error": error.message})
