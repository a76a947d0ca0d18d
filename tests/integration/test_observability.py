"""Observability as an operator meets it, with real processes:

- `trackstore serve`, configured with nothing but OTEL_* variables, exports its request spans over
  OTLP/HTTP to a receiver written here, and an ALB's X-Amzn-Trace-Id continues into them;
- `trackstore consume` counts what flows on its own /metrics port (parsed with prometheus-client's
  parser) and reports healthy there;
- `trackstore serve`'s /health goes 503 when DynamoDB stops answering (a TCP proxy in front of
  dynalite, closed and reopened by the test) and back to 200 when it returns, each answer in time
  for a load balancer.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import secrets
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client.parser import text_string_to_metric_families

from tests.aws_emulators import DUMMY_CREDENTIALS, free_port
from tests.faults import TcpProxy
from tests.integration.conftest import TRACKSTORE, start_consumer
from trackstore.kinesis.client import kinesis_client
from trackstore.kinesis.producer import Producer

pytestmark = pytest.mark.integration

LB_TIMEOUT_S = 5.0  # what a load balancer's health check waits for an answer
DEVICE_ROUTE = "GET /devices/{device_id}"


def base_env(workdir: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a `trackstore` process: nothing from this machine's config."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        **DUMMY_CREDENTIALS,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }


@dataclass
class Process:
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, as ECS stops a task; returns the exit code."""
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit within {timeout} s of SIGTERM: {self.output()}")


