"""TrackService over the in-memory adapters: ingest exactness, queries, and the core's imports."""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import trackstore
from tests.faults import RefusingLocations
from tests.helpers import (
    HOUR_MS,
    MINUTE_MS,
    NOW_MS,
    SECOND_MS,
    TTL_DAYS,
    TTL_MS,
    all_pages,
    payload,
    resent,
    stream_record,
    with_raw_value,
)
from trackstore.clock import FakeClock
from trackstore.domain import (
    Device,
    DeviceStatus,
    HistoryQuery,
    Location,
    Order,
    StreamRecord,
)
from trackstore.errors import CONFLICT, INVALID, NOT_FOUND, Error
from trackstore.memory import MemoryDeviceRepository, MemoryLocationRepository, MemoryStore
from trackstore.ports import DeviceRepository, LocationRepository
from trackstore.records import Reason
from trackstore.service import TrackService


class World:
    """A TrackService over one MemoryStore, with a fake clock at NOW_MS."""

    def __init__(
        self,
        wrap_devices: Callable[[DeviceRepository], DeviceRepository] | None = None,
        wrap_locations: Callable[[LocationRepository], LocationRepository] | None = None,
    ) -> None:
        self.clock = FakeClock(NOW_MS)
        self.store = MemoryStore()
        locations: LocationRepository = MemoryLocationRepository(self.store)
        self.locations = wrap_locations(locations) if wrap_locations else locations
        devices: DeviceRepository = MemoryDeviceRepository(self.store)
        self.devices = wrap_devices(devices) if wrap_devices else devices
        self.service = TrackService(
            locations=self.locations, devices=self.devices, clock=self.clock, ttl_days=TTL_DAYS
        )

    async def stored(self, device_id: str = "bus-1") -> list[Location]:
        """Every location stored for the device, straight from the repository."""
        pages = await all_pages(
            lambda token: self.locations.history(
                HistoryQuery(device_id=device_id, limit=1000, token=token)
            )
        )
        return [item for page in pages for item in page]

    async def device(self, device_id: str = "bus-1") -> Device:
        return await self.service.device(device_id)


LATIN_1_RECORD = stream_record(payload(region="Königsberg")).data.decode().encode("latin-1")


def at(
    offset_ms: int,
    device_id: str = "bus-1",
    *,
    sequence_number: str | None = None,
    sub_sequence_number: int = 0,
    **fields: Any,
) -> StreamRecord:
    """A valid record of `device_id` at NOW_MS + offset_ms, arriving a second later; the next
    sequence number of the stream unless given."""
    timestamp = NOW_MS + offset_ms
    body = payload(deviceId=device_id, timestamp=timestamp, **fields)
    return stream_record(
        body,
        arrival_ms=timestamp + 1000,
        sequence_number=sequence_number,
        sub_sequence_number=sub_sequence_number,
    )


# -- ingest: counting ----------------------------------------------------------------------------


async def test_ingest_counts_received_stored_duplicates_and_rejections() -> None:
    world = World()
    bad = stream_record(payload(latitude=123))
    batch = [
        at(-3 * MINUTE_MS),
        at(-2 * MINUTE_MS),
        at(-2 * MINUTE_MS, latitude=1.0),  # same (deviceId, timestamp): a duplicate
        bad,
        at(-1 * MINUTE_MS, device_id="bus-2"),
    ]

    result = await world.service.ingest(batch)

    assert (result.received, result.stored, result.duplicates) == (5, 3, 1)
    assert [(r.reason, r.record) for r in result.rejections] == [(Reason.INVALID_LATITUDE, bad)]
    assert (await world.device("bus-1")).total_updates == 2
    assert (await world.device("bus-2")).total_updates == 1


async def test_an_empty_batch_stores_nothing() -> None:
    world = World()

    result = await world.service.ingest([])

    assert (result.received, result.stored, result.duplicates, result.rejections) == (0, 0, 0, [])
    assert world.store.devices == {}


@pytest.mark.parametrize(
    "bad_data",
    [
        pytest.param(b"not json at all", id="not-json"),
        pytest.param(b"[1, 2, 3]", id="json-array"),
        pytest.param(
            with_raw_value(payload(), "latitude", "1" + "0" * 400), id="huge-number-latitude"
        ),
        pytest.param(LATIN_1_RECORD, id="latin-1-encoded"),
        pytest.param(payload(timestamp="2027-01-15T08:00:00"), id="naive-timestamp"),
        pytest.param(payload(heading=360), id="heading-360"),
        pytest.param(payload(timestamp=NOW_MS - TTL_MS - 1), id="too-old"),
    ],
)
async def test_a_bad_record_never_blocks_the_good_ones_around_it(bad_data: Any) -> None:
    world = World()
    good_before, good_after = at(-2 * MINUTE_MS), at(-1 * MINUTE_MS)

    result = await world.service.ingest([good_before, stream_record(bad_data), good_after])

    assert result.stored == 2
    assert len(result.rejections) == 1
    stored = [loc.timestamp for loc in await world.stored()]
    assert stored == [NOW_MS - 2 * MINUTE_MS, NOW_MS - 1 * MINUTE_MS]
    assert (await world.device()).total_updates == 2


