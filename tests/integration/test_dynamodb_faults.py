"""DynamoDB adapters under the failures real tables produce and emulators never do: unprocessed
items, throttling, oversized and duplicate batches (against dynalite, the strict emulator)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.helpers import RECENT_MS, SECOND_MS, arrived, location
from trackstore.domain import HistoryQuery
from trackstore.dynamodb import DynamoDeviceRepository, DynamoLocationRepository, dynamodb_client
from trackstore.dynamodb.batch import BatchWriter
from trackstore.dynamodb.tables import devices_table, ensure_table, locations_table
from trackstore.errors import UNAVAILABLE, Error


class FlakyClient:
    """The real client, except that the first `unprocessed` BatchWriteItem calls write nothing
    and hand every request back, and the first `throttled` calls of any operation in
    `throttle_ops` raise ProvisionedThroughputExceededException."""

    def __init__(
        self,
        client: Any,
        unprocessed: int = 0,
        throttled: int = 0,
        throttle_ops: tuple[str, ...] = (),
    ) -> None:
        self._client = client
        self.unprocessed = unprocessed
        self.throttled = throttled
        self._throttle_ops = throttle_ops
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._client, name)

        async def call(**kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            if name in self._throttle_ops and self.throttled > 0:
                self.throttled -= 1
                raise ClientError(
                    {
                        "Error": {
                            "Code": "ProvisionedThroughputExceededException",
                            "Message": "slow",
                        }
                    },
                    name,
                )
            if name == "batch_write_item" and self.unprocessed > 0:
                self.unprocessed -= 1
                return {"UnprocessedItems": kwargs["RequestItems"]}
            return await real(**kwargs)

        return call


@pytest.fixture
async def tables(dynalite_endpoint: str) -> AsyncIterator[tuple[Any, str, str]]:
    suffix = uuid.uuid4().hex[:12]
    async with dynamodb_client("us-east-1", endpoint_url=dynalite_endpoint) as client:
        locations, devices = f"locations-{suffix}", f"devices-{suffix}"
        await ensure_table(client, locations_table(locations))
        await ensure_table(client, devices_table(devices))
        yield client, locations, devices


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


async def test_unprocessed_items_are_retried_until_stored(tables: tuple[Any, str, str]) -> None:
    client, locations, _ = tables
    flaky = FlakyClient(client, unprocessed=5)
    repo = DynamoLocationRepository(flaky, locations, ttl_days=30, date_shards=4)

    await repo.put_many(arrived(many(30)))

    assert await stored_count(client, locations) == 30
    assert flaky.calls["batch_write_item"] == 2 + 5  # two chunks, five rounds handed back


async def test_items_still_unprocessed_at_the_deadline_fail_the_write(
    tables: tuple[Any, str, str],
) -> None:
    client, locations, _ = tables
    writer = BatchWriter(
        FlakyClient(client, unprocessed=10**6),
        locations,
        key=lambda item: (item["deviceId"]["S"], item["timestamp"]["N"]),
        deadline_s=0.5,
    )

    with pytest.raises(Error) as raised:
        await writer.put([{"deviceId": {"S": "bus-1"}, "timestamp": {"N": "1"}}])

    assert raised.value.code is UNAVAILABLE
    assert writer.retries >= 2


async def test_throttled_reads_surface_as_unavailable_with_a_retry_hint(
    tables: tuple[Any, str, str],
) -> None:
    client, locations, devices = tables
    # More throttles than botocore's own retries would absorb: the adapter must say so plainly.
    flaky = FlakyClient(client, throttled=100, throttle_ops=("query", "get_item", "batch_get_item"))
    location_repo = DynamoLocationRepository(flaky, locations, ttl_days=30, date_shards=4)
    device_repo = DynamoDeviceRepository(flaky, devices)

    for call in (
        location_repo.history(HistoryQuery(device_id="bus-1")),
        location_repo.latest("bus-1"),
        device_repo.get("bus-1"),
        device_repo.marks(["bus-1"]),
    ):
        with pytest.raises(Error) as raised:
            await call
        assert raised.value.code is UNAVAILABLE
        assert raised.value.retry_after is not None


async def test_an_unreachable_dynamodb_is_unavailable_not_a_crash() -> None:
    from tests.aws_emulators import free_port

    async with dynamodb_client("us-east-1", endpoint_url=f"http://127.0.0.1:{free_port()}") as c:
        repo = DynamoDeviceRepository(c, "devices")
        with pytest.raises(Error) as raised:
            await repo.ping()
    assert raised.value.code is UNAVAILABLE
