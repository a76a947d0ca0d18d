"""The composition root: the only place that chooses adapters and wires them together."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from dependency_injector import containers, providers

from trackstore.clock import wall_clock_ms
from trackstore.config import Backend, Settings
from trackstore.dynamodb import DynamoDeviceRepository, DynamoLocationRepository, dynamodb_client
from trackstore.dynamodb.leases import DynamoLeaseStore
from trackstore.kinesis.client import kinesis_client
from trackstore.kinesis.deadletter import DeadLetterStream
from trackstore.kinesis.source import KinesisStreamSource
from trackstore.memory import (
    MemoryDeviceRepository,
    MemoryLocationRepository,
    MemoryStore,
    MemoryStream,
    MemoryStreamSource,
)
from trackstore.metrics import Metrics
from trackstore.service import TrackService
from trackstore.worker import worker_id

MEMORY_SHARDS = 4
T = TypeVar("T")


def _backend(settings: Settings) -> str:
    return settings.backend.value


def _dead_letters(client: Any, stream: str | None) -> DeadLetterStream | None:
    return DeadLetterStream(client, stream) if stream else None


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)
    clock = providers.Object(wall_clock_ms)
    metrics = providers.Singleton(Metrics)
    backend = providers.Callable(_backend, settings)

    memory_store = providers.Singleton(MemoryStore)
    memory_stream = providers.Singleton(MemoryStream, shard_count=MEMORY_SHARDS, clock=clock)

    # One client per process, opened by init_resources() and closed by shutdown_resources().
    dynamodb = providers.Resource(
        dynamodb_client, region=settings.provided.aws_region, metrics=metrics
    )
    kinesis = providers.Resource(
        kinesis_client, region=settings.provided.aws_region, metrics=metrics
    )
    worker_id = providers.Singleton(worker_id)

    locations = providers.Selector(
        backend,
        memory=providers.Singleton(MemoryLocationRepository, store=memory_store),
        aws=providers.Singleton(
            DynamoLocationRepository,
            client=dynamodb,
            table=settings.provided.location_table_name,
            ttl_days=settings.provided.location_ttl_days,
            date_shards=settings.provided.location_date_shards,
            clock=clock,
        ),
    )
    devices = providers.Selector(
        backend,
        memory=providers.Singleton(MemoryDeviceRepository, store=memory_store),
        aws=providers.Singleton(
            DynamoDeviceRepository, client=dynamodb, table=settings.provided.device_table_name
        ),
    )
    stream_source = providers.Selector(
        backend,
        memory=providers.Factory(
            MemoryStreamSource,
            stream=memory_stream,
            batch_size=settings.provided.kinesis_batch_size,
        ),
        aws=providers.Factory(
            KinesisStreamSource,
            client=kinesis,
            stream=settings.provided.kinesis_stream_name,
            leases=providers.Factory(
                DynamoLeaseStore, client=dynamodb, table=settings.provided.lease_table_name
            ),
            worker_id=worker_id,
            batch_size=settings.provided.kinesis_batch_size,
            failover_s=settings.provided.lease_failover_seconds,
            max_leases=settings.provided.max_leases_per_worker,
            initial_position=settings.provided.kinesis_initial_position,
            metrics=metrics,
        ),
    )
    dead_letters = providers.Selector(
        backend,
        memory=providers.Object(None),
        aws=providers.Factory(
            _dead_letters, client=kinesis, stream=settings.provided.dead_letter_stream_name
        ),
    )
    service = providers.Singleton(
        TrackService,
        locations=locations,
        devices=devices,
        clock=clock,
        ttl_days=settings.provided.location_ttl_days,
    )


def build_container(settings: Settings) -> Container:
    container = Container()
    container.settings.override(settings)
    if settings.backend is Backend.MEMORY:
        # Nothing opens an AWS client for a process that never talks to AWS.
        container.dynamodb.override(providers.Object(None))
        container.kinesis.override(providers.Object(None))
    return container


async def resolve(value: T | Any) -> T:
    """A provider's result: providers that depend on an async resource hand out awaitables."""
    if inspect.isawaitable(value):
        return await value  # type: ignore[no-any-return]
    return value


@asynccontextmanager
async def resources(container: Container) -> AsyncIterator[Container]:
    """Opens the container's long-lived clients for the life of the block."""
    await resolve(container.init_resources())
    try:
        yield container
    finally:
        await resolve(container.shutdown_resources())
