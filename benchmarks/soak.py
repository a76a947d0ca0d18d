# ruff: noqa: ASYNC220, ASYNC221  (a driver script: blocking process calls are fine here)
"""Soak: `simulate` at a steady rate through `consume` into the tables, `serve` under API load,
for minutes. Samples memory (RSS) of consume and serve, consumer lag, and checks at the end that
every produced record is stored exactly once. Not part of CI.

    .venv/bin/python benchmarks/soak.py --minutes 10 --rate 2000 --devices 500

Kinesis on moto server (one producer, which moto handles correctly), DynamoDB on dynalite, both
on 127.0.0.1 ports chosen here.
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
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.procfs import rss_mb, samples
from tests.aws_emulators import DUMMY_CREDENTIALS, dynalite, free_port, moto_server

TRACKSTORE = [sys.executable, "-m", "trackstore.cli"]


def metric(text: str, name: str) -> float:
    """A counter summed over its labels; the consumer's lag, the largest of its shards'."""
    values = samples(text, name)
    return max(values, default=0.0) if "millis" in name else sum(values)


async def api_load(port: int, devices: int, stop: asyncio.Event, latencies: list[float]) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        i = 0
        while not stop.is_set():
            device = f"bus-{i % devices:04d}"
            path = ("/devices/{d}", "/locations/{d}/latest", "/locations/{d}?limit=50")[i % 3]
            started = time.perf_counter()
            response = await client.get(path.format(d=device))
            latencies.append(time.perf_counter() - started)
            assert response.status_code in (200, 404), response.text
            i += 1
            await asyncio.sleep(0.01)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--devices", type=int, default=500)
    args = parser.parse_args()
    suffix = uuid.uuid4().hex[:8]
    with moto_server() as kinesis, dynalite() as dynamodb:
        env = {
            **os.environ,
            **DUMMY_CREDENTIALS,
            "TRACKSTORE_BACKEND": "aws",
            "AWS_ENDPOINT_URL_KINESIS": kinesis,
            "AWS_ENDPOINT_URL_DYNAMODB": dynamodb,
            "KINESIS_STREAM_NAME": f"soak-{suffix}",
            "LOCATION_TABLE_NAME": f"soak-locations-{suffix}",
            "DEVICE_TABLE_NAME": f"soak-devices-{suffix}",
            "LEASE_TABLE_NAME": f"soak-leases-{suffix}",
            "KINESIS_BATCH_SIZE": "1000",
            "LOG_LEVEL": "WARNING",
        }
        subprocess.run([*TRACKSTORE, "init", "--shards", "4"], env=env, check=True)
        metrics_port, api_port = free_port(), free_port()
        consume = subprocess.Popen(
            [*TRACKSTORE, "consume", "--metrics-port", str(metrics_port)], env=env
        )
        serve = subprocess.Popen([*TRACKSTORE, "serve", "--port", str(api_port)], env=env)
        duration = args.minutes * 60
        simulate = subprocess.Popen(
            [
                *TRACKSTORE,
                "simulate",
                "--devices",
                str(args.devices),
                "--rate",
                str(args.rate),
                "--duration",
                str(duration),
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        await asyncio.sleep(3)
        stop = asyncio.Event()
        latencies: list[float] = []
        load = asyncio.create_task(api_load(api_port, args.devices, stop, latencies))
        samples = []
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=5) as client:
            while simulate.poll() is None:
                await asyncio.sleep(15)
                text = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
                samples.append(
                    (
                        time.monotonic() - started,
                        rss_mb(consume.pid),
                        rss_mb(serve.pid),
                        metric(text, "trackstore_millis_behind_latest"),
                        metric(text, "trackstore_records_stored_total"),
                    )
                )
                t, consume_mb, serve_mb, lag, stored = samples[-1]
                print(
                    f"t={t:4.0f}s consume {consume_mb:.0f} MB serve {serve_mb:.0f} MB "
                    f"lag {lag:.0f} ms stored {stored:.0f}",
                    flush=True,
                )
            published = int(simulate.stdout.read().split()[1]) if simulate.stdout else 0
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                text = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
                if metric(text, "trackstore_records_stored_total") >= published:
                    break
                await asyncio.sleep(2)
            total = 0
            page = None
            while True:
                response = await client.get(
                    f"http://127.0.0.1:{api_port}/devices",
                    params={"limit": 1000, **({"next_token": page} if page else {})},
                )
                body = response.json()
                total += sum(d["totalUpdates"] for d in body["devices"])
                page = body["nextToken"]
                if not page:
                    break
        stop.set()
        await load
        for process in (consume, serve):
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        print(
            f"published {published}, distinct stored per device counters {total}, "
            f"loss {published - total}"
        )
        print(
            f"memory consume: first {samples[0][1]:.0f} MB, last {samples[-1][1]:.0f} MB; "
            f"serve: first {samples[0][2]:.0f} MB, last {samples[-1][2]:.0f} MB"
        )
        print(
            f"lag max {max(s[3] for s in samples):.0f} ms; API requests {len(latencies)}, "
            f"p50 {statistics.median(latencies) * 1000:.1f} ms, "
            f"p99 {sorted(latencies)[int(len(latencies) * 0.99)] * 1000:.1f} ms"
        )
        print(
            f"reproduce: .venv/bin/python benchmarks/soak.py --minutes {args.minutes} "
            f"--rate {args.rate} --devices {args.devices}"
        )


if __name__ == "__main__":
    asyncio.run(main())
