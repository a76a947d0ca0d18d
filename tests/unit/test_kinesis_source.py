"""KinesisStreamSource against a fake Kinesis client and MemoryLeaseStore: a lease per shard,
children after their parents, fencing when a lease is taken behind the source's back (and a
batch from before a loss never checkpointing), lag that goes with the lease, the lease log, and
the release of every lease on close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
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
from trackstore.metrics import Metrics

FAILOVER_S = 0.3
DEADLINE_S = 5.0  # for conditions that come within milliseconds; generous for a busy machine
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


class CountingLeases(MemoryLeaseStore):
    """A MemoryLeaseStore that counts its list() calls: a source lists the table at the start
    of each lease-taking round (every FAILOVER_S / 3 at the soonest)."""

    def __init__(self) -> None:
        super().__init__()
        self.lists = 0

    async def list(self) -> list[Lease]:
        self.lists += 1
        return await super().list()


async def lease_rounds(store: CountingLeases, rounds: int) -> None:
    """Waits until the source has begun `rounds` more lease-taking rounds: a condition, not a
    sleep, so a busy machine cannot shorten the wait to fewer rounds. As rounds are at least
    FAILOVER_S / 3 apart, it lasts at least (rounds - 1) * FAILOVER_S / 3."""
    target = store.lists + rounds
    await eventually(lambda: store.lists >= target, f"{rounds} lease-taking rounds")


@contextlib.asynccontextmanager
async def taken_by_another(store: MemoryLeaseStore, shard_id: str) -> AsyncIterator[None]:
    """Another worker takes the lease behind the source's back and keeps it alive inside."""
    lease = store.leases[shard_id]
    store.leases[shard_id] = msgspec.structs.replace(
        lease, owner="worker-b", counter=lease.counter + 1, owner_switches=1
    )
    alive = True

    async def renewing() -> None:
        while alive:
            assert await store.renew(store.leases[shard_id]) is not None
            await asyncio.sleep(FAILOVER_S / 6)

    task = asyncio.create_task(renewing())
    try:
        yield
    finally:
        alive = False
        await task


def lag(metrics: Metrics, shard_id: str) -> float | None:
    return metrics.registry.get_sample_value("trackstore_millis_behind_latest", {"shard": shard_id})


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
    store = CountingLeases()
    driving = Driving(source_for(kinesis, store), store, hold={S1})

    slow = await driving.next_held()  # S1's only batch, not checkpointed yet
    assert slow.shard_id == S1
    await eventually(lambda: store.leases[S0].finished, "the left parent finished")
    await lease_rounds(store, 4)  # several rounds that could have taken the child
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
    store = CountingLeases()
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
        # Past the failover time (7 rounds: at least 2 x FAILOVER_S): the thief is alive.
        await lease_rounds(store, 7)
        await eventually(lambda: driving.sequences(S1)[-2:] == later_s1, "the other shard going on")
        assert len(driving.sequences(S0)) == handed_before
        assert not set(later_s0) & set(driving.sequences(S0))
        assert driving.held.empty()
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


async def test_a_batch_from_before_the_lease_was_lost_and_taken_back_cannot_checkpoint() -> None:
    kinesis = FakeKinesis()
    kinesis.add_shard(S0)
    written = kinesis.put(S0, *data(S0, 6))
    store = MemoryLeaseStore()
    driving = Driving(source_for(kinesis, store), store, hold={S0})
    first = await driving.next_held()
    await first.checkpoint()
    stale = await driving.next_held()  # in hand while the lease goes and comes back

    # Another worker takes the lease and at once hands it back (it was stopping).
    taken = await store.take(store.leases[S0], "worker-b")
    assert taken is not None
    assert await store.release(taken) is not None
    # This worker finds out at its next renewal, takes the free lease again and replays from
    # its checkpoint, then goes on past the stale batch.
    replayed: list[str] = []
    while store.leases[S0].checkpoint != written[5]:
        batch = await driving.next_held()
        replayed.extend(r.sequence_number for r in batch.records)
        await batch.checkpoint()
    assert replayed == written[2:]

    with pytest.raises(Error) as raised:
        await stale.checkpoint()
    assert raised.value.code is CONFLICT
    assert store.leases[S0].checkpoint == written[5]  # not back to written[3]
    assert store.leases[S0].owner == "worker-a"
    assert S0 in driving.source.held  # the holding of today is untouched
    await driving.stop()


# -- lag and logs -------------------------------------------------------------------------------


