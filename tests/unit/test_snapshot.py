"""The fleet snapshot on the memory device repository: what it reads at each refresh, what it
reports as changed, and the pages of its area queries."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.helpers import MINUTE_MS, NOW_MS, SECOND_MS, activity, location
from trackstore.clock import FakeClock
from trackstore.domain import ACTIVE_WINDOW_MS, Device, DeviceStatus
from trackstore.errors import INVALID, UNAVAILABLE, Error
from trackstore.geo import parse_bbox, parse_near
from trackstore.geo_areas import parse_area
from trackstore.memory import MemoryDeviceRepository, MemoryStore
from trackstore.snapshot import RECENT_REFRESHES, FleetFilter, FleetSnapshot


class CountingDevices(MemoryDeviceRepository):
    """The memory repository, noting what each changed_since call asked and returned; devices
    in `hidden` are left out of its answers, as a change index that lags behind would."""

    def __init__(self, store: MemoryStore, clock: FakeClock) -> None:
        super().__init__(store, clock)
        self.reads: list[tuple[int | None, int]] = []
        self.hidden: set[str] = set()

    async def changed_since(self, since_ms: int | None) -> list[Device]:
        found = [d for d in await super().changed_since(since_ms) if d.device_id not in self.hidden]
        self.reads.append((since_ms, len(found)))
        return found


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW_MS)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def devices(store: MemoryStore, clock: FakeClock) -> CountingDevices:
    return CountingDevices(store, clock)


@pytest.fixture
def fleet(devices: CountingDevices, clock: FakeClock) -> FleetSnapshot:
    return FleetSnapshot(devices, clock, refresh_s=5)


async def move(
    devices: MemoryDeviceRepository, device_id: str, lat: float, lon: float, at_ms: int
) -> None:
    marks = await devices.marks([device_id])
    newest = location(device_id, at_ms, latitude=lat, longitude=lon)
    await devices.apply_activity([activity(device_id, marks.get(device_id), newest=newest)])


def ids(found: Any) -> list[str]:
    return [placed.device.device_id for placed in found.items]


async def test_reads_the_fleet_once_then_only_what_changed(
    fleet: FleetSnapshot, devices: CountingDevices, clock: FakeClock
) -> None:
    for i in range(20):
        await move(devices, f"bus-{i:02d}", 52.0, 4.0 + i / 100, clock())
    clock.advance(10 * SECOND_MS)
    first = await fleet.refresh()
    assert devices.reads == [(None, 20)]
    assert len(first.changed) == 20
    assert len(fleet) == 20

    clock.advance(10 * SECOND_MS)
    await move(devices, "bus-03", 52.1, 4.0, clock())
    second = await fleet.refresh()
    since, read = devices.reads[-1]
    assert since is not None
    assert read == 1, "a refresh reads what changed, not the fleet"
    assert [d.device_id for d in second.changed] == ["bus-03"]
    assert fleet.devices["bus-03"].last_location.latitude == 52.1  # type: ignore[union-attr]

    clock.advance(2 * SECOND_MS)
    again = await fleet.refresh()  # the overlap reads bus-03 again: no news
    assert again.changed == ()
    assert again.version == second.version + 1


async def test_a_change_stamped_just_before_the_last_refresh_is_not_missed(
    fleet: FleetSnapshot, devices: CountingDevices, store: MemoryStore, clock: FakeClock
) -> None:
    """The change index is eventually consistent: a write stamped before a refresh may be
    readable only after it. The next window starts before the last one ended."""
    await move(devices, "bus-1", 52.0, 4.0, clock())
    await fleet.refresh()
    clock.advance(10 * SECOND_MS)
    await move(devices, "bus-1", 52.5, 4.5, clock() - 2 * SECOND_MS)
    store.changed_at["bus-1"] = clock() - 2 * SECOND_MS  # stamped 2 s before this refresh...
    devices.hidden.add("bus-1")  # ...but not readable at it
    await fleet.refresh()
    assert fleet.devices["bus-1"].last_location.latitude == 52.0  # type: ignore[union-attr]
    devices.hidden.clear()
    clock.advance(5 * SECOND_MS)
    refresh = await fleet.refresh()
    assert [d.device_id for d in refresh.changed] == ["bus-1"]
    assert fleet.devices["bus-1"].last_location.latitude == 52.5  # type: ignore[union-attr]


async def test_an_older_read_never_replaces_a_newer_position(
    fleet: FleetSnapshot, devices: CountingDevices, clock: FakeClock
) -> None:
    await move(devices, "bus-1", 52.0, 4.0, clock())
    await fleet.refresh()
    stale = fleet.devices["bus-1"]
    clock.advance(SECOND_MS)
    await move(devices, "bus-1", 53.0, 4.0, clock())
    await fleet.refresh()
    fleet._merge([stale], clock())  # an overlapping read that lags behind
    assert fleet.devices["bus-1"].last_location.latitude == 53.0  # type: ignore[union-attr]


async def test_registrations_and_names_are_changes_too(
    fleet: FleetSnapshot, devices: CountingDevices, clock: FakeClock
) -> None:
    await fleet.refresh()
    clock.advance(SECOND_MS)
    await devices.register("bus-9", "Line 9", None, clock())
    refresh = await fleet.refresh()
    assert [(d.device_id, d.name) for d in refresh.changed] == [("bus-9", "Line 9")]


async def test_a_device_going_quiet_is_reported_when_it_turns_inactive(
    fleet: FleetSnapshot, devices: CountingDevices, clock: FakeClock
) -> None:
    await move(devices, "quiet", 52.0, 4.0, clock())
    await move(devices, "busy", 52.0, 4.0, clock())
    await fleet.refresh()
    for _ in range(ACTIVE_WINDOW_MS // (30 * SECOND_MS) + 1):
        clock.advance(30 * SECOND_MS)
        await move(devices, "busy", 52.0, 4.0, clock())
        refresh = await fleet.refresh()
        if any(d.device_id == "quiet" for d in refresh.changed):
            break
    else:
        pytest.fail("the quiet device's turn to inactive was never reported")
    assert fleet.devices["quiet"].status(refresh.taken_at) is DeviceStatus.INACTIVE


async def test_changes_wait_for_the_next_refresh_and_cover_missed_ones(
    fleet: FleetSnapshot, devices: CountingDevices, clock: FakeClock
) -> None:
    await fleet.refresh()
    start = fleet.version
    waiting = asyncio.create_task(fleet.changes(start))
    await asyncio.sleep(0)
    assert not waiting.done()
    await move(devices, "bus-1", 52.0, 4.0, clock())
    clock.advance(SECOND_MS)
    await fleet.refresh()
    first = await waiting
    assert first is not None
    assert [d.device_id for d in first.changed] == ["bus-1"]
    await move(devices, "bus-2", 52.0, 4.0, clock())
    clock.advance(SECOND_MS)
    await fleet.refresh()
    both = await fleet.changes(start)  # a subscriber that missed two refreshes gets both
    assert both is not None
    assert sorted(d.device_id for d in both.changed) == ["bus-1", "bus-2"]
    assert both.version == fleet.version


async def test_a_subscriber_too_far_behind_is_told_to_start_again(fleet: FleetSnapshot) -> None:
    await fleet.refresh()
    start = fleet.version
    for _ in range(RECENT_REFRESHES + 1):
        await fleet.refresh()
    assert await fleet.changes(start) is None


async def test_close_ends_every_wait(fleet: FleetSnapshot) -> None:
    await fleet.refresh()
    waiting = asyncio.create_task(fleet.changes(fleet.version))
    await asyncio.sleep(0)
    fleet.close()
    assert await asyncio.wait_for(waiting, 1) is None


async def test_queries_answer_503_until_the_first_read(
    fleet: FleetSnapshot, store: MemoryStore
) -> None:
    with pytest.raises(Error) as raised:
        fleet.select(FleetFilter(), 10, None, "")
    assert raised.value.code == UNAVAILABLE
    store.available = False
    with pytest.raises(Error):
        await fleet.refresh()
    store.available = True
    await fleet.refresh()
    assert fleet.select(FleetFilter(), 10, None, "").items == []


async def test_a_failed_refresh_keeps_the_snapshot_and_is_retried(
    devices: CountingDevices, store: MemoryStore, clock: FakeClock
) -> None:
    fleet = FleetSnapshot(devices, clock, refresh_s=0.01)
    await move(devices, "bus-1", 52.0, 4.0, clock())
    async with fleet.running():
        assert len(fleet) == 1
        store.available = False
        version = fleet.version
        await asyncio.sleep(0.05)
        assert fleet.version == version
        assert len(fleet) == 1
        store.available = True
        await move(devices, "bus-2", 52.0, 4.0, clock())
        for _ in range(100):
            if len(fleet) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(fleet) == 2


# -- area queries --------------------------------------------------------------------------------


async def grid(fleet: FleetSnapshot, devices: CountingDevices, clock: FakeClock) -> None:
    """bus-00..bus-24 on a 5 x 5 grid, 0.01 degrees apart, around (52.02, 4.02); bus-x only
    registered; bus-old last seen an hour ago at the grid's corner."""
    for i in range(25):
        await move(devices, f"bus-{i:02d}", 52.0 + (i // 5) / 100, 4.0 + (i % 5) / 100, clock())
    await devices.register("bus-x", None, None, clock())
    await move(devices, "bus-old", 52.0, 4.0, clock() - 60 * MINUTE_MS)
    await fleet.refresh()


async def test_bbox_pages_in_id_order_and_a_token_belongs_to_its_query(
    fleet: FleetSnapshot, devices: CountingDevices, clock: FakeClock
) -> None:
    await grid(fleet, devices, clock)
    chosen = FleetFilter(bbox=parse_bbox("4.005,52.005,4.035,52.025"))  # 3 columns x 2 rows
    first = fleet.select(chosen, 4, None, "q")
    assert ids(first) == ["bus-06", "bus-07", "bus-08", "bus-11"]
    assert first.next_token is not None
    second = fleet.select(chosen, 4, first.next_token, "q")
    assert ids(second) == ["bus-12", "bus-13"]
    assert second.next_token is None
    with pytest.raises(Error) as raised:
        fleet.select(chosen, 4, first.next_token, "another query")
    assert raised.value.code == INVALID


async def test_status_and_place_combine(
    fleet: FleetSnapshot, devices: CountingDevices, clock: FakeClock
) -> None:
    await grid(fleet, devices, clock)
    everywhere = parse_bbox("-180,-90,180,90")
    inactive = fleet.select(FleetFilter(status=DeviceStatus.INACTIVE), 100, None, "")
    assert ids(inactive) == ["bus-old"]
    registered = fleet.select(FleetFilter(status=DeviceStatus.REGISTERED), 100, None, "")
    assert ids(registered) == ["bus-x"]
    placed = fleet.select(FleetFilter(bbox=everywhere), 100, None, "")
    assert "bus-x" not in ids(placed)
    assert len(placed.items) == 26
    active_here = FleetFilter(bbox=everywhere, status=DeviceStatus.ACTIVE)
    assert len(fleet.select(active_here, 100, None, "").items) == 25


async def test_near_orders_by_distance_and_pages_on(
    fleet: FleetSnapshot, devices: CountingDevices, clock: FakeClock
) -> None:
    await grid(fleet, devices, clock)
    chosen = FleetFilter(near=parse_near("52.02,4.02", "1200"))
    found: list[tuple[str, float]] = []
    token = None
    while True:
        page = fleet.select(chosen, 3, token, "n")
        found += [(p.device.device_id, p.distance_m or 0.0) for p in page.items]
        token = page.next_token
        if token is None:
            break
    assert found[0] == ("bus-12", 0.0)
    distances = [distance for _, distance in found]
    assert distances == sorted(distances)
    assert max(distances) <= 1200
    # The centre, its 4 neighbours at ~0.01 degree, 4 diagonals (~1,300 m) are too far.
    assert len(found) == 5


async def test_polygon_with_a_hole(
    fleet: FleetSnapshot, devices: CountingDevices, clock: FakeClock
) -> None:
    await grid(fleet, devices, clock)
    outer = [[3.995, 51.995], [4.045, 51.995], [4.045, 52.045], [3.995, 52.045], [3.995, 51.995]]
    hole = [[4.015, 52.015], [4.025, 52.015], [4.025, 52.025], [4.015, 52.025], [4.015, 52.015]]
    area = parse_area({"type": "Polygon", "coordinates": [outer, hole]})
    found = fleet.select(FleetFilter(area=area, status=DeviceStatus.ACTIVE), 100, None, "")
    assert len(found.items) == 24
    assert "bus-12" not in ids(found)
