"""DynamoDB adapters under the failures real tables produce and emulators never do: unprocessed
items, throttling, oversized and duplicate batches (against dynalite, the strict emulator).

The faults come from `FaultyDynamo` (tests/faults.py), an HTTP proxy in front of dynalite that
answers as DynamoDB does: a throttled request gets a real 400 ProvisionedThroughputExceeded
answer, which botocore parses and retries (four attempts in all, its standard mode) before the
adapter sees it; unprocessed items come back in a 200 answer. The checks read dynalite directly.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest

from tests.faults import FaultyDynamo
from tests.helpers import RECENT_MS, SECOND_MS, arrived, location
from trackstore.domain import HistoryQuery
from trackstore.dynamodb import DynamoDeviceRepository, DynamoLocationRepository, dynamodb_client
from trackstore.dynamodb.batch import BatchWriter
from trackstore.dynamodb.tables import devices_table, ensure_table, locations_table
from trackstore.errors import UNAVAILABLE, Error

# trackstore.aws.client_config: retries {"mode": "standard", "max_attempts": 3}, where botocore
# counts retries: the first attempt and three more; before them, trackstore.aws_direct's straight
# attempt at a hot call.
BOTOCORE_ATTEMPTS = 4 + 1


@pytest.fixture
async def tables(dynalite_endpoint: str) -> AsyncIterator[tuple[Any, str, str]]:
    """A client straight to dynalite, and fresh Locations and Devices tables."""
    suffix = uuid.uuid4().hex[:12]
    async with dynamodb_client("us-east-1", endpoint_url=dynalite_endpoint) as client:
        locations, devices = f"locations-{suffix}", f"devices-{suffix}"
        for definition in (locations_table(locations), devices_table(devices)):
            await client.create_table(**definition)
            # Polled here: ensure_table looks once a second, and dynalite says CREATING at first.
            deadline = time.monotonic() + 10
            while True:
                described = await client.describe_table(TableName=definition["TableName"])
                if described["Table"]["TableStatus"] == "ACTIVE":
                    break
                assert time.monotonic() < deadline, f"{definition['TableName']} not ACTIVE"
                await asyncio.sleep(0.01)
            await ensure_table(client, definition)
        yield client, locations, devices
        for table in (locations, devices):
            await client.delete_table(TableName=table)


@pytest.fixture
def proxy(dynalite_endpoint: str) -> Iterator[FaultyDynamo]:
    """The proxy, with no fault until a test injects one."""
    with FaultyDynamo(dynalite_endpoint) as proxy:
        yield proxy


@pytest.fixture
async def faulty_client(proxy: FaultyDynamo) -> AsyncIterator[Any]:
    """The adapters' client, through the proxy."""
    async with dynamodb_client("us-east-1", endpoint_url=proxy.url) as client:
        yield client


def many(count: int, device_id: str = "bus-1") -> list[Any]:
    return [location(device_id, RECENT_MS + i * SECOND_MS) for i in range(count)]


async def stored_count(client: Any, table: str, device_id: str = "bus-1") -> int:
    repo = DynamoLocationRepository(client, table, ttl_days=30, date_shards=4)
    page = await repo.history(HistoryQuery(device_id=device_id, limit=1000))
    return len(page.items)


async def test_a_write_of_more_than_25_items_with_duplicate_keys_stores_each_key_once(
    tables: tuple[Any, str, str],
) -> None:
    client, locations, _ = tables
    repo = DynamoLocationRepository(client, locations, ttl_days=30, date_shards=4)
    items = many(70)
    # Duplicated keys inside one call: DynamoDB refuses such a batch outright.
    items += [location("bus-1", items[3].timestamp, latitude=1.0), items[40], items[41]]

    await repo.put_many(arrived(items))

    assert await stored_count(client, locations) == 70
    page = await repo.history(HistoryQuery(device_id="bus-1", start=items[3].timestamp, limit=1))
    assert page.items[0].latitude == 1.0  # the last write of a key is the one kept


async def test_unprocessed_items_are_retried_until_stored(
    tables: tuple[Any, str, str], proxy: FaultyDynamo, faulty_client: Any
) -> None:
    client, locations, _ = tables
    proxy.inject("BatchWriteItem", "unprocessed", times=5)
    repo = DynamoLocationRepository(faulty_client, locations, ttl_days=30, date_shards=4)

    await repo.put_many(arrived(many(30)))

    assert await stored_count(client, locations) == 30
    assert proxy.done["BatchWriteItem", "unprocessed"] == 5
    assert proxy.handed_back["BatchWriteItem"] >= 5  # each time, a whole chunk handed back
    assert proxy.requests["BatchWriteItem"] == 2 + 5  # two chunks, five rounds handed back


