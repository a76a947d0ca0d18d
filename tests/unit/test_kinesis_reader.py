"""ShardReader against a fake Kinesis client: order, one batch in hand at a time, iterator expiry,
throttling, KPL sub-record checkpoints, shard end, abandoned batches, lag."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from trackstore.backoff import Backoff
from trackstore.errors import CONFLICT, Error
from trackstore.kinesis import reader as reader_module
from trackstore.kinesis.kpl import aggregate
from trackstore.kinesis.reader import KinesisBatch, ShardReader
from trackstore.leasing import SHARD_END, TRIM_HORIZON

STREAM = "tracks"
SHARD = "shardId-000000000000"
ARRIVAL = datetime.datetime(2027, 1, 15, 8, 0, tzinfo=datetime.UTC)
DEADLINE_S = 3.0
FIRST_SEQUENCE = 49_600_000_000_000_000_000_000_000_000_000_000_000_000_000


def client_error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"fake {code}"}}, operation)


class FakeShard:
    def __init__(self, shard_id: str, parents: tuple[str, ...]) -> None:
        self.shard_id = shard_id
        self.parents = parents
        self.records: list[dict[str, Any]] = []
        self.closed = False


class FakeKinesis:
    """Enough of Kinesis for one stream: ListShards, GetShardIterator, GetRecords over records
    kept in memory, sequence numbers growing across the stream. `faults` maps the number of a
    GetRecords call (1 for the first) to the error code that call fails with."""

    def __init__(self) -> None:
        self.shards: dict[str, FakeShard] = {}
        self._next_sequence = FIRST_SEQUENCE
        self._iterators: dict[str, tuple[str, int]] = {}
        self.iterator_requests: list[dict[str, Any]] = []
        self.get_records_calls: list[tuple[str, float]] = []  # (iterator, time)
        self.faults: dict[int, str] = {}
        self.lag_ms: int | None = None  # MillisBehindLatest override

    # -- setting up ----------------------------------------------------------------------------

    def add_shard(self, shard_id: str = SHARD, *parents: str) -> FakeShard:
        shard = self.shards[shard_id] = FakeShard(shard_id, parents)
        return shard

    def put(self, shard_id: str, *datas: bytes, partition_key: str = "bus-1") -> list[str]:
        """Appends plain records; returns their sequence numbers."""
        sequences = []
        for data in datas:
            sequence = str(self._next_sequence)
            self._next_sequence += 7  # gaps, as in Kinesis
            self.shards[shard_id].records.append(
                {
                    "SequenceNumber": sequence,
                    "ApproximateArrivalTimestamp": ARRIVAL,
                    "Data": data,
                    "PartitionKey": partition_key,
                }
            )
            sequences.append(sequence)
        return sequences

    def close(self, shard_id: str) -> None:
        self.shards[shard_id].closed = True

    # -- the client ----------------------------------------------------------------------------

    async def list_shards(self, **request: Any) -> dict[str, Any]:
        assert request == {"StreamName": STREAM}
        shards = []
        for shard in self.shards.values():
            description: dict[str, Any] = {
                "ShardId": shard.shard_id,
                "SequenceNumberRange": {"StartingSequenceNumber": str(FIRST_SEQUENCE)},
            }
            if shard.parents:
                description["ParentShardId"] = shard.parents[0]
            if len(shard.parents) > 1:
                description["AdjacentParentShardId"] = shard.parents[1]
            if shard.closed:
                description["SequenceNumberRange"]["EndingSequenceNumber"] = str(
                    self._next_sequence
                )
            shards.append(description)
        await asyncio.sleep(0)
        return {"Shards": shards}

    async def get_shard_iterator(self, **request: Any) -> dict[str, Any]:
        self.iterator_requests.append(request)
        assert request["StreamName"] == STREAM
        shard = self.shards[request["ShardId"]]
        kind = request["ShardIteratorType"]
        sequences = [int(r["SequenceNumber"]) for r in shard.records]
        if kind == "TRIM_HORIZON":
            position = 0
        elif kind == "LATEST":
            position = len(sequences)
        elif kind == "AT_SEQUENCE_NUMBER":
            start = int(request["StartingSequenceNumber"])
            position = next((i for i, s in enumerate(sequences) if s >= start), len(sequences))
        elif kind == "AFTER_SEQUENCE_NUMBER":
            start = int(request["StartingSequenceNumber"])
            position = next((i for i, s in enumerate(sequences) if s > start), len(sequences))
        else:
            raise client_error("InvalidArgumentException", "GetShardIterator")
        await asyncio.sleep(0)
        return {"ShardIterator": self._iterator(shard.shard_id, position)}

    async def get_records(self, *, ShardIterator: str, Limit: int) -> dict[str, Any]:
        self.get_records_calls.append((ShardIterator, time.monotonic()))
        await asyncio.sleep(0)
        fault = self.faults.get(len(self.get_records_calls))
        if fault is not None:
            raise client_error(fault, "GetRecords")
        shard_id, position = self._iterators[ShardIterator]
        shard = self.shards[shard_id]
        records = shard.records[position : position + Limit]
        after = position + len(records)
        response: dict[str, Any] = {
            "Records": records,
            "MillisBehindLatest": (len(shard.records) - after) * 1000
            if self.lag_ms is None
            else self.lag_ms,
        }
        if not (shard.closed and after == len(shard.records)):
            response["NextShardIterator"] = self._iterator(shard_id, after)
        return response

    def _iterator(self, shard_id: str, position: int) -> str:
        token = f"iterator-{len(self._iterators)}"
        self._iterators[token] = (shard_id, position)
        return token


def sequences_of(batch: KinesisBatch) -> list[tuple[str, int]]:
    return [(r.sequence_number, r.sub_sequence_number) for r in batch.records]


class Reading:
    """A ShardReader running in a task, its batches in a queue, its commits in a list."""

    def __init__(
        self,
        client: FakeKinesis,
        checkpoint: str = TRIM_HORIZON,
        checkpoint_sub: int = 0,
        batch_size: int = 3,
    ) -> None:
        self.handed: asyncio.Queue[KinesisBatch] = asyncio.Queue()
        self.commits: list[tuple[str, int]] = []
        self.reader = ShardReader(
            client,
            STREAM,
            SHARD,
            checkpoint,
            checkpoint_sub,
            batch_size,
            idle_s=0.005,
            hand_out=self.handed.put,
            commit=self._commit,
            backoff=Backoff(base=0.001, cap=0.01),
        )
        self.task = asyncio.create_task(self.reader.run())

    async def _commit(self, sequence: str, sub: int) -> None:
        self.commits.append((sequence, sub))

    async def next(self) -> KinesisBatch:
        return await asyncio.wait_for(self.handed.get(), DEADLINE_S)

    async def read(self, count: int) -> list[tuple[str, int]]:
        """Takes and checkpoints batches until `count` records came; returns them."""
        positions: list[tuple[str, int]] = []
        while len(positions) < count:
            batch = await self.next()
            positions.extend(sequences_of(batch))
            await batch.checkpoint()
        return positions

    async def nothing_more(self, seconds: float = 0.05) -> None:
        await asyncio.sleep(seconds)
        assert self.handed.empty(), "a batch was handed out that should not have been"


@pytest.fixture(autouse=True)
def _fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """GetRecords at most every 0.2 s is Kinesis's limit, tested on its own below; the other
    tests poll without it so they run in milliseconds."""
    monkeypatch.setattr(reader_module, "MIN_CALL_INTERVAL_S", 0.0)


@pytest.fixture
def kinesis() -> FakeKinesis:
    client = FakeKinesis()
    client.add_shard(SHARD)
    return client


@contextlib.asynccontextmanager
async def reading(client: FakeKinesis, **options: Any) -> AsyncIterator[Reading]:
    running = Reading(client, **options)
    try:
        yield running
    finally:
        running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running.task


def plain(n: int) -> list[bytes]:
    return [f'{{"n": {i}}}'.encode() for i in range(n)]


# -- order and hand-out -------------------------------------------------------------------------


async def test_reads_from_trim_horizon_in_order_one_batch_in_hand_at_a_time(
    kinesis: FakeKinesis,
) -> None:
    sequences = kinesis.put(SHARD, *plain(7))
    async with reading(kinesis, batch_size=3) as running:
        first = await running.next()
        assert [r.sequence_number for r in first.records] == sequences[:3]
        assert [r.data for r in first.records] == plain(7)[:3]
        assert all(r.shard_id == SHARD and r.partition_key == "bus-1" for r in first.records)
        assert first.records[0].arrival_ms == int(ARRIVAL.timestamp() * 1000)

        # The next batch is fetched already, but not handed out before this one's checkpoint.
        deadline = time.monotonic() + DEADLINE_S
        while len(kinesis.get_records_calls) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)
        await running.nothing_more()
        assert running.commits == []

        await first.checkpoint()
        assert first.checkpointed
        assert running.commits == [(sequences[2], 0)]
        second = await running.next()
        assert [r.sequence_number for r in second.records] == sequences[3:6]
        await running.nothing_more()
        await second.checkpoint()
        third = await running.next()
        assert [r.sequence_number for r in third.records] == sequences[6:]
        await third.checkpoint()

        # Records written later are read from the same iterator chain.
        later = kinesis.put(SHARD, *plain(2))
        assert await running.read(2) == [(s, 0) for s in later]

    assert kinesis.iterator_requests == [
        {"StreamName": STREAM, "ShardId": SHARD, "ShardIteratorType": "TRIM_HORIZON"}
    ]
    assert running.commits == [
        (sequences[2], 0),
        (sequences[5], 0),
        (sequences[6], 0),
        (later[1], 0),
    ]


async def test_a_sequence_number_checkpoint_resumes_after_that_record(kinesis: FakeKinesis) -> None:
    sequences = kinesis.put(SHARD, *plain(5))
    async with reading(kinesis, checkpoint=sequences[1], batch_size=10) as running:
        assert await running.read(3) == [(s, 0) for s in sequences[2:]]
        await running.nothing_more()


async def test_millis_behind_latest_is_carried_on_the_batch(kinesis: FakeKinesis) -> None:
    kinesis.put(SHARD, *plain(5))
    async with reading(kinesis, batch_size=2) as running:
        lags = []
        for _ in range(3):
            batch = await running.next()
            lags.append(batch.millis_behind_latest)
            await batch.checkpoint()
    assert lags == [3000, 1000, 0]


# -- failures -----------------------------------------------------------------------------------


async def test_an_expired_iterator_is_rebuilt_at_the_last_record_fetched(
    kinesis: FakeKinesis,
) -> None:
    sequences = kinesis.put(SHARD, *plain(8))
    kinesis.faults = {3: "ExpiredIteratorException"}  # the call after the second batch
    async with reading(kinesis, batch_size=3) as running:
        positions = await running.read(8)
        await running.nothing_more()

    assert positions == [(s, 0) for s in sequences]  # nothing lost, nothing twice
    assert len(kinesis.iterator_requests) == 2
    rebuilt = kinesis.iterator_requests[1]
    assert rebuilt["ShardIteratorType"] == "AT_SEQUENCE_NUMBER"  # never LATEST
    assert rebuilt["StartingSequenceNumber"] == sequences[5]


async def test_throttling_is_retried_with_the_same_iterator(kinesis: FakeKinesis) -> None:
    sequences = kinesis.put(SHARD, *plain(6))
    throttled = "ProvisionedThroughputExceededException"
    kinesis.faults = {2: throttled, 3: throttled, 4: throttled}
    async with reading(kinesis, batch_size=3) as running:
        positions = await running.read(6)
        await running.nothing_more()

    assert positions == [(s, 0) for s in sequences]
    iterators = [iterator for iterator, _ in kinesis.get_records_calls]
    assert iterators[1] == iterators[2] == iterators[3] == iterators[4]
    assert len(kinesis.iterator_requests) == 1


async def test_get_records_is_called_at_most_five_times_a_second(
    kinesis: FakeKinesis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "MIN_CALL_INTERVAL_S", 0.2)
    kinesis.put(SHARD, *plain(3))
    async with reading(kinesis, batch_size=1) as running:
        await running.read(3)
    times = [at for _, at in kinesis.get_records_calls]
    assert len(times) >= 3
    assert all(b - a >= 0.19 for a, b in itertools.pairwise(times))


async def test_an_unexpected_error_ends_the_reader_with_an_error(kinesis: FakeKinesis) -> None:
    kinesis.put(SHARD, *plain(2))
    kinesis.faults = {1: "InvalidArgumentException"}
    running = Reading(kinesis)
    with pytest.raises(Exception, match="InvalidArgumentException"):
        await asyncio.wait_for(running.task, DEADLINE_S)
    assert running.handed.empty()
    assert running.commits == []


# -- KPL ----------------------------------------------------------------------------------------


async def test_a_sub_record_checkpoint_resumes_inside_the_aggregated_record(
    kinesis: FakeKinesis,
) -> None:
    (before,) = kinesis.put(SHARD, b'{"plain": 0}')
    subs = [(f"bus-{i % 2}", f'{{"sub": {i}}}'.encode()) for i in range(5)]
    (aggregated,) = kinesis.put(SHARD, aggregate(subs))
    (after,) = kinesis.put(SHARD, b'{"plain": 1}')

    async with reading(kinesis, checkpoint=aggregated, checkpoint_sub=2, batch_size=10) as running:
        batch = await running.next()
        await batch.checkpoint()

    assert sequences_of(batch) == [(aggregated, 3), (aggregated, 4), (after, 0)]
    assert [r.data for r in batch.records] == [subs[3][1], subs[4][1], b'{"plain": 1}']
    assert [r.partition_key for r in batch.records] == ["bus-1", "bus-0", "bus-1"]
    assert kinesis.iterator_requests[0]["ShardIteratorType"] == "AT_SEQUENCE_NUMBER"
    assert kinesis.iterator_requests[0]["StartingSequenceNumber"] == aggregated
    assert running.commits == [(after, 0)]
    assert before not in {r.sequence_number for r in batch.records}


async def test_sub_records_are_handed_out_with_sub_sequence_numbers(kinesis: FakeKinesis) -> None:
    subs = [("bus-1", f'{{"sub": {i}}}'.encode()) for i in range(3)]
    (aggregated,) = kinesis.put(SHARD, aggregate(subs))
    async with reading(kinesis) as running:
        batch = await running.next()
        await batch.checkpoint()
    assert sequences_of(batch) == [(aggregated, 0), (aggregated, 1), (aggregated, 2)]
    assert running.commits == [(aggregated, 2)]  # a restart resumes after the last sub-record


async def test_an_expired_iterator_inside_an_aggregated_record_repeats_no_sub_record(
    kinesis: FakeKinesis,
) -> None:
    first = kinesis.put(SHARD, aggregate([("bus-1", b"a"), ("bus-1", b"b")]))
    second = kinesis.put(SHARD, aggregate([("bus-1", b"c"), ("bus-1", b"d")]))
    kinesis.faults = {2: "ExpiredIteratorException"}
    async with reading(kinesis, batch_size=1) as running:
        positions = await running.read(4)
        await running.nothing_more()
    assert positions == [(first[0], 0), (first[0], 1), (second[0], 0), (second[0], 1)]


# -- the end of a shard, abandoned batches ------------------------------------------------------


async def test_a_closed_shard_commits_shard_end_after_its_last_batch(kinesis: FakeKinesis) -> None:
    sequences = kinesis.put(SHARD, *plain(4))
    kinesis.close(SHARD)
    running = Reading(kinesis, batch_size=3)
    first = await running.next()
    await first.checkpoint()
    last = await running.next()
    await asyncio.sleep(0.02)
    assert running.commits == [(sequences[2], 0)]  # no SHARD_END while the last is in hand
    assert not running.task.done()

    await last.checkpoint()
    await asyncio.wait_for(running.task, DEADLINE_S)

    assert running.commits == [(sequences[2], 0), (sequences[3], 0), (SHARD_END, 0)]
    assert running.reader.reached_end


async def test_a_closed_shard_that_ends_with_an_empty_response_commits_shard_end(
    kinesis: FakeKinesis,
) -> None:
    sequences = kinesis.put(SHARD, *plain(3))
    async with reading(kinesis, batch_size=3) as running:
        batch = await running.next()
        await batch.checkpoint()
        await running.nothing_more(0.02)  # an open shard: nothing ends
        kinesis.close(SHARD)
        await asyncio.wait_for(asyncio.shield(running.task), DEADLINE_S)
    assert running.commits == [(sequences[2], 0), (SHARD_END, 0)]
    assert running.reader.reached_end


async def test_an_empty_closed_shard_commits_shard_end(kinesis: FakeKinesis) -> None:
    kinesis.close(SHARD)
    running = Reading(kinesis)
    await asyncio.wait_for(running.task, DEADLINE_S)
    assert running.commits == [(SHARD_END, 0)]
    assert running.handed.empty()


async def test_an_abandoned_batch_stops_the_reader(kinesis: FakeKinesis) -> None:
    kinesis.put(SHARD, *plain(6))
    running = Reading(kinesis, batch_size=3)
    batch = await running.next()

    batch.abandon()
    await asyncio.wait_for(running.task, DEADLINE_S)

    assert not batch.checkpointed
    assert running.handed.empty()  # the second batch, fetched already, was never handed out
    assert running.commits == []


async def test_an_abandoned_last_batch_of_a_closed_shard_does_not_commit_shard_end(
    kinesis: FakeKinesis,
) -> None:
    kinesis.put(SHARD, *plain(2))
    kinesis.close(SHARD)
    running = Reading(kinesis, batch_size=3)
    batch = await running.next()

    batch.abandon()
    await asyncio.wait_for(running.task, DEADLINE_S)

    assert running.commits == []
    assert not running.reader.reached_end


async def test_a_failed_commit_stops_the_reader(kinesis: FakeKinesis) -> None:
    kinesis.put(SHARD, *plain(6))

    async def lost(sequence: str, sub: int) -> None:
        raise Error(CONFLICT, "lease taken")

    handed: asyncio.Queue[KinesisBatch] = asyncio.Queue()
    reader = ShardReader(
        kinesis, STREAM, SHARD, TRIM_HORIZON, 0, 3, 0.005, handed.put, lost, Backoff(0.001, 0.01)
    )
    task = asyncio.create_task(reader.run())
    batch = await asyncio.wait_for(handed.get(), DEADLINE_S)

    with pytest.raises(Error) as raised:
        await batch.checkpoint()
    assert raised.value.code is CONFLICT
    await asyncio.wait_for(task, DEADLINE_S)
    assert not batch.checkpointed
    assert handed.empty()
