"""The adapters the contract suites run over.

Every suite in this folder takes the `repos` fixture, so it runs once per adapter factory below.
To add an adapter, write an async context manager that yields its Repos and list it in
REPOSITORY_FACTORIES; for DynamoDB, e.g.:

    @contextlib.asynccontextmanager
    async def dynamodb_repos() -> AsyncIterator[Repos]:
        async with dynamodb_tables(endpoint) as tables:  # fresh tables on an emulator
            yield Repos(locations=DynamoLocations(...), devices=DynamoDevices(...))

    REPOSITORY_FACTORIES["aws"] = dynamodb_repos
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import pytest

from trackstore.memory import MemoryDeviceRepository, MemoryLocationRepository, MemoryStore
from trackstore.ports import DeviceRepository, LocationRepository


@dataclass(frozen=True)
class Repos:
    """A location and a device repository over one store, as TrackService is given them."""

    locations: LocationRepository
    devices: DeviceRepository


@contextlib.asynccontextmanager
async def memory_repos() -> AsyncIterator[Repos]:
    store = MemoryStore()
    yield Repos(locations=MemoryLocationRepository(store), devices=MemoryDeviceRepository(store))


REPOSITORY_FACTORIES: dict[str, Callable[[], AbstractAsyncContextManager[Repos]]] = {
    "memory": memory_repos,
}


@pytest.fixture(params=list(REPOSITORY_FACTORIES))
async def repos(request: pytest.FixtureRequest) -> AsyncIterator[Repos]:
    async with REPOSITORY_FACTORIES[request.param]() as built:
        assert isinstance(built.locations, LocationRepository)
        assert isinstance(built.devices, DeviceRepository)
        yield built
