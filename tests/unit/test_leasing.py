"""LeaseTaker over MemoryLeaseStore with a fake clock: taking, failover, balancing, resharding
order, orphans, the store's fencing (every write conditional on the counter and owner last seen),
and RenewalSchedule: each lease due a third of the failover time after its own last write."""

from __future__ import annotations

import math

import msgspec
import pytest

from trackstore.leasing import (
    SHARD_END,
    TRIM_HORIZON,
    Lease,
    LeaseTaker,
    RenewalSchedule,
)
from trackstore.memory.leases import MemoryLeaseStore
from trackstore.ports import LeaseStore

FAILOVER_S = 10.0
SHARDS = [f"shardId-{i:012d}" for i in range(6)]


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Worker:
    """One consumer process as the lease table sees it: it renews what it holds (dropping what a
    failed renewal says it lost) and takes what its LeaseTaker chooses."""

    def __init__(
        self,
        worker_id: str,
        store: MemoryLeaseStore,
        clock: Clock,
        max_leases: int = 1000,
        max_steal: int = 1,
    ) -> None:
        self.id = worker_id
        self.store = store
        self.taker = LeaseTaker(worker_id, FAILOVER_S, max_leases, clock, max_steal=max_steal)
        self.held: dict[str, Lease] = {}
        self.lost: list[str] = []

    async def renew(self) -> None:
        for shard_id, lease in list(self.held.items()):
            renewed = await self.store.renew(lease)
            if renewed is None:
                del self.held[shard_id]
                self.lost.append(shard_id)
            else:
                self.held[shard_id] = renewed

    async def choose(self) -> list[Lease]:
        leases = await self.store.list()
        self.taker.observe(leases)
        return self.taker.choose(leases)

    async def take(self) -> list[Lease]:
        """One round of taking; returns the leases chosen (before taking them)."""
        chosen = await self.choose()
        for lease in chosen:
            taken = await self.store.take(lease, self.id)
            if taken is not None:
                self.held[taken.shard_id] = taken
        return chosen


async def make_store(*leases: Lease) -> MemoryLeaseStore:
    store = MemoryLeaseStore()
    for lease in leases:
        assert await store.create(lease)
    return store


def owners(store: MemoryLeaseStore) -> dict[str | None, int]:
    counts: dict[str | None, int] = {}
    for lease in store.leases.values():
        if not lease.finished:
            counts[lease.owner] = counts.get(lease.owner, 0) + 1
    return counts


def owned_by(store: MemoryLeaseStore, owner: str) -> set[str]:
    return {lease.shard_id for lease in store.leases.values() if lease.owner == owner}


async def test_memory_lease_store_is_a_lease_store() -> None:
    assert isinstance(MemoryLeaseStore(), LeaseStore)


# -- taking -------------------------------------------------------------------------------------


async def test_a_new_worker_takes_every_unowned_lease() -> None:
    store = await make_store(*(Lease(shard_id=s) for s in SHARDS))
    worker = Worker("A", store, Clock())

    chosen = await worker.take()

    assert sorted(lease.shard_id for lease in chosen) == SHARDS
    assert owned_by(store, "A") == set(SHARDS)
    assert set(worker.held) == set(SHARDS)
    assert all(lease.counter == 1 for lease in store.leases.values())
    assert await worker.choose() == []  # nothing more to take


async def test_a_dead_workers_leases_are_taken_only_after_the_failover_time() -> None:
    clock = Clock()
    store = await make_store(*(Lease(shard_id=s) for s in SHARDS[:4]))
    dead = Worker("A", store, clock, max_leases=2)
    survivor = Worker("B", store, clock)
    await dead.take()  # A holds two, then never renews again
    await survivor.take()  # B the other two: an even share, nothing to steal
    assert len(dead.held) == len(survivor.held) == 2

    for _ in range(9):
        clock.advance(FAILOVER_S / 10)
        await survivor.renew()
        assert await survivor.take() == [], f"taken {clock.now - 1000:.1f} s after A's last write"
    assert owned_by(store, "A") == set(dead.held)

    clock.advance(FAILOVER_S / 10)  # exactly the failover time since B saw the counters move
    await survivor.renew()
    await survivor.take()

    assert owned_by(store, "B") == set(SHARDS[:4])
    assert owned_by(store, "A") == set()
    assert all(store.leases[s].owner_switches == 2 for s in dead.held)  # None -> A -> B


