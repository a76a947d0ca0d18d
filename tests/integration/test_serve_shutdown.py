"""SIGTERM stops `trackstore serve` within its grace period even with requests in flight, as ECS
needs (it kills the task 30 s after SIGTERM): here the requests wait on a DynamoDB that accepts
connections and never answers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.aws_emulators import DUMMY_CREDENTIALS, free_port

TRACKSTORE = [sys.executable, "-m", "trackstore.cli"]


@contextlib.contextmanager
def blackhole() -> Iterator[str]:
    """An endpoint that takes connections and never says a word."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        server.close()


def test_sigterm_stops_serve_with_requests_in_flight(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with blackhole() as endpoint:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OTEL_"))},
            **DUMMY_CREDENTIALS,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
            "TRACKSTORE_BACKEND": "aws",
        }
        serve = subprocess.Popen(
            [*TRACKSTORE, "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                assert serve.poll() is None, log.read_text()
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                        break
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            answers: list[int] = []

            def ask(path: str) -> None:
                with contextlib.suppress(httpx.TransportError):
                    answers.append(httpx.get(f"{url}{path}", timeout=30).status_code)

            clients = [
                threading.Thread(target=ask, args=(path,))
                for path in ("/devices/bus-1", "/locations/bus-1", "/devices")
            ]
            for client in clients:
                client.start()
            time.sleep(0.5)  # the requests are waiting on the store

            stopped_at = time.monotonic()
            serve.send_signal(signal.SIGTERM)
            code = serve.wait(timeout=30)
            took = time.monotonic() - stopped_at
            for client in clients:
                client.join(timeout=30)
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()

    assert code == 0, log.read_text()
    assert took < 12, f"stopped {took:.1f} s after SIGTERM"
    # The clients were answered (503 at the deadline) or cut off, never left hanging.
    assert all(status in (503,) for status in answers), answers
