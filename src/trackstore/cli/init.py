"""`trackstore init`: the stream and the three tables, created when missing; safe to run twice.

For local emulators and dev accounts: in production the CDK stack (deploy/) creates them.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from trackstore.cli.args import Subcommands, positive_int
from trackstore.config import Backend, Settings
from trackstore.dynamodb.client import dynamodb_client
from trackstore.dynamodb.tables import (
    TTL_ATTRIBUTE,
    devices_table,
    ensure_table,
    leases_table,
    locations_table,
)
from trackstore.kinesis.client import ensure_stream, kinesis_client


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "init",
        help="create the stream, tables and lease table when missing",
        description="Create the stream, the two tables (GSI, TTL) and the lease table when "
        "missing. Safe to run twice. For local emulators and dev accounts.",
    )
    parser.add_argument(
        "--shards", type=positive_int, default=4, help="shards of a new stream (default 4)"
    )
    parser.set_defaults(run=run, traced=False, talks_to_aws=True)


async def run(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> None:
    if settings.backend is Backend.MEMORY:
        print("TRACKSTORE_BACKEND=memory: nothing to create")
        return
    await provision(settings, args.shards, say=lambda line: print(line, flush=True))


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