async def test_items_still_unprocessed_at_the_deadline_fail_the_write(
    tables: tuple[Any, str, str], proxy: FaultyDynamo, faulty_client: Any
) -> None:
    client, locations, _ = tables
    proxy.inject("BatchWriteItem", "unprocessed", times=10**6)
    writer = BatchWriter(faulty_client, locations, deadline_s=0.5)
    item = b'{"deviceId": {"S": "bus-1"}, "timestamp": {"N": "1"}}'

    with pytest.raises(Error) as raised:
        await writer.put([msgspec.Raw(b'{"PutRequest": {"Item": %s}}' % item)])

    assert raised.value.code is UNAVAILABLE
    assert writer.retries >= 2
    # Every round was sent to DynamoDB and handed back whole.
    assert proxy.done["BatchWriteItem", "unprocessed"] == proxy.requests["BatchWriteItem"] >= 2
    assert await stored_count(client, locations) == 0


async def test_throttling_botocore_absorbs_is_retried_and_never_seen(
    tables: tuple[Any, str, str], proxy: FaultyDynamo, faulty_client: Any
) -> None:
    client, locations, _ = tables
    location_repo = DynamoLocationRepository(client, locations, ttl_days=30, date_shards=4)
    await location_repo.put_many(arrived(many(3)))
    proxy.inject("Query", "throttle")
    proxy.inject("BatchWriteItem", "throttle")
    through_proxy = DynamoLocationRepository(faulty_client, locations, 30, date_shards=4)

    page = await through_proxy.history(HistoryQuery(device_id="bus-1"))
    await through_proxy.put_many(arrived(many(5, device_id="bus-2")))

    assert len(page.items) == 3
    assert await stored_count(client, locations, "bus-2") == 5
    # Each call was answered 400 once and sent again by botocore itself.
    assert proxy.done["Query", "throttled"] == proxy.requests["Query"] - 1 == 1
    assert proxy.done["BatchWriteItem", "throttled"] == proxy.requests["BatchWriteItem"] - 1 == 1


async def test_throttled_reads_surface_as_unavailable_with_a_retry_hint(
    tables: tuple[Any, str, str], proxy: FaultyDynamo, faulty_client: Any
) -> None:
    _, locations, devices = tables
    # More throttles than botocore's own retries absorb: the adapter must say so plainly.
    for operation in ("Query", "GetItem", "BatchGetItem"):
        proxy.inject(operation, "throttle", times=100)
    location_repo = DynamoLocationRepository(faulty_client, locations, ttl_days=30, date_shards=4)
    device_repo = DynamoDeviceRepository(faulty_client, devices)
    calls = {
        "Query": [
            location_repo.history(HistoryQuery(device_id="bus-1")),
            location_repo.latest("bus-1"),
        ],
        "GetItem": [device_repo.get("bus-1")],
        "BatchGetItem": [device_repo.marks(["bus-1"])],
    }

    # At once: each waits out botocore's backoff (up to 1 s, then 2 s) before it gives up.
    outcomes = await asyncio.gather(
        *(call for made in calls.values() for call in made), return_exceptions=True
    )

    for outcome in outcomes:
        assert isinstance(outcome, Error), outcome
        assert outcome.code is UNAVAILABLE
        assert outcome.retry_after is not None
    for operation, made in calls.items():
        # Every attempt botocore made was answered 400, and it made all of them (a latest()
        # may query several days' partitions at once, each with its attempts).
        assert proxy.requests[operation] == proxy.done[operation, "throttled"]
        assert proxy.requests[operation] >= BOTOCORE_ATTEMPTS * len(made), operation
    assert proxy.requests["GetItem"] == proxy.requests["BatchGetItem"] == BOTOCORE_ATTEMPTS, (
        proxy.requests
    )


async def test_an_unreachable_dynamodb_is_unavailable_not_a_crash() -> None:
    from tests.aws_emulators import free_port

    async with dynamodb_client("us-east-1", endpoint_url=f"http://127.0.0.1:{free_port()}") as c:
        repo = DynamoDeviceRepository(c, "devices")
        with pytest.raises(Error) as raised:
            await repo.ping()
    assert raised.value.code is UNAVAILABLE
