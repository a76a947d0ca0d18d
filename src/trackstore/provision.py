"""`trackstore init`: the stream and the three tables, created when missing; safe to run twice."""

from __future__ import annotations

from collections.abc import Callable

from trackstore.config import Settings
from trackstore.dynamodb.client import dynamodb_client
from trackstore.dynamodb.tables import (
    TTL_ATTRIBUTE,
    devices_table,
    ensure_table,
    leases_table,
    locations_table,
)
from trackstore.kinesis.client import ensure_stream, kinesis_client


async def provision(settings: Settings, shards: int, say: Callable[[str], None]) -> None:
    async with dynamodb_client(settings.aws_region) as dynamodb:
        for definition, ttl in (
            (locations_table(settings.location_table_name), TTL_ATTRIBUTE),
            (devices_table(settings.device_table_name), None),
            (leases_table(settings.lease_table_name), None),
        ):
            created = await ensure_table(dynamodb, definition, ttl)
            say(f"table {definition['TableName']}: {'created' if created else 'exists'}")
    async with kinesis_client(settings.aws_region) as kinesis:
        created = await ensure_stream(kinesis, settings.kinesis_stream_name, shards)
        say(f"stream {settings.kinesis_stream_name}: {'created' if created else 'exists'}")
