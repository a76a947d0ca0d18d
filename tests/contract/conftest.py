"""The adapters the contract suites run over: memory, and DynamoDB on two emulators.

Every suite in this folder takes the `repos` fixture, so it runs once per adapter: the in-memory
fakes, DynamoDB served by dynalite (strict request validation) and by moto server (TTL,
conditions), and by LocalStack through testcontainers where a Docker engine runs (skipped
where none does). Each test gets fresh tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from trackstore.clock import FakeClock, wall_clock_ms
from trackstore.domain import StreamRecord
from trackstore.dynamodb import (
    DynamoDeviceRepository,
    DynamoLeaseStore,
    DynamoLocationRepository,
    dynamodb_client,
    leases_table,
)
from trackstore.dynamodb.tables import TTL_ATTRIBUTE, devices_table, ensure_table, locations_table
from trackstore.kinesis.client import ensure_stream, kinesis_client
from trackstore.kinesis.shards import list_shards
from trackstore.kinesis.source import KinesisStreamSource
from trackstore.leasing import Lease
from trackstore.memory import (
    MemoryDeviceRepository,
    MemoryLocationRepository,
    MemoryStore,
    MemoryStream,
    MemoryStreamSource,
)
from trackstore.memory.leases import MemoryLeaseStore
from trackstore.ports import DeviceRepository, LeaseStore, LocationRepository, StreamSource

TTL_DAYS = 30
DATE_SHARDS = 4


@dataclass(frozen=True)
class Repos:
    """A location and a device repository over one store, as TrackService is given them; the
    device repository stamps its changes with `clock`, which moves only when a test moves it."""

    locations: LocationRepository
    devices: DeviceRepository
    clock: FakeClock


@contextlib.asynccontextmanager
async def memory_repos() -> AsyncIterator[Repos]:
    store, clock = MemoryStore(), FakeClock(wall_clock_ms())
    yield Repos(
        locations=MemoryLocationRepository(store),
        devices=MemoryDeviceRepository(store, clock),
        clock=clock,
    )


@contextlib.asynccontextmanager
async def dynamodb_repos(endpoint: str) -> AsyncIterator[Repos]:
    suffix = uuid.uuid4().hex[:12]
    async with dynamodb_client("us-east-1", endpoint_url=endpoint) as client:
        locations, devices = f"locations-{suffix}", f"devices-{suffix}"
        await ensure_table(client, locations_table(locations), TTL_ATTRIBUTE)
        await ensure_table(client, devices_table(devices))
        clock = FakeClock(wall_clock_ms())
        yield Repos(
            locations=DynamoLocationRepository(client, locations, TTL_DAYS, DATE_SHARDS),
            devices=DynamoDeviceRepository(client, devices, clock=clock),
            clock=clock,
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


# -- the lease store and the stream source ------------------------------------------------------


@dataclass(frozen=True)
class Leases:
    """A lease table as the stream source is given one, and which adapter serves it."""

    adapter: str  # a key of LEASE_STORE_FACTORIES
    store: LeaseStore


@contextlib.asynccontextmanager
async def memory_leases() -> AsyncIterator[Leases]:
    yield Leases("memory", MemoryLeaseStore())


@contextlib.asynccontextmanager
async def dynamodb_leases(adapter: str, endpoint: str) -> AsyncIterator[Leases]:
    table = f"leases-{uuid.uuid4().hex[:12]}"
    async with dynamodb_client("us-east-1", endpoint_url=endpoint) as client:
        await client.create_table(**leases_table(table))
        # Polled here rather than by ensure_table, whose 1 s pause would dominate the suite.
        deadline = time.monotonic() + 10
        while (await client.describe_table(TableName=table))["Table"]["TableStatus"] != "ACTIVE":
            assert time.monotonic() < deadline, f"{table} not ACTIVE after 10 s"
            await asyncio.sleep(0.01)
        yield Leases(adapter, DynamoLeaseStore(client, table))
        await client.delete_table(TableName=table)


LEASE_STORE_FACTORIES: dict[
    str, Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[Leases]]
] = {
    "memory": lambda _: memory_leases(),
    "dynalite": lambda request: dynamodb_leases(
        "dynalite", request.getfixturevalue("dynalite_endpoint")
    ),
    "moto": lambda request: dynamodb_leases("moto", request.getfixturevalue("moto_endpoint")),
}


@pytest.fixture(params=list(LEASE_STORE_FACTORIES))
async def leases(request: pytest.FixtureRequest) -> AsyncIterator[Leases]:
    """An empty lease table per test, once per adapter."""
    async with LEASE_STORE_FACTORIES[request.param](request) as built:
        assert isinstance(built.store, LeaseStore)
        yield built


STREAM_BATCH_SIZE = 2  # small, so a few records make several batches per shard
STREAM_SHARDS = 2


class StreamUnderTest(Protocol):
    """A stream of STREAM_SHARDS shards and the sources that read it, as one adapter makes them.

    Every source it makes reads the same stream and keeps its place in the same store (the
    memory stream's checkpoints, or one lease table), as a restarted or second worker does."""

    adapter: str

    async def put(self, entries: list[tuple[str, bytes]]) -> list[StreamRecord]:
        """Appends (partition key, data) entries; returns each as stored (shard id and sequence
        number; arrival time not kept), in each shard's order."""

    def source(self, worker: str) -> StreamSource:
        """A new source (a new worker, after a restart or beside the others)."""


class MemoryStreamUnderTest:
    """A MemoryStream: its shards are fixed when it is made (no resharding), and its sources
    keep their places in the stream's own checkpoints."""

    adapter = "memory"

    def __init__(self) -> None:
        self.stream = MemoryStream(STREAM_SHARDS, clock=lambda: 0)

    async def put(self, entries: list[tuple[str, bytes]]) -> list[StreamRecord]:
        return self.stream.put_records(entries)

    def source(self, worker: str) -> StreamSource:
        return MemoryStreamSource(self.stream, STREAM_BATCH_SIZE, idle_seconds=0.02)


class KinesisStreamUnderTest:
    """A stream on kinesis-local (faithful on resharding) read by KinesisStreamSource, its
    leases in the given store. Short failover and idle times keep the suite fast."""

    failover_s = 1.0

    def __init__(self, adapter: str, client: Any, stream: str, leases: LeaseStore) -> None:
        self.adapter = adapter
        self.client = client
        self.stream = stream
        self.leases = leases

    async def put(self, entries: list[tuple[str, bytes]]) -> list[StreamRecord]:
        # One PutRecords call (kinesis-local takes ~40 ms a call). Kinesis does not promise to
        # keep a PutRecords request's order within a shard: the sequence numbers it gives are
        # the shard's order, so the records are returned sorted by them.
        answer = await self.client.put_records(
            StreamName=self.stream,
            Records=[{"PartitionKey": key, "Data": data} for key, data in entries],
        )
        assert answer.get("FailedRecordCount", 0) == 0, answer
        stored = [
            StreamRecord(
                data=data,
                partition_key=key,
                shard_id=result["ShardId"],
                sequence_number=result["SequenceNumber"],
                arrival_ms=0,
            )
            for (key, data), result in zip(entries, answer["Records"], strict=True)
        ]
        return sorted(stored, key=lambda record: (record.shard_id, int(record.sequence_number)))

    def source(self, worker: str) -> StreamSource:
        return KinesisStreamSource(
            self.client,
            self.stream,
            self.leases,
            worker,
            batch_size=STREAM_BATCH_SIZE,
            failover_s=self.failover_s,
            idle_s=0.02,
            shard_sync_s=0.5,
        )

    async def lease_table(self) -> dict[str, Lease]:
        return {lease.shard_id: lease for lease in await self.leases.list()}

    async def parents(self) -> dict[str, frozenset[str]]:
        return {
            shard.shard_id: shard.parents for shard in await list_shards(self.client, self.stream)
        }

    async def split(self) -> None:
        """Doubles the shards: every open shard closes, and two children continue it."""
        summary = await self.client.describe_stream_summary(StreamName=self.stream)
        shards = summary["StreamDescriptionSummary"]["OpenShardCount"]
        await self.client.update_shard_count(
            StreamName=self.stream, TargetShardCount=2 * shards, ScalingType="UNIFORM_SCALING"
        )
        deadline = time.monotonic() + 10
        while True:
            summary = await self.client.describe_stream_summary(StreamName=self.stream)
            if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                return
            assert time.monotonic() < deadline, f"{self.stream} not ACTIVE 10 s after a split"
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def kinesis_stream(
    request: pytest.FixtureRequest, leases: AbstractAsyncContextManager[Leases]
) -> AsyncIterator[KinesisStreamUnderTest]:
    endpoint = request.getfixturevalue("kinesis_local_endpoint")
    name = f"gps-{uuid.uuid4().hex[:12]}"
    async with leases as table, kinesis_client("us-east-1", endpoint_url=endpoint) as client:
        await ensure_stream(client, name, STREAM_SHARDS)
        yield KinesisStreamUnderTest(f"kinesis+{table.adapter}-leases", client, name, table.store)
        await client.delete_stream(StreamName=name, EnforceConsumerDeletion=True)


@contextlib.asynccontextmanager
async def memory_stream() -> AsyncIterator[MemoryStreamUnderTest]:
    yield MemoryStreamUnderTest()


STREAM_FACTORIES: dict[
    str, Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[StreamUnderTest]]
] = {
    "memory": lambda _: memory_stream(),
    "kinesis+memory-leases": lambda request: kinesis_stream(request, memory_leases()),
    "kinesis+dynalite-leases": lambda request: kinesis_stream(
        request,
        dynamodb_leases("dynalite", request.getfixturevalue("dynalite_endpoint")),
    ),
}


