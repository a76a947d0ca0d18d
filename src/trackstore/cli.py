"""`trackstore serve|consume|demo|init|simulate`: parse flags, wire, run, exit cleanly."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import msgspec

from trackstore import __version__
from trackstore.aws import check_aws_configuration, check_credentials
from trackstore.commands import consume, simulate
from trackstore.config import Backend, Settings, configuration_values
from trackstore.container import Container, build_container
from trackstore.demo import run_demo
from trackstore.errors import Error
from trackstore.logs import configure_logging
from trackstore.provision import provision
from trackstore.seed import seed
from trackstore.serving import listen, serve_http, settle_garbage_collector, stop_on_signals
from trackstore.telemetry import configure_tracing
from trackstore.web import create_app

log = logging.getLogger("trackstore")

EXIT_OK = 0
EXIT_FAILED = 1  # a dependency failed or is unreachable
EXIT_USAGE = 2  # bad flags or configuration


class CommandError(Exception):
    """A one-line message for the user and the exit code to go with it."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackstore",
        description="GPS positions of a vehicle fleet: Kinesis in, DynamoDB behind, REST out. "
        "Configuration comes from the environment and ./.env (see README).",
    )
    parser.add_argument("--version", action="version", version=f"trackstore {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the REST API", description="Run the REST API.")
    _add_listen_flags(serve)
    serve.add_argument(
        "--seed-devices",
        type=_positive_int,
        default=None,
        help="memory backend only: start with this many devices (bus-0000...)",
    )
    serve.add_argument(
        "--seed-points",
        type=_positive_int,
        default=1000,
        help="with --seed-devices: points per device, 10 s apart, ending now (default 1000)",
    )

    consume_parser = commands.add_parser(
        "consume",
        help="read the stream into the tables until SIGTERM/SIGINT",
        description="Read the Kinesis stream and write the tables until SIGTERM/SIGINT; then "
        "finish the batch in hand, checkpoint, release leases and exit 0.",
    )
    consume_parser.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        help="port of /metrics and /health (default CONSUMER_METRICS_PORT, else 9100, or a "
        "free port when 9100 is taken; 0: off)",
    )
    consume_parser.add_argument(
        "--metrics-host", default="127.0.0.1", help="address of that port (127.0.0.1)"
    )

    demo = commands.add_parser(
        "demo",
        help="the whole pipeline in one process, no AWS account needed",
        description="Simulated fleet -> stream -> consumer -> repositories -> API, in memory.",
    )
    _add_listen_flags(demo)
    demo.add_argument("--devices", type=_positive_int, default=50, help="vehicles (default 50)")
    demo.add_argument(
        "--rate", type=_positive_float, default=50.0, help="records per second (default 50)"
    )

    init = commands.add_parser(
        "init",
        help="create the stream, tables and lease table when missing",
        description="Create the stream, the two tables (GSI, TTL) and the lease table when "
        "missing. Safe to run twice. For local emulators and dev accounts.",
    )
    init.add_argument(
        "--shards", type=_positive_int, default=4, help="shards of a new stream (default 4)"
    )

    simulate = commands.add_parser(
        "simulate",
        help="publish synthetic GPS records to the stream",
        description="Publish synthetic GPS records (moving vehicles) with PutRecords.",
    )
    simulate.add_argument("--devices", type=_positive_int, required=True, help="vehicles")
    simulate.add_argument("--rate", type=_positive_float, required=True, help="records/second")
    simulate.add_argument(
        "--duration", type=_positive_float, default=None, help="seconds (default: until stopped)"
    )
    simulate.add_argument(
        "--aggregate", action="store_true", help="KPL-aggregate each device's records"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level)
        if _needs_aws(args, settings):
            check_aws_configuration(configuration_values(), settings.aws_region)
        container = build_container(settings)
        provider = None
        if args.command in ("serve", "consume", "demo"):
            provider = configure_tracing(f"trackstore-{args.command}")
        try:
            with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
                return runner.run(_run(args, container, settings))
        finally:
            if provider is not None:
                provider.shutdown()  # flushes the spans still buffered
    except Error as error:
        return _fail(error.message, EXIT_USAGE if error.code.value == "invalid" else EXIT_FAILED)
    except CommandError as error:
        return _fail(str(error), error.code)
    except OSError as error:
        return _fail(str(error), EXIT_FAILED)
    except KeyboardInterrupt:
        return 130


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (the image has it): sockets, timers and callbacks cost less
    than on asyncio's own loop (docs/benchmarks.md)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _needs_aws(args: argparse.Namespace, settings: Settings) -> bool:
    """Whether the command talks to AWS, so its AWS settings are checked before it starts."""
    return args.command in ("serve", "consume", "init", "simulate") and (
        settings.backend is Backend.AWS
    )


async def _run(args: argparse.Namespace, container: Container, settings: Settings) -> int:
    if _needs_aws(args, settings):
        # Before the signal handlers: Ctrl-C during a slow lookup still interrupts it.
        await check_credentials()
    stop = asyncio.Event()
    stop_on_signals(stop)
    settle_garbage_collector()
    command: Coroutine[Any, Any, None]
    if args.command == "demo":
        # The demo is the no-AWS tour: memory adapters whatever TRACKSTORE_BACKEND says.
        container = build_container(_with_backend(settings, Backend.MEMORY))
        command = run_demo(container, args.host, args.port, args.devices, args.rate, stop)
    elif args.command == "serve":
        if args.seed_devices is not None:
            if settings.backend is not Backend.MEMORY:
                raise CommandError("--seed-devices needs TRACKSTORE_BACKEND=memory", EXIT_USAGE)
            await seed(
                container.locations(),
                container.devices(),
                args.seed_devices,
                args.seed_points,
                container.clock()(),
            )
        command = serve_http(
            create_app(container), listen(args.host, args.port), stop, announce=True
        )
    elif args.command == "consume":
        if settings.backend is Backend.MEMORY:
            raise CommandError(
                "consume reads a Kinesis stream; with TRACKSTORE_BACKEND=memory there is none "
                "(try `trackstore demo`)",
                EXIT_USAGE,
            )
        port = settings.consumer_metrics_port if args.metrics_port is None else args.metrics_port
        command = consume(container, stop, args.metrics_host, port)
    elif args.command == "init":
        if settings.backend is Backend.MEMORY:
            print("TRACKSTORE_BACKEND=memory: nothing to create")
            return EXIT_OK
        command = provision(settings, args.shards, say=lambda line: print(line, flush=True))
    else:
        if settings.backend is Backend.MEMORY:
            raise CommandError(
                "simulate publishes to a Kinesis stream; with TRACKSTORE_BACKEND=memory there is "
                "none (`trackstore demo` runs a simulated fleet in memory)",
                EXIT_USAGE,
            )
        published = await simulate(
            settings, args.devices, args.rate, args.duration, args.aggregate, stop
        )
        print(f"published {published} records to {settings.kinesis_stream_name}", flush=True)
        return EXIT_OK
    await command
    return EXIT_OK


def _with_backend(settings: Settings, backend: Backend) -> Settings:
    return msgspec.structs.replace(settings, backend=backend)


_N = TypeVar("_N", int, float)


def _fail(message: str, code: int) -> int:
    print(f"trackstore: error: {message}", file=sys.stderr)
    return code


def _add_listen_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="port to listen on (8000)")


def _number(text: str, kind: type[_N]) -> _N:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _port(text: str) -> int:
    value = _number(text, int)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