async def test_a_lost_shard_leaves_no_lag_behind() -> None:
    kinesis = FakeKinesis()
    kinesis.add_shard(S0)
    kinesis.add_shard(S1)
    kinesis.put(S0, *data(S0, 6))
    kinesis.put(S1, *data(S1, 6))
    kinesis.lag_ms = 7000
    metrics = Metrics()
    store = MemoryLeaseStore()
    driving = Driving(source_for(kinesis, store, metrics=metrics), store, hold={S0, S1})
    in_hand = {batch.shard_id: batch for batch in [await driving.next_held() for _ in "ab"]}
    await eventually(lambda: lag(metrics, S0) == lag(metrics, S1) == 7000, "lag of both shards")
    assert driving.source.state().behind_ms == 7000

    async with taken_by_another(store, S0):
        await eventually(lambda: S0 not in driving.source.held, "the loss noticed")
        assert lag(metrics, S0) is None
        assert lag(metrics, S1) == 7000
        state = driving.source.state()
        assert (state.held, state.shards) == (1, frozenset({S1}))

        # The consumer sets a stored batch's lag before it checkpoints: the failed checkpoint
        # drops that series again.
        metrics.millis_behind_latest.labels(shard=S0).set(7000)
        with pytest.raises(Error):
            await in_hand[S0].checkpoint()
        assert lag(metrics, S0) is None
        await driving.stop()
    assert lag(metrics, S1) is None  # released on close
    assert driving.source.state().shards == frozenset()


async def test_a_finished_shard_leaves_no_lag_behind() -> None:
    kinesis = FakeKinesis()
    kinesis.add_shard(S0)
    kinesis.add_shard(S1)
    kinesis.put(S0, *data(S0, 3))
    kinesis.put(S1, *data(S1, 3))
    kinesis.close(S0)
    kinesis.lag_ms = 2000
    metrics = Metrics()
    store = MemoryLeaseStore()
    driving = Driving(source_for(kinesis, store, metrics=metrics), store)

    await eventually(
        lambda: S0 in store.leases and store.leases[S0].finished, "the closed shard read to its end"
    )
    await eventually(lambda: S0 not in driving.source.held, "its lease let go")
    assert lag(metrics, S0) is None
    assert lag(metrics, S1) == 2000
    await driving.stop()


async def test_a_child_waiting_for_its_parent_is_not_an_orphan() -> None:
    kinesis = FakeKinesis()
    kinesis.add_shard(S0)
    kinesis.add_shard(S1, S0)
    store = CountingLeases()
    assert await store.create(Lease(shard_id=S0, owner="worker-b"))
    async with taken_by_another(store, S0):
        driving = Driving(source_for(kinesis, store), store)
        await eventually(lambda: S1 in store.leases, "the child's lease created")
        await lease_rounds(store, 7)  # past the failover time: rounds that could take a lease

        # Nothing to read here: the parent has a live owner and the child must wait for it.
        state = driving.source.state()
        assert (state.held, state.orphaned) == (0, 0)
        await driving.stop()


async def test_each_lease_taken_lost_and_released_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trackstore.kinesis.source")
    kinesis = FakeKinesis()
    kinesis.add_shard(S0)
    kinesis.add_shard(S1)
    store = MemoryLeaseStore()
    driving = Driving(source_for(kinesis, store), store)
    await eventually(lambda: len(driving.source.held) == 2, "both leases taken")
    async with taken_by_another(store, S0):
        await eventually(lambda: S0 not in driving.source.held, "the loss noticed")
        await driving.stop()

    lines = [
        (r.levelno, r.getMessage(), getattr(r, "shard", None), getattr(r, "worker", None))
        for r in caplog.records
        if getattr(r, "shard", None)
    ]
    assert lines == [
        (logging.INFO, "lease taken", S0, "worker-a"),
        (logging.INFO, "lease taken", S1, "worker-a"),
        (logging.INFO, "lease lost", S0, "worker-a"),
        (logging.INFO, "lease released", S1, "worker-a"),
    ]


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
    successor = Driving(source_for(kinesis, store, "worker-b", failover_s=30.0), store)
    # Within a third of the 30 s failover time: only released leases can be taken that soon.
    await eventually(
        lambda: (
            successor.sequences(S2) == written[S2]
            and all(successor.sequences(s) == more[s] for s in (S0, S1))
        ),
        "the successor reading every shard from its checkpoint",
        within=10.0,
    )
    assert {lease.owner for lease in store.leases.values()} == {"worker-b"}
    await successor.stop()


async def test_stop_ends_the_batches_promptly() -> None:
    kinesis = FakeKinesis()
    kinesis.add_shard(S0)
    store = MemoryLeaseStore()
    # Long idle and failover times: a stop that waited for the next poll or lease round would
    # take 10 s or more, not the moment it takes.
    driving = Driving(source_for(kinesis, store, failover_s=30.0, idle_s=30.0), store)
    await eventually(lambda: store.leases.get(S0, Lease(shard_id=S0)).owner is not None, "taken")

    started = time.perf_counter()
    await driving.stop()
    assert time.perf_counter() - started < 2.0
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
