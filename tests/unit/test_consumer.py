"""Consumer over MemoryStream / MemoryStreamSource and TrackService on the memory repositories:
nothing lost, nothing counted twice, checkpoints only after a batch is stored, order per shard."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import pytest

from tests.helpers import NOW_MS, SECOND_MS, TTL_DAYS, payload
from trackstore.backoff import Backoff
from trackstore.clock import FakeClock
from trackstore.consumer import Consumer
from trackstore.domain import StreamRecord
from trackstore.errors import UNAVAILABLE, Error
from trackstore.memory import (
    MemoryDeviceRepository,
    MemoryLocationRepository,
    MemoryStore,
    MemoryStream,
    MemoryStreamSource,
)
from trackstore.metrics import Metrics
from trackstore.records import Reason, Rejection
from trackstore.service import IngestResult, TrackService

SHARDS = 4
IDLE_S = 0.01
DEADLINE_S = 5.0


def tiny_backoff() -> Backoff:
    return Backoff(base=0.001, cap=0.01, rng=random.Random(7))


class World:
    """A stream, the memory tables, and what was produced into the stream."""

    def __init__(self, shards: int = SHARDS) -> None:
        self.clock = FakeClock(NOW_MS)
        self.stream = MemoryStream(shards, self.clock)
        self.store = MemoryStore()
        # device -> timestamp -> (latitude, longitude) of the first record sent for it
        self.sent: dict[str, dict[int, tuple[float, float]]] = {}

    def service(self) -> TrackService:
        return TrackService(
            locations=MemoryLocationRepository(self.store),
            devices=MemoryDeviceRepository(self.store),
            clock=self.clock,
            ttl_days=TTL_DAYS,
        )

    def send(self, device_id: str, offset_s: int, *, resend: bool = False) -> StreamRecord:
        """A valid record of the device at NOW - 1 h + offset_s; `resend` repeats the first
        record sent for that time (a producer's retry: a new sequence number, the same data)."""
        timestamp = NOW_MS - 3600 * SECOND_MS + offset_s * SECOND_MS
        known = self.sent.setdefault(device_id, {})
        if resend:
            latitude, longitude = known[timestamp]
        else:
            assert timestamp not in known
            latitude, longitude = 40 + offset_s / 1000, 10 + len(device_id) / 100
            known[timestamp] = (latitude, longitude)
        body = payload(
            deviceId=device_id, timestamp=timestamp, latitude=latitude, longitude=longitude
        )
        return self.send_raw(device_id, msgspec.json.encode(body))

    def send_raw(self, partition_key: str, data: bytes) -> StreamRecord:
        (record,) = self.stream.put_records([(partition_key, data)])
        return record

    def all_checkpointed(self) -> bool:
        return all(
            self.stream.checkpoints.get(shard, 0) == self.stream.end(shard)
            for shard in self.stream.shard_ids
        )

    def assert_exact(self) -> None:
        """Every location sent is stored once, and each device's item counts exactly the
        distinct ones, with the newest as lastSeen / lastLocation."""
        assert set(self.store.tracks) == set(self.sent)
        for device_id, sent in self.sent.items():
            track = self.store.tracks[device_id]
            assert track.times == sorted(sent), device_id
            for timestamp, (latitude, longitude) in sent.items():
                stored = track.by_time[timestamp]
                assert (stored.latitude, stored.longitude) == (latitude, longitude)
            device = self.store.devices[device_id]
            newest = max(sent)
            assert device.total_updates == len(sent), device_id
            assert device.last_seen == newest, device_id
            assert device.last_location is not None
            assert device.last_location.timestamp == newest
            assert (device.last_location.latitude, device.last_location.longitude) == sent[newest]


class Running:
    """A Consumer running in a task."""

    def __init__(self, world: World, service: Any, batch_size: int = 5, **options: Any) -> None:
        self.source = MemoryStreamSource(world.stream, batch_size, idle_seconds=IDLE_S)
        self.metrics = Metrics()
        self.consumer = Consumer(
            self.source, service, self.metrics, backoff=tiny_backoff(), **options
        )
        self.task = asyncio.create_task(self.consumer.run())

    async def stop(self) -> float:
        """Stops the consumer; returns how long run() took to return."""
        started = time.perf_counter()
        await self.consumer.stop()
        await asyncio.wait_for(self.task, DEADLINE_S)
        return time.perf_counter() - started


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def eventually(condition: Callable[[], bool], what: str, within: float = DEADLINE_S) -> None:
    deadline = time.perf_counter() + within
    while not condition():
        assert time.perf_counter() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.002)


class IngestCall(msgspec.Struct):
    shard_id: str
    first: int  # position of the batch's first record in its shard
    last: int
    checkpoint: int  # the shard's checkpoint when ingest was called