async def test_leases_first_seen_late_are_expired_only_a_failover_time_after_that() -> None:
    clock = Clock()
    store = await make_store(Lease(shard_id=SHARDS[0], owner="A", counter=7))
    clock.advance(100 * FAILOVER_S)  # long before B starts: B cannot know how old counter 7 is
    newcomer = Worker("B", store, clock, max_leases=1)

    assert await newcomer.take() == []
    clock.advance(FAILOVER_S - 0.001)
    assert await newcomer.take() == []
    clock.advance(0.001)
    assert [lease.shard_id for lease in await newcomer.take()] == [SHARDS[0]]
    assert store.leases[SHARDS[0]].owner == "B"


async def test_a_live_owners_renewals_keep_its_leases() -> None:
    clock = Clock()
    store = await make_store(*(Lease(shard_id=s) for s in SHARDS[:4]))
    a = Worker("A", store, clock, max_leases=2)
    b = Worker("B", store, clock, max_leases=2)
    await a.take()
    await b.take()
    assert owned_by(store, "A") == set(a.held)
    assert len(a.held) == len(b.held) == 2

    for _ in range(20):  # ten failover times, A renewing every half of one
        clock.advance(FAILOVER_S / 2)
        await a.renew()
        await b.renew()
        assert await b.take() == []
        assert await a.take() == []

    assert owned_by(store, "A") == set(a.held)
    assert a.lost == b.lost == []
    assert all(store.leases[s].counter == 21 for s in a.held)  # taken once, renewed 20 times

    # Once A stops renewing, its leases go after one failover time. B is capped at two, so a
    # third worker takes them.
    c = Worker("C", store, clock)
    await c.take()
    clock.advance(FAILOVER_S)
    await b.renew()
    await c.take()
    assert owned_by(store, "C") == set(a.held)


# -- balancing ----------------------------------------------------------------------------------


async def balancing_round(
    workers: list[Worker], clock: Clock, max_steal: int, steals: list[tuple[str, str, str]]
) -> None:
    """Every live worker renews, then takes; no one steals more than max_steal at once."""
    clock.advance(1.0)
    for worker in workers:
        await worker.renew()
    for worker in workers:
        before = {s: lease.owner for s, lease in worker.store.leases.items()}
        chosen = await worker.take()
        stolen = [lease for lease in chosen if before[lease.shard_id] not in (None, worker.id)]
        assert len(stolen) <= max_steal, f"{worker.id} stole {len(stolen)} at once"
        steals.extend((worker.id, str(before[lease.shard_id]), lease.shard_id) for lease in stolen)


@pytest.mark.parametrize("max_steal", [1, 2])
async def test_workers_joining_converge_to_an_even_share_a_few_steals_at_a_time(
    max_steal: int,
) -> None:
    clock = Clock()
    store = await make_store(*(Lease(shard_id=s) for s in SHARDS))
    a = Worker("A", store, clock, max_steal=max_steal)
    await a.take()
    assert owners(store) == {"A": 6}
    steals: list[tuple[str, str, str]] = []

    b = Worker("B", store, clock, max_steal=max_steal)
    workers = [a, b]
    for _ in range(8):
        await balancing_round(workers, clock, max_steal, steals)
    assert owners(store) == {"A": 3, "B": 3}
    assert len(steals) >= math.ceil(3 / max_steal)  # it took several rounds, not one grab
    assert {(thief, victim) for thief, victim, _ in steals} == {("B", "A")}
    assert sorted(a.lost) == sorted(s for _, _, s in steals)  # A noticed each loss on renewal

    c = Worker("C", store, clock, max_steal=max_steal)
    workers.append(c)
    steals.clear()
    for _ in range(8):
        await balancing_round(workers, clock, max_steal, steals)
    assert owners(store) == {"A": 2, "B": 2, "C": 2}
    assert all(thief == "C" for thief, _, _ in steals)
    assert len(steals) == 2  # exactly what C needed, nothing moved back and forth

    # Stable: more rounds move nothing.
    settled = {s: lease.owner for s, lease in store.leases.items()}
    for _ in range(5):
        await balancing_round(workers, clock, max_steal, steals)
    assert {s: lease.owner for s, lease in store.leases.items()} == settled
    for worker in workers:
        assert set(worker.held) == owned_by(store, worker.id)

    # C dies: after the failover time A and B share its leases, three each.
    workers.remove(c)
    for _ in range(int(FAILOVER_S) - 1):
        await balancing_round(workers, clock, max_steal, steals)
        assert owned_by(store, "C") == set(c.held), "C's leases went before the failover time"
    for _ in range(3):
        await balancing_round(workers, clock, max_steal, steals)
    assert owners(store) == {"A": 3, "B": 3}
    assert set(a.held) | set(b.held) == set(SHARDS)


