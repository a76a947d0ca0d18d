"""Queries over every adapter with tokens reused against a moved or narrowed window, and items past
their TTL: answers or 400s, never a store error, and never an expired location."""

from __future__ import annotations

import pytest

from tests.contract.conftest import DATE_SHARDS, Repos
from tests.helpers import RECENT_MS, SECOND_MS, arrived, location
from trackstore.clock import FakeClock
from trackstore.domain import HistoryQuery, Order
from trackstore.dynamodb import DynamoLocationRepository
from trackstore.errors import INVALID, Error
from trackstore.service import TrackService

NOW = RECENT_MS + 600 * SECOND_MS


def service(repos: Repos, clock: FakeClock | None = None) -> TrackService:
    return TrackService(repos.locations, repos.devices, clock or FakeClock(NOW), ttl_days=30)


async def stored(repos: Repos, *seconds: int) -> None:
    await repos.locations.put_many(
        arrived([location("bus-1", RECENT_MS + s * SECOND_MS) for s in seconds])
    )


@pytest.mark.parametrize("order", [Order.ASC, Order.DESC])
async def test_a_history_token_reused_with_a_narrower_window_is_a_400_not_a_store_error(
    repos: Repos, order: Order
) -> None:
    await stored(repos, *range(1, 11))
    query = HistoryQuery(device_id="bus-1", limit=3, order=order)
    first = await service(repos).history(query)
    assert first.next_token is not None

    narrower = HistoryQuery(
        device_id="bus-1",
        limit=3,
        order=order,
        end=RECENT_MS + 2 * SECOND_MS,
        token=first.next_token,
    )
    with pytest.raises(Error) as raised:
        await service(repos).history(narrower)
    assert raised.value.code is INVALID


async def test_a_history_page_behind_the_moving_retention_edge_still_works(repos: Repos) -> None:
    # Locations at the retention edge; the edge passes the cursor between two pages.
    clock = FakeClock(RECENT_MS + 30 * 24 * 3600 * SECOND_MS)
    await stored(repos, *range(1, 9))
    first = await service(repos, clock).history(HistoryQuery(device_id="bus-1", limit=3))
    assert [loc.timestamp for loc in first.items] == [RECENT_MS + s * SECOND_MS for s in (1, 2, 3)]
    clock.advance(5_500)  # now 1..5 are past the edge

    second = await service(repos, clock).history(
        HistoryQuery(device_id="bus-1", limit=3, token=first.next_token)
    )

    assert [loc.timestamp for loc in second.items] == [RECENT_MS + s * SECOND_MS for s in (6, 7, 8)]


async def test_a_fleet_token_whose_cursor_lies_after_the_window_ends_the_listing(
    repos: Repos,
) -> None:
    clock = FakeClock(NOW)
    await stored(repos, *range(1, 11))
    start = RECENT_MS - 600 * SECOND_MS
    first = await service(repos, clock).window(start, None, 3, None)
    assert first.next_token is not None  # its cursor: the location at second 3
    # Without end_time the window ends at now + 5 minutes. A task whose clock lags puts that
    # end before the cursor: no more pages, and no error.
    lagging = RECENT_MS + 2 * SECOND_MS - 300 * SECOND_MS
    clock.advance(lagging - NOW)

    page = await service(repos, clock).window(start, None, 3, first.next_token)

    assert page.items == []
    assert page.next_token is None


async def test_items_past_their_ttl_are_never_returned(repos: Repos) -> None:
    if not isinstance(repos.locations, DynamoLocationRepository):
        pytest.skip("the memory store keeps one retention for every item, as the service does")
    # Written by a task with a one-day TTL: expired an hour ago, inside a 30-day retention.
    short = DynamoLocationRepository(
        repos.locations._client, repos.locations._table, ttl_days=1, date_shards=DATE_SHARDS
    )
    expired_at = NOW - 25 * 3600 * SECOND_MS
    await short.put_many(arrived([location("bus-1", expired_at)]))
    await stored(repos, 1)

    history = await service(repos).history(HistoryQuery(device_id="bus-1"))
    latest = await service(repos).latest("bus-1")
    window = await service(repos).window(expired_at - 1000, expired_at + 1000, 10, None)

    assert [loc.timestamp for loc in history.items] == [RECENT_MS + SECOND_MS]
    assert latest.timestamp == RECENT_MS + SECOND_MS
    assert window.items == []
