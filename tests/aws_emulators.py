"""Local AWS emulators for the integration tests, each on a free 127.0.0.1 port.

moto server (pip) serves Kinesis and DynamoDB and is faithful on TTL and conditions; dynalite (npm)
is a strict DynamoDB (batch limits, duplicate keys, reserved words); kinesis-local (npm) is
faithful on resharding. The npm packages are installed into tests/emulators on first use.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EMULATORS_DIR = Path(__file__).parent / "emulators"
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def port_taken(port: int) -> Iterator[None]:
    """Something listens on 127.0.0.1:`port` for the block: the caller, unless another process
    on the host has it already."""
    sock = socket.socket()
    # As every server sets it: else a connection of an earlier test, closed but in TIME_WAIT on
    # the port, makes the bind fail, and the block would run with the port free.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        yield
        return
    with sock:
        yield


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"emulator exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def ensure_node_modules() -> Path:
    """Installs the npm emulators once; npm's registry is the only network this needs."""
    modules = EMULATORS_DIR / "node_modules"
    if not (modules / "dynalite").is_dir() or not (modules / "kinesis-local").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is needed to install dynalite and kinesis-local")
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=EMULATORS_DIR,
            check=True,
        )
    return modules


def docker_available() -> bool:
    """Whether a Docker engine answers; without one testcontainers fails within milliseconds."""
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def localstack() -> Iterator[str]:
    """LocalStack through testcontainers: only where a Docker engine runs."""
    from testcontainers.community.localstack import LocalStackContainer

    container = LocalStackContainer(image="localstack/localstack:4").with_services(
        "dynamodb", "kinesis"
    )
    with container:
        yield container.get_url()


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    from moto.moto_server import threaded_moto_server
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    from moto.server import ThreadedMotoServer

    class OneRequestAtATime(DomainDispatcherApplication):  # type: ignore[misc]
        """moto checks a condition and applies the write in separate Python steps, and its server
        runs each request in a thread of its own: two conditional writes at once could both pass
        one condition, which DynamoDB never lets happen. One request at a time here."""

        one_at_a_time = threading.Lock()

        def __call__(self, environ: Any, start_response: Any) -> Any:
            with self.one_at_a_time:
                return super().__call__(environ, start_response)

    threaded_moto_server.DomainDispatcherApplication = OneRequestAtATime
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        wait_for_port(port, None)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def _node_process(args: list[str], cwd: Path, port: int, env: dict[str, str]) -> Iterator[str]:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is needed to run the test emulators")
    process = subprocess.Popen(
        [node, *args],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def dynalite() -> Iterator[str]:
    modules = ensure_node_modules()
    port = free_port()
    with _node_process(
        [
            str(modules / "dynalite" / "cli.js"),
            *("--host", "127.0.0.1", "--port", str(port)),
            *("--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0"),
        ],
        EMULATORS_DIR,
        port,
        {},
    ) as endpoint:
        yield endpoint


@contextlib.contextmanager
def kinesis_local() -> Iterator[str]:
    modules = ensure_node_modules()
    port = free_port()
    # kinesis-local reads server.json from its working directory; it serves plain HTTP on this port.
    with _node_process(
        ["main.js"],
        modules / "kinesis-local",
        port,
        {
            "KINESIS_MOCK_PLAIN_PORT": str(port),
            "KINESIS_MOCK_TLS_PORT": str(free_port()),
            "SHARD_LIMIT": "100",
            "CREATE_STREAM_DURATION": "0ms",
            "DELETE_STREAM_DURATION": "0ms",
            "UPDATE_SHARD_COUNT_DURATION": "0ms",
            "LOG_LEVEL": "WARN",
        },
    ) as endpoint:
        yield endpoint