async def test_max_leases_caps_a_worker() -> None:
    clock = Clock()
    store = await make_store(*(Lease(shard_id=s) for s in SHARDS))
    capped = Worker("A", store, clock, max_leases=4)

    await capped.take()
    for _ in range(3):
        clock.advance(FAILOVER_S)
        await capped.renew()
        assert await capped.take() == []

    assert len(owned_by(store, "A")) == 4
    assert owners(store)[None] == 2
    other = Worker("B", store, clock)
    await other.take()
    assert owners(store) == {"A": 4, "B": 2}


# -- resharding ---------------------------------------------------------------------------------


async def test_a_child_is_taken_only_once_its_parent_reached_shard_end() -> None:
    clock = Clock()
    parent, child = "shardId-000000000000", "shardId-000000000001"
    store = await make_store(
        Lease(shard_id=parent, owner="A", counter=3, checkpoint="49600000000000000000000001"),
        Lease(shard_id=child, parents=frozenset({parent})),
    )
    worker = Worker("B", store, clock)
    for _ in range(3):
        assert await worker.take() == []  # the parent is live and mid-shard
        clock.advance(1.0)
        store.leases[parent] = msgspec.structs.replace(
            store.leases[parent], counter=store.leases[parent].counter + 1
        )

    store.leases[parent] = msgspec.structs.replace(
        store.leases[parent], checkpoint=SHARD_END, owner=None
    )
    assert [lease.shard_id for lease in await worker.take()] == [child]
    assert store.leases[child].owner == "B"
    assert store.leases[parent].owner is None  # a finished parent is never taken


async def test_a_child_of_a_dead_workers_parent_waits_for_the_parent_to_be_finished() -> None:
    clock = Clock()
    parent, child = "shardId-000000000000", "shardId-000000000001"
    store = await make_store(
        Lease(shard_id=parent, owner="A", counter=3, checkpoint="49600000000000000000000001"),
        Lease(shard_id=child, parents=frozenset({parent})),
    )
    worker = Worker("B", store, clock)
    assert await worker.take() == []
    clock.advance(FAILOVER_S)

    # The parent expired: it is taken, the child still is not.
    assert [lease.shard_id for lease in await worker.take()] == [parent]
    assert store.leases[child].owner is None


async def test_a_merged_child_waits_for_every_parent() -> None:
    clock = Clock()
    left, right, child = (f"shardId-00000000000{i}" for i in range(3))
    store = await make_store(
        Lease(shard_id=left, checkpoint=SHARD_END),
        Lease(shard_id=right, owner="A", counter=1, checkpoint="49600000000000000000000001"),
        Lease(shard_id=child, parents=frozenset({left, right})),
    )
    worker = Worker("B", store, clock)

    assert await worker.take() == []
    store.leases[right] = msgspec.structs.replace(
        store.leases[right], counter=2, checkpoint=SHARD_END
    )
    assert [lease.shard_id for lease in await worker.take()] == [child]


