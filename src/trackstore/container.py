"""The composition root: the only place that chooses adapters and wires them together.

Every adapter is built by a factory annotated with the port it fills, so `mypy --strict` reports
an adapter that no longer fits its port. The AWS clients are opened up front by `opened()` and
handed in as plain values, so every provider hands out a value, never an awaitable: with an async
`providers.Resource`, each provider depending on it returns awaitables even after
`init_resources()`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from dependency_injector import containers, providers

from trackstore.clock import wall_clock_ms
from trackstore.config import Backend, Settings
from trackstore.consumer import Consumer
from trackstore.consumer_health import ConsumerHealth
from trackstore.dynamodb import (
    DynamoDeviceRepository,
    DynamoLeaseStore,
    DynamoLocationRepository,
    dynamodb_client,
)
from trackstore.kinesis import DeadLetterStream, KinesisStreamSource, kinesis_client
from trackstore.memory import (
    MemoryDeviceRepository,
    MemoryLocationRepository,
    MemoryStore,
    MemoryStream,
    MemoryStreamSource,
)
from trackstore.metrics import Metrics
from trackstore.ports import (
    Clock,
    DeadLetters,
    DeviceRepository,
    LeaseStore,
    LocationRepository,
    StreamSource,
)
from trackstore.service import TrackService
from trackstore.snapshot import FleetSnapshot
from trackstore.worker import worker_id as new_worker_id

MEMORY_SHARDS = 4


# -- adapters, each typed as the port it fills ---------------------------------------------------


def memory_locations(store: MemoryStore) -> LocationRepository:
    return MemoryLocationRepository(store)


def dynamo_locations(client: Any, settings: Settings, clock: Clock) -> LocationRepository:
    return DynamoLocationRepository(
        client,
        table=settings.location_table_name,
        ttl_days=settings.location_ttl_days,
        date_shards=settings.location_date_shards,
        clock=clock,
    )


def memory_devices(store: MemoryStore, clock: Clock) -> DeviceRepository:
    return MemoryDeviceRepository(store, clock)


def dynamo_devices(client: Any, settings: Settings, clock: Clock) -> DeviceRepository:
    return DynamoDeviceRepository(client, table=settings.device_table_name, clock=clock)


def memory_source(stream: MemoryStream, settings: Settings) -> StreamSource:
    return MemoryStreamSource(stream, batch_size=settings.kinesis_batch_size)


def dynamo_leases(client: Any, settings: Settings) -> LeaseStore:
    return DynamoLeaseStore(client, table=settings.lease_table_name)


def kinesis_source(
    client: Any, settings: Settings, leases: LeaseStore, worker: str, metrics: Metrics
) -> StreamSource:
    return KinesisStreamSource(
        client,
        stream=settings.kinesis_stream_name,
        leases=leases,
        worker_id=worker,
        batch_size=settings.kinesis_batch_size,
        failover_s=settings.lease_failover_seconds,
        max_leases=settings.max_leases_per_worker,
        initial_position=settings.kinesis_initial_position,
        metrics=metrics,
    )


def dead_letter_stream(client: Any, settings: Settings) -> DeadLetters | None:
    stream = settings.dead_letter_stream_name
    return DeadLetterStream(client, stream) if stream else None


# -- the core and the consumer runtime over them -------------------------------------------------


def build_service(
    locations: LocationRepository, devices: DeviceRepository, clock: Clock, settings: Settings
) -> TrackService:
    return TrackService(locations, devices, clock=clock, ttl_days=settings.location_ttl_days)


def build_fleet(devices: DeviceRepository, clock: Clock, settings: Settings) -> FleetSnapshot:
    return FleetSnapshot(devices, clock, refresh_s=settings.fleet_refresh_seconds)


def build_consumer_health(settings: Settings, source: StreamSource) -> ConsumerHealth:
    return ConsumerHealth(
        stall_s=settings.consumer_stall_seconds,
        # A lease left without an owner is taken within about one failover time.
        orphan_grace_s=2 * settings.lease_failover_seconds,
        source_state=source.state,
    )


def build_consumer(
    source: StreamSource,
    service: TrackService,
    metrics: Metrics,
    dead_letters: DeadLetters | None,
    health: ConsumerHealth,
) -> Consumer:
    return Consumer(source, service, metrics, dead_letters=dead_letters, health=health)


def _backend(settings: Settings) -> str:
    return settings.backend.value


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)
    clock = providers.Object(wall_clock_ms)
    metrics = providers.Singleton(Metrics)
    backend = providers.Callable(_backend, settings)

    # The open AWS clients, put in by `opened()`; the memory backend never asks for them.
    dynamodb = providers.Dependency(instance_of=object)
    kinesis = providers.Dependency(instance_of=object)
    # This process's name in the lease table; a memory source holds no leases.
    worker_id: providers.Provider[str | None] = providers.Selector(
        backend, memory=providers.Object(None), aws=providers.Singleton(new_worker_id)
    )

    memory_store = providers.Singleton(MemoryStore)
    memory_stream = providers.Singleton(MemoryStream, shard_count=MEMORY_SHARDS, clock=clock)

    locations: providers.Provider[LocationRepository] = providers.Selector(
        backend,
        memory=providers.Singleton(memory_locations, memory_store),
        aws=providers.Singleton(dynamo_locations, dynamodb, settings, clock),
    )
    devices: providers.Provider[DeviceRepository] = providers.Selector(
        backend,
        memory=providers.Singleton(memory_devices, memory_store, clock),
        aws=providers.Singleton(dynamo_devices, dynamodb, settings, clock),
    )
    # One source per process: the consumer reads it and its health watches the same leases.
    stream_source: providers.Provider[StreamSource] = providers.Selector(
        backend,
        memory=providers.Singleton(memory_source, memory_stream, settings),
        aws=providers.Singleton(
            kinesis_source,
            kinesis,
            settings,
            leases=providers.Singleton(dynamo_leases, dynamodb, settings),
            worker=worker_id,
            metrics=metrics,
        ),
    )
    dead_letters: providers.Provider[DeadLetters | None] = providers.Selector(
        backend,
        memory=providers.Object(None),
        aws=providers.Singleton(dead_letter_stream, kinesis, settings),
    )

    service = providers.Singleton(build_service, locations, devices, clock, settings)
    fleet = providers.Singleton(build_fleet, devices, clock, settings)
    consumer_health = providers.Singleton(build_consumer_health, settings, stream_source)
    consumer = providers.Singleton(
        build_consumer, stream_source, service, metrics, dead_letters, consumer_health
    )


def build_container(settings: Settings) -> Container:
    container = Container()
    container.settings.override(settings)
    return container


@asynccontextmanager
async def opened(container: Container) -> AsyncIterator[Container]:
    """The container with its AWS clients open for the life of the block: once per process,
    never per request. A process on the memory backend opens none, as it never talks to AWS."""
    settings = container.settings()
    async with AsyncExitStack() as stack:
        if settings.backend is Backend.AWS:
            metrics = container.metrics()
            for client, open_client in (
                (container.dynamodb, dynamodb_client),
                (container.kinesis, kinesis_client),
            ):
                client.override(
                    await stack.enter_async_context(
                        open_client(settings.aws_region, metrics=metrics)
                    )
                )
                stack.callback(client.reset_last_overriding)
        yield container
