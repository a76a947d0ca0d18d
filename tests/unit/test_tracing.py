"""Tracing in process, without a network: spans land in an in-memory exporter installed through
trackstore.telemetry.configure_tracing, exactly as the CLI installs its exporters.

OpenTelemetry lets a process set its global tracer provider only once (later attempts log a warning
and keep the first), so one session-wide provider serves every test here and the exporter is
emptied between tests. If another test module already installed a provider in this process (the
CLI tests run `trackstore.cli.main` in-process, which calls configure_tracing), the API's set-once
guard is reset first, as OpenTelemetry's own test utilities do, so that the provider under test is
the one configure_tracing built.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from botocore.exceptions import ClientError
from litestar.testing import TestClient
from opentelemetry import trace
from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once

from tests.helpers import NOW_MS, SECOND_MS, TTL_DAYS, payload
from tests.unit.memory_api import memory_app
from trackstore.aws import TracedClient
from trackstore.clock import FakeClock
from trackstore.consumer import Consumer
from trackstore.logs import JsonFormatter
from trackstore.memory import (
    MemoryDeviceRepository,
    MemoryLocationRepository,
    MemoryStore,
    MemoryStream,
    MemoryStreamSource,
)
from trackstore.metrics import Metrics
from trackstore.service import TrackService
from trackstore.telemetry import configure_tracing, tracer, xray_trace_id

SERVICE_NAME = "trackstore-unit-test"
DEVICE_ROUTE = "GET /devices/{device_id}"


# -- the one provider of this process ------------------------------------------------------------


@pytest.fixture(scope="session")
def tracing() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # Someone set it before us in this process: lift the set-once guard (private API, the
        # same reset opentelemetry-test-utils performs) so configure_tracing's provider wins.
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None
    provider = configure_tracing(
        "trackstore-default",
        environ={"OTEL_SERVICE_NAME": SERVICE_NAME},
        processors=(SimpleSpanProcessor(exporter),),
    )
    assert provider is not None
    assert trace.get_tracer_provider() is provider, "another provider is installed globally"
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def exporter(
    tracing: tuple[TracerProvider, InMemorySpanExporter],
) -> Iterator[InMemorySpanExporter]:
    exporter = tracing[1]
    exporter.clear()
    yield exporter
    exporter.clear()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.kind is SpanKind.SERVER]


def epoch_seconds_of(trace_id: int) -> int:
    """The first 32 bits of an X-Ray trace id: the epoch second it was made."""
    return trace_id >> 96


def xray_header(trace_hex: str, parent_hex: str) -> str:
    return f"Root=1-{trace_hex[:8]}-{trace_hex[8:]};Parent={parent_hex};Sampled=1"


def new_trace_hex() -> str:
    """A 32-hex-digit trace id in X-Ray form: the current epoch second, then 96 random bits."""
    return f"{int(time.time()):08x}{secrets.token_hex(12)}"


# -- the provider ----------------------------------------------------------------------------------


def test_provider_has_xray_ids_and_the_service_name_from_otel_variables(
    tracing: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider = tracing[0]
    assert isinstance(provider.id_generator, AwsXRayIdGenerator)
    assert provider.resource.attributes["service.name"] == SERVICE_NAME
    assert provider.resource.attributes["service.version"]


def test_without_an_exporter_no_provider_is_installed() -> None:
    # Spans that go nowhere would only cost time: the API's no-op tracer stays in place.
    assert configure_tracing("trackstore-serve", environ={}) is None
    assert configure_tracing("trackstore-serve", environ={"OTEL_SERVICE_NAME": "x"}) is None


def test_otel_traces_exporter_none_turns_tracing_off() -> None:
    assert configure_tracing("trackstore-serve", environ={"OTEL_TRACES_EXPORTER": "none"}) is None
    assert configure_tracing("trackstore-serve", environ={"OTEL_TRACES_EXPORTER": " None "}) is None


def test_xray_trace_id_format() -> None:
    trace_id = int("5f84c7a9" + "0123456789abcdef01234567", 16)
    assert xray_trace_id(trace_id) == "1-5f84c7a9-0123456789abcdef01234567"
    assert xray_trace_id(1) == "1-00000000-000000000000000000000001"


# -- HTTP request spans ----------------------------------------------------------------------------


@pytest.fixture
def client(exporter: InMemorySpanExporter) -> Iterator[TestClient[Any]]:
    app = memory_app()
    with TestClient(app) as client:
        exporter.clear()  # whatever startup traced
        yield client


def test_request_span_is_named_after_the_route_template(
    client: TestClient[Any], exporter: InMemorySpanExporter
) -> None:
    client.get("/devices/bus-1")
    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == [DEVICE_ROUTE], [s.name for s in spans]
    (span,) = spans
    assert span.kind is SpanKind.SERVER
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/devices/{device_id}"
    assert "bus-1" not in span.name
    assert span.resource.attributes["service.name"] == SERVICE_NAME


def test_request_span_carries_the_status_and_marks_only_server_errors(
    client: TestClient[Any], exporter: InMemorySpanExporter
) -> None:
    assert client.get("/devices/bus-1").status_code == 404  # not registered, never reported
    assert client.get("/no/such/route").status_code == 404
    known, unknown = server_spans(exporter)
    assert known.attributes is not None
    assert known.attributes["http.response.status_code"] == 404
    assert known.status.status_code is not StatusCode.ERROR  # the client's mistake, not ours
    assert unknown.name == "GET"  # no route: the method alone, never the raw path
    assert unknown.attributes is not None
    assert "http.route" not in unknown.attributes


def test_two_devices_share_one_span_name(
    client: TestClient[Any], exporter: InMemorySpanExporter
) -> None:
    client.get("/devices/bus-1")
    client.get("/devices/tram-77")
    assert [span.name for span in exporter.get_finished_spans()] == [DEVICE_ROUTE, DEVICE_ROUTE]


def test_request_span_ids_are_xray_compatible(
    client: TestClient[Any], exporter: InMemorySpanExporter
) -> None:
    client.get("/devices/bus-1")
    client.get("/devices/bus-2")
    spans = server_spans(exporter)
    assert len(spans) == 2
    now = time.time()
    for span in spans:
        assert span.parent is None  # no incoming context: a new trace
        trace_id = span.context.trace_id
        assert abs(epoch_seconds_of(trace_id) - now) < 60, f"{trace_id:032x}"
    assert spans[0].context.trace_id != spans[1].context.trace_id


def test_alb_xray_header_continues_the_trace(
    client: TestClient[Any], exporter: InMemorySpanExporter
) -> None:
    trace_hex, parent_hex = new_trace_hex(), secrets.token_hex(8)
    client.get("/devices/bus-1", headers={"X-Amzn-Trace-Id": xray_header(trace_hex, parent_hex)})
    (span,) = server_spans(exporter)
    assert f"{span.context.trace_id:032x}" == trace_hex
    assert span.parent is not None
    assert span.parent.is_remote
    assert f"{span.parent.span_id:016x}" == parent_hex
    assert span.context.span_id != int(parent_hex, 16)
    assert span.context.trace_flags.sampled


def test_w3c_traceparent_continues_the_trace(
    client: TestClient[Any], exporter: InMemorySpanExporter
) -> None:
    trace_hex, parent_hex = new_trace_hex(), secrets.token_hex(8)
    client.get("/devices/bus-1", headers={"traceparent": f"00-{trace_hex}-{parent_hex}-01"})
    (span,) = server_spans(exporter)
    assert f"{span.context.trace_id:032x}" == trace_hex
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == parent_hex


# -- consumer batch spans --------------------------------------------------------------------------


def consumer_service(clock: FakeClock) -> TrackService:
    store = MemoryStore()
    return TrackService(
        locations=MemoryLocationRepository(store),
        devices=MemoryDeviceRepository(store),
        clock=clock,
        ttl_days=TTL_DAYS,
    )


async def consume_all(stream: MemoryStream, service: TrackService) -> None:
    """Runs a Consumer until every record in the stream is checkpointed, then stops it."""
    consumer = Consumer(
        MemoryStreamSource(stream, batch_size=100, idle_seconds=0.01), service, Metrics()
    )
    task = asyncio.create_task(consumer.run())
    deadline = time.monotonic() + 5
    while any(stream.checkpoints.get(s, 0) < stream.end(s) for s in stream.shard_ids):
        assert time.monotonic() < deadline, "the batch was not checkpointed within 5 s"
        await asyncio.sleep(0.005)
    await consumer.stop()
    await asyncio.wait_for(task, 5)


async def test_batch_span_carries_shard_sequence_numbers_and_counts(
    exporter: InMemorySpanExporter,
) -> None:
    clock = FakeClock(NOW_MS)
    stream = MemoryStream(1, clock)
    entries = [
        ("bus-1", msgspec.json.encode(payload(timestamp=NOW_MS - 3 * SECOND_MS))),
        ("bus-1", b"{not json"),
        ("bus-1", msgspec.json.encode(payload(timestamp=NOW_MS - 2 * SECOND_MS))),
        ("bus-1", msgspec.json.encode(payload(timestamp=NOW_MS - 2 * SECOND_MS))),  # resent
        ("bus-1", msgspec.json.encode(payload(timestamp=NOW_MS - 1 * SECOND_MS))),
    ]
    records = stream.put_records(entries)
    await consume_all(stream, consumer_service(clock))

    (span,) = named(exporter, "consume batch")
    assert span.kind is SpanKind.CONSUMER
    attributes = dict(span.attributes or {})
    assert attributes["aws.kinesis.shard_id"] == records[0].shard_id
    assert attributes["trackstore.first_sequence_number"] == records[0].sequence_number
    assert attributes["trackstore.last_sequence_number"] == records[-1].sequence_number
    assert attributes["trackstore.records"] == 5
    assert attributes["trackstore.stored"] == 3
    assert attributes["trackstore.rejected"] == 1
    assert attributes["trackstore.duplicates"] == 1
    assert list(span.links) == []
    assert abs(epoch_seconds_of(span.context.trace_id) - time.time()) < 60


async def test_batch_span_links_to_the_producers_traces(exporter: InMemorySpanExporter) -> None:
    clock = FakeClock(NOW_MS)
    stream = MemoryStream(1, clock)
    w3c_trace, w3c_parent = new_trace_hex(), secrets.token_hex(8)
    xray_trace, xray_parent = new_trace_hex(), secrets.token_hex(8)
    entries = [
        ("bus-1", msgspec.json.encode(payload(timestamp=NOW_MS - 4 * SECOND_MS))),
        (
            "bus-1",
            msgspec.json.encode(
                payload(
                    timestamp=NOW_MS - 3 * SECOND_MS,
                    traceparent=f"00-{w3c_trace}-{w3c_parent}-01",
                )
            ),
        ),
        (
            "bus-1",
            msgspec.json.encode(
                payload(
                    timestamp=NOW_MS - 2 * SECOND_MS,
                    attributes={"AWSTraceHeader": xray_header(xray_trace, xray_parent)},
                )
            ),
        ),
    ]
    stream.put_records(entries)
    await consume_all(stream, consumer_service(clock))

    (span,) = named(exporter, "consume batch")
    linked = {
        (f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") for link in span.links
    }
    assert linked == {(w3c_trace, w3c_parent), (xray_trace, xray_parent)}
    # A link, not a parent: the batch is its own trace.
    assert span.parent is None
    assert f"{span.context.trace_id:032x}" not in {w3c_trace, xray_trace}


async def test_spans_inside_a_batch_are_its_children(exporter: InMemorySpanExporter) -> None:
    clock = FakeClock(NOW_MS)
    stream = MemoryStream(1, clock)
    stream.put_records([("bus-1", msgspec.json.encode(payload()))])
    inner = consumer_service(clock)

    class TracedService:
        async def ingest(self, records: Any) -> Any:
            with tracer().start_as_current_span("DynamoDB.BatchWriteItem"):
                return await inner.ingest(records)

    await consume_all(stream, TracedService())  # type: ignore[arg-type]
    (batch,) = named(exporter, "consume batch")
    (call,) = named(exporter, "DynamoDB.BatchWriteItem")
    assert call.parent is not None
    assert call.parent.span_id == batch.context.span_id
    assert call.context.trace_id == batch.context.trace_id


# -- AWS call spans --------------------------------------------------------------------------------


class FakeDynamoDB:
    """Just enough of an aiobotocore DynamoDB client: answers as DynamoDB would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def batch_write_item(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("batch_write_item", request))
        table = next(iter(request["RequestItems"]))
        return {
            "UnprocessedItems": {table: request["RequestItems"][table][:1]},
            "ResponseMetadata": {"RetryAttempts": 2, "HTTPStatusCode": 200},
        }

    async def put_item(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("put_item", request))
        raise ClientError(
            {
                "Error": {
                    "Code": "ProvisionedThroughputExceededException",
                    "Message": "Rate of requests exceeds the allowed throughput",
                },
                "ResponseMetadata": {"RetryAttempts": 3, "HTTPStatusCode": 400},
            },
            "PutItem",
        )

    async def get_item(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("get_item", request))
        raise ClientError(
            {"Error": {"Code": "ValidationException", "Message": "bad key"}}, "GetItem"
        )


