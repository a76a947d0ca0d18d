"""`trackstore serve|consume|demo|init|simulate|erase`: the parser, `main` and the exit codes.

Each command is a module of this package holding its flags (`add_parser`) and its `run`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from trackstore import __version__
from trackstore.aws import check_aws_configuration, check_credentials
from trackstore.cli import consume, demo, erase, init, serve, simulate
from trackstore.cli.process import settle_garbage_collector, stop_on_signals
from trackstore.config import Backend, Settings, configuration_values, export_dotenv
from trackstore.errors import INVALID, Error
from trackstore.logs import configure_logging
from trackstore.telemetry import configure_tracing

EXIT_OK = 0
EXIT_FAILED = 1  # a dependency failed or is unreachable
EXIT_USAGE = 2  # bad flags or configuration

COMMANDS = (serve, consume, demo, init, simulate, erase)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackstore",
        description="GPS positions of a vehicle fleet: Kinesis in, DynamoDB behind, REST out. "
        "Configuration comes from the environment and ./.env (see README).",
    )
    parser.add_argument("--version", action="version", version=f"trackstore {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        export_dotenv()  # so botocore and OpenTelemetry see what `.env` sets for them
        settings = Settings.from_env()
        configure_logging(settings.log_level)
        # Checked before the command starts: demo runs in memory whatever the backend says.
        talks_to_aws = args.talks_to_aws and settings.backend is Backend.AWS
        if talks_to_aws:
            check_aws_configuration(configuration_values(), settings.aws_region)
        provider = configure_tracing(f"trackstore-{args.command}") if args.traced else None
        try:
            with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
                runner.run(_run(args, settings, talks_to_aws))
        finally:
            if provider is not None:
                provider.shutdown()  # flushes the spans still buffered
    except Error as error:
        return _fail(error.message, EXIT_USAGE if error.code is INVALID else EXIT_FAILED)
    except OSError as error:
        return _fail(str(error), EXIT_FAILED)
    except KeyboardInterrupt:
        return 130
    return EXIT_OK


async def _run(args: argparse.Namespace, settings: Settings, talks_to_aws: bool) -> None:
    if talks_to_aws:
        # Before the signal handlers: Ctrl-C during a slow lookup still interrupts it.
        await check_credentials()
    stop = asyncio.Event()
    stop_on_signals(stop)
    settle_garbage_collector()
    await args.run(args, settings, stop)


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (the image has it): sockets, timers and callbacks cost less
    than on asyncio's own loop (docs/benchmarks.md)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _fail(message: str, code: int) -> int:
    print(f"trackstore: error: {message}", file=sys.stderr)
    return code
