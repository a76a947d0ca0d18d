"""API benchmark: `trackstore serve` against a FastAPI + pydantic v2 + uvicorn build of the same
endpoints (benchmarks/baselines/fastapi_app.py) on the same seeded data, then both on dynalite
(the baseline with boto3: benchmarks/baselines/fastapi_dynamodb.py).

Each server is pinned to core 1 and the load generators to core 0 (a 2-core machine):
- saturation: wrk -t1 -c32 (closed loop), a Lua script rotating device ids bus-0000..bus-0099;
- latency: an open-loop client (asyncio, keep-alive connections) sending on a fixed schedule at
  half of each server's own saturation rate, latency measured from the scheduled send time, so
  queueing in the server shows instead of slowing the client down.
Servers alternate A B B A ... per endpoint (A = TrackStore, B = baseline); the report gives
per-side medians, the median of the paired ratios and the geometric mean of the four ratios.
Each run also reports the server's share of core 1 and how much of core 1 something else took:
on a shared machine a disturbed run shows up there.

Run from the repository root, with the benchmark venv (see benchmarks/requirements.txt), wrk
(apt) and node/npm for dynalite (tests/emulators):
    .venv-bench/bin/python benchmarks/api.py
`--traced` runs TrackStore with tracing on (spans to an OTLP/HTTP sink this script answers) to
size what tracing costs; `--no-dynalite`, `--only-dynalite`, `--endpoints`, `--pairs` shorten a
run. Not run in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import json
import logging
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.procfs import cpu_seconds, rss_mb
from tests.aws_emulators import DUMMY_CREDENTIALS, dynalite, free_port, moto_server

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SERVER_CORE = "1"
CLIENT_CORE = "0"
CONNECTIONS = 32
SEED_DEVICES = 100
SEED_POINTS = 2000
DYNALITE_DEVICES = 5

ENDPOINTS: dict[str, str] = {
    "latest": "/locations/bus-%04d/latest",
    "history": "/locations/bus-%04d?limit=100",
    "status": "/devices/bus-%04d",
    "list": "/devices?limit=100",
}

WRK_SCRIPT = """
local fmt = os.getenv("BENCH_PATH")
local keys = tonumber(os.getenv("BENCH_KEYS"))
local i = 0
request = function()
  local path = string.format(fmt, i)
  i = (i + 1) % keys
  return wrk.format("GET", path)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def trackstore_argv(*args: str) -> list[str]:
    return [str(BIN / "trackstore"), *args]


def otlp_sink_env() -> dict[str, str]:
    """OTEL_* variables pointing at an OTLP/HTTP receiver in this process that accepts and drops
    every export, so `--traced` measures making and sending spans, not a collector."""

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}"}


def paths_for(template: str, keys: int) -> list[str]:
    return [template % i if "%" in template else template for i in range(keys)]


# -- processes and CPU accounting ---------------------------------------------------------------


def core_busy_jiffies(core: str) -> int:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            values = [int(v) for v in line.split()[1:]]
            return sum(values) - values[3] - values[4]  # all but idle and iowait
    raise RuntimeError(f"no cpu{core} in /proc/stat")


