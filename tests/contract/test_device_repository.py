"""The DeviceRepository contract, run over every adapter (see conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.contract.conftest import Repos
from tests.helpers import (
    RECENT_MS,
    SECOND_MS,
    activity,
    all_pages,
    arrived,
    location,
    mark,
    new_position,
)
from trackstore.domain import Device, DeviceMark, HistoryQuery, Location
from trackstore.errors import CONFLICT, INVALID, Error
from trackstore.paging import encode_token

T0 = RECENT_MS


def at(seconds: int, device_id: str = "bus-1", **fields: Any) -> Location:
    """A location of `device_id` `seconds` after T0."""
    return location(device_id, T0 + seconds * SECOND_MS, **fields)


async def mark_of(repos: Repos, device_id: str = "bus-1") -> DeviceMark | None:
    return (await repos.devices.marks([device_id])).get(device_id)


async def report(repos: Repos, device_id: str, *seconds: int) -> DeviceMark:
    """What TrackService does with a batch of locations newer than the device's lastSeen: store
    them, then apply them against the mark just read. Returns the device's new mark."""
    fresh = [at(s, device_id) for s in seconds]
    expected = await mark_of(repos, device_id)
    await repos.locations.put_many(arrived(fresh))
    newest = max(fresh, key=lambda loc: loc.timestamp)
    applied = activity(device_id, expected, newest=newest, added=len(fresh))
    await repos.devices.apply_activity([applied])
    return DeviceMark(last_seen=newest.timestamp, applied_through=applied.applied_through)


async def device(repos: Repos, device_id: str = "bus-1") -> Device:
    found = await repos.devices.get(device_id)
    assert found is not None, f"{device_id} is not known"
    return found


def seen(device: Device) -> tuple[int | None, Location | None, int]:
    """lastSeen, lastLocation and totalUpdates, for one assertion."""
    return device.last_seen, device.last_location, device.total_updates


# -- marks ---------------------------------------------------------------------------------------


async def test_marks_list_only_devices_whose_activity_was_applied(repos: Repos) -> None:
    mark_1 = await report(repos, "bus-1", 1, 4)
    mark_2 = await report(repos, "bus-2", 2)
    await repos.devices.register("bus-3", "Never reported", None, T0)

    marks = await repos.devices.marks(["bus-1", "bus-2", "bus-3", "bus-404"])

    assert marks == {"bus-1": mark_1, "bus-2": mark_2}
    assert mark_1 == DeviceMark(
        last_seen=T0 + 4 * SECOND_MS, applied_through=mark_1.applied_through
    )
    assert await repos.devices.marks([]) == {}
    assert await repos.devices.marks(["bus-3"]) == {}


# -- apply_activity ------------------------------------------------------------------------------


async def test_activity_on_a_new_device_creates_it_with_its_mark(repos: Repos) -> None:
    position = new_position()

    await repos.devices.apply_activity(
        [activity("bus-1", None, newest=at(3, speed=12.5), added=2, applied_through=position)]
    )

    created = await device(repos)
    assert seen(created) == (T0 + 3 * SECOND_MS, at(3, speed=12.5), 2)
    assert (created.registered_at, created.name, created.metadata) == (None, None, None)
    assert await mark_of(repos) == mark(T0 + 3 * SECOND_MS, position)


async def test_activity_against_the_current_mark_advances_the_device(repos: Repos) -> None:
    first_mark = await report(repos, "bus-1", 0, 2, 1)

    assert seen(await device(repos)) == (T0 + 2 * SECOND_MS, at(2), 3)
    assert await mark_of(repos) == first_mark

    second_mark = await report(repos, "bus-1", 3)

    assert seen(await device(repos)) == (T0 + 3 * SECOND_MS, at(3), 4)
    assert await mark_of(repos) == second_mark
    assert second_mark != first_mark


async def test_activity_of_several_devices_in_one_call(repos: Repos) -> None:
    await report(repos, "bus-2", 1)
    mark_2 = await mark_of(repos, "bus-2")
    through_1, through_2 = new_position(), new_position()

    await repos.devices.apply_activity(
        [
            activity("bus-1", None, newest=at(2, "bus-1"), added=2, applied_through=through_1),
            activity("bus-2", mark_2, newest=at(5, "bus-2"), added=1, applied_through=through_2),
        ]
    )

    assert seen(await device(repos, "bus-1")) == (T0 + 2 * SECOND_MS, at(2, "bus-1"), 2)
    assert seen(await device(repos, "bus-2")) == (T0 + 5 * SECOND_MS, at(5, "bus-2"), 2)
    assert await repos.devices.marks(["bus-1", "bus-2"]) == {
        "bus-1": mark(T0 + 2 * SECOND_MS, through_1),
        "bus-2": mark(T0 + 5 * SECOND_MS, through_2),
    }


