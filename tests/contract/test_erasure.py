"""Erasure (trackstore.erasure and the port methods under it) over every adapter: memory, dynalite,
moto. What is erased is gone from history, latest and the device; what is not stays; an erasure
stopped half-way finishes when run again; totalUpdates stays."""

from __future__ import annotations

from typing import Any

from tests.contract.conftest import Repos
from tests.helpers import RECENT_MS, SECOND_MS, all_pages, arrived, location, payload, stream_record
from trackstore.clock import FakeClock
from trackstore.domain import HistoryQuery, StreamRecord
from trackstore.erasure import Erasure
from trackstore.service import TrackService

NOW = RECENT_MS + 3600 * SECOND_MS
POINTS = 120


def record(second: int, device_id: str = "bus-1") -> StreamRecord:
    body = payload(deviceId=device_id, timestamp=RECENT_MS + second * SECOND_MS)
    return stream_record(body, arrival_ms=RECENT_MS + second * SECOND_MS + 300)


async def ingest(repos: Repos, device_id: str, seconds: range) -> None:
    service = TrackService(repos.locations, repos.devices, FakeClock(NOW), ttl_days=30)
    result = await service.ingest([record(s, device_id) for s in seconds])
    assert not result.rejections


async def stored(repos: Repos, device_id: str = "bus-1") -> list[int]:
    pages = await all_pages(
        lambda token: repos.locations.history(
            HistoryQuery(device_id=device_id, limit=1000, token=token)
        )
    )
    return [(loc.timestamp - RECENT_MS) // SECOND_MS for page in pages for loc in page]


async def erase(repos: Repos, device_id: str = "bus-1", **options: Any) -> Any:
    erasure = Erasure(repos.locations, repos.devices, device_id, **options)
    async for _ in erasure.run():
        pass
    return await erasure.finish()


def second(n: int) -> int:
    return RECENT_MS + n * SECOND_MS


async def test_counting_and_listing_what_is_stored_before_a_time(repos: Repos) -> None:
    await ingest(repos, "bus-1", range(POINTS))
    await ingest(repos, "bus-2", range(5))

    assert await repos.locations.stored_count("bus-1", None) == POINTS
    assert await repos.locations.stored_count("bus-1", second(50)) == 50
    assert await repos.locations.stored_count("bus-9", None) == 0
    assert await repos.locations.oldest_timestamps("bus-1", second(50), 10) == [
        second(n) for n in range(10)
    ]
    assert await repos.locations.oldest_timestamps("bus-1", second(3), 10) == [
        second(n) for n in range(3)
    ]


async def test_deleting_locations_removes_them_and_only_them(repos: Repos) -> None:
    await ingest(repos, "bus-1", range(60))
    await ingest(repos, "bus-2", range(60))

    await repos.locations.delete("bus-1", [second(n) for n in range(0, 60, 2)])
    await repos.locations.delete("bus-1", [second(0), second(999)])  # gone and never stored

    assert await stored(repos) == list(range(1, 60, 2))
    assert await stored(repos, "bus-2") == list(range(60))
    assert await repos.locations.stored_count("bus-1", None) == 30


async def test_expired_locations_that_linger_are_counted_and_erased(repos: Repos) -> None:
    # 40 days old with a 30-day retention: their expiresAt is past, but DynamoDB's TTL sweeper
    # has not run (nor does the memory fake): reads hide them, erasure does not.
    old = [location("bus-1", second(n) - 40 * 86_400_000) for n in range(3)]
    await repos.locations.put_many(arrived(old))

    assert await repos.locations.stored_count("bus-1", None) == 3
    report = await erase(repos, before=None)
    assert report.locations_erased == 3
    assert await repos.locations.stored_count("bus-1", None) == 0


async def test_erasing_a_device_removes_its_history_latest_and_record(repos: Repos) -> None:
    await ingest(repos, "bus-1", range(POINTS))
    await ingest(repos, "bus-2", range(10))

    report = await erase(repos, before=None, batch=50)

    assert report.locations_erased == POINTS
    assert (report.oldest_erased, report.newest_erased) == (second(0), second(POINTS - 1))
    assert report.last_location_cleared
    assert report.device_deleted
    assert await stored(repos) == []
    assert await repos.locations.latest("bus-1") is None
    assert await repos.devices.get("bus-1") is None
    assert await repos.devices.marks(["bus-1"]) == {}
    assert await stored(repos, "bus-2") == list(range(10))
    assert (await repos.devices.get("bus-2")) is not None


async def test_erasing_before_a_time_keeps_the_rest_and_the_last_location(repos: Repos) -> None:
    await ingest(repos, "bus-1", range(POINTS))
    before = await repos.devices.get("bus-1")
    assert before is not None

    report = await erase(repos, before=second(100), batch=30)

    assert report.locations_erased == 100
    assert not report.last_location_cleared
    assert not report.device_deleted
    assert await stored(repos) == list(range(100, POINTS))
    after = await repos.devices.get("bus-1")
    assert after is not None
    assert after.last_location == before.last_location
    assert after.total_updates == before.total_updates == POINTS


async def test_erasing_past_the_newest_clears_last_location_but_not_the_count(
    repos: Repos,
) -> None:
    await ingest(repos, "bus-1", range(POINTS))
    repos.clock.advance(1000)
    changed_from = repos.clock()

    report = await erase(repos, before=second(POINTS + 10))

    assert report.locations_erased == POINTS
    assert report.last_location_cleared
    device = await repos.devices.get("bus-1")
    assert device is not None
    assert device.last_location is None
    assert device.total_updates == POINTS  # a lifetime count: it does not go down
    assert device.last_seen == second(POINTS - 1)
    # Fleet views hear of it (the snapshot drops the position at its next refresh).
    changed = {d.device_id: d for d in await repos.devices.changed_since(changed_from)}
    assert changed["bus-1"].last_location is None


async def test_a_newer_location_is_not_cleared_by_a_stale_erasure(repos: Repos) -> None:
    await ingest(repos, "bus-1", range(10))

    assert not await repos.devices.forget_location("bus-1", second(3))
    device = await repos.devices.get("bus-1")
    assert device is not None
    assert device.last_location is not None
    assert await repos.devices.forget_location("bus-1", second(9))
    assert not await repos.devices.forget_location("bus-1", second(9))
    assert not await repos.devices.forget_location("bus-404", second(9))


async def test_an_interrupted_erasure_finishes_when_run_again(repos: Repos) -> None:
    await ingest(repos, "bus-1", range(POINTS))
    first = Erasure(repos.locations, repos.devices, "bus-1", None, batch=25)
    erased = 0
    async for count in first.run():
        erased += count
        if erased >= 50:
            break  # stopped half-way, as Ctrl-C stops the command between batches
    assert await repos.locations.stored_count("bus-1", None) == POINTS - 50

    again = Erasure(repos.locations, repos.devices, "bus-1", None, batch=25)
    assert await again.count() == POINTS - 50
    report = await erase(repos, before=None, batch=25)

    assert report.locations_erased == POINTS - 50
    assert await stored(repos) == []
    assert await repos.devices.get("bus-1") is None
    assert (await erase(repos, before=None)).locations_erased == 0  # and once more: nothing


async def test_a_registered_device_without_locations_loses_its_record(repos: Repos) -> None:
    await repos.devices.register("bus-7", "Bus 7", None, NOW)

    report = await erase(repos, "bus-7", before=None)

    assert report.locations_erased == 0
    assert report.device_deleted
    assert not report.last_location_cleared
    assert await repos.devices.get("bus-7") is None
