"""What the end-to-end consumer tests share: a fresh stream and tables on kinesis-local and
dynalite, named for the test, and consumer processes that never outlive it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

TRACKSTORE = [sys.executable, "-m", "trackstore.cli"]


@pytest.fixture
def stream_env(kinesis_local_endpoint: str, dynalite_endpoint: str) -> dict[str, str]:
    """Environment for `trackstore` subprocesses on a stream and tables of their own."""
    suffix = uuid.uuid4().hex[:8]
    return {
        **os.environ,
        "TRACKSTORE_BACKEND": "aws",
        "AWS_ENDPOINT_URL_KINESIS": kinesis_local_endpoint,
        "AWS_ENDPOINT_URL_DYNAMODB": dynalite_endpoint,
        "KINESIS_STREAM_NAME": f"gps-{suffix}",
        "LOCATION_TABLE_NAME": f"locations-{suffix}",
        "DEVICE_TABLE_NAME": f"devices-{suffix}",
        "LEASE_TABLE_NAME": f"leases-{suffix}",
        "LEASE_FAILOVER_SECONDS": "3",
    }


def start_consumer(
    env: dict[str, str], log: Path, metrics_port: int = 0
) -> subprocess.Popen[bytes]:
    """`trackstore consume`; its metrics port is off unless given (workers share the host)."""
    return subprocess.Popen(
        [*TRACKSTORE, "consume", "--metrics-port", str(metrics_port)],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; any still running at its end are killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
