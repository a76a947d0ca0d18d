"""Live-stream load: many Server-Sent Events subscribers of GET /fleet/stream on one `trackstore
demo` process. Not part of CI.

    .venv/bin/python benchmarks/fleet_stream.py --subscribers 1000 --seconds 60

Starts `trackstore demo --devices 1000 --rate 200 --port 0` (the memory backend, simulated buses
moving: each bus reports every 5 s, so nearly every bus changes at every refresh) with
FLEET_REFRESH_SECONDS=5, and measures it for `--seconds` with no subscriber (the baseline: the
simulation, the consumer, the refreshes). Then it opens `--subscribers` connections from this
process (raw asyncio sockets, HTTP/1.1, `--connect-concurrency` at a time; `--filtered` of them
with a bbox, status or device_id filter), waits until every one has its `snapshot` event, and
measures `--seconds` again, reading and counting every event (snapshot, position, leave,
heartbeat) on every connection, then `--grace` seconds more for the last refresh of the window
to reach everyone.

Reported: the server's CPU seconds per minute and share of one core, its RSS (before the
subscribers, with them, peak), this client's CPU, events and bytes delivered per second, the
spread per refresh (for each event id first seen in the window: from the first receipt on any
connection to the last unfiltered connection having it, or a later id that covers it when the
server merged refreshes for a subscriber that fell behind), versions merged that way, connection
errors; and the machine's load and what other processes took of its CPU meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.procfs import cpu_seconds, rss_mb

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")
URL_LINE = re.compile(r"map: (http://[^/\s]+)/map")
IDS = re.compile(rb"\nid: (\d+)\n")

# What the filtered subscribers ask for, in turn: the city is a 9.6 km square around Amsterdam's
# centre (trackstore.cli.bus_routes).
FILTERS = (
    "?bbox=4.87,52.35,4.94,52.39",
    "?status=active",
    "?status=inactive",  # nothing matches in the demo: heartbeats only
    "?device_id=bus-0001&device_id=bus-0002&device_id=bus-0003",
    "?bbox=4.80,52.30,4.90,52.37&status=active",
)


# -- one subscriber -----------------------------------------------------------------------------


class Subscriber(asyncio.Protocol):
    """One GET /fleet/stream connection. Counts events by kind and, per event id (the fleet
    snapshot's version), when it first and last received bytes of that id.

    The body is chunked, and a chunk is one ASGI body message of the server: one or more whole
    events, so the chunk-size lines only ever fall between events. Counting is done on the raw
    bytes up to the last complete event, without de-chunking."""

    def __init__(self, request: bytes, filtered: bool, bench: Bench) -> None:
        self.request = request
        self.filtered = filtered
        self.bench = bench
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.head = False
        self.status = 0
        self.snapshots = self.positions = self.leaves = self.heartbeats = 0
        self.received = 0
        self.versions: dict[int, list[float]] = {}  # id -> [first, last] receipt (perf_counter)
        self.top = 0
        self.merged = 0  # ids never received because a later one covered them
        self.subscribed = asyncio.get_running_loop().create_future()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.received += len(data)
        buffer = self.buffer
        buffer += data
        if not self.head:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = int(buffer[9:12])
            del buffer[: end + 4]
            self.head = True
            if self.status != 200:
                self._fail(f"status {self.status}")
                return
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            return
        part = bytes(buffer[: cut + 2])
        del buffer[: cut + 2]
        positions = part.count(b"\nevent: position\n")
        snapshots = part.count(b"\nevent: snapshot\n")
        self.positions += positions
        self.snapshots += snapshots
        self.leaves += part.count(b"\nevent: leave\n")
        self.heartbeats += part.count(b": heartbeat\n")
        first = part.find(b"\nid: ")
        if first >= 0:
            last = part.rfind(b"\nid: ")
            low = int(part[first + 5 : part.index(b"\n", first + 5)])
            high = int(part[last + 5 : part.index(b"\n", last + 5)])
            ids = (low,) if low == high else {int(i) for i in IDS.findall(part)}
            versions = self.versions
            for version in ids:
                seen = versions.get(version)
                if seen is None:
                    versions[version] = [now, now]
                else:
                    seen[1] = now
            if self.top and high > self.top + 1 and not self.filtered:
                self.merged += high - self.top - 1
            self.top = max(self.top, high)
        if snapshots and not self.subscribed.done():
            self.subscribed.set_result(now)

    def _fail(self, why: str) -> None:
        self.bench.errors.append(why)
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.bench.closing:
            self.bench.dropped += 1
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError(f"closed before the snapshot: {exc}"))

    def events(self) -> int:
        return self.snapshots + self.positions + self.leaves + self.heartbeats


@dataclass
class Bench:
    errors: list[str] = field(default_factory=list)
    dropped: int = 0  # connections the server closed during the run
    closing: bool = False
    subscribers: list[Subscriber] = field(default_factory=list)


# -- the server process and the machine --------------------------------------------------------


def machine_busy() -> float:
    """CPU seconds all cores spent busy (not idle, not iowait) since boot."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICKS


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def start_demo(args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    argv = [
        str(BIN / "trackstore"),
        *("demo", "--devices", str(args.devices), "--rate", str(args.rate), "--port", "0"),
    ]
    env = {**os.environ, "FLEET_REFRESH_SECONDS": str(args.refresh)}
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"demo exited with {process.returncode}: {log.read_text()[-2000:]}")
        if url is None and (match := URL_LINE.search(log.read_text())):
            url = match.group(1)
        if url is not None:
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{url}/devices?limit=1", timeout=2) as response,
            ):
                if response.status == 200:
                    return process, url
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("demo not ready after 60 s")


