"""The API's `simplify` and `max_points` applied to a device's locations.

A page of the JSON history is simplified on its own. An export is simplified over its whole window
in two passes, so that memory stays flat: the first reads the window page by page and keeps only
each location's coordinates and timestamp (24 bytes a fix), works out which timestamps are kept,
and the second reads the window again and writes the kept locations as they come. The window's
end is fixed before the first pass, so that both read the same locations; one that expires or
arrives late between the passes is left out, never misplaced.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from trackstore.domain import MAX_PAGE_SIZE, HistoryQuery, Location, Order
from trackstore.service import TrackService
from trackstore.simplify import Columns, douglas_peucker, most_significant


@dataclass(frozen=True, slots=True)
class Simplification:
    """Douglas-Peucker at `tolerance_m`, then the `max_points` most significant of what is left;
    either may be absent."""

    tolerance_m: float | None = None
    max_points: int | None = None

    def __bool__(self) -> bool:
        return self.tolerance_m is not None or self.max_points is not None

    def kept(self, track: Columns) -> Sequence[int]:
        """The indexes of the points kept, ascending."""
        kept: Sequence[int] = range(len(track))
        if self.tolerance_m is not None:
            kept = douglas_peucker(track, self.tolerance_m)
        if self.max_points is not None:
            if len(kept) == len(track):
                kept = most_significant(track, self.max_points)
            elif len(kept) > self.max_points:
                significant = most_significant(track.subset(kept), self.max_points)
                kept = [kept[i] for i in significant]
        return kept

    def page(self, locations: Sequence[Location]) -> list[Location]:
        kept = self.kept(_columns(locations))
        return [locations[i] for i in kept]


class KeptTimestamps:
    """The timestamps kept, in the order the window is read, and a filter that lets through
    only the locations with them."""

    __slots__ = ("_next", "_order", "_timestamps")

    def __init__(self, timestamps: array[int], order: Order) -> None:
        self._timestamps = timestamps
        self._order = order
        self._next = 0

    def __len__(self) -> int:
        return len(self._timestamps)

    def select(self, locations: Sequence[Location]) -> list[Location]:
        """The kept locations of the next page of the second pass."""
        timestamps = self._timestamps
        count = len(timestamps)
        at = self._next
        chosen = []
        ascending = self._order is Order.ASC
        for location in locations:
            stamp = location.timestamp
            # Skip kept timestamps that the second pass no longer finds (expired meanwhile).
            while at < count and (timestamps[at] < stamp if ascending else timestamps[at] > stamp):
                at += 1
            if at < count and timestamps[at] == stamp:
                chosen.append(location)
                at += 1
        self._next = at
        return chosen


async def kept_timestamps(
    service: TrackService, query: HistoryQuery, simplification: Simplification
) -> KeptTimestamps:
    """The first pass over `query`'s window (its end fixed by the caller)."""
    lats: array[float] = array("d")
    lons: array[float] = array("d")
    stamps: array[int] = array("q")
    page_query = msgspec.structs.replace(query, limit=MAX_PAGE_SIZE, token=None)
    while True:
        page = await service.history(page_query)
        for location in page.items:
            lats.append(location.latitude)
            lons.append(location.longitude)
            stamps.append(location.timestamp)
        if page.next_token is None:
            break
        page_query = msgspec.structs.replace(page_query, token=page.next_token)
    # Seconds of CPU for a long or unkind track: in a thread, so the event loop keeps serving.
    kept = await asyncio.to_thread(simplification.kept, Columns(lats, lons))
    return KeptTimestamps(array("q", map(stamps.__getitem__, kept)), query.order)


def _columns(locations: Sequence[Location]) -> Columns:
    return Columns(
        array("d", [location.latitude for location in locations]),
        array("d", [location.longitude for location in locations]),
    )