async def test_the_same_device_and_timestamp_twice_in_one_batch_is_stored_once() -> None:
    world = World()
    first = at(-MINUTE_MS, latitude=10.0)
    second = at(-MINUTE_MS, latitude=20.0)

    result = await world.service.ingest([first, second])

    assert (result.stored, result.duplicates) == (1, 1)
    stored = await world.stored()
    assert [loc.latitude for loc in stored] == [10.0]  # the first one stands
    device = await world.device()
    assert device.total_updates == 1
    assert device.last_location == stored[0]


async def test_locations_and_the_device_record_hold_what_was_ingested() -> None:
    world = World()
    batch = [at(-3 * MINUTE_MS, speed=30.0), at(-1 * MINUTE_MS, speed=50.0), at(-2 * MINUTE_MS)]

    await world.service.ingest(batch)

    stored = await world.stored()
    assert [loc.timestamp for loc in stored] == [NOW_MS - m * MINUTE_MS for m in (3, 2, 1)]
    assert stored[0].received_at == NOW_MS - 3 * MINUTE_MS + 1000
    device = await world.device()
    assert device.last_seen == NOW_MS - MINUTE_MS
    assert device.last_location == stored[-1]
    assert device.last_location is not None
    assert device.last_location.speed == 50.0
    assert device.total_updates == 3


# -- ingest: at-least-once delivery --------------------------------------------------------------
# The crash and replay scenarios run over every adapter, DynamoDB included: tests/contract/
# test_ingest.py, with the crash wrappers of tests/faults.py.


async def test_a_producers_resend_in_a_later_batch_is_not_counted_again() -> None:
    world = World()
    first, newest = at(-3 * MINUTE_MS), at(-2 * MINUTE_MS)
    await world.service.ingest([first, newest])

    await world.service.ingest([resent(newest, arrival_ms=NOW_MS)])
    await world.service.ingest([resent(first, arrival_ms=NOW_MS), at(-MINUTE_MS)])

    device = await world.device()
    assert device.total_updates == 3
    assert device.last_seen == NOW_MS - MINUTE_MS
    assert len(await world.stored()) == 3


async def test_an_out_of_order_record_is_counted_but_never_moves_last_seen_back() -> None:
    world = World()
    await world.service.ingest([at(-MINUTE_MS)])
    newest = (await world.device()).last_location

    await world.service.ingest([at(-10 * MINUTE_MS)])

    assert [loc.timestamp for loc in await world.stored()] == [
        NOW_MS - 10 * MINUTE_MS,
        NOW_MS - MINUTE_MS,
    ]
    device = await world.device()
    assert device.total_updates == 2
    assert device.last_seen == NOW_MS - MINUTE_MS
    assert device.last_location == newest


async def test_a_batch_with_newer_and_older_records_counts_each_once() -> None:
    world = World()
    await world.service.ingest([at(-5 * MINUTE_MS)])

    await world.service.ingest([at(-MINUTE_MS), at(-8 * MINUTE_MS), at(-5 * MINUTE_MS)])

    device = await world.device()
    assert device.total_updates == 3
    assert device.last_seen == NOW_MS - MINUTE_MS


# -- queries -------------------------------------------------------------------------------------


async def test_history_without_start_begins_at_the_oldest_retained_location() -> None:
    world = World()
    await world.service.ingest([at(-HOUR_MS), at(-MINUTE_MS)])
    world.clock.advance(TTL_MS - 30 * MINUTE_MS)  # the first one is now past retention

    page = await world.service.history(HistoryQuery(device_id="bus-1"))
    from_zero = await world.service.history(HistoryQuery(device_id="bus-1", start=0))
    newest_first = await world.service.history(HistoryQuery(device_id="bus-1", order=Order.DESC))

    assert [loc.timestamp for loc in page.items] == [NOW_MS - MINUTE_MS]
    assert [loc.timestamp for loc in from_zero.items] == [NOW_MS - MINUTE_MS]
    assert [loc.timestamp for loc in newest_first.items] == [NOW_MS - MINUTE_MS]
    assert len(await world.stored()) == 2  # still stored, as DynamoDB keeps it until its sweep