@pytest.fixture(params=list(STREAM_FACTORIES))
async def stream(request: pytest.FixtureRequest) -> AsyncIterator[StreamUnderTest]:
    """A fresh stream per test, once per source adapter (and lease store, for Kinesis)."""
    async with STREAM_FACTORIES[request.param](request) as built:
        yield built


# -- tables without ensure_table's one-second pause ---------------------------------------------
# ensure_table looks at a new table once a second until it is ACTIVE. dynalite reports a table
# CREATING for a moment after CreateTable, so nearly every dynalite test paid a whole second for
# its Devices table: over a minute of the suite. The repositories' tables are therefore created
# here and polled every 10 ms; ensure_table then finds them ACTIVE at its first look and does the
# rest as `trackstore init` does (TTL on the Locations table).


async def create_active(client: Any, definition: dict[str, Any], ttl: str | None = None) -> None:
    """Creates the table, waits until it and its indexes are ACTIVE, then `ensure_table`."""
    name = definition["TableName"]
    await client.create_table(**definition)
    deadline = time.monotonic() + 10
    while True:
        table = (await client.describe_table(TableName=name))["Table"]
        indexes = table.get("GlobalSecondaryIndexes", [])
        if table["TableStatus"] == "ACTIVE" and all(
            index.get("IndexStatus", "ACTIVE") == "ACTIVE" for index in indexes
        ):
            break
        assert time.monotonic() < deadline, f"{name} not ACTIVE after 10 s"
        await asyncio.sleep(0.01)
    await ensure_table(client, definition, ttl)


@contextlib.asynccontextmanager
async def quick_dynamodb_repos(endpoint: str) -> AsyncIterator[Repos]:
    """As `dynamodb_repos`, with the tables made by `create_active`."""
    suffix = uuid.uuid4().hex[:12]
    async with dynamodb_client("us-east-1", endpoint_url=endpoint) as client:
        locations, devices = f"locations-{suffix}", f"devices-{suffix}"
        await create_active(client, locations_table(locations), TTL_ATTRIBUTE)
        await create_active(client, devices_table(devices))
        clock = FakeClock(wall_clock_ms())
        yield Repos(
            locations=DynamoLocationRepository(client, locations, TTL_DAYS, DATE_SHARDS),
            devices=DynamoDeviceRepository(client, devices, clock=clock),
            clock=clock,
        )
        for table in (locations, devices):
            await client.delete_table(TableName=table)


for _adapter in ("dynalite", "moto", "localstack"):
    REPOSITORY_FACTORIES[_adapter] = lambda request, fixture=f"{_adapter}_endpoint": (
        quick_dynamodb_repos(request.getfixturevalue(fixture))
    )