class CpuWatch:
    """The server's CPU seconds and what else ran on its core, over one measurement."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.hz = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> CpuWatch:
        self.t0 = time.perf_counter()
        self.p0 = cpu_seconds(self.pid)
        self.c0 = core_busy_jiffies(SERVER_CORE)
        self.l0 = core_busy_jiffies(CLIENT_CORE)
        self.r0 = _children_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.t0
        server = cpu_seconds(self.pid) - self.p0
        core = (core_busy_jiffies(SERVER_CORE) - self.c0) / self.hz
        client = _children_cpu() - self.r0  # the load generator, a child that has exited
        client_core = (core_busy_jiffies(CLIENT_CORE) - self.l0) / self.hz
        self.wall = wall
        self.server_cpu = server
        self.server_share = server / wall
        self.others_share = max(0.0, core - server) / wall
        self.client_share = client / wall
        self.client_others_share = max(0.0, client_core - client) / wall


def wait_for_quiet(limit_s: float, threshold: float = 0.15) -> None:
    """Waits (up to limit_s) for a second in which nothing else keeps either core busy."""
    hz = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + limit_s
    while True:
        before = [core_busy_jiffies(c) for c in (CLIENT_CORE, SERVER_CORE)]
        time.sleep(1)
        busy = [
            (core_busy_jiffies(c) - b) / hz
            for c, b in zip((CLIENT_CORE, SERVER_CORE), before, strict=True)
        ]
        if max(busy) < threshold:
            return
        if time.monotonic() > deadline:
            print(f"    (cores still {busy[0]:.0%}/{busy[1]:.0%} busy: going ahead)", flush=True)
            return


def measured(run: Any, args: argparse.Namespace, client_core_shared: bool = False) -> Any:
    """Runs `run()` in a quiet moment; again (up to --attempts) while other processes took more
    than 10% of either core during it; keeps the least disturbed attempt. `client_core_shared`:
    something of ours (dynalite) runs beside the client, so only the server's core counts."""

    def disturbance(result: Any) -> float:
        if client_core_shared:
            return float(result.others_share)
        return max(result.others_share, result.client_others_share)

    best = None
    for attempt in range(args.attempts):
        wait_for_quiet(args.max_wait)
        result = run()
        disturbed = disturbance(result)
        if best is None or disturbed < disturbance(best):
            best = result
        if disturbed <= 0.10:
            break
        if attempt + 1 < args.attempts:
            print(f"    disturbed ({disturbed:.0%} of a core taken by others): again", flush=True)
    return best


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def start_server(
    name: str, argv: list[str], env: dict[str, str], port: int, ready_path: str, logdir: Path
) -> Server:
    log = logdir / f"{name}.log"
    process = subprocess.Popen(
        ["taskset", "-c", SERVER_CORE, *argv],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Server(name, port, process, log)
    started = time.perf_counter()
    deadline = started + 120
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {process.returncode}: {log.read_text()[-2000:]}"
            )
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(server.url(ready_path), timeout=2) as response,
        ):
            if response.status == 200:
                print(f"  {name} ready on :{port} in {time.perf_counter() - started:.1f} s")
                return server
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"{name} not ready after 120 s")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


# -- saturation: wrk ----------------------------------------------------------------------------


@dataclass
class Saturation:
    rps: float
    requests: int
    errors: int
    server_share: float
    others_share: float
    rps_per_cpu: float  # requests per CPU second of the server: less sensitive to interference
    client_share: float
    client_others_share: float