@pytest.mark.parametrize(
    "stale",
    [
        pytest.param(lambda first, current: None, id="none-though-a-mark-exists"),
        pytest.param(lambda first, current: first, id="an-older-mark"),
        pytest.param(
            lambda first, current: DeviceMark(
                last_seen=current.last_seen, applied_through=first.applied_through
            ),
            id="current-last-seen-older-position",
        ),
        pytest.param(
            lambda first, current: DeviceMark(
                last_seen=first.last_seen, applied_through=current.applied_through
            ),
            id="older-last-seen-current-position",
        ),
    ],
)
async def test_activity_against_a_stale_mark_is_a_conflict_that_changes_only_that_device(
    repos: Repos, stale: Any
) -> None:
    first = await report(repos, "bus-1", 1)
    current = await report(repos, "bus-1", 3)
    before = await device(repos)
    through_0, through_2 = new_position(), new_position()

    with pytest.raises(Error) as raised:
        await repos.devices.apply_activity(
            [
                activity("bus-0", None, newest=at(7, "bus-0"), added=1, applied_through=through_0),
                activity("bus-1", stale(first, current), newest=at(5), added=1),
                activity("bus-2", None, newest=at(6, "bus-2"), added=3, applied_through=through_2),
            ]
        )

    assert raised.value.code is CONFLICT
    assert "bus-1" in raised.value.message
    assert await device(repos) == before
    assert await mark_of(repos) == current
    # the activities whose mark matched, before and after the stale one, are applied
    assert seen(await device(repos, "bus-0")) == (T0 + 7 * SECOND_MS, at(7, "bus-0"), 1)
    assert seen(await device(repos, "bus-2")) == (T0 + 6 * SECOND_MS, at(6, "bus-2"), 3)
    assert await repos.devices.marks(["bus-0", "bus-2"]) == {
        "bus-0": mark(T0 + 7 * SECOND_MS, through_0),
        "bus-2": mark(T0 + 6 * SECOND_MS, through_2),
    }


async def test_an_activity_applies_at_most_once(repos: Repos) -> None:
    expected = await report(repos, "bus-1", 1)
    applied = activity("bus-1", expected, newest=at(4), added=2)
    await repos.devices.apply_activity([applied])
    after = await device(repos), await mark_of(repos)

    with pytest.raises(Error) as raised:
        await repos.devices.apply_activity([applied])  # a retry that does not know it succeeded

    assert raised.value.code is CONFLICT
    assert (await device(repos), await mark_of(repos)) == after
    assert seen(after[0]) == (T0 + 4 * SECOND_MS, at(4), 3)


@pytest.mark.parametrize(
    "seconds",
    [pytest.param(19, id="older"), pytest.param(0, id="much-older"), pytest.param(20, id="same")],
)
async def test_a_newest_not_newer_than_last_seen_still_counts_and_moves_the_mark(
    repos: Repos, seconds: int
) -> None:
    expected = await report(repos, "bus-1", 20)
    position = new_position()

    await repos.devices.apply_activity(
        [
            activity(
                "bus-1", expected, newest=at(seconds, speed=99.0), added=2, applied_through=position
            )
        ]
    )

    assert seen(await device(repos)) == (T0 + 20 * SECOND_MS, at(20), 3)
    assert await mark_of(repos) == mark(T0 + 20 * SECOND_MS, position)


async def test_last_seen_never_moves_backwards(repos: Repos) -> None:
    await report(repos, "bus-1", 20)

    for seconds in (19, 5, 20, 0):
        current = await mark_of(repos)
        await repos.devices.apply_activity(
            [activity("bus-1", current, newest=at(seconds, speed=1.0), added=1)]
        )

    after = await device(repos)
    assert seen(after) == (T0 + 20 * SECOND_MS, at(20), 5)
    mark = await mark_of(repos)
    assert mark is not None
    assert mark.last_seen == T0 + 20 * SECOND_MS


async def test_a_counted_late_location_adds_one_without_a_newest(repos: Repos) -> None:
    expected = await report(repos, "bus-1", 10)
    position = new_position()

    await repos.devices.apply_activity(
        [activity("bus-1", expected, newest=None, added=1, applied_through=position)]
    )

    assert seen(await device(repos)) == (T0 + 10 * SECOND_MS, at(10), 2)
    assert await mark_of(repos) == mark(T0 + 10 * SECOND_MS, position)


async def test_an_activity_that_adds_nothing_still_moves_the_mark(repos: Repos) -> None:
    # a batch whose late locations were all stored before (a producer's resend)
    expected = await report(repos, "bus-1", 10)
    position = new_position()

    await repos.devices.apply_activity(
        [activity("bus-1", expected, newest=None, added=0, applied_through=position)]
    )

    assert seen(await device(repos)) == (T0 + 10 * SECOND_MS, at(10), 1)
    assert await mark_of(repos) == mark(T0 + 10 * SECOND_MS, position)


async def test_activity_on_a_registered_device_without_a_mark_expects_none(repos: Repos) -> None:
    await repos.devices.register("bus-1", "Bus one", {"depot": "north"}, T0)
    position = new_position()
    await repos.devices.apply_activity(
        [activity("bus-1", None, newest=at(2), added=1, applied_through=position)]
    )

    after = await device(repos)
    assert (after.name, after.metadata, after.registered_at) == ("Bus one", {"depot": "north"}, T0)
    assert seen(after) == (T0 + 2 * SECOND_MS, at(2), 1)
    assert await mark_of(repos) == mark(T0 + 2 * SECOND_MS, position)


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
    await repos.locations.put_many(arrived([at(s) for s in range(3)]))
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
    assert await repos.devices.marks(["bus-1"]) == {}


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
    mark = await report(repos, "bus-1", 1, 2)

    registered = await repos.devices.register("bus-1", "Bus one", None, T0 + 9 * SECOND_MS)

    assert registered.registered_at == T0 + 9 * SECOND_MS
    assert (registered.last_seen, registered.total_updates) == (T0 + 2 * SECOND_MS, 2)
    assert registered.last_location == at(2)
    assert await repos.devices.get("bus-1") == registered
    assert await mark_of(repos) == mark


async def test_reporting_after_registering_keeps_the_registration(repos: Repos) -> None:
    await repos.devices.register("bus-1", "Bus one", {"depot": "north"}, T0)

    mark = await report(repos, "bus-1", 1)

    after = await device(repos)
    assert (after.name, after.metadata, after.registered_at) == ("Bus one", {"depot": "north"}, T0)
    assert (after.last_seen, after.total_updates) == (T0 + SECOND_MS, 1)
    assert await mark_of(repos) == mark


async def test_ping_answers(repos: Repos) -> None:
    assert await repos.devices.ping() is None
