"""TrackService.ingest over every adapter pair: what a replayed, resent, late or interrupted batch
leaves in the tables. The counts must be exact on DynamoDB as on the fakes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from tests.contract.conftest import Repos
from tests.helpers import RECENT_MS, SECOND_MS, all_pages, payload, resent, stream_record
from trackstore.clock import FakeClock
from trackstore.domain import DeviceActivity, HistoryQuery, StreamRecord
from trackstore.errors import UNAVAILABLE, Error
from trackstore.service import TrackService

NOW = RECENT_MS + 600 * SECOND_MS


def record(second: int, device_id: str = "bus-1", **fields: Any) -> StreamRecord:
    body = payload(deviceId=device_id, timestamp=RECENT_MS + second * SECOND_MS, **fields)
    return stream_record(body, arrival_ms=RECENT_MS + second * SECOND_MS + 300)


class CrashOnce:
    """A DeviceRepository whose next apply_activity fails as a killed process would: after the
    locations were written, before the device update."""

    def __init__(self, devices: Any) -> None:
        self._devices = devices
        self.armed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._devices, name)

    async def apply_activity(self, activities: Sequence[DeviceActivity]) -> None:
        if self.armed:
            self.armed = False
            raise Error(UNAVAILABLE, "crashed")
        await self._devices.apply_activity(activities)


def service(repos: Repos, devices: Any = None) -> TrackService:
    return TrackService(repos.locations, devices or repos.devices, FakeClock(NOW), ttl_days=30)


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
    crashing = CrashOnce(repos.devices)

    with pytest.raises(Error):
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
    crashing = CrashOnce(repos.devices)

    with pytest.raises(Error):
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