class Flaky:
    """A TrackService whose ingest fails `failures(batch)` times per batch before it succeeds.
    Odd attempts fail before writing anything, even ones after storing the whole batch (as if
    the answer was lost), so a retry must neither lose records nor count them twice."""

    def __init__(
        self,
        inner: TrackService,
        stream: MemoryStream,
        failures: Callable[[Sequence[StreamRecord]], int],
    ) -> None:
        self._inner = inner
        self._stream = stream
        self._failures = failures
        self.attempts: dict[tuple[str, int], int] = {}
        self.calls: list[IngestCall] = []
        self.succeeded: list[IngestCall] = []

    async def ingest(self, records: Sequence[StreamRecord]) -> IngestResult:
        shard_id = records[0].shard_id
        call = IngestCall(
            shard_id=shard_id,
            first=int(records[0].sequence_number),
            last=int(records[-1].sequence_number),
            checkpoint=self._stream.checkpoints.get(shard_id, 0),
        )
        self.calls.append(call)
        key = (shard_id, call.first)
        attempt = self.attempts[key] = self.attempts.get(key, 0) + 1
        if attempt <= self._failures(records):
            if attempt % 2 == 0:
                await self._inner.ingest(records)
            await asyncio.sleep(0)
            raise Error(UNAVAILABLE, f"attempt {attempt} failed", retry_after=1)
        result = await self._inner.ingest(records)
        self.succeeded.append(call)
        return result


def traffic(world: World, devices: int, per_device: int, resend_every: int = 0) -> None:
    """Interleaved in-order traffic of several devices, some records sent twice."""
    for offset in range(per_device):
        for d in range(devices):
            world.send(f"bus-{d}", offset)
            if resend_every and (offset + d) % resend_every == 0:
                world.send(f"bus-{d}", offset, resend=True)


def assert_checkpoints_follow_ingest(flaky: Flaky, world: World) -> None:
    """Each shard's batches were stored in stream order, back to back, and every ingest call
    (retries included) saw the checkpoint exactly at its batch's start: nothing was checkpointed
    before it was stored, and the previous batch was checkpointed before the next was handed."""
    assert flaky.calls
    for call in flaky.calls:
        assert call.checkpoint == call.first, call
    for shard_id in world.stream.shard_ids:
        batches = [call for call in flaky.succeeded if call.shard_id == shard_id]
        expected_first = 0
        for call in batches:
            assert call.first == expected_first, (shard_id, call)
            expected_first = call.last + 1
        assert expected_first == world.stream.end(shard_id)


# -- delivery -----------------------------------------------------------------------------------


async def test_every_record_produced_is_stored_and_devices_are_exact() -> None:
    world = World()
    traffic(world, devices=12, per_device=15, resend_every=4)
    running = Running(world, world.service(), batch_size=7)

    await eventually(world.all_checkpointed, "every shard checkpointed to its end")
    # Records produced while it runs are consumed too.
    for d in range(12):
        world.send(f"bus-{d}", 100 + d)
    world.send("late-1", 0)
    await eventually(world.all_checkpointed, "the later records checkpointed")
    await running.stop()

    world.assert_exact()
    received = sample(running.metrics, "trackstore_records_received_total")
    assert received == sum(world.stream.end(s) for s in world.stream.shard_ids)
    assert sample(running.metrics, "trackstore_batch_failures_total") == 0


async def test_a_failing_ingest_is_retried_without_checkpoint_until_it_succeeds() -> None:
    world = World()
    traffic(world, devices=8, per_device=10, resend_every=3)
    flaky = Flaky(world.service(), world.stream, failures=lambda records: 4)
    running = Running(world, flaky, batch_size=6)

    await eventually(world.all_checkpointed, "every shard checkpointed to its end")
    await running.stop()

    world.assert_exact()
    assert_checkpoints_follow_ingest(flaky, world)
    assert all(attempts == 5 for attempts in flaky.attempts.values())
    assert sample(running.metrics, "trackstore_batch_failures_total") == 4 * len(flaky.attempts)
    assert sample(running.metrics, "trackstore_batches_total") == len(flaky.attempts)


