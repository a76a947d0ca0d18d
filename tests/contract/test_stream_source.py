"""The StreamSource contract (trackstore.ports), over every source: MemoryStreamSource on a
MemoryStream, and KinesisStreamSource on kinesis-local with its leases in MemoryLeaseStore or in
DynamoDB on dynalite.

The rules: a batch is handed out again until it is checkpointed; a shard's records come in order,
and its next batch only after the previous one was checkpointed; parents come before children
after a split; `stop()` ends `batches()`; sequence numbers are the shard's own, as Kinesis numbers
them. Sequence numbers are compared only within one shard here: across shards they may be equal
(the memory stream numbers each shard from 0) or of any order (Kinesis).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import pytest

from tests.contract.conftest import STREAM_BATCH_SIZE, KinesisStreamUnderTest, StreamUnderTest
from trackstore.domain import StreamRecord
from trackstore.kinesis import reader as kinesis_reader
from trackstore.leasing import SHARD_END
from trackstore.ports import Batch, StreamSource

DEADLINE_S = 10.0
# The devices: four on each shard of either stream (the memory stream and Kinesis hash partition
# keys differently), and two on each of the four shards a split leaves on Kinesis.
KEYS = ["bus-12", "bus-0", "bus-3", "bus-4", "bus-17", "bus-6", "bus-15", "bus-1"]

Position = tuple[str, str, int]  # (shard, sequence number, sub-sequence number)


@pytest.fixture(autouse=True)
def _fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    # Kinesis allows 5 GetRecords calls a second per shard; kinesis-local does not enforce it,
    # and the reader keeping to it is tested in tests/unit/test_kinesis_reader.py.
    monkeypatch.setattr(kinesis_reader, "MIN_CALL_INTERVAL_S", 0.01)


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], what: str, within: float = DEADLINE_S
) -> None:
    deadline = time.monotonic() + within
    while True:
        met = condition()
        if not isinstance(met, bool):
            met = await met
        if met:
            return
        assert time.monotonic() < deadline, f"timed out after {within} s waiting for {what}"
        await asyncio.sleep(0.005)


def position(record: StreamRecord) -> Position:
    return record.shard_id, record.sequence_number, record.sub_sequence_number


def seen(records: Iterable[StreamRecord]) -> list[tuple[Position, str, bytes]]:
    """What a record is, arrival time aside (the memory stream's clock is 0 in these tests)."""
    return [(position(r), r.partition_key, r.data) for r in records]


def by_shard(records: Iterable[StreamRecord]) -> dict[str, list[StreamRecord]]:
    shards: dict[str, list[StreamRecord]] = {}
    for record in records:
        shards.setdefault(record.shard_id, []).append(record)
    return shards


def entries(round_: int, keys: list[str] = KEYS) -> list[tuple[str, bytes]]:
    return [(key, f"{key}#{round_}".encode()) for key in keys]


async def put_rounds(stream: StreamUnderTest, rounds: range) -> dict[str, list[StreamRecord]]:
    """Puts one record per device per round; returns them by shard, in each shard's order.
    Every shard gets several batches' worth."""
    stored: list[StreamRecord] = []
    for round_ in rounds:
        stored += await stream.put(entries(round_))
    shards = by_shard(stored)
    assert len(shards) >= 2, f"the records landed on {list(shards)} only"
    assert all(len(records) > STREAM_BATCH_SIZE for records in shards.values()), shards
    return shards


class Reading:
    """Iterates one source's batches in a task, as the Consumer does: each batch is checkpointed
    at once unless `hold(batch)` keeps it for the test, which checkpoints it (or not) later."""

    def __init__(self, source: StreamSource, hold: Callable[[Batch], bool]) -> None:
        self.source = source
        self.hold = hold
        self.handed: list[Batch] = []
        self.held: list[Batch] = []
        self.task = asyncio.create_task(self._read())
        self._stopped = False

    async def _read(self) -> None:
        async for batch in self.source.batches():
            assert isinstance(batch, Batch)
            self.handed.append(batch)
            if self.hold(batch):
                self.held.append(batch)
            else:
                await batch.checkpoint()

    def batches(self, shard_id: str) -> list[Batch]:
        return [batch for batch in self.handed if batch.shard_id == shard_id]

    def records(self, shard_id: str) -> list[StreamRecord]:
        return [record for batch in self.batches(shard_id) for record in batch.records]

    def read_all(self, stored: dict[str, list[StreamRecord]]) -> Callable[[], bool]:
        """A condition: every shard in `stored` handed out at least as many records."""
        return lambda: all(len(self.records(s)) >= len(rs) for s, rs in stored.items())

    async def stop(self) -> None:
        """stop(), the batches() iterator ending within the deadline, then close()."""
        if self._stopped:
            return
        self._stopped = True
        await self.source.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), DEADLINE_S)
        finally:
            if not self.task.done():
                self.task.cancel()
            await asyncio.wait_for(self.source.close(), DEADLINE_S)