def put_request(n: int) -> dict[str, Any]:
    return {"PutRequest": {"Item": {"pk": {"S": f"bus-{n}"}}}}


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_aws_call_is_a_child_span_with_table_items_retries_and_unprocessed(
    exporter: InMemorySpanExporter,
) -> None:
    metrics = Metrics()
    fake = FakeDynamoDB()
    client = TracedClient(fake, "DynamoDB", metrics)
    with tracer().start_as_current_span("consume batch") as parent:
        response = await client.batch_write_item(
            RequestItems={"locations": [put_request(n) for n in range(3)]}
        )
    assert fake.calls[0][0] == "batch_write_item"
    assert len(response["UnprocessedItems"]["locations"]) == 1

    (span,) = named(exporter, "DynamoDB.BatchWriteItem")
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.context.trace_id == parent.get_span_context().trace_id
    attributes = dict(span.attributes or {})
    assert tuple(attributes["aws.dynamodb.table_names"]) == ("locations",)  # type: ignore[arg-type]
    assert attributes["aws.item_count"] == 3
    assert attributes["aws.retries"] == 2
    assert attributes["aws.dynamodb.unprocessed_items"] == 1
    assert attributes["aws.outcome"] == "ok"
    assert attributes["rpc.service"] == "DynamoDB"
    assert attributes["rpc.method"] == "BatchWriteItem"

    ok = {"service": "DynamoDB", "operation": "BatchWriteItem"}
    assert sample(metrics, "trackstore_aws_calls_total", **ok, outcome="ok") == 1
    assert sample(metrics, "trackstore_aws_retries_total", **ok) == 2
    assert sample(metrics, "trackstore_dynamodb_unprocessed_items_total") == 1


