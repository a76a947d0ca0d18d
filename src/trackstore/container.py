"""The composition root: the only place that chooses adapters and wires them together."""

from __future__ import annotations

from dependency_injector import containers, providers

from trackstore.clock import wall_clock_ms
from trackstore.config import Settings
from trackstore.memory import (
    MemoryDeviceRepository,
    MemoryLocationRepository,
    MemoryStore,
    MemoryStream,
    MemoryStreamSource,
)
from trackstore.metrics import Metrics
from trackstore.service import TrackService

MEMORY_SHARDS = 4


def _backend(settings: Settings) -> str:
    return settings.backend.value


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)
    clock = providers.Object(wall_clock_ms)
    metrics = providers.Singleton(Metrics)

    memory_store = providers.Singleton(MemoryStore)
    memory_stream = providers.Singleton(MemoryStream, shard_count=MEMORY_SHARDS, clock=clock)

    backend = providers.Callable(_backend, settings)
    locations = providers.Selector(
        backend, memory=providers.Singleton(MemoryLocationRepository, store=memory_store)
    )
    devices = providers.Selector(
        backend, memory=providers.Singleton(MemoryDeviceRepository, store=memory_store)
    )
    stream_source = providers.Selector(
        backend,
        memory=providers.Factory(
            MemoryStreamSource,
            stream=memory_stream,
            batch_size=settings.provided.kinesis_batch_size,
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
    return container