Start = Callable[..., Reading]


@pytest.fixture
async def read(stream: StreamUnderTest) -> AsyncIterator[Start]:
    """Starts a source on the test's stream (a new worker each time); all are stopped at the
    end. `hold` picks the batches the test checkpoints itself; by default none."""
    started: list[Reading] = []

    def start(worker: str, hold: Callable[[Batch], bool] = lambda _: False) -> Reading:
        reading = Reading(stream.source(worker), hold)
        started.append(reading)
        return reading

    yield start
    for reading in started:
        await reading.stop()


def hold_all(_: Batch) -> bool:
    return True


# -- delivery and order --------------------------------------------------------------------------


async def test_every_record_is_handed_out_in_its_shards_order(
    stream: StreamUnderTest, read: Start
) -> None:
    stored = await put_rounds(stream, range(2))
    reading = read("worker-a")

    await eventually(reading.read_all(stored), "every record handed out")

    for shard_id, records in stored.items():
        assert seen(reading.records(shard_id)) == seen(records), shard_id
    for batch in reading.handed:
        assert 1 <= len(batch.records) <= STREAM_BATCH_SIZE
        assert {record.shard_id for record in batch.records} == {batch.shard_id}
    assert sum(len(batch.records) for batch in reading.handed) == sum(map(len, stored.values()))
    await reading.stop()


async def test_a_shards_next_batch_waits_for_the_checkpoint_of_the_last(
    stream: StreamUnderTest, read: Start
) -> None:
    stored = await put_rounds(stream, range(2))
    slow, fast = sorted(stored)
    reading = read("worker-a", hold=lambda batch: batch.shard_id == slow)

    # The other shard is read to its end meanwhile: the source had every chance to go on.
    await eventually(lambda: len(reading.records(fast)) == len(stored[fast]), "the fast shard")
    await eventually(lambda: len(reading.held) == 1, "the slow shard's first batch")
    assert len(reading.batches(slow)) == 1

    while len(reading.records(slow)) < len(stored[slow]):
        count = len(reading.batches(slow))
        assert len(reading.held) == count, "a batch came before the last one was checkpointed"
        await reading.held[-1].checkpoint()
        await eventually(lambda: len(reading.batches(slow)) > count, "the next batch")  # noqa: B023
        assert len(reading.batches(slow)) == count + 1

    assert seen(reading.records(slow)) == seen(stored[slow])
    assert seen(reading.records(fast)) == seen(stored[fast])
    await reading.stop()


# -- redelivery ----------------------------------------------------------------------------------


async def test_a_batch_is_handed_out_again_until_it_is_checkpointed(
    stream: StreamUnderTest, read: Start
) -> None:
    stored = await put_rounds(stream, range(2))

    # A worker that checkpoints nothing, then stops (a crash or a lost lease looks the same).
    first = read("worker-a", hold=hold_all)
    await eventually(lambda: all(first.batches(s) for s in stored), "a batch of every shard")
    await first.stop()

    # The next gets the same records again; it checkpoints one batch per shard, then stops.
    def after_one(batch: Batch) -> bool:
        return len(second.batches(batch.shard_id)) > 1

    second = read("worker-b", hold=after_one)
    await eventually(lambda: all(len(second.batches(s)) == 2 for s in stored), "two batches each")
    await second.stop()
    for shard_id in stored:
        again = second.batches(shard_id)[0].records
        assert seen(again) == seen(first.batches(shard_id)[0].records), shard_id

    # The third resumes right after what the second checkpointed: the rest, and only the rest.
    third = read("worker-c")
    await eventually(
        lambda: all(
            len(third.records(s)) >= len(rs) - len(second.batches(s)[0].records)
            for s, rs in stored.items()
        ),
        "the rest of every shard",
    )
    for shard_id, records in stored.items():
        done = len(second.batches(shard_id)[0].records)
        assert seen(third.records(shard_id)) == seen(records[done:]), shard_id
    await third.stop()


# -- stop ----------------------------------------------------------------------------------------


