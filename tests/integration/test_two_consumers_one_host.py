"""Two `trackstore consume` processes on one host with default settings, as a user trying the
README's "run 1 to 10 consume tasks" on one machine does (kinesis-local + dynalite). Port 9100 is
held for the test, so both must fall back: each serves /metrics and /health on the port it
logged, and together they store every record sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.aws_emulators import port_taken
from tests.integration.conftest import TRACKSTORE
from trackstore.config import DEFAULT_CONSUMER_METRICS_PORT
from trackstore.dynamodb import DynamoDeviceRepository, dynamodb_client
from trackstore.kinesis.client import kinesis_client
from trackstore.kinesis.producer import Producer

# The consumer's default metrics port is the host's: see tests/conftest.py.
USES_CONSUMER_METRICS_PORT = True

SHARDS = 2
DEVICES = 20
PER_DEVICE = 10
DEADLINE_S = 25


def log_lines(log: Path) -> list[dict[str, Any]]:
    lines = []
    for text in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(text))
    return lines


def wait_for_line(
    process: subprocess.Popen[bytes], log: Path, message_prefix: str, deadline: float
) -> dict[str, Any]:
    while True:
        for line in log_lines(log):
            if str(line.get("message", "")).startswith(message_prefix):
                return line
        assert process.poll() is None, f"consume exited {process.returncode}: {log.read_text()}"
        assert time.monotonic() < deadline, f"no {message_prefix!r} line: {log.read_text()}"
        time.sleep(0.1)


def metric(text: str, name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def entries(start_ms: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(PER_DEVICE):
        for d in range(DEVICES):
            device = f"van-{d:02d}"
            body = {
                "deviceId": device,
                "timestamp": start_ms + i * 1000,
                "latitude": 48.0 + i / 1000,
                "longitude": 11.0 + d / 100,
            }
            out.append((device, msgspec.json.encode(body)))
    return out


async def produce(env: dict[str, str], records: list[tuple[str, bytes]]) -> None:
    async with kinesis_client("us-east-1", endpoint_url=env["AWS_ENDPOINT_URL_KINESIS"]) as c:
        await Producer(c, env["KINESIS_STREAM_NAME"]).put(records)


async def all_stored(env: dict[str, str], newest: int) -> bool:
    async with dynamodb_client("us-east-1", endpoint_url=env["AWS_ENDPOINT_URL_DYNAMODB"]) as c:
        repository = DynamoDeviceRepository(c, env["DEVICE_TABLE_NAME"])
        for d in range(DEVICES):
            device = await repository.get(f"van-{d:02d}")
            if device is not None:
                assert device.total_updates <= PER_DEVICE, "a record was counted twice"
            if device is None or device.total_updates < PER_DEVICE or device.last_seen != newest:
                return False
    return True


def test_two_default_consumers_on_one_host_both_serve_metrics_and_share_the_work(
    stream_env: dict[str, str], tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    # Default settings: neither --metrics-port nor CONSUMER_METRICS_PORT.
    env = {k: v for k, v in stream_env.items() if k != "CONSUMER_METRICS_PORT"}
    init = subprocess.run(
        [*TRACKSTORE, "init", "--shards", str(SHARDS)], env=env, capture_output=True, timeout=60
    )
    assert init.returncode == 0, init.stderr
    started = time.monotonic()
    deadline = started + DEADLINE_S

    with port_taken(DEFAULT_CONSUMER_METRICS_PORT):
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        for log in logs:
            with log.open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [*TRACKSTORE, "consume"], env=env, stdout=out, stderr=subprocess.STDOUT
                    )
                )
        urls = []
        workers = []
        for process, log in zip(processes, logs, strict=True):
            line = wait_for_line(process, log, "metrics and health on ", deadline)
            urls.append(line["url"])
            start = wait_for_line(process, log, "consumer starting", deadline)
            assert start["stream"] == env["KINESIS_STREAM_NAME"], start
            assert start["worker"], start
            workers.append(start["worker"])
        assert len(set(workers)) == 2, workers
        ports = {int(url.rsplit(":", 1)[1]) for url in urls}
        assert len(ports) == 2, urls
        assert DEFAULT_CONSUMER_METRICS_PORT not in ports, urls

        start_ms = int(time.time() * 1000) - 600_000
        asyncio.run(produce(env, entries(start_ms)))
        newest = start_ms + (PER_DEVICE - 1) * 1000

        with httpx.Client(timeout=5) as client:
            while True:
                for process, log in zip(processes, logs, strict=True):
                    assert process.poll() is None, f"consume exited: {log.read_text()}"
                scraped = [client.get(f"{url}/metrics") for url in urls]
                assert all(r.status_code == 200 for r in scraped), [r.text for r in scraped]
                held = sum(metric(r.text, "trackstore_leases_held") for r in scraped)
                stored = sum(metric(r.text, "trackstore_records_stored_total") for r in scraped)
                # The tables are the truth; the scrapes must also show both ports serving the
                # same work (stored may exceed the count where retried batches count twice).
                sent = DEVICES * PER_DEVICE
                if held == SHARDS and stored >= sent and asyncio.run(all_stored(env, newest)):
                    break
                assert time.monotonic() < deadline, (
                    f"after {DEADLINE_S} s: leases held {held}/{SHARDS}, stored {stored}/{sent}"
                )
                time.sleep(0.25)
            for url in urls:
                health = client.get(f"{url}/health")
                assert health.status_code == 200, (url, health.text)
                assert health.json()["status"] == "ok", health.text
                assert client.get(f"{url}/health/live").status_code == 200

    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process, log in zip(processes, logs, strict=True):
        assert process.wait(timeout=20) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
    print(f"two consumers on one host: {time.monotonic() - started:.1f} s")


pytestmark = pytest.mark.integration
