"""The LeaseStore contract (trackstore.ports), over every adapter: MemoryLeaseStore, and the
DynamoDB lease store on dynalite and on moto server.

The rules: create only when absent; take, renew, steal, checkpoint and release, each moving the
counter by one; SHARD_END marks a lease finished; delete; list. Fencing: every write is
conditional on the counter and owner the writer last saw, and a write with a stale counter or
another owner answers None and changes nothing. A lost answer (a write applied whose answer never
came back, so it is sent again) is applied once, and its owner gets the lease back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec
import pytest

from tests.contract.conftest import Leases
from trackstore.leasing import LATEST, SHARD_END, TRIM_HORIZON, Lease
from trackstore.ports import LeaseStore

S0, S1, S2 = (f"shardId-00000000000{i}" for i in range(3))
SEQ1 = "49680850735138471958828396993804104748474538497954283522"
SEQ2 = "49680850735138471958828396993805313674294153127128989698"

Write = Callable[[LeaseStore, Lease], Awaitable[Lease | None]]

# Each write a worker makes to a lease it read, with what it sets.
WRITES: dict[str, Write] = {
    "take": lambda store, lease: store.take(lease, "worker-a"),
    "renew": lambda store, lease: store.renew(lease),
    "checkpoint": lambda store, lease: store.checkpoint(lease, SEQ2, 4),
    "release": lambda store, lease: store.release(lease),
}

# What a write sent again after it was applied answers (a lost answer: botocore resends the
# request, and the resent one meets the write it made itself). The DynamoDB store reads the lease
# back when its condition fails and, finding exactly what the write would have made, answers with
# it. The memory store cannot lose an answer and does not look: the repeat fails its condition,
# as any stale write does, and the owner takes the lease back as a stray one it owns.
REPEAT_FINDS_ITS_OWN_WRITE = {"memory": False, "dynalite": True, "moto": True}


async def table(store: LeaseStore) -> dict[str, Lease]:
    leases = await store.list()
    by_shard = {lease.shard_id: lease for lease in leases}
    assert len(by_shard) == len(leases), f"a shard listed twice: {leases}"
    return by_shard


async def held_by(store: LeaseStore, worker: str, shard_id: str = S0) -> Lease:
    """A new lease, taken by `worker` and checkpointed once: every field set."""
    assert await store.create(Lease(shard_id=shard_id))
    taken = await store.take(Lease(shard_id=shard_id), worker)
    assert taken is not None
    checkpointed = await store.checkpoint(taken, SEQ1, 0)
    assert checkpointed is not None
    return checkpointed


# -- create and list -----------------------------------------------------------------------------


async def test_a_lease_is_created_only_when_the_shard_has_none(leases: Leases) -> None:
    store = leases.store
    child = Lease(shard_id=S2, checkpoint=TRIM_HORIZON, parents=frozenset({S0, S1}))

    assert await store.create(child)
    assert await table(store) == {S2: child}
    assert not await store.create(Lease(shard_id=S2, checkpoint=LATEST))
    assert await table(store) == {S2: child}

    taken = await store.take(child, "worker-a")
    assert taken is not None
    assert not await store.create(Lease(shard_id=S2))
    assert await table(store) == {S2: taken}


async def test_list_returns_every_lease_as_it_was_last_written(leases: Leases) -> None:
    store = leases.store
    assert await table(store) == {}
    assert await store.create(Lease(shard_id=S0, checkpoint=LATEST))
    owned = await held_by(store, "worker-a", S1)
    assert await store.create(Lease(shard_id=S2, parents=frozenset({S0})))

    assert await table(store) == {
        S0: Lease(shard_id=S0, checkpoint=LATEST),
        S1: owned,
        S2: Lease(shard_id=S2, parents=frozenset({S0})),
    }
    assert owned == Lease(shard_id=S1, owner="worker-a", counter=2, checkpoint=SEQ1)


# -- the owner's writes --------------------------------------------------------------------------


async def test_take_makes_the_worker_the_owner_and_counts_the_switch(leases: Leases) -> None:
    store = leases.store
    lease = Lease(shard_id=S0, checkpoint=LATEST, parents=frozenset({S1}))
    assert await store.create(lease)

    taken = await store.take(lease, "worker-a")

    assert taken == msgspec.structs.replace(lease, owner="worker-a", counter=1, owner_switches=1)
    assert await table(store) == {S0: taken}


async def test_renew_moves_the_counter_and_nothing_else(leases: Leases) -> None:
    store = leases.store
    held = await held_by(store, "worker-a")

    renewed = await store.renew(held)
    assert renewed == msgspec.structs.replace(held, counter=held.counter + 1)
    again = await store.renew(renewed)
    assert again == msgspec.structs.replace(held, counter=held.counter + 2)
    assert await table(store) == {S0: again}


async def test_checkpoint_records_the_position_and_clears_the_switches(leases: Leases) -> None:
    store = leases.store
    assert await store.create(Lease(shard_id=S0))
    taken = await store.take(Lease(shard_id=S0), "worker-a")
    assert taken is not None
    assert taken.owner_switches == 1

    checkpointed = await store.checkpoint(taken, SEQ2, 7)

    assert checkpointed == Lease(
        shard_id=S0, owner="worker-a", counter=2, checkpoint=SEQ2, checkpoint_sub=7
    )
    assert await table(store) == {S0: checkpointed}


async def test_release_clears_the_owner_so_another_takes_it_at_once(leases: Leases) -> None:
    store = leases.store
    held = await held_by(store, "worker-a")

    released = await store.release(held)
    assert released == msgspec.structs.replace(held, owner=None, counter=held.counter + 1)
    assert await table(store) == {S0: released}

    taken = await store.take(released, "worker-b")
    assert taken == msgspec.structs.replace(
        released, owner="worker-b", counter=released.counter + 1, owner_switches=1
    )
    assert await table(store) == {S0: taken}


async def test_shard_end_finishes_the_lease_and_it_stays_listed(leases: Leases) -> None:
    store = leases.store
    parent = await held_by(store, "worker-a")
    child = Lease(shard_id=S1, parents=frozenset({S0}))
    assert await store.create(child)

    ended = await store.checkpoint(parent, SHARD_END, 0)
    assert ended is not None
    assert ended.finished
    assert (ended.owner, ended.counter, ended.checkpoint) == ("worker-a", 3, SHARD_END)
    released = await store.release(ended)
    assert released is not None

    listed = await table(store)
    assert listed == {S0: released, S1: child}
    assert listed[S0].finished
    assert listed[S0].owner is None
    assert not listed[S1].finished


async def test_delete_removes_the_lease_and_writes_to_it_fail(leases: Leases) -> None:
    store = leases.store
    held = await held_by(store, "worker-a")
    other = await held_by(store, "worker-b", S1)

    await store.delete(held)

    assert await table(store) == {S1: other}
    for name, write in WRITES.items():
        assert await write(store, held) is None, name
    assert await table(store) == {S1: other}
    await store.delete(held)  # deleting what is gone is no error
    assert await store.create(Lease(shard_id=S0))  # and the shard may have a lease again
    assert await table(store) == {S0: Lease(shard_id=S0), S1: other}


# -- stealing and fencing ------------------------------------------------------------------------


async def test_a_steal_takes_the_lease_from_its_owner_who_is_fenced_off(leases: Leases) -> None:
    store = leases.store
    held = await held_by(store, "worker-a")
    seen = (await table(store))[S0]

    stolen = await store.take(seen, "worker-b")

    assert stolen == msgspec.structs.replace(
        held, owner="worker-b", counter=held.counter + 1, owner_switches=1
    )
    for name, write in WRITES.items():
        assert await write(store, held) is None, f"the old owner's {name} went through"
    assert await table(store) == {S0: stolen}


async def test_a_steal_fails_when_the_owner_wrote_since_it_was_read(leases: Leases) -> None:
    store = leases.store
    held = await held_by(store, "worker-a")
    seen = (await table(store))[S0]
    renewed = await store.renew(held)  # the owner is alive after all
    assert renewed is not None

    assert await store.take(seen, "worker-b") is None
    assert await table(store) == {S0: renewed}


async def test_of_two_workers_taking_one_lease_at_once_one_wins(leases: Leases) -> None:
    store = leases.store
    assert await store.create(Lease(shard_id=S0))
    lease = Lease(shard_id=S0)

    results = await asyncio.gather(*(store.take(lease, f"worker-{w}") for w in "abcd"))

    winners = [taken for taken in results if taken is not None]
    assert len(winners) == 1, results
    assert winners[0].counter == 1
    assert await table(store) == {S0: winners[0]}


async def test_a_write_with_a_stale_counter_fails_and_changes_nothing(leases: Leases) -> None:
    store = leases.store
    shards = {name: f"shardId-stale-{name}" for name in WRITES}
    current: dict[str, Lease] = {}
    for name, shard_id in shards.items():
        assert await store.create(Lease(shard_id=shard_id))
        mine = await store.take(Lease(shard_id=shard_id), "worker-a")
        assert mine is not None
        # `mine` is one write behind now, and its write would leave another lease than this
        # one. (A stale write that would leave the lease exactly as it is: see the lost answer.)
        checkpointed = await store.checkpoint(mine, SEQ1, 2)
        assert checkpointed is not None
        current[shard_id] = checkpointed

        assert await WRITES[name](store, mine) is None, f"a stale {name} went through"
    assert await table(store) == current


@pytest.mark.parametrize(
    ("owner", "expected"),
    [("worker-b", "worker-a"), ("worker-b", None), (None, "worker-b")],
    ids=["owned-by-another", "owned-expected-free", "free-expected-owned"],
)
async def test_a_write_expecting_another_owner_fails_and_changes_nothing(
    leases: Leases, owner: str | None, expected: str | None
) -> None:
    store = leases.store
    current: dict[str, Lease] = {}
    for name in WRITES:
        lease = await held_by(store, owner or "worker-b", f"shardId-zombie-{name}")
        if owner is None:
            released = await store.release(lease)
            assert released is not None
            lease = released
        current[lease.shard_id] = lease
        zombie = msgspec.structs.replace(lease, owner=expected)  # the counter is right

        assert await WRITES[name](store, zombie) is None, (
            f"a {name} expecting {expected} went through"
        )
    assert await table(store) == current


# -- a lost answer -------------------------------------------------------------------------------


@pytest.mark.parametrize("write", sorted(WRITES))
async def test_a_write_whose_answer_was_lost_is_applied_once_and_its_owner_recovers(
    leases: Leases, write: str
) -> None:
    store = leases.store
    held = await held_by(store, "worker-a")
    if write == "take":  # a take follows a read of someone else's lease
        released = await store.release(held)
        assert released is not None
        held = released

    applied = await WRITES[write](store, held)  # applied; its answer never reaches the worker
    assert applied is not None
    repeated = await WRITES[write](store, held)  # the same request, sent again

    assert await table(store) == {S0: applied}, "the repeat was applied a second time"
    if REPEAT_FINDS_ITS_OWN_WRITE[leases.adapter]:
        assert repeated == applied
    else:
        assert repeated is None
    # Nobody else gets through on the repeat's stale lease.
    assert await store.take(held, "worker-b") is None
    assert await table(store) == {S0: applied}

    # Told None, the worker lists the table, finds the lease still its own (or free, after a
    # release) and takes it back, as KinesisStreamSource takes back stray leases it owns.
    listed = (await table(store))[S0]
    assert listed.owner == (None if write == "release" else "worker-a")
    recovered = await store.take(listed, "worker-a")
    assert recovered == msgspec.structs.replace(
        applied,
        owner="worker-a",
        counter=applied.counter + 1,
        owner_switches=applied.owner_switches + (1 if write == "release" else 0),
    )
    checkpointed = await store.checkpoint(recovered, SEQ2, 0)
    assert checkpointed is not None
    assert await table(store) == {S0: checkpointed}