async def test_checkpoints_advance_only_after_a_successful_ingest() -> None:
    world = World(shards=1)
    records = [world.send("bus-1", offset) for offset in range(9)]
    gate = asyncio.Event()
    seen: list[int] = []

    class Gated:
        def __init__(self, inner: TrackService) -> None:
            self._inner = inner

        async def ingest(self, batch: Sequence[StreamRecord]) -> IngestResult:
            seen.append(world.stream.checkpoints.get(batch[0].shard_id, 0))
            await gate.wait()
            return await self._inner.ingest(batch)

    running = Running(world, Gated(world.service()), batch_size=4)
    shard = records[0].shard_id
    await eventually(lambda: len(seen) == 1, "the first batch handed out")
    await asyncio.sleep(0.05)
    assert shard not in world.stream.checkpoints  # stored nothing yet, checkpointed nothing
    assert len(seen) == 1  # and the next batch of the shard waits for this one

    gate.set()
    await eventually(world.all_checkpointed, "the shard checkpointed")
    await running.stop()
    assert seen == [0, 4, 8]
    assert world.stream.checkpoints[shard] == 9
    world.assert_exact()


async def test_stop_while_a_batch_keeps_failing_leaves_it_for_a_replay() -> None:
    world = World()
    traffic(world, devices=10, per_device=8, resend_every=5)
    doomed = max(world.stream.shard_ids, key=world.stream.end)
    assert world.stream.end(doomed) > 4  # more than one batch: the later ones must wait too
    flaky = Flaky(
        world.service(),
        world.stream,
        failures=lambda records: 10**9 if records[0].shard_id == doomed else 0,
    )
    running = Running(world, flaky, batch_size=4)

    def others_done() -> bool:
        return all(
            world.stream.checkpoints.get(s, 0) == world.stream.end(s)
            for s in world.stream.shard_ids
            if s != doomed
        )

    await eventually(others_done, "the healthy shards checkpointed")
    await eventually(lambda: flaky.attempts.get((doomed, 0), 0) >= 5, "retries of the batch")

    assert await running.stop() < 1.0
    assert doomed not in world.stream.checkpoints
    assert {call.first for call in flaky.calls if call.shard_id == doomed} == {0}

    # Another process over the same stream and tables replays the batch, and all is exact.
    replay = Running(world, world.service(), batch_size=4)
    await eventually(world.all_checkpointed, "the replay checkpointed everything")
    await replay.stop()
    world.assert_exact()


# -- rejections ---------------------------------------------------------------------------------


async def test_rejected_records_go_to_dead_letters_and_do_not_block_later_ones() -> None:
    world = World(shards=1)
    dead: list[Rejection] = []

    async def dead_letters(rejections: Sequence[Rejection]) -> None:
        dead.extend(rejections)

    bad = [
        (Reason.NOT_JSON, b"{not json"),
        (Reason.INVALID_LATITUDE, msgspec.json.encode(payload(deviceId="bus-1", latitude=91))),
        (Reason.MISSING_FIELD, msgspec.json.encode(payload(deviceId="bus-1", timestamp=None))),
    ]
    expected: list[tuple[Reason, str]] = []
    world.send("bus-1", 0)
    for offset, (reason, data) in enumerate(bad, start=1):
        record = world.send_raw("bus-1", data)
        expected.append((reason, record.sequence_number))
        world.send("bus-1", offset)
    running = Running(world, world.service(), batch_size=3, dead_letters=dead_letters)

    await eventually(world.all_checkpointed, "the shard checkpointed to its end")
    await running.stop()

    assert [(r.reason, r.record.sequence_number) for r in dead] == expected
    assert [r.record.data for r in dead] == [data for _, data in bad]
    assert all(r.detail for r in dead)
    world.assert_exact()
    for reason in ("not_json", "invalid_latitude", "missing_field"):
        assert sample(running.metrics, "trackstore_records_rejected_total", reason=reason) == 1


