"""TrackService.ingest over every adapter pair: what a replayed, resent, late or interrupted batch
leaves in the tables. The counts must be exact on DynamoDB as on the fakes."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tests.contract.conftest import Repos
from tests.faults import CrashingApply, CrashingPutNew, Outage, RacedApply, SimulatedCrash
from tests.helpers import (
    MINUTE_MS,
    RECENT_MS,
    SECOND_MS,
    all_pages,
    mark,
    new_sequence_number,
    payload,
    position_of,
    resent,
    stream_record,
)
from trackstore.clock import FakeClock
from trackstore.domain import Device, DeviceMark, HistoryQuery, Location, StreamRecord
from trackstore.errors import UNAVAILABLE, Error
from trackstore.service import TrackService

NOW = RECENT_MS + 600 * SECOND_MS


def record(second: int, device_id: str = "bus-1", **fields: Any) -> StreamRecord:
    body = payload(deviceId=device_id, timestamp=RECENT_MS + second * SECOND_MS, **fields)
    return stream_record(body, arrival_ms=RECENT_MS + second * SECOND_MS + 300)


def service(repos: Repos, devices: Any = None, locations: Any = None) -> TrackService:
    """TrackService over the repositories, or over wrappers of them (tests/faults.py)."""
    return TrackService(
        locations or repos.locations, devices or repos.devices, FakeClock(NOW), ttl_days=30
    )


async def state(repos: Repos, device_id: str = "bus-1") -> tuple[Any, list[Any]]:
    device = await repos.devices.get(device_id)
    pages = await all_pages(
        lambda token: repos.locations.history(
            HistoryQuery(device_id=device_id, limit=1000, token=token)
        )
    )
    return device, [loc for page in pages for loc in page]


async def test_a_replayed_batch_changes_nothing(repos: Repos) -> None:
    batch = [record(s) for s in (1, 2, 3)] + [record(2, "bus-2")]
    await service(repos).ingest(batch)
    before = await state(repos), await state(repos, "bus-2")

    await service(repos).ingest(batch)

    assert (await state(repos), await state(repos, "bus-2")) == before
    assert before[0][0].total_updates == 3


async def test_a_producers_resend_in_a_later_batch_is_not_counted_again(repos: Repos) -> None:
    first = [record(s) for s in (1, 2, 3)]
    await service(repos).ingest(first)

    await service(repos).ingest([resent(first[1], arrival_ms=NOW), record(4)])

    device, stored = await state(repos)
    assert device.total_updates == 4
    assert len(stored) == 4
    assert stored[1].received_at == first[1].arrival_ms  # the first delivery stands


async def test_a_late_record_is_stored_and_counted_once_and_never_moves_last_seen(
    repos: Repos,
) -> None:
    await service(repos).ingest([record(10), record(20)])
    late = record(15, speed=12.5)

    await service(repos).ingest([late])
    await service(repos).ingest([late])  # and its replay

    device, stored = await state(repos)
    assert device.total_updates == 3
    assert device.last_seen == RECENT_MS + 20 * SECOND_MS
    assert device.last_location.timestamp == RECENT_MS + 20 * SECOND_MS
    assert [loc.speed for loc in stored] == [None, 12.5, None]


@pytest.mark.parametrize("late_too", [False, True], ids=["in-order", "with-late"])
async def test_a_batch_interrupted_before_the_device_update_completes_exactly_on_replay(
    repos: Repos, late_too: bool
) -> None:
    await service(repos).ingest([record(10)])
    batch = [record(20), record(30)] + ([record(5)] if late_too else [])
    crashing = CrashingApply(repos.devices)

    with pytest.raises(SimulatedCrash):
        await service(repos, crashing).ingest(batch)
    await service(repos, crashing).ingest(batch)

    device, stored = await state(repos)
    assert len(stored) == device.total_updates == (4 if late_too else 3)
    assert device.last_seen == RECENT_MS + 30 * SECOND_MS


async def test_an_old_batch_replayed_after_newer_ones_changes_nothing(repos: Repos) -> None:
    old = [record(1), record(2)]
    await service(repos).ingest(old)
    await service(repos).ingest([record(3), record(4)])
    before = await state(repos)

    await service(repos).ingest(old)  # its records are now older than lastSeen: "late"

    assert await state(repos) == before
    assert before[0].total_updates == 4


async def test_legacy_and_canonical_records_of_one_device_land_in_one_track(repos: Repos) -> None:
    legacy = stream_record(
        {
            "busId": "bus-1",
            "lat": 52.5,
            "lon": 13.4,
            "ts": (RECENT_MS + 1000) / 1000,
            "region": "eu",
        }
    )

    await service(repos).ingest([legacy, record(2)])

    device, stored = await state(repos)
    assert device.total_updates == 2
    assert stored[0].attributes == {"region": "eu"}
    assert (stored[0].latitude, stored[0].longitude) == (52.5, 13.4)


async def test_a_record_behind_the_mark_from_another_shard_is_still_stored(repos: Repos) -> None:
    # A producer that does not use the device id as partition key spreads one device over
    # shards, so a record can arrive after newer positions were applied: never lose it.
    early = record(5)
    await service(repos).ingest([record(10)])
    later = record(20)
    await service(repos).ingest([later])

    await service(repos).ingest([msgspec.structs.replace(early, sequence_number="1")])

    device, stored = await state(repos)
    assert [loc.timestamp for loc in stored] == [RECENT_MS + s * SECOND_MS for s in (5, 10, 20)]
    assert device.last_seen == later_ms(20)


def later_ms(second: int) -> int:
    return RECENT_MS + second * SECOND_MS


# -- a device's records on more than one shard -----------------------------------------------

SHARD_A = "shardId-000000000001"
SHARD_B = "shardId-000000000002"


def on(shard: str, second: int, device_id: str = "bus-1") -> StreamRecord:
    """A record of the device delivered on `shard`, numbered by that shard alone (every shard's
    numbers start at the same value, as they may on Kinesis)."""
    body = payload(deviceId=device_id, timestamp=RECENT_MS + second * SECOND_MS)
    return stream_record(body, arrival_ms=RECENT_MS + second * SECOND_MS + 300, shard_id=shard)


@pytest.mark.parametrize(
    "moves",
    [
        pytest.param([SHARD_A, SHARD_B], id="a-to-b"),
        pytest.param([SHARD_B, SHARD_A], id="b-to-a"),
        pytest.param([SHARD_A, SHARD_B, SHARD_A, SHARD_B], id="back-and-forth"),
    ],
)
async def test_a_device_moving_between_shards_is_counted_exactly(
    repos: Repos, moves: list[str]
) -> None:
    second = 0
    for shard in moves:
        batch = [on(shard, second + s) for s in range(1, 6)]
        second += 5
        result = await service(repos).ingest(batch)
        assert result.stored == 5

        await service(repos).ingest(batch)  # each delivered twice

    device, stored = await state(repos)
    assert len(stored) == 5 * len(moves)
    assert device.total_updates == 5 * len(moves)
    assert device.last_seen == RECENT_MS + second * SECOND_MS
    assert device.last_location.timestamp == RECENT_MS + second * SECOND_MS


async def test_two_shards_interleaving_one_device_count_each_location_once(repos: Repos) -> None:
    a = [on(SHARD_A, s) for s in (1, 3, 5, 7)]
    b = [on(SHARD_B, s) for s in (2, 4, 6, 8)]
    for batch in ([a[0], a[1]], [b[0]], [a[2]], [b[1], b[2]], [a[3]], [b[3]]):
        await service(repos).ingest(batch)
    # A producer's resend of one location on the other shard, then every batch replayed.
    await service(repos).ingest([resent(a[1], arrival_ms=NOW, shard_id=SHARD_B)])
    for batch in (a, b):
        await service(repos).ingest(batch)

    device, stored = await state(repos)
    assert len(stored) == 8
    assert device.total_updates == 8
    assert device.last_seen == RECENT_MS + 8 * SECOND_MS


async def test_a_crash_after_a_move_then_the_replay_counts_once(repos: Repos) -> None:
    await service(repos).ingest([on(SHARD_A, s) for s in (1, 2)])
    moved = [on(SHARD_B, s) for s in (3, 4)]
    crashing = CrashingApply(repos.devices)

    with pytest.raises(SimulatedCrash):
        await service(repos, crashing).ingest(moved)
    await service(repos).ingest(moved)
    await service(repos).ingest(moved)

    device, stored = await state(repos)
    assert (len(stored), device.total_updates) == (4, 4)
    assert device.last_seen == RECENT_MS + 4 * SECOND_MS


async def test_the_stored_count_is_distinct_new_locations_not_deliveries(repos: Repos) -> None:
    batch = [record(s) for s in (1, 2, 3)]

    first = await service(repos).ingest(batch)
    again = await service(repos).ingest(batch)

    assert (first.stored, first.duplicates) == (3, 0)
    assert (again.stored, again.duplicates) == (0, 3)


# -- values at DynamoDB's edges ----------------------------------------------------------------


async def test_numbers_at_dynamodbs_edges_are_stored_and_read_back(repos: Repos) -> None:
    edges = {"altitude": 1e40, "speed": 9.9e125, "accuracy": 1e-130, "heading": 1e-7}
    attributes = {"big": 10**40, "tiny": 1.5e-20, "long": 10**37 + 1, "neg": -2.5e100}
    batch = [record(1, **edges, attributes=attributes)]

    result = await service(repos).ingest(batch)

    assert (result.stored, result.rejections) == (1, [])
    _, stored = await state(repos)
    (location,) = stored
    assert (location.altitude, location.speed, location.accuracy, location.heading) == (
        1e40,
        9.9e125,
        1e-130,
        1e-7,
    )
    back = location.attributes or {}
    assert back["long"] == 10**37 + 1
    # DynamoDB hands a number back without its exponent: the same number, maybe as an integer.
    assert float(back["big"]) == 1e40
    assert back["tiny"] == 1.5e-20
    assert float(back["neg"]) == -2.5e100


# -- crashes and replays (moved from tests/unit/test_service.py, so they run on DynamoDB too) ----
# Times are offsets from NOW, the service's clock, as in the unit tests they came from.


def at(
    offset_ms: int,
    device_id: str = "bus-1",
    *,
    sequence_number: str | None = None,
    sub_sequence_number: int = 0,
    **fields: Any,
) -> StreamRecord:
    """A valid record of `device_id` at NOW + offset_ms, arriving a second later; the next
    sequence number of the stream unless given."""
    timestamp = NOW + offset_ms
    body = payload(deviceId=device_id, timestamp=timestamp, **fields)
    return stream_record(
        body,
        arrival_ms=timestamp + 1000,
        sequence_number=sequence_number,
        sub_sequence_number=sub_sequence_number,
    )


def aggregated(*offsets_ms: int, device_id: str = "bus-1") -> list[StreamRecord]:
    """The records deaggregated from one KPL record: one sequence number, sub-sequence 0, 1, ..."""
    sequence_number = new_sequence_number()
    return [
        at(offset, device_id, sequence_number=sequence_number, sub_sequence_number=sub)
        for sub, offset in enumerate(offsets_ms)
    ]


async def stored(repos: Repos, device_id: str = "bus-1") -> list[Location]:
    """Every location stored for the device, straight from the repository."""
    return (await state(repos, device_id))[1]


async def device(repos: Repos, device_id: str = "bus-1") -> Device:
    found = await repos.devices.get(device_id)
    assert found is not None, f"no device {device_id}"
    return found


async def tables(
    repos: Repos, device_id: str = "bus-1"
) -> tuple[list[Location], Device | None, DeviceMark | None]:
    """What the tables hold for the device: its locations, its item and its mark."""
    marks = await repos.devices.marks([device_id])
    device_item, locations = await state(repos, device_id)
    return locations, device_item, marks.get(device_id)


async def test_replaying_the_exact_same_batch_changes_nothing(repos: Repos) -> None:
    batch = [at(-3 * MINUTE_MS), at(-2 * MINUTE_MS), at(-MINUTE_MS, device_id="bus-2")]
    await service(repos).ingest(batch)
    before = await tables(repos, "bus-1"), await tables(repos, "bus-2")

    await service(repos).ingest(batch)
    await service(repos).ingest(batch)

    assert (await tables(repos, "bus-1"), await tables(repos, "bus-2")) == before
    assert (await device(repos, "bus-1")).total_updates == 2


async def test_a_late_record_replayed_after_it_was_counted_stays_counted_once(
    repos: Repos,
) -> None:
    await service(repos).ingest([at(-MINUTE_MS)])
    late_batch = [at(-10 * MINUTE_MS)]
    await service(repos).ingest(late_batch)
    before = await tables(repos)

    await service(repos).ingest(late_batch)

    assert await tables(repos) == before
    assert (await device(repos)).total_updates == 2


async def test_a_batch_replayed_after_a_crash_between_the_two_writes_counts_exactly(
    repos: Repos,
) -> None:
    crashing = CrashingApply(repos.devices, times=0)
    await service(repos, crashing).ingest([at(-6 * MINUTE_MS)])
    batch = [at(-4 * MINUTE_MS), at(-3 * MINUTE_MS), at(-9 * MINUTE_MS), at(-2 * MINUTE_MS)]
    crashing.crashes_left = 1

    with pytest.raises(SimulatedCrash):
        await service(repos, crashing).ingest(batch)
    await service(repos, crashing).ingest(batch)  # not checkpointed: handed out again

    found = await device(repos)
    assert found.total_updates == 5
    assert found.last_seen == NOW - 2 * MINUTE_MS
    assert len(await stored(repos)) == 5

    await service(repos, crashing).ingest(batch)  # and again, as if the checkpoint was lost
    assert (await device(repos)).total_updates == 5


async def test_a_crash_on_a_devices_first_batch_then_a_replay_counts_exactly(
    repos: Repos,
) -> None:
    crashing = CrashingApply(repos.devices, times=2)
    batch = [at(-3 * MINUTE_MS), at(-2 * MINUTE_MS)]

    for _ in range(2):
        with pytest.raises(SimulatedCrash):
            await service(repos, crashing).ingest(batch)
    await service(repos, crashing).ingest(batch)

    found = await device(repos)
    assert (found.total_updates, found.last_seen) == (2, NOW - 2 * MINUTE_MS)


@pytest.mark.parametrize(
    "split",
    [
        pytest.param(False, id="the-new-holder-reads-it-all-in-one-batch"),
        pytest.param(True, id="the-new-holder-reads-it-in-smaller-batches"),
    ],
)
async def test_a_batch_retried_after_another_writer_moved_last_seen_counts_every_location(
    repos: Repos, split: bool
) -> None:
    # The shard's lease moved while worker A held a batch: worker B resumes from the last
    # checkpoint, so it reads A's records too, then a newer one, and applies them while A is
    # between its location writes and apply_activity. A meets a CONFLICT and retries: each
    # distinct location is still counted exactly once.
    raced = RacedApply(repos.devices)
    worker_a = service(repos, raced)
    await worker_a.ingest([at(-3 * MINUTE_MS)])
    a_batch = [at(-2 * MINUTE_MS), at(-2 * MINUTE_MS, "bus-2")]
    newer = at(-MINUTE_MS)
    worker_b = service(repos)  # another consumer process over the same tables
    b_batches = [a_batch[:1], [*a_batch[1:], newer]] if split else [[*a_batch, newer]]
    raced.other_writer = lambda: worker_b.ingest(b_batches[0])

    await worker_a.ingest(a_batch)
    for b_batch in b_batches[1:]:
        await worker_b.ingest(b_batch)

    assert raced.conflicts == 1
    assert len(await stored(repos)) == 3
    bus_1 = await device(repos)
    assert bus_1.last_seen == NOW - MINUTE_MS
    assert bus_1.total_updates == 3
    bus_2 = await device(repos, "bus-2")
    assert (bus_2.last_seen, bus_2.total_updates) == (NOW - 2 * MINUTE_MS, 1)
    marks = await repos.devices.marks(["bus-1", "bus-2"])
    assert marks == {
        "bus-1": mark(NOW - MINUTE_MS, position_of(newer)),
        "bus-2": mark(NOW - 2 * MINUTE_MS, position_of(a_batch[1])),
    }


async def test_a_crash_after_put_new_then_a_replay_counts_the_late_location_once(
    repos: Repos,
) -> None:
    crashing = CrashingPutNew(repos.locations, times=0)
    await service(repos, locations=crashing).ingest([at(-MINUTE_MS)])
    batch = [at(-10 * MINUTE_MS, speed=7.0), at(-30 * SECOND_MS)]
    crashing.crashes_left = 1

    with pytest.raises(SimulatedCrash):
        await service(repos, locations=crashing).ingest(batch)

    # put_new stored the late location; nothing was counted yet (the first batch went through
    # put_new too: the device's mark had never seen the shard)
    assert [[a.location.timestamp for a in call] for call in crashing.calls] == [
        [NOW - MINUTE_MS],
        [NOW - 10 * MINUTE_MS],
    ]
    locations, found, _ = await tables(repos)
    assert [loc.timestamp for loc in locations] == [
        NOW - 10 * MINUTE_MS,
        NOW - MINUTE_MS,
        NOW - 30 * SECOND_MS,
    ]
    assert found is not None
    assert (found.total_updates, found.last_seen) == (1, NOW - MINUTE_MS)

    await service(repos, locations=crashing).ingest(batch)  # not checkpointed: handed out again

    found = await device(repos)
    assert found.total_updates == 3
    assert found.last_seen == NOW - 30 * SECOND_MS
    assert [loc.speed for loc in await stored(repos)] == [7.0, None, None]
    assert (await repos.devices.marks(["bus-1"]))["bus-1"] == mark(
        NOW - 30 * SECOND_MS, position_of(batch[-1])
    )
    after = await tables(repos)

    await service(repos, locations=crashing).ingest(batch)  # and again: the checkpoint was lost

    assert await tables(repos) == after


async def test_a_replay_after_newer_batches_changes_nothing_though_its_records_are_late(
    repos: Repos,
) -> None:
    await service(repos).ingest([at(-MINUTE_MS)])
    # two late locations (stored by put_new from this batch's positions) and a fresh one
    old_batch = [at(-5 * MINUTE_MS), at(-4 * MINUTE_MS), at(-30 * SECOND_MS)]
    await service(repos).ingest(old_batch)
    await service(repos).ingest([at(-10 * SECOND_MS), at(-20 * MINUTE_MS)])
    before = await tables(repos)
    assert before[1] is not None
    assert before[1].total_updates == 6

    await service(repos).ingest(old_batch)  # its checkpoint was lost; every record is now late

    assert await tables(repos) == before


async def test_kpl_records_sharing_a_sequence_number_are_each_applied_and_replays_skipped(
    repos: Repos,
) -> None:
    await service(repos).ingest([at(0)])
    # sub-sequence 0..10 carry late locations, 11 a fresh one: "…/10" sorts after "…/9"
    kpl = aggregated(*(-m * MINUTE_MS for m in range(11, 0, -1)), 30 * SECOND_MS)
    assert [r.sequence_number for r in kpl] == [kpl[0].sequence_number] * 12

    result = await service(repos).ingest(kpl)

    assert (result.stored, result.duplicates) == (12, 0)
    found = await device(repos)
    assert (found.total_updates, found.last_seen) == (13, NOW + 30 * SECOND_MS)
    assert len(await stored(repos)) == 13
    assert (await repos.devices.marks(["bus-1"]))["bus-1"] == mark(
        NOW + 30 * SECOND_MS, position_of(kpl[11])
    )
    after = await tables(repos)

    await service(repos).ingest(kpl)  # the whole aggregate again
    await service(repos).ingest(kpl[9:])  # its tail

    assert await tables(repos) == after
    await service(repos).ingest(aggregated(-30 * MINUTE_MS, MINUTE_MS))  # the next aggregate
    found = await device(repos)
    assert (found.total_updates, found.last_seen) == (15, NOW + MINUTE_MS)


async def test_kpl_records_of_one_aggregate_split_between_fresh_and_late_count_once_each(
    repos: Repos,
) -> None:
    await service(repos).ingest([at(-5 * MINUTE_MS)])
    kpl = aggregated(-MINUTE_MS, -6 * MINUTE_MS, -5 * MINUTE_MS, -2 * MINUTE_MS)

    await service(repos).ingest(kpl)
    await service(repos).ingest(kpl)

    found = await device(repos)
    # -5 min was stored already (the same location, another record): not counted again
    assert (found.total_updates, found.last_seen) == (4, NOW - MINUTE_MS)
    assert len(await stored(repos)) == 4


@pytest.mark.parametrize("how", ["crash", "lease-moved"])
async def test_a_fresh_location_stored_by_an_unfinished_attempt_counts_when_found_late(
    repos: Repos, how: str
) -> None:
    # Once a bug, fixed since: an attempt stores the locations newer than lastSeen with
    # put_many, which remembers no position. When it did not finish (a crash, or a CONFLICT)
    # and the batch's records were then applied in smaller batches (GetRecords may return fewer
    # records; a new lease holder may use another batch size), a location with an older
    # timestamp behind a newer one was found late on the replay; put_new then saw its key
    # stored earlier, not from its position, and it was never counted.
    if how == "crash":
        crashing = CrashingApply(repos.devices, times=0)
        await service(repos, crashing).ingest([at(-3 * MINUTE_MS)])
        newer, older = at(-30 * SECOND_MS), at(-2 * MINUTE_MS)  # older arrives after newer
        crashing.crashes_left = 1
        with pytest.raises(SimulatedCrash):
            await service(repos, crashing).ingest([newer, older])
        await service(repos, crashing).ingest([newer])  # the replay, in smaller batches
        await service(repos, crashing).ingest([older])
    else:
        raced = RacedApply(repos.devices)
        worker_a, worker_b = service(repos, raced), service(repos)
        await worker_a.ingest([at(-3 * MINUTE_MS)])
        newer, older = at(-30 * SECOND_MS), at(-2 * MINUTE_MS)
        raced.other_writer = lambda: worker_b.ingest([newer])  # B resumes from the checkpoint
        await worker_a.ingest([newer, older])  # A meets a CONFLICT and retries
        await worker_b.ingest([older])

    assert len(await stored(repos)) == 3
    found = await device(repos)
    assert found.last_seen == NOW - 30 * SECOND_MS
    assert found.total_updates == 3


async def test_ingest_while_the_store_is_down_raises_unavailable_and_a_replay_completes(
    repos: Repos,
) -> None:
    locations, devices = Outage(repos.locations), Outage(repos.devices)
    worker = service(repos, devices, locations)
    await worker.ingest([at(-5 * MINUTE_MS)])
    batch = [at(-4 * MINUTE_MS), at(-6 * MINUTE_MS), at(-MINUTE_MS, device_id="bus-2")]
    locations.down = devices.down = True

    with pytest.raises(Error) as raised:
        await worker.ingest(batch)

    assert raised.value.code is UNAVAILABLE
    locations.down = devices.down = False
    await worker.ingest(batch)
    await worker.ingest(batch)
    bus_1, bus_2 = await device(repos, "bus-1"), await device(repos, "bus-2")
    assert (bus_1.total_updates, bus_1.last_seen) == (3, NOW - 4 * MINUTE_MS)
    assert (bus_2.total_updates, bus_2.last_seen) == (1, NOW - MINUTE_MS)
