"""KinesisStreamSource against a fake Kinesis client and MemoryLeaseStore: a lease per shard,
children after their parents, fencing when a lease is taken behind the source's back, and the
release of every lease on close."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from tests.unit.test_kinesis_reader import STREAM, FakeKinesis
from trackstore.errors import CONFLICT, UNAVAILABLE, Error
from trackstore.kinesis import reader as reader_module
from trackstore.kinesis.reader import KinesisBatch
from trackstore.kinesis.source import KinesisStreamSource
from trackstore.leasing import SHARD_END, TRIM_HORIZON, Lease
from trackstore.memory.leases import MemoryLeaseStore

FAILOVER_S = 0.3
DEADLINE_S = 3.0
S0, S1, S2, S3 = (f"shardId-00000000000{i}" for i in range(4))


@pytest.fixture(autouse=True)
def _fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    # Kinesis's 5 GetRecords calls a second per shard is the reader's to keep (tested there).
    monkeypatch.setattr(reader_module, "MIN_CALL_INTERVAL_S", 0.0)


def data(shard: str, n: int) -> list[bytes]:
    return [f'{{"shard": "{shard}", "n": {i}}}'.encode() for i in range(n)]


class Handed(msgspec.Struct):
    shard_id: str
    sequences: list[str]
    leases: dict[str, Lease]  # the lease table when the batch was handed out


class Driving:
    """Iterates a source's batches in a task, as the Consumer does: batches of the shards in
    `hold` wait in `held` for the test; the others are checkpointed at once."""

    def __init__(
        self, source: KinesisStreamSource, store: MemoryLeaseStore, hold: set[str] | None = None
    ) -> None:
        self.source = source
        self._store = store
        self.hold = hold or set()
        self.handed: list[Handed] = []
        self.held: asyncio.Queue[KinesisBatch] = asyncio.Queue()
        self.task = asyncio.create_task(self._drive())

    async def _drive(self) -> None:
        async for batch in self.source.batches():
            self.handed.append(
                Handed(
                    shard_id=batch.shard_id,
                    sequences=[r.sequence_number for r in batch.records],
                    leases=dict(self._store.leases),
                )
            )
            if batch.shard_id in self.hold:
                await self.held.put(batch)
            else:
                await batch.checkpoint()

    def sequences(self, shard_id: str) -> list[str]:
        return [s for h in self.handed if h.shard_id == shard_id for s in h.sequences]

    async def next_held(self) -> KinesisBatch:
        return await asyncio.wait_for(self.held.get(), DEADLINE_S)

    async def stop(self) -> None:
        await self.source.stop()
        await asyncio.wait_for(self.task, DEADLINE_S)
        await asyncio.wait_for(self.source.close(), DEADLINE_S)


def source_for(
    client: FakeKinesis, store: Any, worker: str = "worker-a", **options: Any
) -> KinesisStreamSource:
    settings: dict[str, Any] = {"batch_size": 2, "failover_s": FAILOVER_S, "idle_s": 0.005}
    settings.update(options)
    return KinesisStreamSource(client, STREAM, store, worker, **settings)


async def eventually(condition: Callable[[], bool], what: str, within: float = DEADLINE_S) -> None:
    deadline = time.perf_counter() + within
    while not condition():
        assert time.perf_counter() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.002)


# -- leases and resharding ----------------------------------------------------------------------


async def test_a_lease_per_shard_taken_and_children_read_after_their_parent() -> None:
    kinesis = FakeKinesis()
    kinesis.add_shard(S0)
    kinesis.add_shard(S1)
    kinesis.add_shard(S2, S0)
    parent = kinesis.put(S0, *data(S0, 5))
    other = kinesis.put(S1, *data(S1, 3))
    child = kinesis.put(S2, *data(S2, 3))
    kinesis.close(S0)
    store = MemoryLeaseStore()
    driving = Driving(source_for(kinesis, store), store)

    await eventually(
        lambda: len(driving.sequences(S2)) == 3 and len(driving.sequences(S1)) == 3,
        "every shard read",
    )

    assert set(store.leases) == {S0, S1, S2}
    assert store.leases[S0].parents == frozenset()
    assert store.leases[S1].parents == frozenset()
    assert store.leases[S2].parents == frozenset({S0})
    assert driving.sequences(S0) == parent
    assert driving.sequences(S1) == other
    assert driving.sequences(S2) == child
    # The child's records came only after the parent's lease said SHARD_END.
    for handed in driving.handed:
        if handed.shard_id == S2:
            assert handed.leases[S0].checkpoint == SHARD_END
    order = [h.shard_id for h in driving.handed]
    assert max(i for i, s in enumerate(order) if s == S0) < order.index(S2)

    await eventually(lambda: store.leases[S2].checkpoint == child[-1], "the child checkpointed")
    assert store.leases[S0].checkpoint == SHARD_END
    assert store.leases[S0].owner is None  # released at its end: nothing left to read
    assert store.leases[S1].owner == store.leases[S2].owner == "worker-a"
    assert store.leases[S1].checkpoint == other[-1]
    assert set(driving.source.held) == {S1, S2}
    await driving.stop()


async def test_a_merged_child_waits_for_both_parents() -> None:
    kinesis = FakeKinesis()
    kinesis.add_shard(S0)
    kinesis.add_shard(S1)
    kinesis.add_shard(S2, S0, S1)
    kinesis.put(S0, *data(S0, 2))
    right = kinesis.put(S1, *data(S1, 2))
    child = kinesis.put(S2, *data(S2, 2))
    kinesis.close(S0)
    kinesis.close(S1)
    store = MemoryLeaseStore()
    driving = Driving(source_for(kinesis, store), store, hold={S1})

    slow = await driving.next_held()  # S1's only batch, not checkpointed yet
    assert slow.shard_id == S1
    await eventually(lambda: store.leases[S0].finished, "the left parent finished")
    await asyncio.sleep(FAILOVER_S)  # several lease-taking rounds
    assert store.leases[S2].parents == frozenset({S0, S1})
    assert driving.sequences(S2) == []
    assert store.leases[S2].owner is None

    await slow.checkpoint()
    await eventually(lambda: driving.sequences(S2) == child, "the child read")
    assert store.leases[S1].checkpoint == SHARD_END
    assert driving.sequences(S1) == right
    await driving.stop()


async def test_a_split_while_running_starts_the_children_once_the_parent_ends() -> None:
    kinesis = FakeKinesis()
    kinesis.add_shard(S0)
    before = kinesis.put(S0, *data(S0, 3))
    store = MemoryLeaseStore()
    # Shard sync once a minute: only the parent's end can make the children known this soon.
    driving = Driving(source_for(kinesis, store, shard_sync_s=60.0), store)
    await eventually(lambda: driving.sequences(S0) == before, "the parent read")

    last = kinesis.put(S0, *data(S0, 1))
    kinesis.add_shard(S1, S0)
    kinesis.add_shard(S2, S0)
    left = kinesis.put(S1, *data(S1, 3))
    right = kinesis.put(S2, *data(S2, 2))
    kinesis.close(S0)

    await eventually(
        lambda: driving.sequences(S1) == left and driving.sequences(S2) == right,
        "both children read",
    )
    assert driving.sequences(S0) == before + last
    assert store.leases[S1].parents == store.leases[S2].parents == frozenset({S0})
    await eventually(
        lambda: (store.leases[S1].checkpoint, store.leases[S2].checkpoint) == (left[-1], right[-1]),
        "the children checkpointed",
    )
    for handed in driving.handed:
        if handed.shard_id in (S1, S2):
            assert handed.leases[S0].checkpoint == SHARD_END
    await driving.stop()


# -- fencing ------------------------------------------------------------------------------------


async def test_a_lease_taken_behind_its_back_is_never_checkpointed_or_read_again() -> None:
    kinesis = FakeKinesis()
    kinesis.add_shard(S0)
    kinesis.add_shard(S1)
    kinesis.put(S0, *data(S0, 6))
    kinesis.put(S1, *data(S1, 2))
    store = MemoryLeaseStore()
    driving = Driving(source_for(kinesis, store), store, hold={S0})

    first = await driving.next_held()
    await first.checkpoint()
    in_hand = await driving.next_held()
    assert store.leases[S0].owner == "worker-a"

    # Another worker takes the lease; it stays alive, renewing it.
    stolen = store.leases[S0]
    store.leases[S0] = msgspec.structs.replace(
        stolen, owner="worker-b", counter=stolen.counter + 1, owner_switches=1
    )
    thief_alive = True

    async def thief() -> None:
        while thief_alive:
            renewed = await store.renew(store.leases[S0])
            assert renewed is not None
            await asyncio.sleep(FAILOVER_S / 6)

    thief_task = asyncio.create_task(thief())
    try:
        with pytest.raises(Error) as raised:
            await in_hand.checkpoint()
        assert raised.value.code is CONFLICT
        assert store.leases[S0].owner == "worker-b"
        assert store.leases[S0].checkpoint == first.records[-1].sequence_number  # unchanged

        handed_before = len(driving.sequences(S0))
        later_s0 = kinesis.put(S0, *data(S0, 2))
        later_s1 = kinesis.put(S1, *data(S1, 2))
        await asyncio.sleep(2 * FAILOVER_S)  # past the failover time: the thief is alive
        assert len(driving.sequences(S0)) == handed_before
        assert not set(later_s0) & set(driving.sequences(S0))
        assert driving.held.empty()
        assert driving.sequences(S1)[-2:] == later_s1  # the other shard goes on
        assert S0 not in driving.source.held
        assert store.leases[S0].owner == "worker-b"
    finally:
        thief_alive = False
        await thief_task
    await driving.stop()
    assert store.leases[S0].owner == "worker-b"  # close releases only what it holds


async def test_a_lease_renewal_failing_stops_the_shard_before_its_next_checkpoint() -> None:
    kinesis = FakeKinesis()
    kinesis.add_shard(S0)
    kinesis.put(S0, *data(S0, 6))
    store = MemoryLeaseStore()
    driving = Driving(source_for(kinesis, store), store, hold={S0})
    in_hand = await driving.next_held()

    # Taken and left behind by a worker that then died: the counter does not move again.
    lease = store.leases[S0]
    store.leases[S0] = msgspec.structs.replace(lease, owner="worker-b", counter=lease.counter + 1)
    await eventually(lambda: S0 not in driving.source.held, "the renewal noticing the loss")

    with pytest.raises(Error) as raised:
        await in_hand.checkpoint()
    assert raised.value.code is CONFLICT
    assert store.leases[S0].checkpoint == TRIM_HORIZON
    await driving.stop()


# -- closing ------------------------------------------------------------------------------------


async def test_close_releases_every_lease_and_a_successor_resumes_at_once() -> None:
    kinesis = FakeKinesis()
    for shard in (S0, S1, S2):
        kinesis.add_shard(shard)
    written = {shard: kinesis.put(shard, *data(shard, 4)) for shard in (S0, S1, S2)}
    store = MemoryLeaseStore()
    # A long failover time: a successor could only start at once if the leases were released.
    driving = Driving(source_for(kinesis, store, failover_s=30.0), store, hold={S2})
    await eventually(
        lambda: all(driving.sequences(s) == written[s] for s in (S0, S1)), "two shards read"
    )
    unfinished = await driving.next_held()  # S2's first batch, never checkpointed
    await eventually(
        lambda: all(store.leases[s].checkpoint == written[s][-1] for s in (S0, S1)),
        "two shards checkpointed",
    )

    await driving.stop()

    assert {lease.owner for lease in store.leases.values()} == {None}
    assert {s: store.leases[s].checkpoint for s in store.leases} == {
        S0: written[S0][-1],
        S1: written[S1][-1],
        S2: TRIM_HORIZON,
    }
    assert driving.source.held == {}
    with pytest.raises(Error) as raised:
        await unfinished.checkpoint()  # too late: the lease went with close()
    assert raised.value.code is CONFLICT
    assert store.leases[S2].checkpoint == TRIM_HORIZON

    more = {shard: kinesis.put(shard, *data(shard, 1)) for shard in (S0, S1)}
    started = time.perf_counter()
    successor = Driving(source_for(kinesis, store, "worker-b", failover_s=30.0), store)
    await eventually(
        lambda: (
            successor.sequences(S2) == written[S2]
            and all(successor.sequences(s) == more[s] for s in (S0, S1))
        ),
        "the successor reading every shard from its checkpoint",
    )
    assert time.perf_counter() - started < 1.0
    assert {lease.owner for lease in store.leases.values()} == {"worker-b"}
    await successor.stop()


async def test_stop_ends_the_batches_promptly() -> None:
    kinesis = FakeKinesis()
    kinesis.add_shard(S0)
    store = MemoryLeaseStore()
    driving = Driving(source_for(kinesis, store), store)
    await eventually(lambda: store.leases.get(S0, Lease(shard_id=S0)).owner is not None, "taken")

    started = time.perf_counter()
    await driving.stop()
    assert time.perf_counter() - started < 0.5
    assert store.leases[S0].owner is None


# -- lease table outages ------------------------------------------------------------------------


class ThrottledCheckpoints(MemoryLeaseStore):
    """A lease table whose next `failures` checkpoints raise Error(UNAVAILABLE), as the DynamoDB
    lease store does when UpdateItem is throttled beyond botocore's retries."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures_left = failures

    async def checkpoint(self, lease: Lease, checkpoint: str, sub: int) -> Lease | None:
        if self.failures_left:
            self.failures_left -= 1
            raise Error(UNAVAILABLE, "lease table is throttling", retry_after=1)
        return await super().checkpoint(lease, checkpoint, sub)


async def test_a_throttled_checkpoint_does_not_stall_the_shard() -> None:
    kinesis = FakeKinesis()
    kinesis.add_shard(S0)
    written = kinesis.put(S0, *data(S0, 6))
    store = ThrottledCheckpoints(failures=0)
    driving = Driving(source_for(kinesis, store), store, hold={S0})

    first = await driving.next_held()
    store.failures_left = 1
    with pytest.raises(Error) as raised:
        await first.checkpoint()
    assert raised.value.code is UNAVAILABLE
    await asyncio.sleep(0.05)  # the caller backs off, then retries: this time it is recorded
    await first.checkpoint()
    assert store.leases[S0].checkpoint == written[1]

    try:
        rest: list[str] = []
        while len(rest) < 4:
            try:
                batch = await asyncio.wait_for(driving.held.get(), 1.0)
            except TimeoutError:
                pytest.fail(
                    f"shard stalled after a throttled checkpoint: {len(rest)} of its 4 later "
                    f"records handed out, lease still held: {S0 in driving.source.held}"
                )
            rest.extend(r.sequence_number for r in batch.records)
            await batch.checkpoint()
        assert rest == written[2:]
    finally:
        await driving.stop()
