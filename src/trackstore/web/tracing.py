"""HTTP request spans: one SERVER span per request, named after the route template
(`GET /devices/{device_id}`), never the raw path: one span name per route, not one per device.

The span continues the caller's trace (W3C `traceparent`, or an ALB's `X-Amzn-Trace-Id`, through
the global propagators) and is current while the request runs, so AWS calls become its children
and log lines carry its ids. It starts before routing as just the method (what OpenTelemetry
prescribes for an unknown route) and takes the template once routing has found it.

Not OpenTelemetry's generic ASGI middleware: that one parses and redacts the URL, collects a
dozen attributes and wraps every send, which cost as much as the rest of a cheap request
(docs/benchmarks.md). And nothing at all runs when no span would be exported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from litestar.types import Scope
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.url_attributes import URL_PATH
from opentelemetry.trace import Span, SpanKind, StatusCode

from trackstore.telemetry import tracer


def tracing_enabled() -> bool:
    """Whether spans go anywhere: an SDK provider is installed (see telemetry)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


class _AsgiHeaders(Getter[dict[str, str]]):
    """Header lookup for the propagators: ASGI names are lower case, theirs are not."""

    def get(self, carrier: dict[str, str], key: str) -> list[str] | None:
        value = carrier.get(key.lower())
        return None if value is None else [value]

    def keys(self, carrier: dict[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _AsgiHeaders()


@contextmanager
def request_span(scope: Scope) -> Iterator[Span]:
    """The request's span, current inside the block; `finish_request_span` completes it."""
    method = str(scope.get("method", "HTTP"))
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    with tracer().start_as_current_span(
        method,
        context=propagate.extract(headers, getter=_GETTER),
        kind=SpanKind.SERVER,
        attributes={HTTP_REQUEST_METHOD: method, URL_PATH: str(scope.get("path", ""))},
    ) as span:
        yield span


def finish_request_span(span: Span, scope: Scope, status: int) -> None:
    template = scope.get("path_template")
    if template:
        span.update_name(f"{scope.get('method', 'HTTP')} {template}")
        span.set_attribute(HTTP_ROUTE, template)
    span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
    if status >= 500:
        span.set_status(StatusCode.ERROR)
