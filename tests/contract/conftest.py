"""The adapters the contract suites run over: memory, and DynamoDB on two emulators.

Every suite in this folder takes the `repos` fixture, so it runs once per adapter: the in-memory
fakes, DynamoDB served by dynalite (strict request validation) and by moto server (TTL,
conditions), and by LocalStack through testcontainers where a Docker engine runs (skipped
where none does). Each test gets fresh tables.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import pytest

from trackstore.dynamodb import DynamoDeviceRepository, DynamoLocationRepository, dynamodb_client
from trackstore.dynamodb.tables import TTL_ATTRIBUTE, devices_table, ensure_table, locations_table
from trackstore.memory import MemoryDeviceRepository, MemoryLocationRepository, MemoryStore
from trackstore.ports import DeviceRepository, LocationRepository

TTL_DAYS = 30
DATE_SHARDS = 4


@dataclass(frozen=True)
class Repos:
    """A location and a device repository over one store, as TrackService is given them."""

    locations: LocationRepository
    devices: DeviceRepository


@contextlib.asynccontextmanager
async def memory_repos() -> AsyncIterator[Repos]:
    store = MemoryStore()
    yield Repos(locations=MemoryLocationRepository(store), devices=MemoryDeviceRepository(store))


@contextlib.asynccontextmanager
async def dynamodb_repos(endpoint: str) -> AsyncIterator[Repos]:
    suffix = uuid.uuid4().hex[:12]
    async with dynamodb_client("us-east-1", endpoint_url=endpoint) as client:
        locations, devices = f"locations-{suffix}", f"devices-{suffix}"
        await ensure_table(client, locations_table(locations), TTL_ATTRIBUTE)
        await ensure_table(client, devices_table(devices))
        yield Repos(
            locations=DynamoLocationRepository(client, locations, TTL_DAYS, DATE_SHARDS),
            devices=DynamoDeviceRepository(client, devices),
        )
        for table in (locations, devices):
            await client.delete_table(TableName=table)


REPOSITORY_FACTORIES: dict[
    str, Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[Repos]]
] = {
    "memory": lambda _: memory_repos(),
    "dynalite": lambda request: dynamodb_repos(request.getfixturevalue("dynalite_endpoint")),
    "moto": lambda request: dynamodb_repos(request.getfixturevalue("moto_endpoint")),
    "localstack": lambda request: dynamodb_repos(request.getfixturevalue("localstack_endpoint")),
}


@pytest.fixture(params=list(REPOSITORY_FACTORIES))
async def repos(request: pytest.FixtureRequest) -> AsyncIterator[Repos]:
    async with REPOSITORY_FACTORIES[request.param](request) as built:
        assert isinstance(built.locations, LocationRepository)
        assert isinstance(built.devices, DeviceRepository)
        yield built