async def test_a_child_whose_parent_lease_is_gone_is_taken() -> None:
    # Parent leases are deleted once the parent shard left the stream (past retention).
    store = await make_store(Lease(shard_id="shardId-000000000002", parents=frozenset({"gone"})))
    worker = Worker("B", store, Clock())

    assert [lease.shard_id for lease in await worker.take()] == ["shardId-000000000002"]


async def test_finished_leases_are_never_taken() -> None:
    clock = Clock()
    store = await make_store(
        Lease(shard_id=SHARDS[0], checkpoint=SHARD_END),
        Lease(shard_id=SHARDS[1], owner="dead", counter=4, checkpoint=SHARD_END),
        Lease(shard_id=SHARDS[2]),
    )
    worker = Worker("B", store, clock)

    for _ in range(3):
        await worker.take()
        clock.advance(FAILOVER_S)

    assert owned_by(store, "B") == {SHARDS[2]}
    assert store.leases[SHARDS[0]].owner is None
    assert store.leases[SHARDS[1]].owner == "dead"
    assert store.leases[SHARDS[1]].counter == 4


# -- MemoryLeaseStore fencing -------------------------------------------------------------------


async def test_create_does_not_overwrite_an_existing_lease() -> None:
    store = await make_store(Lease(shard_id="s", owner="A", counter=5, checkpoint="123"))

    assert not await store.create(Lease(shard_id="s"))
    assert store.leases["s"] == Lease(shard_id="s", owner="A", counter=5, checkpoint="123")


async def test_writes_with_the_current_lease_succeed_and_bump_the_counter() -> None:
    store = await make_store(Lease(shard_id="s"))

    taken = await store.take(store.leases["s"], "A")
    assert taken is not None
    assert (taken.owner, taken.counter, taken.owner_switches) == ("A", 1, 1)
    renewed = await store.renew(taken)
    assert renewed is not None
    assert (renewed.owner, renewed.counter) == ("A", 2)
    checkpointed = await store.checkpoint(renewed, "4960000000000000000001", 3)
    assert checkpointed is not None
    assert (checkpointed.checkpoint, checkpointed.checkpoint_sub) == ("4960000000000000000001", 3)
    assert (checkpointed.counter, checkpointed.owner_switches) == (3, 0)
    released = await store.release(checkpointed)
    assert released is not None
    assert (released.owner, released.counter) == (None, 4)
    assert released.checkpoint == "4960000000000000000001"
    assert store.leases["s"] == released


STALE_WRITES = {
    "take": lambda store, lease: store.take(lease, "thief"),
    "renew": lambda store, lease: store.renew(lease),
    "checkpoint": lambda store, lease: store.checkpoint(lease, "4960000000000000000009", 1),
    "release": lambda store, lease: store.release(lease),
}


@pytest.mark.parametrize("write", sorted(STALE_WRITES))
async def test_a_write_with_a_stale_counter_fails_and_changes_nothing(write: str) -> None:
    store = await make_store(Lease(shard_id="s"))
    mine = await store.take(store.leases["s"], "A")
    assert mine is not None
    current = await store.renew(mine)  # `mine` is now one renewal behind
    assert current is not None

    assert await STALE_WRITES[write](store, mine) is None
    assert store.leases["s"] == current


@pytest.mark.parametrize("write", sorted(STALE_WRITES))
async def test_a_write_expecting_another_owner_fails_and_changes_nothing(write: str) -> None:
    current = Lease(shard_id="s", owner="B", counter=8, checkpoint="4960000000000000000005")
    store = await make_store(current)
    zombie = msgspec.structs.replace(current, owner="A")  # same counter, wrong owner

    assert await STALE_WRITES[write](store, zombie) is None
    assert store.leases["s"] == current


async def test_a_write_to_a_deleted_lease_fails() -> None:
    store = await make_store(Lease(shard_id="s", owner="A", counter=2))
    lease = store.leases["s"]
    await store.delete(lease)

    assert await store.renew(lease) is None
    assert await store.checkpoint(lease, SHARD_END, 0) is None
    assert store.leases == {}