async def test_history_ending_before_the_retention_period_is_empty() -> None:
    world = World()
    await world.service.ingest([at(-HOUR_MS)])
    world.clock.advance(TTL_MS)

    page = await world.service.history(HistoryQuery(device_id="bus-1", end=NOW_MS - MINUTE_MS))

    assert (page.items, page.next_token) == ([], None)


async def test_latest_of_a_device_whose_only_location_expired_is_not_found() -> None:
    world = World()
    await world.service.ingest([at(-HOUR_MS)])
    assert (await world.service.latest("bus-1")).timestamp == NOW_MS - HOUR_MS
    world.clock.advance(TTL_MS)

    with pytest.raises(Error) as raised:
        await world.service.latest("bus-1")

    assert raised.value.code is NOT_FOUND
    assert await world.locations.latest("bus-1") is not None  # stored, but not shown


async def test_latest_of_an_unknown_device_is_not_found() -> None:
    with pytest.raises(Error) as raised:
        await World().service.latest("bus-404")

    assert raised.value.code is NOT_FOUND


async def test_history_honours_an_inclusive_window() -> None:
    world = World()
    await world.service.ingest([at(-m * MINUTE_MS) for m in range(1, 6)])

    page = await world.service.history(
        HistoryQuery(device_id="bus-1", start=NOW_MS - 4 * MINUTE_MS, end=NOW_MS - 2 * MINUTE_MS)
    )

    assert [loc.timestamp for loc in page.items] == [NOW_MS - m * MINUTE_MS for m in (4, 3, 2)]


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(
            HistoryQuery(device_id="bus-1", start=NOW_MS, end=NOW_MS - 1), id="start-after-end"
        ),
        pytest.param(HistoryQuery(device_id="bus 1"), id="bad-device-id"),
        pytest.param(HistoryQuery(device_id="bus-1", limit=0), id="limit-0"),
        pytest.param(HistoryQuery(device_id="bus-1", limit=1001), id="limit-1001"),
        pytest.param(HistoryQuery(device_id="bus-1", token="not-a-token"), id="garbage-token"),
    ],
)
async def test_an_invalid_history_query_is_rejected(query: HistoryQuery) -> None:
    world = World()
    await world.service.ingest([at(-MINUTE_MS)])

    with pytest.raises(Error) as raised:
        await world.service.history(query)

    assert raised.value.code is INVALID


async def test_registering_twice_is_a_conflict() -> None:
    world = World()
    await world.service.register("bus-1", "Bus one", {"depot": "north"})

    with pytest.raises(Error) as raised:
        await world.service.register("bus-1", "Bus one again", None)

    assert raised.value.code is CONFLICT
    device = await world.device()
    assert (device.name, device.metadata) == ("Bus one", {"depot": "north"})


async def test_registering_a_device_that_reported_keeps_its_activity() -> None:
    world = World()
    await world.service.ingest([at(-3 * MINUTE_MS), at(-MINUTE_MS)])
    world.clock.advance(MINUTE_MS)

    registered = await world.service.register("bus-1", "Bus one", {"depot": "north"})

    assert registered.registered_at == NOW_MS + MINUTE_MS
    device = await world.device()
    assert device == registered
    assert (device.last_seen, device.total_updates) == (NOW_MS - MINUTE_MS, 2)
    assert device.last_location is not None
    assert device.last_location.timestamp == NOW_MS - MINUTE_MS


async def test_reporting_after_registering_keeps_the_registration() -> None:
    world = World()
    await world.service.register("bus-1", "Bus one", None)

    await world.service.ingest([at(-MINUTE_MS)])

    device = await world.device()
    assert (device.name, device.registered_at, device.total_updates) == ("Bus one", NOW_MS, 1)


@pytest.mark.parametrize(
    ("device_id", "name", "metadata"),
    [
        pytest.param("bus 1", None, None, id="bad-device-id"),
        pytest.param("bus-1", "", None, id="empty-name"),
        pytest.param("bus-1", "n" * 257, None, id="long-name"),
        pytest.param("bus-1", None, {"blob": "x" * 5000}, id="large-metadata"),
    ],
)
async def test_an_invalid_registration_is_rejected_and_stores_nothing(
    device_id: str, name: str | None, metadata: dict[str, object] | None
) -> None:
    world = World()

    with pytest.raises(Error) as raised:
        await world.service.register(device_id, name, metadata)

    assert raised.value.code is INVALID
    assert world.store.devices == {}


async def test_an_unknown_device_is_not_found() -> None:
    with pytest.raises(Error) as raised:
        await World().service.device("bus-404")

    assert raised.value.code is NOT_FOUND


