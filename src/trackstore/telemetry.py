"""Tracing: OpenTelemetry configured from the standard OTEL_* variables, with X-Ray trace ids and
the X-Ray propagator beside W3C's, so an ALB's X-Amzn-Trace-Id continues into our spans and an
ADOT collector can hand the spans to X-Ray.

Spans are made only when an OTLP endpoint is configured (or OTEL_TRACES_EXPORTER asks for it):
without an exporter no provider is installed, OpenTelemetry's API stays a no-op and requests skip
the tracing middleware, which costs about half of a cheap request's time; logs then carry no trace
ids, as there is no trace to find them by. OTEL_TRACES_EXPORTER=none says the same explicitly.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping, Sequence

import msgspec
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.aws import AwsXRayPropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.extension.aws.resource.ecs import AwsEcsResourceDetector
from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator
from opentelemetry.sdk.resources import Resource, get_aggregated_resources
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from trackstore import __version__
from trackstore.domain import StreamRecord

log = logging.getLogger(__name__)
TRACER_NAME = "trackstore"


def tracer() -> trace.Tracer:
    return _tracer_of(trace.get_tracer_provider())


def tracing_on() -> bool:
    """Whether a tracer provider is installed (configure_tracing, or a test's): without one,
    OpenTelemetry's API makes spans that go nowhere, and callers may skip making them."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@functools.lru_cache(maxsize=8)
def _tracer_of(provider: trace.TracerProvider) -> trace.Tracer:
    # get_tracer builds a new Tracer on every call; a request or an AWS call needs only one.
    return provider.get_tracer(TRACER_NAME, __version__)


def configure_tracing(
    default_service: str,
    environ: Mapping[str, str] | None = None,
    processors: tuple[SpanProcessor, ...] = (),
) -> TracerProvider | None:
    """Installs the global tracer provider and propagators; returns the provider (to shut it
    down at exit), or None when no span would go anywhere (no exporter, no processors)."""
    env = os.environ if environ is None else environ
    propagate.set_global_textmap(
        CompositePropagator(
            [TraceContextTextMapPropagator(), W3CBaggagePropagator(), AwsXRayPropagator()]
        )
    )
    exporter_names = {
        name.strip().lower() for name in env.get("OTEL_TRACES_EXPORTER", "").split(",") if name
    }
    if exporter_names == {"none"}:
        return None
    exporter = _exporter(env, exporter_names)
    if exporter is None and not processors:
        return None
    resource = Resource.create(
        {
            "service.name": env.get("OTEL_SERVICE_NAME") or default_service,
            "service.version": __version__,
        }
    )
    if env.get("ECS_CONTAINER_METADATA_URI_V4") or env.get("ECS_CONTAINER_METADATA_URI"):
        resource = get_aggregated_resources([AwsEcsResourceDetector()], initial_resource=resource)
    provider = TracerProvider(resource=resource, id_generator=AwsXRayIdGenerator())
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    for processor in processors:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


def _exporter(env: Mapping[str, str], names: set[str]) -> SpanExporter | None:
    endpoint_set = bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    if "otlp" not in names and not endpoint_set:
        return None
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter()


def producer_links(records: Sequence[StreamRecord], limit: int = 16) -> list[trace.Link]:
    """Links to the traces of the producers that put their trace context in a record, as a
    `traceparent` (W3C) or `AWSTraceHeader` (X-Ray) field, top-level or in `attributes`."""
    links: list[trace.Link] = []
    seen: set[int] = set()
    for record in records:
        if len(links) >= limit:
            break
        if b"traceparent" not in record.data and b"AWSTraceHeader" not in record.data:
            continue  # the common case, decided without parsing
        try:
            body = msgspec.json.decode(record.data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            continue
        if not isinstance(body, dict):
            continue
        nested = body.get("attributes")
        fields = {**(nested if isinstance(nested, dict) else {}), **body}
        carrier = {
            "traceparent": str(fields.get("traceparent", "")),
            "X-Amzn-Trace-Id": str(fields.get("AWSTraceHeader", "")),
        }
        context = trace.get_current_span(propagate.extract(carrier)).get_span_context()
        if context.is_valid and context.trace_id not in seen:
            seen.add(context.trace_id)
            links.append(trace.Link(context))
    return links


def xray_trace_id(trace_id: int) -> str:
    """A 128-bit trace id as X-Ray writes it: `1-<8 hex epoch seconds>-<24 hex>`."""
    hex_id = f"{trace_id:032x}"
    return f"1-{hex_id[:8]}-{hex_id[8:]}"
