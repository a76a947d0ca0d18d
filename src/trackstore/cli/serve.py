"""`trackstore serve`: the REST API over the configured backend, until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio

from litestar import Litestar

from trackstore.cli.args import Subcommands, add_listen_flags, positive_int
from trackstore.cli.process import listen, serve_http
from trackstore.cli.seed import seed
from trackstore.config import Backend, Settings
from trackstore.container import Container, build_container, opened
from trackstore.errors import INVALID, Error
from trackstore.web import create_app


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser("serve", help="run the REST API", description="Run the REST API.")
    add_listen_flags(parser)
    parser.add_argument(
        "--seed-devices",
        type=positive_int,
        default=None,
        help="memory backend only: start with this many devices (bus-0000...)",
    )
    parser.add_argument(
        "--seed-points",
        type=positive_int,
        default=1000,
        help="with --seed-devices: points per device, 10 s apart, ending now (default 1000)",
    )
    parser.set_defaults(run=run, traced=True, talks_to_aws=True)


async def run(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> None:
    if args.seed_devices is not None and settings.backend is not Backend.MEMORY:
        raise Error(INVALID, "--seed-devices needs TRACKSTORE_BACKEND=memory")
    container = build_container(settings)
    async with opened(container):
        if args.seed_devices is not None:
            await seed(
                container.locations(),
                container.devices(),
                args.seed_devices,
                args.seed_points,
                container.clock()(),
            )
        sock = listen(args.host, args.port)
        app = api(container, settings)
        await serve_http(app, sock, stop, announce=True, on_stop=container.fleet().close)


def api(container: Container, settings: Settings) -> Litestar:
    """The REST API over the container's service and fleet snapshot, as configured."""
    return create_app(
        container.service(),
        container.metrics(),
        container.fleet(),
        api_keys=settings.api_key_digests,
        metrics_public=settings.metrics_public,
        gtfs_max_age_s=settings.gtfs_rt_max_age_seconds,
        tile_url=settings.map_tile_url,
        tile_attribution=settings.map_tile_attribution,
    )