def spawn(
    argv: list[str], env: dict[str, str], workdir: Path, name: str, processes: list[Any]
) -> Process:
    log = workdir / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(argv, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    processes.append(popen)
    return Process(popen, log)


def wait_for_http(url: str, process: Process, timeout: float = 30) -> None:
    """Returns once `url` answers at all (any status)."""
    deadline = time.monotonic() + timeout
    while True:
        code = process.popen.poll()
        assert code is None, f"exited {code} before serving: {process.output()}"
        try:
            httpx.get(url, timeout=LB_TIMEOUT_S)
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"{url} not up in {timeout} s: {process.output()}"
            time.sleep(0.1)


def run_init(env: dict[str, str], workdir: Path, shards: int) -> None:
    done = subprocess.run(
        [*TRACKSTORE, "init", "--shards", str(shards)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- a: OTLP/HTTP export -------------------------------------------------------------------------


class OtlpReceiver:
    """A minimal OTLP/HTTP trace receiver on 127.0.0.1: keeps every ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.content_types: list[str] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver._lock:
                    receiver.requests.append(request)
                    receiver.content_types.append(self.headers.get("Content-Type", ""))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def spans(self) -> list[tuple[dict[str, Any], Span]]:
        """Every span received, with its resource's attributes."""
        with self._lock:
            requests = list(self.requests)
        return [
            (attributes(resource_spans.resource.attributes), span)
            for request in requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]


def value_of(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: value_of(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


@dataclass
class Exported:
    spans: list[tuple[dict[str, Any], Span]]
    content_types: list[str]
    xray_trace_hex: str
    xray_parent_hex: str
    exit_code: int
    output: str
    statuses: list[int] = field(default_factory=list)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    """`trackstore serve` run once with only OTEL_* variables for tracing; what it exported."""
    workdir = tmp_path_factory.mktemp("otlp")
    trace_hex = f"{int(time.time()):08x}{secrets.token_hex(12)}"
    parent_hex = secrets.token_hex(8)
    processes: list[subprocess.Popen[bytes]] = []
    with OtlpReceiver() as receiver:
        port = free_port()
        env = base_env(
            workdir,
            TRACKSTORE_BACKEND="memory",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
            OTEL_SERVICE_NAME="trackstore-test",
            OTEL_BSP_SCHEDULE_DELAY="200",
        )
        server = spawn(
            [*TRACKSTORE, "serve", "--port", str(port)], env, workdir, "serve-otlp", processes
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_http(f"{url}/health/live", server)
            statuses = [
                httpx.get(f"{url}/devices/bus-1", timeout=LB_TIMEOUT_S).status_code,
                httpx.get(f"{url}/devices/bus-2", timeout=LB_TIMEOUT_S).status_code,
                httpx.get(
                    f"{url}/devices/bus-3",
                    headers={
                        "X-Amzn-Trace-Id": (
                            f"Root=1-{trace_hex[:8]}-{trace_hex[8:]};Parent={parent_hex};Sampled=1"
                        )
                    },
                    timeout=LB_TIMEOUT_S,
                ).status_code,
            ]
            code = server.stop()
            yield Exported(
                spans=receiver.spans(),
                content_types=list(receiver.content_types),
                xray_trace_hex=trace_hex,
                xray_parent_hex=parent_hex,
                exit_code=code,
                output=server.output(),
                statuses=statuses,
            )
        finally:
            for popen in processes:
                if popen.poll() is None:
                    popen.kill()
                    popen.wait()


def server_spans(exported: Exported) -> list[tuple[dict[str, Any], Span]]:
    return [(r, s) for r, s in exported.spans if s.kind == Span.SpanKind.SPAN_KIND_SERVER]


def test_serve_stops_cleanly_and_flushes_spans_over_otlp_http(exported: Exported) -> None:
    assert exported.exit_code == 0, exported.output
    assert "Traceback" not in exported.output
    assert exported.spans, f"no spans received ({exported.statuses}): {exported.output}"
    assert all(t.startswith("application/x-protobuf") for t in exported.content_types)
    assert len(server_spans(exported)) >= 3, [s.name for _, s in exported.spans]


def test_spans_carry_the_service_name_from_otel_service_name(exported: Exported) -> None:
    resources = {resource.get("service.name") for resource, _ in exported.spans}
    assert resources == {"trackstore-test"}


def test_request_spans_are_named_after_the_route_template(exported: Exported) -> None:
    names = [span.name for _, span in server_spans(exported)]
    assert names.count(DEVICE_ROUTE) == 3, names
    assert not [name for name in names if "bus-" in name], names
    for _, span in server_spans(exported):
        if span.name == DEVICE_ROUTE:
            assert attributes(span.attributes)["http.route"] == "/devices/{device_id}"


def test_alb_xray_header_continues_the_trace(exported: Exported) -> None:
    continued = [
        span
        for _, span in server_spans(exported)
        if span.trace_id == bytes.fromhex(exported.xray_trace_hex)
    ]
    assert len(continued) == 1, [s.trace_id.hex() for _, s in server_spans(exported)]
    assert continued[0].parent_span_id == bytes.fromhex(exported.xray_parent_hex)


def test_new_traces_have_xray_trace_ids(exported: Exported) -> None:
    now = time.time()
    others = [
        span
        for _, span in server_spans(exported)
        if span.trace_id != bytes.fromhex(exported.xray_trace_hex)
    ]
    assert len(others) >= 2
    for span in others:
        assert abs(int.from_bytes(span.trace_id[:4], "big") - now) < 120, span.trace_id.hex()


# -- b: consumer metrics move as records flow -----------------------------------------------------

VALID_DEVICES = 12
VALID_PER_DEVICE = 15
NOT_JSON = 20


def produced_entries() -> list[tuple[str, bytes]]:
    """Valid reports of a few devices over the last half hour, with not-JSON records mixed in."""
    start_ms = int(time.time() * 1000) - 30 * 60_000
    entries: list[tuple[str, bytes]] = []
    for i in range(VALID_PER_DEVICE):
        for d in range(VALID_DEVICES):
            body = {
                "deviceId": f"obs-{d:02d}",
                "timestamp": start_ms + i * 1000,
                "latitude": 52.5 + i / 1000,
                "longitude": 13.4 + d / 100,
            }
            entries.append((f"obs-{d:02d}", msgspec.json.encode(body)))
    for i in range(NOT_JSON):
        entries.insert(i * 9, (f"bad-{i}", b"{this is not json"))
    return entries


async def produce(env: dict[str, str], entries: list[tuple[str, bytes]]) -> None:
    async with kinesis_client("us-east-1", endpoint_url=env["AWS_ENDPOINT_URL_KINESIS"]) as c:
        await Producer(c, env["KINESIS_STREAM_NAME"]).put(entries)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=LB_TIMEOUT_S)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_consumer_metrics_move_as_records_flow(
    stream_env: dict[str, str], tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    env = {**stream_env, "KINESIS_BATCH_SIZE": "50"}
    run_init(env, tmp_path, shards=2)
    port = free_port()
    log = tmp_path / "consumer.log"
    consumer = Process(start_consumer(env, log, metrics_port=port), log)
    processes.append(consumer.popen)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/health/live", consumer)

    before = scrape(f"{url}/metrics")
    assert value(before, "trackstore_records_stored_total") == 0
    assert value(before, "trackstore_records_rejected_total", reason="not_json") == 0

    entries = produced_entries()
    valid = VALID_DEVICES * VALID_PER_DEVICE
    assert len(entries) == valid + NOT_JSON == 200
    asyncio.run(produce(env, entries))

    deadline = time.monotonic() + 30
    while True:
        assert consumer.popen.poll() is None, f"consumer exited: {consumer.output()}"
        samples = scrape(f"{url}/metrics")
        stored = value(samples, "trackstore_records_stored_total") or 0
        rejected = value(samples, "trackstore_records_rejected_total", reason="not_json") or 0
        leases = value(samples, "trackstore_leases_held")
        if stored >= valid and rejected >= NOT_JSON and leases == 2:
            break
        assert time.monotonic() < deadline, (
            f"after 30 s: stored {stored}/{valid}, not_json {rejected}/{NOT_JSON}, "
            f"leases {leases}: {consumer.output()}"
        )
        time.sleep(0.25)

    assert stored == valid
    assert rejected == NOT_JSON
    assert value(samples, "trackstore_records_received_total") == len(entries)
    assert value(samples, "trackstore_records_rejected_total", reason="missing_field") == 0
    assert value(samples, "trackstore_records_duplicate_total") == 0
    assert (value(samples, "trackstore_batches_total") or 0) >= 2  # two shards at least
    assert (value(samples, "trackstore_batch_seconds_count") or 0) >= 2
    lag = {
        dict(labels)["shard"]: v
        for (name, labels), v in samples.items()
        if name == "trackstore_millis_behind_latest"
    }
    assert len(lag) == 2, lag
    calls = {
        (dict(labels)["service"], dict(labels)["operation"])
        for (name, labels), v in samples.items()
        if name == "trackstore_aws_calls_total" and v > 0
    }
    assert {service for service, _ in calls} >= {"DynamoDB", "Kinesis"}, calls
    assert ("Kinesis", "GetRecords") in calls, calls
    assert ("DynamoDB", "BatchWriteItem") in calls, calls
    assert (value(samples, "process_resident_memory_bytes") or 0) > 0

    health = httpx.get(f"{url}/health", timeout=LB_TIMEOUT_S)
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok"

    assert consumer.stop() == 0, consumer.output()
    assert "Traceback" not in consumer.output()
    # One line per rejected record, never the payload.
    lines = [line for line in consumer.output().splitlines() if "record rejected" in line]
    assert lines
    assert not [line for line in lines if "this is not json" in line]


# -- c: /health follows DynamoDB ----------------------------------------------------------------


@pytest.fixture
def dynamodb_proxy(dynalite_endpoint: str) -> Iterator[TcpProxy]:
    with TcpProxy(dynalite_endpoint) as proxy:
        yield proxy


def health(url: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    try:
        response = httpx.get(f"{url}/health", timeout=LB_TIMEOUT_S)
    except httpx.TimeoutException:
        pytest.fail(f"/health gave no answer within {LB_TIMEOUT_S} s")
    return response, time.monotonic() - started


def wait_for_health(url: str, status: int, within: float, server: Process) -> httpx.Response:
    deadline = time.monotonic() + within
    seen: list[int] = []
    while True:
        assert server.popen.poll() is None, f"serve exited: {server.output()}"
        response, took = health(url)
        assert took < LB_TIMEOUT_S, f"/health took {took:.1f} s"
        seen.append(response.status_code)
        if response.status_code == status:
            return response
        assert time.monotonic() < deadline, (
            f"/health not {status} within {within} s (saw {seen}): {response.text}"
        )
        time.sleep(0.25)


def test_health_follows_dynamodb(
    dynamodb_proxy: TcpProxy,
    moto_endpoint: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    suffix = uuid.uuid4().hex[:10]
    env = base_env(
        tmp_path,
        TRACKSTORE_BACKEND="aws",
        AWS_ENDPOINT_URL_DYNAMODB=dynamodb_proxy.url,
        AWS_ENDPOINT_URL_KINESIS=moto_endpoint,
        DEVICE_TABLE_NAME=f"obs-devices-{suffix}",
        LOCATION_TABLE_NAME=f"obs-locations-{suffix}",
        LEASE_TABLE_NAME=f"obs-leases-{suffix}",
        KINESIS_STREAM_NAME=f"obs-stream-{suffix}",
        LOG_LEVEL="WARNING",
    )
    run_init(env, tmp_path, shards=1)
    port = free_port()
    server = spawn([*TRACKSTORE, "serve", "--port", str(port)], env, tmp_path, "serve", processes)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/health/live", server)

    ok = wait_for_health(url, 200, within=10, server=server)
    assert ok.json() == {"status": "ok", "checks": {"locations": "ok", "devices": "ok"}}

    dynamodb_proxy.cut()
    down = wait_for_health(url, 503, within=10, server=server)
    retry_after = down.headers.get("Retry-After")
    assert retry_after is not None
    assert retry_after.isdigit()
    assert int(retry_after) >= 1
    body = down.json()
    assert body["status"] == "unavailable"
    assert set(body["checks"]) == {"locations", "devices"}
    assert body["checks"]["locations"] != "ok"
    assert body["checks"]["devices"] != "ok"
    # Liveness does not depend on DynamoDB: restarting the task would not bring it back.
    live = httpx.get(f"{url}/health/live", timeout=LB_TIMEOUT_S)
    assert live.status_code == 200

    dynamodb_proxy.restore()
    back = wait_for_health(url, 200, within=10, server=server)
    assert back.json()["checks"] == {"locations": "ok", "devices": "ok"}

    assert server.stop() == 0, server.output()
    assert "Traceback" not in server.output()