async def test_device_status_is_registered_then_active_then_inactive_after_5_minutes() -> None:
    world = World()
    await world.service.register("bus-1", None, None)
    assert (await world.device()).status(world.clock()) is DeviceStatus.REGISTERED

    await world.service.ingest([at(0)])
    world.clock.advance(5 * MINUTE_MS)
    assert (await world.device()).status(world.clock()) is DeviceStatus.ACTIVE

    world.clock.advance(1)
    assert (await world.device()).status(world.clock()) is DeviceStatus.INACTIVE


async def test_health_reports_each_repository() -> None:
    world = World()
    assert await world.service.health() == {"locations": None, "devices": None}

    world.store.available = False
    checks = await world.service.health()

    assert set(checks) == {"locations", "devices"}
    assert all(checks.values())


async def test_devices_pages_through_every_device() -> None:
    world = World()
    await world.service.ingest([at(-MINUTE_MS, device_id=f"bus-{n}") for n in range(5)])

    first = await world.service.devices(limit=3, token=None)
    assert first.next_token is not None
    second = await world.service.devices(limit=3, token=first.next_token)

    ids = [d.device_id for d in first.items + second.items]
    assert sorted(ids) == [f"bus-{n}" for n in range(5)]


# -- the core imports no adapter and no framework ------------------------------------------------

CORE_MODULES = (
    *("domain", "errors", "ports", "records", "service", "exactly_once", "values"),
    *(
        "timefmt",
        "paging",
        "clock",
        "leasing",
        "geo",
        "geo_areas",
        "snapshot",
        "trips",
        "track_formats",
        "simplify",
        "track_simplification",
        "erasure",
    ),
)
ALLOWED_THIRD_PARTY = {"msgspec"}


def foreign_imports(source: str, module: str) -> list[str]:
    """Modules imported by `module`'s source that are neither standard library, msgspec nor a
    core module of trackstore."""
    package = module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names = [base]
            if base == "trackstore":  # `from trackstore import memory` imports trackstore.memory
                names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [name for name in names if not _allowed(name)]
    return found


def _allowed(name: str) -> bool:
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names or top == "__future__" or top in ALLOWED_THIRD_PARTY:
        return True
    if top != "trackstore":
        return False
    parts = name.split(".")
    if len(parts) == 1:
        return True
    # trackstore.__version__ is an attribute of the package, not a module
    return len(parts) == 2 and (parts[1] in CORE_MODULES or parts[1].startswith("__"))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import json\nfrom typing import Any\nimport msgspec.json", []),
        ("from trackstore.domain import Location\nfrom . import errors", []),
        ("from trackstore import __version__, clock", []),
        ("import boto3", ["boto3"]),
        ("from litestar import Litestar", ["litestar"]),
        ("def f():\n    from aiobotocore.session import get_session", ["aiobotocore.session"]),
        ("from trackstore.memory import MemoryStore", ["trackstore.memory"]),
        ("from trackstore import web", ["trackstore.web"]),
        ("from .dynamodb.locations import X", ["trackstore.dynamodb.locations"]),
        ("import trackstore.metrics", ["trackstore.metrics"]),
    ],
)
def test_the_import_scanner_tells_core_from_foreign_imports(
    source: str, expected: list[str]
) -> None:
    assert foreign_imports(source, "trackstore.service") == expected


@pytest.mark.parametrize("name", CORE_MODULES)
def test_the_core_imports_only_the_standard_library_msgspec_and_the_core(name: str) -> None:
    path = Path(trackstore.__file__).parent / f"{name}.py"

    assert foreign_imports(path.read_text(encoding="utf-8"), f"trackstore.{name}") == []


async def test_a_location_the_store_refuses_is_rejected_and_the_rest_stored_and_counted() -> None:
    world = World(wrap_locations=RefusingLocations)
    await world.service.ingest([at(-10 * SECOND_MS)])  # the shard is known: later ones are fresh
    batch = [at(-s * SECOND_MS, battery=13.0 if s in (4, 7) else 50.0) for s in range(9, 0, -1)]

    result = await world.service.ingest(batch)

    assert sorted(r.record.sequence_number for r in result.rejections) == sorted(
        batch[i].sequence_number for i in (2, 5)
    )
    assert {r.reason for r in result.rejections} == {Reason.UNSTORABLE}
    assert result.stored == 7
    device = await world.device()
    assert device.total_updates == 8
    assert len(await world.stored()) == 8
    assert device.last_seen == NOW_MS - SECOND_MS
    refusing = world.locations
    assert isinstance(refusing, RefusingLocations)
    assert refusing.refused_calls <= 8  # found by halving, not one call per record
