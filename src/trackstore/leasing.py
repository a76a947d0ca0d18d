"""Shard leases with the Kinesis Client Library's semantics, so workers share a stream's shards.

A lease per shard lives in the lease table (KCL schema). Its owner renews it by incrementing
`leaseCounter`; a lease whose counter has not moved for the failover time is expired and may be
taken. Every write is conditional on the counter (and owner) the writer last saw, so a worker that
lost a lease finds out at its next write and stops: that is the fencing that keeps two workers
from checkpointing one shard. The table itself is behind the `LeaseStore` port (`ports`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence

import msgspec

TRIM_HORIZON = "TRIM_HORIZON"
LATEST = "LATEST"
SHARD_END = "SHARD_END"


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    shard_id: str  # leaseKey
    owner: str | None = None
    counter: int = 0
    checkpoint: str = TRIM_HORIZON  # a sequence number, TRIM_HORIZON, LATEST or SHARD_END
    checkpoint_sub: int = 0
    parents: frozenset[str] = frozenset()
    owner_switches: int = 0

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END


class LeaseTaker:
    """Decides which leases one worker should hold, towards an even share (KCL's balancing).

    It only watches counters: a lease whose counter this worker has seen unchanged for
    `failover_s` is expired. So a clock is needed but never compared across machines.
    """

    def __init__(
        self,
        worker_id: str,
        failover_s: float,
        max_leases: int,
        clock: Callable[[], float],
        max_steal: int = 1,
    ) -> None:
        self.worker_id = worker_id
        self._failover_s = failover_s
        self._max_leases = max_leases
        self._clock = clock
        self._max_steal = max_steal
        self._last_change: dict[str, tuple[int, float]] = {}  # shard -> (counter, seen at)

    def expired(self, lease: Lease) -> bool:
        if lease.owner is None:
            return True
        counter, seen_at = self._last_change.get(lease.shard_id, (lease.counter, self._clock()))
        return counter == lease.counter and self._clock() - seen_at >= self._failover_s

    def observe(self, leases: Sequence[Lease]) -> None:
        now = self._clock()
        for lease in leases:
            known = self._last_change.get(lease.shard_id)
            if known is None or known[0] != lease.counter:
                self._last_change[lease.shard_id] = (lease.counter, now)
        present = {lease.shard_id for lease in leases}
        for shard_id in list(self._last_change):
            if shard_id not in present:
                del self._last_change[shard_id]

    def choose(self, leases: Sequence[Lease]) -> list[Lease]:
        """The leases to take now, given the whole table (already observed)."""
        by_shard = {lease.shard_id: lease for lease in leases}
        workable = [lease for lease in leases if _ready(lease, by_shard)]
        mine = [lease for lease in workable if lease.owner == self.worker_id]
        live: dict[str, int] = {self.worker_id: len(mine)}
        for lease in workable:
            if lease.owner not in (None, self.worker_id) and not self.expired(lease):
                live[lease.owner] = live.get(lease.owner, 0) + 1
        target = min(self._max_leases, math.ceil(len(workable) / len(live)))
        wanted = target - len(mine)
        if wanted <= 0:
            return []
        available = [
            lease
            for lease in workable
            if lease.owner != self.worker_id and (lease.owner is None or self.expired(lease))
        ]
        if available:
            # Parents first: their children wait for them to finish.
            available.sort(key=lambda lease: (len(lease.parents) > 0, lease.shard_id))
            return available[:wanted]
        # Nothing free: steal from the most loaded worker, a little at a time, only when it
        # holds more than its share.
        busiest, held = max(
            ((owner, count) for owner, count in live.items() if owner != self.worker_id),
            key=lambda pair: (pair[1], pair[0]),
            default=(None, 0),
        )
        if busiest is None or held <= target:
            return []
        steal = min(wanted, self._max_steal, held - target)
        theirs = sorted(
            (lease for lease in workable if lease.owner == busiest), key=lambda le: le.shard_id
        )
        return theirs[:steal]

    def orphans(self, leases: Sequence[Lease]) -> int:
        """Leases that should be read now and have no live owner. A child waiting for its
        parents is not one: nobody may read it yet, so no worker is missing."""
        by_shard = {lease.shard_id: lease for lease in leases}
        return sum(1 for lease in leases if _ready(lease, by_shard) and self.expired(lease))


class RenewalSchedule:
    """When each held lease is due for renewal: `every_s` after its own last successful write.

    Deadlines are kept per lease rather than per round, so a slow round (many leases, a slow
    lease table) delays no lease beyond its own deadline. A write counts from when it was sent:
    the table changed no earlier, so the deadline errs early, never late.
    """

    def __init__(self, every_s: float, clock: Callable[[], float]) -> None:
        self._every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}  # shard -> when its last successful write was sent
        self._queue: list[tuple[float, str]] = []  # (due at, shard); stale entries are skipped
        self._queued: set[str] = set()

    def renewed(self, shard_id: str, sent_at: float) -> None:
        """A write that moved the lease's counter (take, renewal or checkpoint) succeeded."""
        self._last[shard_id] = max(sent_at, self._last.get(shard_id, sent_at))
        self._push(shard_id, self._last[shard_id] + self._every_s)

    def retry(self, shard_id: str, after_s: float) -> None:
        """A renewal failed without losing the lease: try again soon, not a full period later."""
        if shard_id in self._last:
            self._push(shard_id, self._clock() + after_s)

    def forget(self, shard_id: str) -> None:
        self._last.pop(shard_id, None)

    def due(self) -> list[str]:
        """The leases due now; each leaves the schedule until `renewed`, `retry` or `forget`."""
        now = self._clock()
        due: list[str] = []
        while self._queue and self._queue[0][0] <= now:
            _, shard_id = heapq.heappop(self._queue)
            self._queued.discard(shard_id)
            last = self._last.get(shard_id)
            if last is None:
                continue
            if last + self._every_s > now:  # written since it was queued (a checkpoint)
                self._push(shard_id, last + self._every_s)
            else:
                due.append(shard_id)
        return due

    def next_due(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def _push(self, shard_id: str, at: float) -> None:
        if shard_id not in self._queued:
            self._queued.add(shard_id)
            heapq.heappush(self._queue, (at, shard_id))


def _ready(lease: Lease, by_shard: dict[str, Lease]) -> bool:
    """Worth holding: not finished, and every parent still known has been read to its end."""
    if lease.finished:
        return False
    return all(by_shard[p].finished for p in lease.parents if p in by_shard)
