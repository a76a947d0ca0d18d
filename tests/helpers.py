"""Builders shared by the unit and contract tests: stream records, locations, activities, paging."""

from __future__ import annotations

import collections
import itertools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import msgspec

from trackstore.clock import wall_clock_ms
from trackstore.domain import (
    Arrival,
    DeviceActivity,
    DeviceMark,
    Location,
    Page,
    StreamRecord,
    shard_of,
    stream_position,
)

T = TypeVar("T")

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

NOW_MS = 1_800_000_000_000  # 2027-01-15T08:00:00.000Z
NOW_ISO = "2027-01-15T08:00:00Z"
TTL_DAYS = 30
TTL_MS = TTL_DAYS * DAY_MS

# For suites that may run against real stores, whose TTL filter uses the wall clock: an hour ago,
# in whole seconds.
RECENT_MS = (wall_clock_ms() // SECOND_MS) * SECOND_MS - HOUR_MS

SHARD_ID = "shardId-000000000000"

OMIT: Any = object()  # payload(field=OMIT) leaves the field out

# Kinesis numbers each shard on its own: every shard's numbers start at the same value here, so
# a test that compares two shards' numbers by mistake sees them collide.
_sequence_numbers: dict[str, itertools.count[int]] = collections.defaultdict(
    lambda: itertools.count(49_000_000_000)
)


def payload(**fields: Any) -> dict[str, Any]:
    """A valid record's JSON object (bus-1 at NOW_MS in Berlin), with `fields` set or OMITted."""
    body: dict[str, Any] = {
        "deviceId": "bus-1",
        "timestamp": NOW_MS,
        "latitude": 52.52,
        "longitude": 13.405,
    }
    body.update(fields)
    return {name: value for name, value in body.items() if value is not OMIT}


def with_raw_value(body: dict[str, Any], field: str, literal: str) -> bytes:
    """`body` as JSON with `field` holding `literal` verbatim (numbers no encoder would write)."""
    marker = "__raw_value__"
    encoded = msgspec.json.encode({**body, field: marker})
    return encoded.replace(f'"{marker}"'.encode(), literal.encode())


def stream_record(
    body: dict[str, Any] | bytes,
    *,
    arrival_ms: int = NOW_MS,
    sequence_number: str | None = None,
    sub_sequence_number: int = 0,
    shard_id: str = SHARD_ID,
) -> StreamRecord:
    """A record as the stream hands it out; each call gets a new sequence number unless given
    (records deaggregated from one KPL record share it and differ in `sub_sequence_number`)."""
    if isinstance(body, bytes):
        data, partition_key = body, "unknown"
    else:
        data = msgspec.json.encode(body)
        partition_key = str(body.get("deviceId", body.get("busId", "unknown")))
    return StreamRecord(
        data=data,
        partition_key=partition_key,
        shard_id=shard_id,
        sequence_number=sequence_number or new_sequence_number(shard_id),
        sub_sequence_number=sub_sequence_number,
        arrival_ms=arrival_ms,
    )


def resent(record: StreamRecord, *, arrival_ms: int, shard_id: str | None = None) -> StreamRecord:
    """The same data sent again by its producer: a new sequence number and arrival time (on
    another shard when given: a producer that changed its partition key)."""
    shard = shard_id or record.shard_id
    return msgspec.structs.replace(
        record,
        shard_id=shard,
        sequence_number=new_sequence_number(shard),
        sub_sequence_number=0,
        arrival_ms=arrival_ms,
    )


def position_of(record: StreamRecord) -> str:
    """The stream position TrackService gives the record's location."""
    return stream_position(record.shard_id, record.sequence_number, record.sub_sequence_number)


def new_sequence_number(shard_id: str = SHARD_ID) -> str:
    """A sequence number of the shard after every one handed out for it so far."""
    return str(next(_sequence_numbers[shard_id]))


def new_position(sub_sequence_number: int = 0, shard_id: str = SHARD_ID) -> str:
    """A stream position of the shard after every position handed out for it so far."""
    return stream_position(shard_id, new_sequence_number(shard_id), sub_sequence_number)


def mark(last_seen: int | None, *positions: str) -> DeviceMark:
    """A device mark with `lastSeen` and the given positions (one per shard)."""
    return DeviceMark(
        last_seen=last_seen, applied_through={shard_of(p): p for p in positions} or None
    )


def arrived(locations: Iterable[Location]) -> list[Arrival]:
    """The locations as arrivals, each from a new stream position (what put_many takes)."""
    return [Arrival(location, new_position()) for location in locations]


def location(device_id: str = "bus-1", timestamp: int = NOW_MS, **fields: Any) -> Location:
    """A Location with plausible coordinates; any other field may be given."""
    values: dict[str, Any] = {"latitude": 52.52, "longitude": 13.405, "received_at": timestamp}
    values.update(fields)
    return Location(device_id=device_id, timestamp=timestamp, **values)


def activity(
    device_id: str,
    expected: DeviceMark | None,
    *,
    newest: Location | None = None,
    added: int = 0,
    applied_through: str | None = None,
) -> DeviceActivity:
    """A DeviceActivity; applied through a new position (of SHARD_ID) unless one is given."""
    position = applied_through if applied_through is not None else new_position()
    return DeviceActivity(
        device_id=device_id,
        expected=expected,
        newest=newest,
        added=added,
        applied_through={shard_of(position): position},
    )


async def all_pages(
    fetch: Callable[[str | None], Awaitable[Page[T]]], max_pages: int = 1000
) -> list[list[T]]:
    """Follows next tokens from the first page until there is none; returns every page's items.

    An adapter may hand out a token whose page turns out empty (DynamoDB's LastEvaluatedKey means
    "maybe more"), so empty pages are allowed; a listing that never ends is not.
    """
    pages: list[list[T]] = []
    token: str | None = None
    while True:
        page = await fetch(token)
        pages.append(page.items)
        token = page.next_token
        if token is None:
            return pages
        assert len(pages) < max_pages, "paging never reaches a page without next_token"