async def test_throttled_aws_call_is_marked_and_counted(exporter: InMemorySpanExporter) -> None:
    metrics = Metrics()
    client = TracedClient(FakeDynamoDB(), "DynamoDB", metrics)
    with pytest.raises(ClientError), tracer().start_as_current_span("request"):
        await client.put_item(TableName="devices", Item={"pk": {"S": "bus-1"}})

    (span,) = named(exporter, "DynamoDB.PutItem")
    attributes = dict(span.attributes or {})
    assert attributes["aws.outcome"] == "throttled"
    assert attributes["aws.error_code"] == "ProvisionedThroughputExceededException"
    assert attributes["aws.retries"] == 3
    assert tuple(attributes["aws.dynamodb.table_names"]) == ("devices",)  # type: ignore[arg-type]
    labels = {"service": "DynamoDB", "operation": "PutItem"}
    assert sample(metrics, "trackstore_aws_calls_total", **labels, outcome="throttled") == 1
    assert sample(metrics, "trackstore_aws_calls_total", **labels, outcome="ok") is None
    assert sample(metrics, "trackstore_aws_retries_total", **labels) == 3


async def test_other_client_errors_count_as_errors(exporter: InMemorySpanExporter) -> None:
    metrics = Metrics()
    client = TracedClient(FakeDynamoDB(), "DynamoDB", metrics)
    with pytest.raises(ClientError):
        await client.get_item(TableName="devices", Key={"pk": {"S": "bus-1"}})
    (span,) = named(exporter, "DynamoDB.GetItem")
    assert dict(span.attributes or {})["aws.outcome"] == "error"
    labels = {"service": "DynamoDB", "operation": "GetItem"}
    assert sample(metrics, "trackstore_aws_calls_total", **labels, outcome="error") == 1
    assert sample(metrics, "trackstore_aws_calls_total", **labels, outcome="throttled") is None


