"""The composition root hands out plain values, built once per process, on either backend."""

from __future__ import annotations

import inspect

from trackstore.config import Backend, Settings
from trackstore.container import build_container, opened
from trackstore.dynamodb import DynamoDeviceRepository, DynamoLocationRepository
from trackstore.kinesis import DeadLetterStream, KinesisStreamSource
from trackstore.memory import MemoryLocationRepository, MemoryStreamSource


async def test_the_memory_backend_opens_no_client_and_wires_the_consumer() -> None:
    container = build_container(Settings(backend=Backend.MEMORY))

    async with opened(container):
        consumer = container.consumer()
        source = container.stream_source()

    assert isinstance(container.locations(), MemoryLocationRepository)
    assert isinstance(source, MemoryStreamSource)
    assert consumer.health is container.consumer_health()
    assert container.dead_letters() is None
    assert container.worker_id() is None


async def test_the_aws_backend_builds_every_adapter_over_the_opened_clients() -> None:
    settings = Settings(backend=Backend.AWS, dead_letter_stream_name="gps-rejected")
    container = build_container(settings)
    dynamodb, kinesis = object(), object()
    container.dynamodb.override(dynamodb)  # what opened() does with the real clients
    container.kinesis.override(kinesis)

    values = [
        container.service(),
        container.locations(),
        container.devices(),
        container.stream_source(),
        container.dead_letters(),
        container.consumer(),
    ]

    assert not any(inspect.isawaitable(value) for value in values)
    assert isinstance(container.locations(), DynamoLocationRepository)
    assert isinstance(container.devices(), DynamoDeviceRepository)
    source = container.stream_source()
    assert isinstance(source, KinesisStreamSource)
    assert source.worker_id == container.worker_id()
    assert isinstance(container.dead_letters(), DeadLetterStream)
    health = container.consumer_health()
    assert health.source_state == source.state  # health watches the consumer's own leases
    assert container.consumer().health is health
