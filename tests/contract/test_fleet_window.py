"""The fleet-wide window of LocationRepository (GET /locations), run over every adapter."""

from __future__ import annotations

import pytest

from tests.contract.conftest import Repos
from tests.helpers import DAY_MS, MINUTE_MS, RECENT_MS, all_pages, arrived, location
from trackstore.domain import Location, WindowQuery
from trackstore.errors import INVALID, Error
from trackstore.paging import encode_token

# A UTC midnight in the recent past, so windows cross a day (and a GSI partition) boundary.
MIDNIGHT = (RECENT_MS // DAY_MS) * DAY_MS


def keys(items: list[Location]) -> list[tuple[int, str]]:
    return [((loc.timestamp - MIDNIGHT) // MINUTE_MS, loc.device_id) for loc in items]


async def fill(repos: Repos) -> list[Location]:
    """Five devices reporting every 20 minutes from 1 h before to 1 h after midnight, all five at
    the very same millisecond each time."""
    stored = [
        location(f"bus-{d}", MIDNIGHT + minutes * MINUTE_MS, received_at=MIDNIGHT)
        for minutes in range(-60, 61, 20)
        for d in range(5)
    ]
    await repos.locations.put_many(arrived(stored))
    return stored


async def window(repos: Repos, start: int, end: int, limit: int) -> list[list[Location]]:
    return await all_pages(
        lambda token: repos.locations.window(
            WindowQuery(start=start, end=end, limit=limit, token=token)
        )
    )


@pytest.mark.parametrize("limit", [1, 3, 5, 7, 1000])
async def test_paging_a_window_across_midnight_yields_each_location_once_in_order(
    repos: Repos, limit: int
) -> None:
    stored = await fill(repos)

    pages = await window(repos, MIDNIGHT - DAY_MS, MIDNIGHT + DAY_MS, limit)

    found = [loc for page in pages for loc in page]
    assert keys(found) == sorted(keys(stored))
    assert found == sorted(stored, key=lambda loc: (loc.timestamp, loc.device_id))
    assert all(len(page) <= limit for page in pages)


async def test_the_window_is_inclusive_at_both_ends(repos: Repos) -> None:
    await fill(repos)

    pages = await window(repos, MIDNIGHT - 20 * MINUTE_MS, MIDNIGHT + 20 * MINUTE_MS, 100)

    found = [loc for page in pages for loc in page]
    assert sorted({minute for minute, _ in keys(found)}) == [-20, 0, 20]
    assert len(found) == 15


async def test_an_empty_window_is_one_empty_page(repos: Repos) -> None:
    await fill(repos)

    pages = await window(repos, MIDNIGHT + 2 * DAY_MS, MIDNIGHT + 3 * DAY_MS, 10)

    assert [loc for page in pages for loc in page] == []


@pytest.mark.parametrize("token", ["garbage", encode_token("somewhere:else", {"t": 1, "d": "x"})])
async def test_a_foreign_or_malformed_window_token_is_rejected(repos: Repos, token: str) -> None:
    await fill(repos)

    with pytest.raises(Error) as raised:
        await repos.locations.window(
            WindowQuery(start=MIDNIGHT - DAY_MS, end=MIDNIGHT + DAY_MS, limit=5, token=token)
        )

    assert raised.value.code is INVALID