def stop_demo(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Window:
    """One measured stretch: the server's CPU and RSS, this process's CPU, everyone's CPU."""

    pid: int
    wall: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    others_cpu: float = 0.0
    rss_start: float = 0.0
    rss_end: float = 0.0
    rss_max: float = 0.0
    load_start: str = ""
    load_end: str = ""

    async def run(self, seconds: float) -> None:
        self.load_start = load()
        self.rss_start = self.rss_max = rss_mb(self.pid)
        t0, s0, c0, m0 = time.perf_counter(), cpu_seconds(self.pid), own_cpu(), machine_busy()
        deadline = t0 + seconds
        while (left := deadline - time.perf_counter()) > 0:
            await asyncio.sleep(min(1.0, left))
            self.rss_max = max(self.rss_max, rss_mb(self.pid))
        self.wall = time.perf_counter() - t0
        self.server_cpu = cpu_seconds(self.pid) - s0
        self.client_cpu = own_cpu() - c0
        self.others_cpu = max(0.0, machine_busy() - m0 - self.server_cpu - self.client_cpu)
        self.rss_end = rss_mb(self.pid)
        self.load_end = load()

    def per_minute(self, cpu: float) -> str:
        return f"{cpu / self.wall * 60:.1f} s ({cpu / self.wall:.0%})"


# -- the subscribers ----------------------------------------------------------------------------


async def subscribe(bench: Bench, url: str, args: argparse.Namespace) -> float:
    """Opens every connection; returns the seconds until the last one had its snapshot."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(args.connect_concurrency)
    every = max(1, args.subscribers // args.filtered) if args.filtered else 0
    started = time.perf_counter()

    async def one(i: int) -> None:
        filtered = bool(every) and i % every == every - 1 and i // every < args.filtered
        query = FILTERS[(i // every) % len(FILTERS)] if filtered else ""
        request = (
            f"GET /fleet/stream{query} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()
        async with gate:
            try:
                _, subscriber = await loop.create_connection(
                    lambda: Subscriber(request, filtered, bench), host, int(port)
                )
                bench.subscribers.append(subscriber)
                await asyncio.wait_for(subscriber.subscribed, args.connect_timeout)
            except (OSError, TimeoutError) as exc:
                bench.errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(one(i) for i in range(args.subscribers)))
    return time.perf_counter() - started


@dataclass
class Spread:
    versions: int
    spreads: list[float]  # per version: first receipt anywhere -> last unfiltered subscriber
    delays: list[float]  # per (version, subscriber): first receipt anywhere -> this one done
    undelivered: int  # (version, subscriber) pairs with nothing covering them by the end
    merged: int  # (version, subscriber) pairs covered by a later id
    periods: list[float]  # between the first receipts of consecutive ids: the refresh period


def spreads(subscribers: list[Subscriber], t0: float, t1: float) -> Spread:
    live = [s for s in subscribers if not s.filtered and s.versions]
    firsts: dict[int, float] = {}
    for s in live:
        for version, (first, _) in s.versions.items():
            if version not in firsts or first < firsts[version]:
                firsts[version] = first
    chosen = sorted(v for v, first in firsts.items() if t0 <= first <= t1)
    result = Spread(len(chosen), [], [], 0, 0, [])
    result.periods = [firsts[b] - firsts[a] for a, b in pairwise(chosen)]
    for version in chosen:
        start = firsts[version]
        latest = start
        for s in live:
            seen = s.versions.get(version)
            if seen is not None:
                done = seen[1]
            else:
                later = [first for v, (first, _) in s.versions.items() if v > version]
                if not later:
                    result.undelivered += 1
                    continue
                done = min(later)
                result.merged += 1
            result.delays.append(done - start)
            latest = max(latest, done)
        result.spreads.append(latest - start)
    return result


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def totals(subscribers: list[Subscriber]) -> tuple[int, int, int, int]:
    return (
        sum(s.events() for s in subscribers),
        sum(s.positions for s in subscribers),
        sum(s.heartbeats for s in subscribers),
        sum(s.received for s in subscribers),
    )


# -- the run ------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.subscribers + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log = Path(tempfile.mkstemp(prefix="fleet-stream-demo-", suffix=".log")[1])
    print(f"load {load()}; demo log {log}", flush=True)
    process, url = start_demo(args, log)
    bench = Bench()
    try:
        print(
            f"demo {url} (pid {process.pid}): {args.devices} devices, {args.rate:g}/s", flush=True
        )
        await asyncio.sleep(args.warmup)
        baseline = Window(process.pid)
        await baseline.run(args.seconds)
        print(
            f"baseline, 0 subscribers, {baseline.wall:.0f} s: server "
            f"{baseline.per_minute(baseline.server_cpu)} CPU per minute, RSS "
            f"{baseline.rss_start:.0f} -> {baseline.rss_end:.0f} MB; load {baseline.load_end}",
            flush=True,
        )
        before = (cpu_seconds(process.pid), own_cpu())
        connect_s = await subscribe(bench, url, args)
        connect_cpu = (cpu_seconds(process.pid) - before[0], own_cpu() - before[1])
        connected = sum(1 for s in bench.subscribers if s.subscribed.done() and not s.lost)
        print(
            f"{connected} of {args.subscribers} subscribed in {connect_s:.1f} s (server "
            f"{connect_cpu[0]:.1f} CPU s, client {connect_cpu[1]:.1f}); errors "
            f"{len(bench.errors)}; load {load()}",
            flush=True,
        )
        counted = [s for s in bench.subscribers if s.subscribed.done() and not s.lost]
        start_totals = totals(counted)
        merged_before = sum(s.merged for s in counted)
        window = Window(process.pid)
        t0 = time.perf_counter()
        await window.run(args.seconds)
        t1 = time.perf_counter()
        end_totals = totals(counted)
        merged_in_window = sum(s.merged for s in counted) - merged_before
        await asyncio.sleep(args.grace)
        peak = rss_mb(process.pid, "VmHWM")
    finally:
        bench.closing = True
        for s in bench.subscribers:
            if s.transport is not None:
                s.transport.close()
        await asyncio.sleep(0.5)
        stop_demo(process)
    print(
        f"connected in {connect_s:.1f} s; ids skipped by unfiltered subscribers in the window "
        f"(the server merged refreshes for them): {merged_in_window}"
    )
    report(args, baseline, window, bench, counted, start_totals, end_totals, t0, t1, peak)


def report(
    args: argparse.Namespace,
    baseline: Window,
    window: Window,
    bench: Bench,
    counted: list[Subscriber],
    start: tuple[int, int, int, int],
    end: tuple[int, int, int, int],
    t0: float,
    t1: float,
    peak: float,
) -> None:
    wall = window.wall
    events, positions, heartbeats, received = (e - s for e, s in zip(end, start, strict=True))
    spread = spreads(counted, t0, t1)
    filtered = sum(1 for s in counted if s.filtered)
    share = (window.server_cpu / wall - baseline.server_cpu / baseline.wall) * 60
    print()
    print(
        f"| {args.devices} buses at {args.rate:g}/s, refresh {args.refresh:g} s | "
        f"0 subscribers | {len(counted)} subscribers ({filtered} filtered) |"
    )
    print("| --- | ---: | ---: |")
    print(
        f"| serve CPU per minute (share of one core) | "
        f"{baseline.per_minute(baseline.server_cpu)} | {window.per_minute(window.server_cpu)} |"
    )
    print(f"| of which the subscribers | - | {share:.1f} s |")
    print(
        f"| serve RSS start / end / max in window (MB) | {baseline.rss_start:.0f} / "
        f"{baseline.rss_end:.0f} / {baseline.rss_max:.0f} | {window.rss_start:.0f} / "
        f"{window.rss_end:.0f} / {window.rss_max:.0f} (VmHWM {peak:.0f}) |"
    )
    print(
        f"| benchmark client CPU per minute | {baseline.per_minute(baseline.client_cpu)} | "
        f"{window.per_minute(window.client_cpu)} |"
    )
    print(
        f"| other processes' CPU per minute | {baseline.per_minute(baseline.others_cpu)} | "
        f"{window.per_minute(window.others_cpu)} |"
    )
    print(f"| load (1/5/15 min) at end | {baseline.load_end} | {window.load_end} |")
    print(
        f"| events/s delivered (positions, heartbeats) | - | {events / wall:,.0f} "
        f"({positions / wall:,.0f}, {heartbeats / wall:,.1f}) |"
    )
    print(f"| MB/s delivered | - | {received / wall / 1e6:,.1f} |")
    print(
        f"| refresh -> last subscriber, per id: p50 / p90 / max | - | "
        f"{percentile(spread.spreads, 50):.2f} / {percentile(spread.spreads, 90):.2f} / "
        f"{max(spread.spreads, default=float('nan')):.2f} s over {spread.versions} ids |"
    )
    print(
        f"| refresh period seen (first receipts): median / max | - | "
        f"{percentile(spread.periods, 50):.2f} / "
        f"{max(spread.periods, default=float('nan')):.2f} s |"
    )
    print(
        f"| refresh -> each subscriber: p50 / p99 | - | {percentile(spread.delays, 50):.2f} / "
        f"{percentile(spread.delays, 99):.2f} s |"
    )
    print(
        f"| (id, subscriber) covered by a later id / never | - | {spread.merged} / "
        f"{spread.undelivered} |"
    )
    print(f"| connection errors / dropped | - | {len(bench.errors)} / {bench.dropped} |")
    if bench.errors:
        print("errors:", ", ".join(sorted(set(bench.errors))[:5]))
    per_version = (
        statistics.median(len(s.versions) for s in counted if not s.filtered) if counted else 0
    )
    print(f"ids seen per unfiltered subscriber (median, whole run): {per_version}")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"\n{stamp}, load {load()}: .venv/bin/python benchmarks/fleet_stream.py "
        f"--subscribers {args.subscribers} --seconds {args.seconds:g} --devices {args.devices} "
        f"--rate {args.rate:g} --refresh {args.refresh:g} --filtered {args.filtered}"
    )


def run(args: argparse.Namespace) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args))
    else:
        uvloop.run(main(args))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0, help="each window (60)")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0, help="records per second (200)")
    parser.add_argument("--refresh", type=float, default=5.0, help="FLEET_REFRESH_SECONDS (5)")
    parser.add_argument("--filtered", type=int, default=10, help="subscribers with a filter (10)")
    parser.add_argument("--connect-concurrency", type=int, default=50)
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0, help="before the baseline (10)")
    parser.add_argument("--grace", type=float, default=10.0, help="after the window (10)")
    run(parser.parse_args())