async def test_a_worker_that_lost_its_lease_cannot_checkpoint_it() -> None:
    clock = Clock()
    store = await make_store(Lease(shard_id="s", checkpoint=TRIM_HORIZON))
    a = Worker("A", store, clock)
    b = Worker("B", store, clock)
    await a.take()
    await b.take()
    clock.advance(FAILOVER_S)  # A paused (GC, network) longer than the failover time
    await b.take()
    assert store.leases["s"].owner == "B"

    assert await store.checkpoint(a.held["s"], "4960000000000000000001", 0) is None
    assert store.leases["s"].checkpoint == TRIM_HORIZON
    await a.renew()
    assert a.lost == ["s"]
    assert a.held == {}


# -- orphans ------------------------------------------------------------------------------------


async def test_orphans_are_the_readable_leases_without_a_live_owner() -> None:
    clock = Clock()
    leases = [
        Lease(shard_id="free"),
        Lease(shard_id="dead", owner="B", counter=3),
        Lease(shard_id="live", owner="C", counter=5),
        Lease(shard_id="done", checkpoint=SHARD_END),
        Lease(shard_id="parent", owner="C", counter=2),
        Lease(shard_id="waiting-child", parents=frozenset({"parent"})),
        Lease(shard_id="ready-child", parents=frozenset({"done"})),
    ]
    taker = LeaseTaker("A", FAILOVER_S, 1000, clock)
    taker.observe(leases)
    clock.advance(FAILOVER_S)
    renewed = [
        msgspec.structs.replace(le, counter=le.counter + 1) if le.owner == "C" else le
        for le in leases
    ]
    taker.observe(renewed)

    # "dead" stood still for the failover time; the child of a parent still being read waits.
    assert taker.orphans(renewed) == 3  # free, dead, ready-child


# -- renewal schedule ---------------------------------------------------------------------------

EVERY_S = FAILOVER_S / 3


def test_each_lease_is_due_a_third_of_the_failover_after_its_own_last_write() -> None:
    clock = Clock()
    schedule = RenewalSchedule(EVERY_S, clock)
    schedule.renewed("a", clock())
    clock.advance(1.0)
    schedule.renewed("b", clock())

    clock.advance(EVERY_S - 1.0 - 0.01)
    assert schedule.due() == []
    clock.advance(0.01)
    assert schedule.due() == ["a"]
    assert schedule.next_due() == pytest.approx(clock() + 1.0)
    clock.advance(1.0)
    assert schedule.due() == ["b"]


def test_a_slow_renewal_does_not_push_back_the_next_one() -> None:
    clock = Clock()
    schedule = RenewalSchedule(EVERY_S, clock)
    schedule.renewed("a", clock())
    clock.advance(EVERY_S)
    assert schedule.due() == ["a"]
    sent_at = clock()
    clock.advance(2.0)  # the lease table took 2 s to answer
    schedule.renewed("a", sent_at)

    assert schedule.next_due() == pytest.approx(sent_at + EVERY_S)
    clock.advance(EVERY_S - 2.0)
    assert schedule.due() == ["a"]


def test_a_checkpoint_counts_as_a_renewal() -> None:
    clock = Clock()
    schedule = RenewalSchedule(EVERY_S, clock)
    schedule.renewed("a", clock())
    clock.advance(2.0)
    schedule.renewed("a", clock())  # a checkpoint moved the counter too

    clock.advance(EVERY_S - 2.0)
    assert schedule.due() == []
    clock.advance(2.0)
    assert schedule.due() == ["a"]


def test_a_failed_renewal_is_retried_soon_and_a_forgotten_lease_never() -> None:
    clock = Clock()
    schedule = RenewalSchedule(EVERY_S, clock)
    schedule.renewed("a", clock())
    schedule.renewed("b", clock())
    clock.advance(EVERY_S)
    assert sorted(schedule.due()) == ["a", "b"]

    schedule.retry("a", 0.3)
    schedule.retry("b", 0.3)
    schedule.forget("b")  # lost meanwhile
    clock.advance(0.3)
    assert schedule.due() == ["a"]
    clock.advance(FAILOVER_S)
    assert schedule.due() == []
    assert schedule.next_due() is None
