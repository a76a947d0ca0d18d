"""The DeviceRepository contract, run over every adapter (see conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.contract.conftest import Repos
from tests.helpers import RECENT_MS, SECOND_MS, activity, all_pages, location
from trackstore.domain import Device, HistoryQuery, Location
from trackstore.errors import CONFLICT, INVALID, Error
from trackstore.paging import encode_token

T0 = RECENT_MS


def at(seconds: int, device_id: str = "bus-1", **fields: Any) -> Location:
    """A location of `device_id` `seconds` after T0."""
    return location(device_id, T0 + seconds * SECOND_MS, **fields)


async def report(repos: Repos, device_id: str, *seconds: int) -> tuple[Location, ...]:
    """What TrackService does with locations newer than the device's lastSeen: store them, then
    apply them as fresh activity against the lastSeen just read."""
    fresh = tuple(at(s, device_id) for s in seconds)
    previous = (await repos.devices.last_seen([device_id])).get(device_id)
    await repos.locations.put_many(fresh)
    await repos.devices.apply_activity([activity(device_id, previous, fresh=fresh)])
    return fresh


async def device(repos: Repos, device_id: str = "bus-1") -> Device:
    found = await repos.devices.get(device_id)
    assert found is not None, f"{device_id} is not known"
    return found


async def stored_seconds(repos: Repos, device_id: str = "bus-1") -> list[int]:
    page = await repos.locations.history(HistoryQuery(device_id=device_id, limit=1000))
    return [(loc.timestamp - T0) // SECOND_MS for loc in page.items]


# -- last_seen -----------------------------------------------------------------------------------


async def test_last_seen_lists_only_devices_that_reported(repos: Repos) -> None:
    await report(repos, "bus-1", 1, 4)
    await report(repos, "bus-2", 2)
    await repos.devices.register("bus-3", "Never reported", None, T0)

    seen = await repos.devices.last_seen(["bus-1", "bus-2", "bus-3", "bus-404"])

    assert seen == {"bus-1": T0 + 4 * SECOND_MS, "bus-2": T0 + 2 * SECOND_MS}
    assert await repos.devices.last_seen([]) == {}


# -- apply_activity: fresh locations -------------------------------------------------------------


async def test_fresh_activity_advances_last_seen_and_counts_each_location(repos: Repos) -> None:
    await report(repos, "bus-1", 0, 2, 1)

    first = await device(repos)
    assert (first.last_seen, first.total_updates) == (T0 + 2 * SECOND_MS, 3)
    assert first.last_location == at(2)

    await report(repos, "bus-1", 3)

    second = await device(repos)
    assert (second.last_seen, second.total_updates, second.last_location) == (
        T0 + 3 * SECOND_MS,
        4,
        at(3),
    )


async def test_activity_of_several_devices_in_one_call(repos: Repos) -> None:
    fresh_1, fresh_2 = (at(1, "bus-1"), at(2, "bus-1")), (at(5, "bus-2"),)
    await repos.locations.put_many([*fresh_1, *fresh_2])

    await repos.devices.apply_activity(
        [activity("bus-1", None, fresh=fresh_1), activity("bus-2", None, fresh=fresh_2)]
    )

    bus_1, bus_2 = await device(repos, "bus-1"), await device(repos, "bus-2")
    assert (bus_1.last_seen, bus_1.total_updates) == (T0 + 2 * SECOND_MS, 2)
    assert (bus_2.last_seen, bus_2.total_updates) == (T0 + 5 * SECOND_MS, 1)


@pytest.mark.parametrize(
    "stale_previous",
    [pytest.param(None, id="never-seen"), pytest.param(T0 + SECOND_MS, id="older-last-seen")],
)
async def test_fresh_activity_against_a_stale_last_seen_is_a_conflict_and_changes_nothing(
    repos: Repos, stale_previous: int | None
) -> None:
    await report(repos, "bus-1", 1, 3)
    before = await device(repos)
    fresh = (at(5),)
    await repos.locations.put_many(fresh)

    with pytest.raises(Error) as raised:
        await repos.devices.apply_activity([activity("bus-1", stale_previous, fresh=fresh)])

    assert raised.value.code is CONFLICT
    assert await device(repos) == before


# -- apply_activity: late locations --------------------------------------------------------------


async def test_a_late_location_is_stored_and_counted_once(repos: Repos) -> None:
    await report(repos, "bus-1", 10)
    late = activity("bus-1", T0 + 10 * SECOND_MS, late=(at(4, speed=7.0),))

    await repos.devices.apply_activity([late])
    await repos.devices.apply_activity([late])  # replayed

    assert await stored_seconds(repos) == [4, 10]
    assert (await repos.locations.latest("bus-1")) == at(10)
    after = await device(repos)
    assert after.total_updates == 2
    assert (after.last_seen, after.last_location) == (T0 + 10 * SECOND_MS, at(10))


async def test_a_late_location_already_stored_is_not_counted(repos: Repos) -> None:
    await report(repos, "bus-1", 3, 7)

    # a replay of the batch that reported them, classified as late now that lastSeen moved on
    replay = activity("bus-1", T0 + 7 * SECOND_MS, late=(at(3), at(7)))
    await repos.devices.apply_activity([replay])

    assert (await device(repos)).total_updates == 2
    assert await stored_seconds(repos) == [3, 7]


async def test_fresh_and_late_locations_in_one_activity_count_each_once(repos: Repos) -> None:
    await report(repos, "bus-1", 5)
    fresh = (at(8), at(9))
    await repos.locations.put_many(fresh)
    mixed = activity("bus-1", T0 + 5 * SECOND_MS, fresh=fresh, late=(at(2), at(5)))

    await repos.devices.apply_activity([mixed])

    after = await device(repos)
    assert (after.total_updates, after.last_seen, after.last_location) == (
        4,
        T0 + 9 * SECOND_MS,
        at(9),
    )
    assert await stored_seconds(repos) == [2, 5, 8, 9]


async def test_last_seen_never_moves_backwards(repos: Repos) -> None:
    await report(repos, "bus-1", 20)

    for seconds in (19, 5, 20, 0):
        current = (await repos.devices.last_seen(["bus-1"]))["bus-1"]
        await repos.devices.apply_activity([activity("bus-1", current, late=(at(seconds),))])

    after = await device(repos)
    assert (after.last_seen, after.last_location) == (T0 + 20 * SECOND_MS, at(20))
    assert after.total_updates == 4


# -- get, list, register -------------------------------------------------------------------------


async def test_get_of_an_unknown_device_is_none(repos: Repos) -> None:
    await report(repos, "bus-1", 1)

    assert await repos.devices.get("bus-2") is None


async def test_listing_pages_through_every_device_once(repos: Repos) -> None:
    reported = [f"bus-{n}" for n in range(4)]
    registered = ["tram-1", "tram-2", "ferry:7"]
    for n, device_id in enumerate(reported):
        await report(repos, device_id, n)
    for device_id in registered:
        await repos.devices.register(device_id, device_id.upper(), None, T0)

    pages = await all_pages(lambda token: repos.devices.list(3, token))

    assert all(len(page) <= 3 for page in pages)
    listed = [d.device_id for page in pages for d in page]
    assert sorted(listed) == sorted(reported + registered)
    assert len(pages) >= 3
    for page in pages:
        for listed_device in page:
            assert listed_device == await repos.devices.get(listed_device.device_id)


async def test_listing_no_devices_is_one_empty_page(repos: Repos) -> None:
    pages = await all_pages(lambda token: repos.devices.list(3, token))

    assert [d for page in pages for d in page] == []


async def test_a_location_history_token_is_rejected_by_the_listing(repos: Repos) -> None:
    await repos.locations.put_many([at(s) for s in range(3)])
    page = await repos.locations.history(HistoryQuery(device_id="bus-1", limit=1))
    assert page.next_token is not None
    await report(repos, "bus-2", 1)

    with pytest.raises(Error) as raised:
        await repos.devices.list(1, page.next_token)

    assert raised.value.code is INVALID


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("garbage", id="word"),
        pytest.param("!!!not-base64!!!", id="not-base64"),
        pytest.param("e30", id="empty-json-object"),
        pytest.param("x" * 5000, id="very-long"),
        pytest.param(encode_token("some:other:scope", {"after": "bus-1"}), id="foreign-scope"),
    ],
)
async def test_a_garbage_listing_token_is_rejected(repos: Repos, token: str) -> None:
    await report(repos, "bus-1", 1)

    with pytest.raises(Error) as raised:
        await repos.devices.list(1, token)

    assert raised.value.code is INVALID


async def test_register_returns_and_stores_the_device(repos: Repos) -> None:
    registered = await repos.devices.register(
        "bus-1", "Bus one", {"depot": "north", "seats": 40}, T0
    )

    assert registered == Device(
        device_id="bus-1",
        registered_at=T0,
        name="Bus one",
        metadata={"depot": "north", "seats": 40},
    )
    assert await repos.devices.get("bus-1") == registered
    assert await repos.devices.last_seen(["bus-1"]) == {}


async def test_register_without_name_or_metadata(repos: Repos) -> None:
    registered = await repos.devices.register("bus-1", None, None, T0)

    assert (registered.name, registered.metadata, registered.registered_at) == (None, None, T0)
    assert await repos.devices.get("bus-1") == registered


async def test_registering_twice_is_a_conflict_and_keeps_the_first(repos: Repos) -> None:
    first = await repos.devices.register("bus-1", "Bus one", None, T0)

    with pytest.raises(Error) as raised:
        await repos.devices.register("bus-1", "Impostor", {"x": 1}, T0 + SECOND_MS)

    assert raised.value.code is CONFLICT
    assert await repos.devices.get("bus-1") == first


async def test_registering_a_device_that_reported_keeps_its_activity(repos: Repos) -> None:
    await report(repos, "bus-1", 1, 2)

    registered = await repos.devices.register("bus-1", "Bus one", None, T0 + 9 * SECOND_MS)

    assert registered.registered_at == T0 + 9 * SECOND_MS
    assert (registered.last_seen, registered.total_updates) == (T0 + 2 * SECOND_MS, 2)
    assert registered.last_location == at(2)
    assert await repos.devices.get("bus-1") == registered


async def test_reporting_after_registering_keeps_the_registration(repos: Repos) -> None:
    await repos.devices.register("bus-1", "Bus one", {"depot": "north"}, T0)

    await report(repos, "bus-1", 1)

    after = await device(repos)
    assert (after.name, after.metadata, after.registered_at) == ("Bus one", {"depot": "north"}, T0)
    assert (after.last_seen, after.total_updates) == (T0 + SECOND_MS, 1)


async def test_ping_answers(repos: Repos) -> None:
    assert await repos.devices.ping() is None
