"""The LocationRepository contract, run over every adapter (see conftest.py)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.contract.conftest import Repos
from tests.helpers import (
    RECENT_MS,
    SECOND_MS,
    SHARD_ID,
    all_pages,
    arrived,
    location,
    new_position,
    new_sequence_number,
)
from trackstore.domain import Arrival, HistoryQuery, Location, Order, Page, stream_position
from trackstore.errors import INVALID, Error
from trackstore.paging import encode_token

T0 = RECENT_MS


def at(seconds: int, device_id: str = "bus-1", **fields: Any) -> Location:
    """A location of `device_id` `seconds` after T0."""
    return location(device_id, T0 + seconds * SECOND_MS, **fields)


def times(items: list[Location]) -> list[int]:
    """Seconds after T0 of each location, for readable assertions."""
    return [(loc.timestamp - T0) // SECOND_MS for loc in items]


async def history(repos: Repos, device_id: str = "bus-1", **query: Any) -> Page[Location]:
    return await repos.locations.history(HistoryQuery(device_id=device_id, **query))


async def test_a_location_reads_back_with_every_field_as_written(repos: Repos) -> None:
    full = at(
        0,
        latitude=-33.8688,
        longitude=151.2093,
        speed=42.5,
        heading=359.5,
        altitude=-12.25,
        accuracy=3.0,
        battery=87.5,
        attributes={"route": "M10", "doorsOpen": False, "stop": 12, "load": 0.6, "note": None},
        received_at=T0 + 1500,
    )
    bare = at(1, latitude=0.0, longitude=0.0, received_at=T0 + 2500)

    await repos.locations.put_many(arrived([full, bare]))

    assert (await history(repos)).items == [full, bare]
    assert await repos.locations.latest("bus-1") == bare


async def test_storing_a_key_again_overwrites_it(repos: Repos) -> None:
    await repos.locations.put_many(arrived([at(0, latitude=10.0), at(1)]))

    await repos.locations.put_many(arrived([at(0, latitude=20.0)]))

    page = await history(repos)
    assert times(page.items) == [0, 1]
    assert page.items[0].latitude == 20.0


async def test_replaying_put_many_changes_nothing(repos: Repos) -> None:
    batch = [at(s, device_id=d) for s in range(5) for d in ("bus-1", "bus-2")]
    await repos.locations.put_many(arrived(batch))
    before = (await history(repos, "bus-1")).items, (await history(repos, "bus-2")).items

    await repos.locations.put_many(arrived(batch))

    assert ((await history(repos, "bus-1")).items, (await history(repos, "bus-2")).items) == before


async def test_put_many_of_nothing_is_a_no_op(repos: Repos) -> None:
    await repos.locations.put_many(arrived([]))

    assert (await history(repos)).items == []


async def test_put_many_stores_a_large_batch_of_many_devices(repos: Repos) -> None:
    batch = [at(s, device_id=f"bus-{d}") for d in range(3) for s in range(40)]
    random.Random(7).shuffle(batch)

    await repos.locations.put_many(arrived(batch))

    for d in range(3):
        page = await history(repos, f"bus-{d}", limit=1000)
        assert times(page.items) == list(range(40))


def by_key(items: list[Location]) -> list[Location]:
    """Locations in (device, timestamp) order: put_new promises no order."""
    return sorted(items, key=lambda loc: (loc.device_id, loc.timestamp))


async def test_put_new_stores_and_returns_locations_whose_key_is_absent(repos: Repos) -> None:
    full = at(
        2,
        speed=42.5,
        heading=90.0,
        altitude=3.5,
        accuracy=4.0,
        battery=55.0,
        attributes={"route": "M10", "doorsOpen": True},
        received_at=T0 + 2500,
    )
    await repos.locations.put_many(arrived([at(5)]))

    counted = await repos.locations.put_new(
        [Arrival(full, new_position()), Arrival(at(1), new_position())]
    )

    assert by_key(counted) == [at(1), full]
    assert (await history(repos)).items == [at(1), full, at(5)]
    assert await repos.locations.latest("bus-1") == at(5)


async def test_put_new_of_nothing_is_a_no_op(repos: Repos) -> None:
    assert await repos.locations.put_new([]) == []

    assert (await history(repos)).items == []


async def test_put_new_leaves_a_key_stored_by_put_many_as_is(repos: Repos) -> None:
    await repos.locations.put_many(arrived([at(3, latitude=10.0)]))

    counted = await repos.locations.put_new([Arrival(at(3, latitude=20.0), new_position())])

    assert counted == []
    assert (await history(repos)).items == [at(3, latitude=10.0)]


async def test_put_new_again_from_the_same_position_counts_the_location_again(
    repos: Repos,
) -> None:
    # an attempt of a batch stored it and died before applying it: the replay counts it too
    position = new_position()
    assert await repos.locations.put_new([Arrival(at(3, latitude=10.0), position)]) == [
        at(3, latitude=10.0)
    ]

    counted = await repos.locations.put_new([Arrival(at(3, latitude=10.0), position)])

    assert counted == [at(3, latitude=10.0)]
    assert (await history(repos)).items == [at(3, latitude=10.0)]


async def test_put_new_from_another_position_keeps_the_first_write(repos: Repos) -> None:
    # a producer's resend, carried by another record
    first, later = new_position(), new_position()
    await repos.locations.put_new([Arrival(at(3, latitude=10.0), first)])

    counted = await repos.locations.put_new([Arrival(at(3, latitude=20.0), later)])

    assert counted == []
    assert (await history(repos)).items == [at(3, latitude=10.0)]
    assert await repos.locations.put_new([Arrival(at(3, latitude=10.0), first)]) == [
        at(3, latitude=10.0)
    ]


async def test_put_new_tells_the_same_sequence_number_apart_by_sub_sequence(repos: Repos) -> None:
    # records deaggregated from one KPL record share their sequence number
    sequence = new_sequence_number()
    await repos.locations.put_new(
        [Arrival(at(3, latitude=10.0), stream_position(SHARD_ID, sequence, 0))]
    )

    counted = await repos.locations.put_new(
        [Arrival(at(3, latitude=20.0), stream_position(SHARD_ID, sequence, 1))]
    )

    assert counted == []
    assert (await history(repos)).items == [at(3, latitude=10.0)]


async def test_put_new_decides_each_arrival_of_several_devices_in_one_call(repos: Repos) -> None:
    earlier = new_position()
    await repos.locations.put_many(arrived([at(1, "bus-1"), at(1, "bus-2", latitude=1.0)]))
    await repos.locations.put_new(
        [Arrival(at(2, "bus-1"), earlier), Arrival(at(2, "bus-2", latitude=2.0), earlier)]
    )
    now = [new_position(sub) for sub in range(8)]
    arrivals = [
        Arrival(at(0, "bus-1"), now[0]),  # absent: counted
        Arrival(at(1, "bus-1", latitude=9.0), now[1]),  # stored by put_many: not counted
        Arrival(at(2, "bus-1"), earlier),  # stored from this very position: counted
        Arrival(at(3, "bus-1"), now[2]),  # absent: counted
        Arrival(at(0, "bus-2"), now[3]),  # absent: counted
        Arrival(at(1, "bus-2", latitude=9.0), now[4]),  # stored by put_many: not counted
        Arrival(at(2, "bus-2", latitude=9.0), now[5]),  # stored from another position
        Arrival(at(7, "bus-3"), now[6]),  # a device without locations: counted
    ]

    counted = await repos.locations.put_new(arrivals)

    assert by_key(counted) == [
        at(0, "bus-1"),
        at(2, "bus-1"),
        at(3, "bus-1"),
        at(0, "bus-2"),
        at(7, "bus-3"),
    ]
    assert (await history(repos, "bus-1")).items == [at(s, "bus-1") for s in range(4)]
    assert (await history(repos, "bus-2")).items == [
        at(0, "bus-2"),
        at(1, "bus-2", latitude=1.0),
        at(2, "bus-2", latitude=2.0),
    ]
    assert (await history(repos, "bus-3")).items == [at(7, "bus-3")]


async def test_put_new_stores_a_large_batch_of_many_devices(repos: Repos) -> None:
    batch = [Arrival(at(s, f"bus-{d}"), new_position()) for d in range(3) for s in range(40)]
    random.Random(11).shuffle(batch)

    counted = await repos.locations.put_new(batch)

    assert by_key(counted) == by_key([arrival.location for arrival in batch])
    for d in range(3):
        assert times((await history(repos, f"bus-{d}", limit=1000)).items) == list(range(40))


async def test_history_window_is_inclusive_at_both_ends(repos: Repos) -> None:
    await repos.locations.put_many(arrived([at(s) for s in range(10)]))

    page = await history(repos, start=T0 + 3 * SECOND_MS, end=T0 + 6 * SECOND_MS)
    single = await history(repos, start=T0 + 4 * SECOND_MS, end=T0 + 4 * SECOND_MS)
    only_start = await history(repos, start=T0 + 8 * SECOND_MS)
    only_end = await history(repos, end=T0 + SECOND_MS)

    assert times(page.items) == [3, 4, 5, 6]
    assert times(single.items) == [4]
    assert times(only_start.items) == [8, 9]
    assert times(only_end.items) == [0, 1]


async def test_history_of_an_empty_window_is_one_empty_page(repos: Repos) -> None:
    await repos.locations.put_many(arrived([at(0), at(10)]))

    pages = await all_pages(
        lambda token: history(repos, start=T0 + SECOND_MS, end=T0 + 9 * SECOND_MS, token=token)
    )

    assert [item for page in pages for item in page] == []


async def test_history_holds_only_the_devices_own_locations(repos: Repos) -> None:
    await repos.locations.put_many(
        arrived([at(0, "bus-1"), at(1, "bus-10"), at(2, "bus-"), at(3, "bus-1")])
    )

    assert times((await history(repos, "bus-1")).items) == [0, 3]
    assert (await history(repos, "bus-404")).items == []


@pytest.mark.parametrize(
    ("order", "expected"), [(Order.ASC, [0, 1, 2, 3]), (Order.DESC, [3, 2, 1, 0])]
)
async def test_history_is_in_the_querys_order(
    repos: Repos, order: Order, expected: list[int]
) -> None:
    await repos.locations.put_many(arrived([at(2), at(0), at(3), at(1)]))

    assert times((await history(repos, order=order)).items) == expected


@pytest.mark.parametrize("order", list(Order))
@pytest.mark.parametrize("limit", [1, 2, 3, 4, 9, 10, 1000])
async def test_paging_through_a_window_gives_every_location_once_in_order(
    repos: Repos, order: Order, limit: int
) -> None:
    await repos.locations.put_many(
        arrived([at(s) for s in range(-3, 15)] + [at(5, device_id="bus-2")])
    )
    window = {"start": T0, "end": T0 + 8 * SECOND_MS}

    pages = await all_pages(
        lambda token: history(repos, limit=limit, order=order, token=token, **window)
    )

    assert all(len(page) <= limit for page in pages)
    expected = list(range(9)) if order is Order.ASC else list(range(8, -1, -1))
    assert times([item for page in pages for item in page]) == expected
    if limit < 9:
        assert len(pages) > 1


async def _first_token(repos: Repos, device_id: str = "bus-1", order: Order = Order.ASC) -> str:
    page = await history(repos, device_id, limit=1, order=order)
    assert page.next_token is not None
    return page.next_token


async def test_a_token_of_another_device_is_rejected(repos: Repos) -> None:
    await repos.locations.put_many(
        arrived([at(s, d) for s in range(3) for d in ("bus-1", "bus-2")])
    )
    token = await _first_token(repos, "bus-1")

    with pytest.raises(Error) as raised:
        await history(repos, "bus-2", limit=1, token=token)

    assert raised.value.code is INVALID


@pytest.mark.parametrize(("issued", "used"), [(Order.ASC, Order.DESC), (Order.DESC, Order.ASC)])
async def test_a_token_of_the_other_order_is_rejected(
    repos: Repos, issued: Order, used: Order
) -> None:
    await repos.locations.put_many(arrived([at(s) for s in range(3)]))
    token = await _first_token(repos, order=issued)

    with pytest.raises(Error) as raised:
        await history(repos, limit=1, order=used, token=token)

    assert raised.value.code is INVALID


async def test_a_device_listing_token_is_rejected(repos: Repos) -> None:
    for n in range(3):
        await repos.devices.register(f"bus-{n}", None, None, T0)
    listing = await repos.devices.list(1, None)
    assert listing.next_token is not None
    await repos.locations.put_many(arrived([at(s) for s in range(3)]))

    with pytest.raises(Error) as raised:
        await history(repos, limit=1, token=listing.next_token)

    assert raised.value.code is INVALID


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("garbage", id="word"),
        pytest.param("!!!not-base64!!!", id="not-base64"),
        pytest.param("e30", id="empty-json-object"),
        pytest.param("W10", id="json-array"),
        pytest.param("x" * 5000, id="very-long"),
        pytest.param(encode_token("some:other:scope", {"t": 1}), id="foreign-scope"),
    ],
)
async def test_a_garbage_token_is_rejected(repos: Repos, token: str) -> None:
    await repos.locations.put_many(arrived([at(s) for s in range(3)]))

    with pytest.raises(Error) as raised:
        await history(repos, limit=1, token=token)

    assert raised.value.code is INVALID


async def test_latest_is_the_newest_location_whatever_the_write_order(repos: Repos) -> None:
    await repos.locations.put_many(arrived([at(5), at(9, speed=12.0), at(1)]))
    await repos.locations.put_many(arrived([at(3)]))  # a straggler arrives last

    assert await repos.locations.latest("bus-1") == at(9, speed=12.0)


async def test_latest_of_a_device_without_locations_is_none(repos: Repos) -> None:
    await repos.locations.put_many(arrived([at(0, "bus-1")]))

    assert await repos.locations.latest("bus-2") is None


async def test_ping_answers(repos: Repos) -> None:
    assert await repos.locations.ping() is None