def run_wrk(server: Server, template: str, keys: int, seconds: float, script: Path) -> Saturation:
    argv = [
        *("taskset", "-c", CLIENT_CORE, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s"),
        *("-s", str(script), server.url("/")),
    ]
    env = {**os.environ, "BENCH_PATH": template, "BENCH_KEYS": str(keys)}
    with CpuWatch(server.pid) as cpu:
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    match = re.search(r"WRKJSON (\{.*\})", out)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    summary = json.loads(match.group(1))
    rps = summary["requests"] / (summary["duration_us"] / 1e6)
    errors = sum(summary[k] for k in ("connect", "read", "write", "status", "timeout"))
    return Saturation(
        rps=rps,
        requests=summary["requests"],
        errors=errors,
        server_share=cpu.server_share,
        others_share=cpu.others_share,
        rps_per_cpu=summary["requests"] / cpu.server_cpu if cpu.server_cpu else math.nan,
        client_share=cpu.client_share,
        client_others_share=cpu.client_others_share,
    )


# -- latency: an open-loop client ---------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, client: _OpenLoop) -> None:
        self.client = client
        self.buffer = bytearray()
        self.need = -1
        self.status = 0
        self.scheduled = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, scheduled: float) -> None:
        self.scheduled = scheduled
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if self.need < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            self.status = int(head[9:12])
            at = head.find(b"content-length:")
            if at < 0:
                raise RuntimeError("response without content-length")
            stop = head.find(b"\r\n", at)
            self.need = end + 4 + int(head[at + 15 : stop if stop >= 0 else len(head)])
        if len(buffer) < self.need:
            return
        del buffer[: self.need]
        self.need = -1
        self.client.done(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.lost = True


class _OpenLoop:
    def __init__(self, requests: list[bytes]) -> None:
        self.requests = requests
        self.idle: deque[_Connection] = deque()
        self.backlog: deque[tuple[bytes, float]] = deque()
        self.scheduled: list[float] = []
        self.latencies: list[float] = []
        self.errors = 0
        self.waited = 0  # requests that found every connection busy
        self.send_lag: list[float] = []  # how late the client itself sent (its own health)
        self.outstanding = 0
        self.lost = False
        self.finished = asyncio.Event()

    def done(self, connection: _Connection) -> None:
        now = time.perf_counter()
        self.scheduled.append(connection.scheduled)
        self.latencies.append(now - connection.scheduled)
        if connection.status != 200:
            self.errors += 1
        self.outstanding -= 1
        if self.backlog:
            request, scheduled = self.backlog.popleft()
            connection.send(request, scheduled)
        else:
            self.idle.append(connection)
            if self.outstanding == 0:
                self.finished.set()

    async def run(self, port: int, rate: float, seconds: float, warmup: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        for _ in range(CONNECTIONS):
            _, connection = await loop.create_connection(
                lambda: _Connection(self), "127.0.0.1", port
            )
            self.idle.append(connection)
        total = int(rate * (warmup + seconds))
        requests = self.requests
        start = time.perf_counter() + 0.05
        interval = 1.0 / rate
        for i in range(total):
            due = start + i * interval
            while True:
                ahead = due - time.perf_counter()
                if ahead <= 0:
                    break
                # Timers are millisecond-coarse: sleep most of the way, then spin the loop.
                await asyncio.sleep(ahead - 0.001 if ahead > 0.0015 else 0)
            self.outstanding += 1
            self.finished.clear()
            request = requests[i % len(requests)]
            if self.idle:
                self.send_lag.append(time.perf_counter() - due)
                self.idle.popleft().send(request, due)
            else:
                self.waited += 1
                self.backlog.append((request, due))
        sent_all = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.finished.wait(), 30)
        lost = self.lost
        for connection in self.idle:
            if connection.transport is not None:
                connection.transport.close()
        cutoff = start + warmup
        kept = sorted(
            lat for s, lat in zip(self.scheduled, self.latencies, strict=True) if s >= cutoff
        )
        lag = sorted(self.send_lag)
        return {
            "latencies_ms": [round(v * 1000, 4) for v in kept],
            "count": len(kept),
            "errors": self.errors,
            "unanswered": self.outstanding,
            "waited": self.waited,
            "offered_rps": rate,
            "achieved_rps": total / (sent_all - start),
            "send_lag_p99_ms": _percentile(lag, 99) * 1000 if lag else 0.0,
            "lost_connection": lost,
        }


def open_loop_worker(spec: dict[str, Any]) -> None:
    """Runs in a separate process pinned to the client core; writes its result as JSON."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    requests = [
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{spec['port']}\r\n\r\n".encode()
        for path in spec["paths"]
    ]
    client = _OpenLoop(requests)
    result = asyncio.run(client.run(spec["port"], spec["rate"], spec["seconds"], spec["warmup"]))
    Path(spec["out"]).write_text(json.dumps(result))


@dataclass
class Latency:
    rate: float
    count: int
    errors: int
    waited: int
    achieved_rps: float
    send_lag_p99_ms: float
    server_share: float
    others_share: float
    client_share: float
    client_others_share: float
    latencies_ms: list[float] = field(repr=False)

    def pct(self, q: float) -> float:
        return _percentile(self.latencies_ms, q)


def run_open_loop(
    server: Server, template: str, keys: int, rate: float, seconds: float, warmup: float
) -> Latency:
    out = Path(tempfile.mkstemp(prefix="open-loop-", suffix=".json")[1])
    spec = {
        "out": str(out),
        "port": server.port,
        "paths": paths_for(template, keys),
        "rate": rate,
        "seconds": seconds,
        "warmup": warmup,
    }
    argv = [
        *("taskset", "-c", CLIENT_CORE, sys.executable, __file__),
        *("--open-loop-worker", json.dumps(spec)),
    ]
    with CpuWatch(server.pid) as cpu:
        worker = subprocess.run(argv, capture_output=True, text=True)
    if worker.returncode != 0:
        raise RuntimeError(f"open-loop client failed ({worker.returncode}):\n{worker.stderr}")
    result = json.loads(out.read_text())
    out.unlink()
    if result["unanswered"] or result["lost_connection"]:
        raise RuntimeError(f"open-loop run lost requests: {result['unanswered']} unanswered")
    return Latency(
        rate=rate,
        count=result["count"],
        errors=result["errors"],
        waited=result["waited"],
        achieved_rps=result["achieved_rps"],
        send_lag_p99_ms=result["send_lag_p99_ms"],
        server_share=cpu.server_share,
        others_share=cpu.others_share,
        client_share=cpu.client_share,
        client_others_share=cpu.client_others_share,
        latencies_ms=result["latencies_ms"],
    )


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def pooled(runs: list[Latency]) -> list[float]:
    return sorted(v for run in runs for v in run.latencies_ms)


# -- same answers on both sides -----------------------------------------------------------------

_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _normalise(value: Any, key: str = "") -> Any:
    # Seeded "now" differs by the seconds between the two starts; page tokens are opaque.
    if key == "nextToken":
        return "<token>" if value is not None else None
    if key == "status" and value in ("active", "inactive"):
        return "<active|inactive>"  # crosses 5 minutes after seeding on either side
    if isinstance(value, str) and _ISO.match(value):
        return "<time>"
    if isinstance(value, dict):
        return {k: _normalise(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def compare_answers(
    a: Server, b: Server, endpoints: tuple[str, ...] = tuple(ENDPOINTS), key: int = 7
) -> dict[str, tuple[int, int]]:
    sizes = {}
    for name in endpoints:
        template = ENDPOINTS[name]
        path = template % key if "%" in template else template
        bodies = []
        for server in (a, b):
            with urllib.request.urlopen(server.url(path), timeout=10) as response:
                bodies.append(response.read())
        sizes[name] = (len(bodies[0]), len(bodies[1]))
        left, right = (_normalise(json.loads(body)) for body in bodies)
        if left != right:
            raise RuntimeError(f"{name}: the two servers answer differently:\n{left}\n{right}")
    return sizes


# -- the comparison -----------------------------------------------------------------------------


@dataclass
class EndpointResult:
    name: str
    ts: list[Saturation] = field(default_factory=list)
    base: list[Saturation] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    cpu_ratios: list[float] = field(default_factory=list)  # of requests per server CPU second
    ts_latency: list[Latency] = field(default_factory=list)
    base_latency: list[Latency] = field(default_factory=list)
    # TrackStore at the baseline's rate: on dynalite, TrackStore's own half load saturates the
    # core the emulator shares with the load generator, which then measures itself.
    ts_latency_at_base_rate: list[Latency] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


def abba(pairs: int) -> Iterator[tuple[int, str]]:
    """(pair index, side) in the order A B B A A B B A ..."""
    for pair in range(pairs):
        order = ("A", "B") if pair % 2 == 0 else ("B", "A")
        for side in order:
            yield pair, side


def compare(
    ts: Server,
    base: Server,
    args: argparse.Namespace,
    script: Path,
    endpoints: list[str],
    keys: int = SEED_DEVICES,
    client_core_shared: bool = False,
) -> list[EndpointResult]:
    results = []
    for name in endpoints:
        template = ENDPOINTS[name]
        result = EndpointResult(name)
        for server in (ts, base):  # warm both before the first measured run
            run_wrk(server, template, keys, 2, script)
        pair_rps: dict[int, dict[str, float]] = {}
        pair_cpu: dict[int, dict[str, float]] = {}
        for pair, side in abba(args.pairs):
            server = ts if side == "A" else base
            run = measured(
                partial(run_wrk, server, template, keys, args.duration, script),
                args,
                client_core_shared,
            )
            (result.ts if side == "A" else result.base).append(run)
            pair_rps.setdefault(pair, {})[side] = run.rps
            pair_cpu.setdefault(pair, {})[side] = run.rps_per_cpu
            print(f"  {name:8} {server.name:10} {_sat_line(run)}", flush=True)
        result.ratios = [p["A"] / p["B"] for p in pair_rps.values()]
        result.cpu_ratios = [p["A"] / p["B"] for p in pair_cpu.values()]
        ts_rate = statistics.median(r.rps for r in result.ts) / 2
        base_rate = statistics.median(r.rps for r in result.base) / 2
        for _, side in abba(args.latency_pairs):
            server, rate = (ts, ts_rate) if side == "A" else (base, base_rate)
            latency = measured(
                partial(run_open_loop, server, template, keys, rate, args.latency_duration, 1.0),
                args,
                client_core_shared,
            )
            (result.ts_latency if side == "A" else result.base_latency).append(latency)
            print(f"  {name:8} {server.name:10} {_lat_line(latency)}", flush=True)
        if client_core_shared:
            latency = measured(
                partial(run_open_loop, ts, template, keys, base_rate, args.latency_duration, 1.0),
                args,
                client_core_shared,
            )
            result.ts_latency_at_base_rate.append(latency)
            print(f"  {name:8} {ts.name:10} {_lat_line(latency)}", flush=True)
        results.append(result)
    return results


def _sat_line(run: Saturation) -> str:
    return (
        f"{run.rps:9,.0f} req/s  errors {run.errors}  ({run.rps_per_cpu:,.0f} per CPU s)  "
        f"core {SERVER_CORE}: server {run.server_share:4.0%} others {run.others_share:4.0%}  "
        f"core {CLIENT_CORE}: wrk {run.client_share:4.0%} others {run.client_others_share:4.0%}"
    )


def _lat_line(run: Latency) -> str:
    return (
        f"open loop {run.rate:7,.0f}/s: p50 {run.pct(50):6.2f}  p99 {run.pct(99):6.2f}  "
        f"p99.9 {run.pct(99.9):6.2f} ms  (n={run.count}, errors {run.errors}, "
        f"waited {run.waited}, client lag p99 {run.send_lag_p99_ms:.2f} ms; "
        f"core {SERVER_CORE}: server {run.server_share:.0%} others {run.others_share:.0%}; "
        f"core {CLIENT_CORE}: client {run.client_share:.0%} others {run.client_others_share:.0%})"
    )


def _disturbance(runs: list[Any]) -> float:
    return max(max(run.others_share, run.client_others_share) for run in runs)


def report(results: list[EndpointResult], p99_target_ms: float = 5) -> float:
    print("\nSaturation (wrk -t1 -c32, req/s; medians per side; ratio = median of paired ratios;")
    print("per CPU s = requests per CPU second of the server; others = the most that other")
    print("processes took of either core during that side's runs)")
    print(
        f"{'endpoint':9} {'TrackStore':>11} {'FastAPI':>9} {'ratio':>6}  {'pairs':18} "
        f"{'per CPU s (ratio)':28} others"
    )
    for r in results:
        ts = statistics.median(x.rps for x in r.ts)
        base = statistics.median(x.rps for x in r.base)
        ts_cpu = statistics.median(x.rps_per_cpu for x in r.ts)
        base_cpu = statistics.median(x.rps_per_cpu for x in r.base)
        pairs = " ".join(f"{x:.2f}" for x in r.ratios)
        cpu = f"{ts_cpu:,.0f} vs {base_cpu:,.0f} ({ts_cpu / base_cpu:.2f}x)"
        print(
            f"{r.name:9} {ts:11,.0f} {base:9,.0f} {r.ratio:6.2f}  {pairs:18} {cpu:28} "
            f"{_disturbance(r.ts):.0%}/{_disturbance(r.base):.0%}"
        )
    geomean = math.exp(statistics.fmean(math.log(r.ratio) for r in results))
    print(f"geometric mean of the ratios: {geomean:.2f}")
    print("\nLatency, open loop at half of each side's own saturation (ms, runs pooled)")
    print(
        f"{'endpoint':9} {'side':10} {'rate':>7} {'p50':>7} {'p99':>7} {'p99.9':>7} {'n':>7} others"
    )
    for r in results:
        sides = [("TrackStore", r.ts_latency), ("FastAPI", r.base_latency)]
        if r.ts_latency_at_base_rate:
            sides.append(("TrackStore at FastAPI's rate", r.ts_latency_at_base_rate))
        for side, runs in sides:
            values = pooled(runs)
            print(
                f"{r.name:9} {side:10} {runs[0].rate:7,.0f} {_percentile(values, 50):7.2f} "
                f"{_percentile(values, 99):7.2f} {_percentile(values, 99.9):7.2f} {len(values):7} "
                f"{_disturbance(runs):.0%}"
            )
    print(
        "\nTargets: >= 2x per endpoint, geometric mean >= 2.5, "
        f"TrackStore p99 < {p99_target_ms:g} ms"
    )
    for r in results:
        p99 = _percentile(pooled(r.ts_latency), 99)
        print(
            f"  {r.name:8} ratio {r.ratio:.2f} {'met' if r.ratio >= 2 else 'NOT met'}; "
            f"p99 {p99:.2f} ms {'met' if p99 < p99_target_ms else 'NOT met'}"
        )
    print(f"  geometric mean {geomean:.2f} {'met' if geomean >= 2.5 else 'NOT met'}")
    return geomean


# -- TrackStore on dynalite ---------------------------------------------------------------------


DYNALITE_ENDPOINTS = ("latest", "history", "status")


def dynalite_section(args: argparse.Namespace, script: Path, logdir: Path) -> None:
    """TrackStore and the FastAPI baseline's boto3 build (baselines/fastapi_dynamodb.py) reading
    the same tables on one dynalite. dynalite runs on the client's core and bounds both sides'
    req/s, so the figure compared is requests per CPU second of the server."""
    print(f"\nOn dynalite ({DYNALITE_DEVICES} devices x {SEED_POINTS} points): TrackStore against")
    print("FastAPI + boto3; compared per CPU second of the server, dynalite being the bound")
    with dynalite() as dynamo_url:
        node = _child_pid("dynalite")
        if node is not None:  # dynalite shares the client core, away from the server's
            subprocess.run(
                ["taskset", "-a", "-p", "-c", CLIENT_CORE, str(node)],
                check=True,
                capture_output=True,
            )
        env = {
            **DUMMY_CREDENTIALS,
            "AWS_ENDPOINT_URL_DYNAMODB": dynamo_url,
            "TRACKSTORE_BACKEND": "aws",
            "LOG_LEVEL": "WARNING",
        }
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
        with moto_server() as kinesis_url:  # `init` creates the stream too; moto stands in
            subprocess.run(
                [str(BIN / "trackstore"), "init"],
                cwd=ROOT,
                env={**os.environ, **env, "AWS_ENDPOINT_URL_KINESIS": kinesis_url},
                check=True,
                capture_output=True,
            )
        os.environ.update(env)
        started = time.perf_counter()
        asyncio.run(_fill_dynamo(env))
        print(f"  filled in {time.perf_counter() - started:.1f} s")
        ts_port, base_port = free_port(), free_port()
        ts = start_server(
            "trackstore-dynalite",
            trackstore_argv("serve", "--port", str(ts_port)),
            env,
            ts_port,
            "/locations/bus-0000/latest",
            logdir,
        )
        try:
            base = start_server(
                "fastapi-boto3",
                [
                    *(sys.executable, str(ROOT / "benchmarks/baselines/fastapi_dynamodb.py")),
                    *("--port", str(base_port)),
                ],
                env,
                base_port,
                "/locations/bus-0000/latest",
                logdir,
            )
            try:
                compare_answers(ts, base, DYNALITE_ENDPOINTS, key=DYNALITE_DEVICES - 1)
                print("  same JSON on both sides (timestamps and tokens aside)")
                results = compare(
                    ts,
                    base,
                    args,
                    script,
                    [name for name in DYNALITE_ENDPOINTS if name in args.endpoints],
                    keys=DYNALITE_DEVICES,
                    client_core_shared=True,
                )
            finally:
                stop_server(base)
        finally:
            stop_server(ts)
    for result in results:  # judged by CPU, not by the emulator's pace
        result.ratios = result.cpu_ratios
    print("\nOn dynalite: ratios below are of requests per server CPU second")
    report(results, p99_target_ms=10)


async def _fill_dynamo(env: dict[str, str]) -> None:
    from trackstore.cli.seed import seed
    from trackstore.config import Settings
    from trackstore.container import build_container, opened

    container = build_container(Settings.from_env(env, dotenv=None))
    async with opened(container):
        await seed(
            container.locations(),
            container.devices(),
            DYNALITE_DEVICES,
            SEED_POINTS,
            time.time_ns() // 10**6,
        )


def _child_pid(marker: str) -> int | None:
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if (
                int(stat.rsplit(")", 1)[1].split()[1]) == me
                and marker in (entry / "cmdline").read_text()
            ):
                return int(entry.name)
    return None


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--open-loop-worker":
        open_loop_worker(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description="TrackStore API vs FastAPI baseline")
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--latency-duration", type=float, default=10, help="open-loop seconds")
    parser.add_argument("--pairs", type=int, default=2, help="A/B pairs of wrk runs (ABBA...)")
    parser.add_argument("--latency-pairs", type=int, default=2, help="A/B pairs of open-loop runs")
    parser.add_argument(
        "--endpoints", type=lambda s: s.split(","), default=list(ENDPOINTS), help="comma list"
    )
    parser.add_argument("--no-dynalite", action="store_true")
    parser.add_argument("--only-dynalite", action="store_true")
    parser.add_argument(
        "--traced", action="store_true", help="TrackStore with tracing on, spans to a local sink"
    )
    parser.add_argument(
        "--max-wait", type=float, default=60, help="seconds to wait for idle cores before a run"
    )
    parser.add_argument(
        "--attempts", type=int, default=3, help="tries per run while others disturb it"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the servers get stopped
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (apt-get install -y wrk util-linux)")
    if os.cpu_count() is None or os.cpu_count() < 2:  # type: ignore[operator]
        sys.exit("needs 2 cores: servers on core 1, load on core 0")

    logdir = Path(tempfile.mkdtemp(prefix="api-bench-"))
    script = logdir / "rotate.lua"
    script.write_text(WRK_SCRIPT)
    tracing = otlp_sink_env() if args.traced else {}
    if args.only_dynalite:
        dynalite_section(args, script, logdir)
        return
    print(f"logs in {logdir}; TrackStore tracing {'on' if args.traced else 'off (as shipped)'}")
    ts_port, base_port = free_port(), free_port()
    ts = start_server(
        "trackstore",
        trackstore_argv(
            *("serve", "--port", str(ts_port)),
            *("--seed-devices", str(SEED_DEVICES), "--seed-points", str(SEED_POINTS)),
        ),
        {"TRACKSTORE_BACKEND": "memory", "LOG_LEVEL": "WARNING", **tracing},
        ts_port,
        "/locations/bus-0000/latest",
        logdir,
    )
    try:
        base = start_server(
            "fastapi",
            [
                *(sys.executable, str(ROOT / "benchmarks/baselines/fastapi_app.py")),
                *("--port", str(base_port), "--seed-devices", str(SEED_DEVICES)),
                *("--seed-points", str(SEED_POINTS)),
            ],
            {},
            base_port,
            "/locations/bus-0000/latest",
            logdir,
        )
        try:
            sizes = compare_answers(ts, base)
            print("  same JSON on both sides (timestamps and tokens aside); bytes per answer:")
            for name, (a, b) in sizes.items():
                print(f"    {name:8} TrackStore {a:6}  FastAPI {b:6}")
            print(
                f"  RSS after seeding: TrackStore {rss_mb(ts.pid):.0f} MB, "
                f"FastAPI {rss_mb(base.pid):.0f} MB"
            )
            results = compare(ts, base, args, script, args.endpoints)
            print(
                f"  RSS after the runs: TrackStore {rss_mb(ts.pid):.0f} MB, "
                f"FastAPI {rss_mb(base.pid):.0f} MB"
            )
        finally:
            stop_server(base)
    finally:
        stop_server(ts)
    report(results)
    if not args.no_dynalite:
        dynalite_section(args, script, logdir)
    print("\nreproduce: .venv-bench/bin/python benchmarks/api.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