async def test_without_tracing_aws_calls_make_no_span_and_are_still_counted(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As `serve` and `consume` run with no OTLP endpoint configured: no provider installed.
    monkeypatch.setattr("trackstore.aws.tracing_on", lambda: False)
    metrics = Metrics()
    client = TracedClient(FakeDynamoDB(), "DynamoDB", metrics)

    response = await client.batch_write_item(RequestItems={"locations": [put_request(1)] * 2})
    with pytest.raises(ClientError):
        await client.put_item(TableName="devices", Item={"pk": {"S": "bus-1"}})

    assert len(response["UnprocessedItems"]["locations"]) == 1
    assert named(exporter, "DynamoDB.BatchWriteItem") == []
    assert named(exporter, "DynamoDB.PutItem") == []
    batch = {"service": "DynamoDB", "operation": "BatchWriteItem"}
    assert sample(metrics, "trackstore_aws_calls_total", **batch, outcome="ok") == 1
    assert sample(metrics, "trackstore_aws_retries_total", **batch) == 2
    assert sample(metrics, "trackstore_dynamodb_unprocessed_items_total") == 1
    put = {"service": "DynamoDB", "operation": "PutItem"}
    assert sample(metrics, "trackstore_aws_calls_total", **put, outcome="throttled") == 1


# -- JSON logs -------------------------------------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.unit.test_tracing.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_log_lines_inside_a_span_carry_its_ids(
    json_log: tuple[logging.Logger, io.StringIO], exporter: InMemorySpanExporter
) -> None:
    logger, out = json_log
    with tracer().start_as_current_span("work") as span:
        logger.warning("record rejected", extra={"reason": "not_json", "shard": "shardId-1"})
    context = span.get_span_context()
    (line,) = lines(out)
    assert line["traceId"] == f"{context.trace_id:032x}"
    assert line["spanId"] == f"{context.span_id:016x}"
    trace_hex = f"{context.trace_id:032x}"
    assert line["xrayTraceId"] == f"1-{trace_hex[:8]}-{trace_hex[8:]}"
    assert line["message"] == "record rejected"
    assert line["level"] == "WARNING"
    assert line["reason"] == "not_json"
    assert line["shard"] == "shardId-1"


def test_log_lines_outside_a_span_carry_no_ids(
    json_log: tuple[logging.Logger, io.StringIO], exporter: InMemorySpanExporter
) -> None:
    logger, out = json_log
    logger.info("consumer starting")
    (line,) = lines(out)
    assert line["message"] == "consumer starting"
    assert not {"traceId", "spanId", "xrayTraceId"} & set(line)
