# ruff: noqa: ASYNC221  (a driver script: blocking process calls are fine here)
"""Startup time to ready and steady resident memory of `serve` and `consume`. Not part of CI.

    .venv-bench/bin/python benchmarks/startup.py --repeats 5

Ready: from process spawn until `GET /health` answers 200 (serve: the API port; consume: its
metrics port). Memory: VmRSS from /proc, sampled every 0.1 s once ready; for serve while a few
thousand API requests run and for 3 s after them, for consume while it drains a pre-filled
4-shard stream and for 3 s after. Cases:

- serve, memory backend (TRACKSTORE_BACKEND=memory), empty: 100 devices registered by the load;
- serve, memory backend seeded (`--seed-devices 100 --seed-points 2000`): reported apart, since
  the 200,000 locations it holds are data, not the process's own footprint;
- serve on dynalite, over the tables the consume case filled;
- consume on kinesis-local + dynalite.

Kinesis on kinesis-local, DynamoDB on dynalite, both on 127.0.0.1 ports chosen here. The
processes run on this script's interpreter: in .venv-bench, dependency_injector finds FastAPI
(installed there for the API baseline) and imports it, ~0.2 s the image does not pay; the dev
venv (`.venv/bin/python benchmarks/startup.py`) has what this script needs too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.e2e import interpreter, machine
from benchmarks.procfs import rss_mb, samples
from tests.aws_emulators import DUMMY_CREDENTIALS, dynalite, free_port, kinesis_local

from trackstore.cli.fleet import Fleet
from trackstore.clock import wall_clock_ms
from trackstore.kinesis.client import kinesis_client
from trackstore.kinesis.producer import Producer

TRACKSTORE = [sys.executable, "-m", "trackstore.cli"]
DEVICES = 100


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*TRACKSTORE, *args], env=env, stdout=subprocess.DEVNULL)


def wait_ready(process: subprocess.Popen[bytes], port: int, timeout: float = 60) -> float:
    """Seconds from now (just after spawn) until GET /health on `port` answers 200."""
    started = time.monotonic()
    with httpx.Client(timeout=2) as client:
        while time.monotonic() - started < timeout:
            if process.poll() is not None:
                raise RuntimeError(f"exited with {process.returncode} before ready")
            try:
                if client.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.01)
    raise RuntimeError(f"not ready after {timeout} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(30)


async def sample_rss(
    pid: int, work: Coroutine[Any, Any, None], settle_s: float = 3.0
) -> list[float]:
    """VmRSS every 0.1 s while `work` runs and `settle_s` after it."""
    samples: list[float] = []
    task = asyncio.create_task(work)
    while not task.done():
        samples.append(rss_mb(pid, "VmRSS"))
        await asyncio.sleep(0.1)
    await task
    ends = time.monotonic() + settle_s
    while time.monotonic() < ends:
        samples.append(rss_mb(pid, "VmRSS"))
        await asyncio.sleep(0.1)
    return samples


async def api_load(port: int, requests: int, concurrency: int = 8) -> None:
    paths = (
        "/devices?limit=100",
        "/devices/bus-{d:04d}",
        "/locations/bus-{d:04d}/latest",
        "/locations/bus-{d:04d}?limit=100&order=desc",
        "/health",
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for d in range(DEVICES):  # 201 when new, 409 when the data has it already
            await client.post(f"/devices/bus-{d:04d}/register", json={"name": f"Bus {d}"})

        async def worker(offset: int) -> None:
            for i in range(offset, requests, concurrency):
                path = paths[i % len(paths)].format(d=i % DEVICES)
                response = await client.get(path)
                assert response.status_code in (200, 404), (path, response.status_code)

        await asyncio.gather(*(worker(k) for k in range(concurrency)))


async def drained(port: int, records: int) -> None:
    """Returns once the consumer on `port` has stored `records` records."""
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            stored = sum(samples(text, "trackstore_records_stored_total"))
            if stored >= records:
                return
            await asyncio.sleep(0.2)


def summary(name: str, ready: list[float], samples: list[float], hwm: float) -> str:
    return (
        f"{name}: ready median {statistics.median(ready):.2f} s, max {max(ready):.2f} s "
        f"(runs: {', '.join(f'{r:.2f}' for r in ready)}); RSS at ready {samples[0]:.0f} MB, "
        f"steady median {statistics.median(samples):.0f} MB, max {max(samples):.0f} MB, "
        f"VmHWM {hwm:.0f} MB"
    )


async def serve_case(
    name: str, env: dict[str, str], repeats: int, requests: int, extra: list[str]
) -> str:
    """Every run times the start; the last one also serves the load (memory sampled)."""
    ready: list[float] = []
    samples: list[float] = []
    hwm = 0.0
    for run in range(repeats):
        port = free_port()
        process = spawn(["serve", "--port", str(port), *extra], env)
        try:
            ready.append(wait_ready(process, port))
            if run == repeats - 1:
                samples = await sample_rss(process.pid, api_load(port, requests))
                hwm = rss_mb(process.pid, "VmHWM")
        finally:
            stop(process)
    line = summary(name, ready, samples, hwm) + f"; {requests} requests"
    print(line, flush=True)
    return line


async def consume_case(env: dict[str, str], repeats: int, records: int) -> str:
    """The first run drains the stream (memory sampled); the others only time the start."""
    seconds = -(-records // DEVICES)  # one report per device a second, ending now
    start = wall_clock_ms() - (seconds + 1) * 1000
    fleet = Fleet(devices=DEVICES, rate=DEVICES, start_ms=start)
    reports = [r for s in range(1, seconds + 2) for r in fleet.advance(start + s * 1000)]
    async with kinesis_client("us-east-1", env["AWS_ENDPOINT_URL_KINESIS"]) as client:
        await Producer(client, env["KINESIS_STREAM_NAME"]).put(reports[:records])
    ready: list[float] = []
    samples: list[float] = []
    hwm = 0.0
    for run in range(repeats):
        port = free_port()
        process = spawn(["consume", "--metrics-port", str(port)], env)
        try:
            ready.append(wait_ready(process, port))
            if run == 0:
                samples = await sample_rss(process.pid, drained(port, records))
                hwm = rss_mb(process.pid, "VmHWM")
        finally:
            stop(process)
    line = summary("consume (kinesis-local + dynalite)", ready, samples, hwm)
    line += f"; drained {records} records"
    print(line, flush=True)
    return line


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--requests", type=int, default=3000, help="API requests per serve case")
    parser.add_argument("--records", type=int, default=20_000, help="records for consume")
    args = parser.parse_args()
    print(
        f"reproduce: {interpreter()} benchmarks/startup.py --repeats {args.repeats} "
        f"--requests {args.requests} --records {args.records}"
    )
    print(f"machine: {machine()}")
    os.environ.update(DUMMY_CREDENTIALS)  # for this process's own clients
    base = {**os.environ, "LOG_LEVEL": "WARNING"}
    memory = {**base, "TRACKSTORE_BACKEND": "memory"}
    lines = [
        await serve_case("serve (memory)", memory, args.repeats, args.requests, []),
        await serve_case(
            "serve (memory, seeded 100 x 2000)",
            memory,
            args.repeats,
            args.requests,
            ["--seed-devices", "100", "--seed-points", "2000"],
        ),
    ]
    with kinesis_local() as kinesis, dynalite() as dynamodb:
        suffix = uuid.uuid4().hex[:8]
        aws = {
            **base,
            "TRACKSTORE_BACKEND": "aws",
            "AWS_ENDPOINT_URL_KINESIS": kinesis,
            "AWS_ENDPOINT_URL_DYNAMODB": dynamodb,
            "KINESIS_STREAM_NAME": f"startup-{suffix}",
            "LOCATION_TABLE_NAME": f"startup-locations-{suffix}",
            "DEVICE_TABLE_NAME": f"startup-devices-{suffix}",
            "LEASE_TABLE_NAME": f"startup-leases-{suffix}",
            "KINESIS_BATCH_SIZE": "1000",
        }
        subprocess.run(
            [*TRACKSTORE, "init", "--shards", "4"], env=aws, check=True, stdout=subprocess.DEVNULL
        )
        lines.append(await consume_case(aws, args.repeats, args.records))
        lines.append(await serve_case("serve (dynalite)", aws, args.repeats, args.requests, []))
    print("\ntargets: serve ready < 1.5 s; steady memory < 150 MB per process")
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