async def test_dead_letters_that_cannot_be_sent_are_counted_and_never_hold_up_the_shard(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World(shards=1)
    world.send("bus-1", 0)
    bad = world.send_raw("bus-1", b"\xff\xfe not utf-8")
    world.send("bus-1", 1)
    world.send("bus-1", 2)  # the next batch
    calls: list[list[str]] = []

    async def dead_letters(rejections: Sequence[Rejection]) -> None:
        calls.append([r.record.sequence_number for r in rejections])
        raise Error(UNAVAILABLE, "records to dlq still refused at the deadline")

    running = Running(world, world.service(), batch_size=3, dead_letters=dead_letters)
    await eventually(world.all_checkpointed, "the shard checkpointed to its end")
    await running.stop()

    assert calls == [[bad.sequence_number]]  # tried once (the producer retries inside)
    assert world.stream.checkpoints[bad.shard_id] == 4
    assert sample(running.metrics, "trackstore_dead_letters_failed_total") == 1
    assert sample(running.metrics, "trackstore_batch_failures_total") == 0
    assert any(r.message == "dead letters not sent" for r in caplog.records)
    world.assert_exact()


# -- order --------------------------------------------------------------------------------------


async def test_each_shard_stays_in_order_while_shards_run_concurrently() -> None:
    world = World()
    traffic(world, devices=16, per_device=20)
    in_flight: dict[str, int] = {}
    most_per_shard = 0
    most_overall = 0
    rng = random.Random(3)

    class Jittery:
        def __init__(self, inner: TrackService) -> None:
            self._inner = inner
            self.batches: list[tuple[str, int]] = []

        async def ingest(self, records: Sequence[StreamRecord]) -> IngestResult:
            nonlocal most_per_shard, most_overall
            shard_id = records[0].shard_id
            in_flight[shard_id] = in_flight.get(shard_id, 0) + 1
            most_per_shard = max(most_per_shard, in_flight[shard_id])
            most_overall = max(most_overall, sum(in_flight.values()))
            try:
                await asyncio.sleep(rng.uniform(0, 0.003))
                result = await self._inner.ingest(records)
                self.batches.append((shard_id, int(records[0].sequence_number)))
                return result
            finally:
                in_flight[shard_id] -= 1

    jittery = Jittery(world.service())
    running = Running(world, jittery, batch_size=5)
    await eventually(world.all_checkpointed, "every shard checkpointed to its end")
    await running.stop()

    assert most_per_shard == 1
    assert most_overall > 1  # shards really were stored concurrently
    for shard_id in world.stream.shard_ids:
        firsts = [first for shard, first in jittery.batches if shard == shard_id]
        assert firsts == list(range(0, world.stream.end(shard_id), 5))
    world.assert_exact()


# -- checkpoint failures ------------------------------------------------------------------------


class FlakyCheckpointSource:
    """A MemoryStreamSource whose batches' first checkpoint raises Error(UNAVAILABLE), as a lease
    table write does when DynamoDB throttles: the ports allow it on every method."""

    def __init__(self, inner: MemoryStreamSource, failures: int) -> None:
        self._inner = inner
        self.failures_left = failures

    async def batches(self) -> Any:
        async for batch in self._inner.batches():
            yield _FlakyCheckpoint(batch, self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _FlakyCheckpoint:
    def __init__(self, inner: Any, source: FlakyCheckpointSource) -> None:
        self._inner = inner
        self._source = source
        self.shard_id = inner.shard_id
        self.records = inner.records
        self.millis_behind_latest = inner.millis_behind_latest

    async def checkpoint(self) -> None:
        if self._source.failures_left:
            self._source.failures_left -= 1
            raise Error(UNAVAILABLE, "lease table is throttling", retry_after=1)
        await self._inner.checkpoint()


async def test_a_checkpoint_failing_once_with_unavailable_does_not_stall_the_shard() -> None:
    world = World(shards=1)
    for offset in range(6):
        world.send("bus-1", offset)
    source = FlakyCheckpointSource(
        MemoryStreamSource(world.stream, 3, idle_seconds=IDLE_S), failures=1
    )
    consumer = Consumer(source, world.service(), Metrics(), backoff=tiny_backoff())
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(world.all_checkpointed, "the shard checkpointed past the failure", 1.0)
    finally:
        await consumer.stop()
        await asyncio.wait_for(task, DEADLINE_S)
    world.assert_exact()


# -- what the logs say ------------------------------------------------------------------------


async def test_a_person_can_follow_the_work_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trackstore.consumer")
    world = World(shards=1)
    for offset in range(6):
        world.send("bus-1", offset)
    # One failure per batch, before anything is written.
    flaky = Flaky(world.service(), world.stream, failures=lambda records: 1)
    running = Running(world, flaky, batch_size=3, progress_s=0.05)

    await eventually(world.all_checkpointed, "the shard checkpointed to its end")
    await eventually(
        lambda: any(
            r.message == "progress" and r.__dict__["received"] == 6 for r in caplog.records
        ),
        "a progress line with every record",
    )
    await running.stop()

    recovered = [r for r in caplog.records if r.message == "shard recovered"]
    assert len(recovered) == 2  # one per batch that failed, once it went through
    assert recovered[0].__dict__["failedAttempts"] == 1
    progress = [r for r in caplog.records if r.message == "progress"][-1].__dict__
    assert progress["stored"] == 6
    assert progress["rejected"] == 0
    stopped = next(r for r in caplog.records if r.message == "consumer stopped").__dict__
    assert (stopped["received"], stopped["stored"]) == (6, 6)


async def test_records_whose_partition_key_is_not_their_device_are_counted() -> None:
    world = World(shards=2)
    world.send("bus-1", 0)
    world.send_raw("some-other-key", msgspec.json.encode(payload(deviceId="bus-2")))
    running = Running(world, world.service())

    await eventually(world.all_checkpointed, "every shard checkpointed")
    await running.stop()

    assert sample(running.metrics, "trackstore_records_partition_key_mismatch_total") == 1
    assert sample(running.metrics, "trackstore_records_stored_total") == 2