async def test_stop_ends_the_batches_with_batches_in_hand_or_none(
    stream: StreamUnderTest, read: Start
) -> None:
    stored = await put_rounds(stream, range(2))
    busy = read("worker-a", hold=hold_all)
    await eventually(lambda: all(busy.batches(s) for s in stored), "a batch of every shard")

    await busy.source.stop()
    await asyncio.wait_for(busy.task, 2.0)  # records are left, and batches are in hand
    # A batch in hand when the source stopped is still checkpointed (a graceful shutdown
    # finishes its batches), and the next worker resumes after it.
    for batch in busy.held:
        await batch.checkpoint()
    await busy.stop()

    idle = read("worker-b")
    await eventually(
        lambda: all(
            len(idle.records(s)) >= len(rs) - len(busy.batches(s)[0].records)
            for s, rs in stored.items()
        ),
        "the rest of every shard",
    )
    for shard_id, records in stored.items():
        done = len(busy.batches(shard_id)[0].records)
        assert seen(idle.records(shard_id)) == seen(records[done:]), shard_id

    await idle.source.stop()  # nothing left to read: the source is waiting for records
    await asyncio.wait_for(idle.task, 2.0)
    await idle.stop()


# -- sequence numbers ----------------------------------------------------------------------------


async def test_sequence_numbers_and_checkpoints_are_each_shards_own(
    stream: StreamUnderTest, read: Start
) -> None:
    stored = await put_rounds(stream, range(2))
    reading = read("worker-a")
    await eventually(reading.read_all(stored), "every record handed out")
    await reading.stop()

    positions: set[Position] = set()
    for shard_id, records in stored.items():
        numbers = [record.sequence_number for record in reading.records(shard_id)]
        assert numbers == [record.sequence_number for record in records]
        assert all(number.isdigit() for number in numbers), numbers
        # Kinesis's numbers grow within a shard, as integers; nothing says by how much.
        assert all(int(a) < int(b) for a, b in itertools.pairwise(numbers)), numbers
        positions |= {position(record) for record in reading.records(shard_id)}
    assert len(positions) == sum(map(len, stored.values())), "a position handed out twice"

    # A checkpoint in one shard says nothing about another, whatever their numbers are: the
    # first shard is checkpointed to its end, the other's new records stay unprocessed.
    more = await put_rounds(stream, range(2, 4))
    done, pending = sorted(more)
    partial = read("worker-b", hold=lambda batch: batch.shard_id == pending)
    await eventually(
        lambda: len(partial.records(done)) == len(more[done]) and len(partial.held) == 1,
        "one shard read to its end, and a batch of the other in hand",
    )
    await partial.stop()

    after = read("worker-c")
    await eventually(lambda: len(after.records(pending)) >= len(more[pending]), "the other shard")
    assert seen(after.records(pending)) == seen(more[pending])
    assert after.records(done) == []
    await after.stop()


# -- resharding ----------------------------------------------------------------------------------


async def test_parents_are_read_to_their_end_before_their_children(
    stream: StreamUnderTest, read: Start
) -> None:
    if not isinstance(stream, KinesisStreamUnderTest):
        pytest.skip(
            "MemoryStream does not model resharding: its shards are fixed when it is made,"
            " with no split, no parents and no children"
        )
    before = await put_rounds(stream, range(2))
    await stream.split()
    after = by_shard(await stream.put(entries(2) + entries(3)))
    parents = await stream.parents()
    assert set(after).isdisjoint(before), "records went to a closed shard"
    assert all(parents[child] <= set(before) and parents[child] for child in after), parents

    # The parents' first batches are held while the source goes on: two renewals of each
    # parent's lease take two thirds of the failover time, in which its housekeeping (shard sync
    # and lease taking, every third of it) ran again and still left the children alone.
    reading = read("worker-a", hold=lambda batch: batch.shard_id in before)
    await eventually(lambda: all(reading.batches(p) for p in before), "each parent's first batch")
    taken = await stream.lease_table()
    assert {child for child in after if taken[child].owner is not None} == set()

    async def renewed_twice() -> bool:
        now = await stream.lease_table()
        return all(now[p].counter >= taken[p].counter + 2 for p in before)

    await eventually(renewed_twice, "two renewals of each parent's lease")
    assert [batch.shard_id for batch in reading.handed if batch.shard_id in after] == []
    still = await stream.lease_table()
    assert all(still[child].owner is None for child in after)

    reading.hold = lambda _: False
    for batch in reading.held:
        await batch.checkpoint()
    await eventually(reading.read_all(after), "every child read")

    order = [batch.shard_id for batch in reading.handed]
    for child, records in after.items():
        assert seen(reading.records(child)) == seen(records), child
        for parent in parents[child]:
            assert seen(reading.records(parent)) == seen(before[parent]), parent
            last_of_parent = max(i for i, shard in enumerate(order) if shard == parent)
            assert last_of_parent < order.index(child), f"{child} began before {parent} ended"
    finished = await stream.lease_table()
    assert all(finished[parent].checkpoint == SHARD_END for parent in before)
    await reading.stop()
