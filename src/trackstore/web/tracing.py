"""HTTP request spans, named after the route template (`GET /devices/{device_id}`), never the
raw path: one span name per route, not one per device.

Litestar's OpenTelemetry middleware opens the span before routing, when only the raw path is
known; so the span starts as just the method (what OpenTelemetry prescribes for an unknown
route) and is renamed once routing has found the template.

The middleware runs only when spans go somewhere (an SDK provider is installed, see telemetry):
for a cheap request it costs about as much as the rest of the request.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.types import BeforeRequestHookHandler, Scope
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE


def _span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    return str(scope.get("method", "HTTP")).strip() or "HTTP", {}


async def name_span_after_route(request: Request[Any, Any, Any]) -> None:
    """A `before_request` hook: the route is known by now."""
    template = request.scope.get("path_template")
    if template:
        span = trace.get_current_span()
        span.update_name(f"{request.method} {template}")
        span.set_attribute(HTTP_ROUTE, template)


def tracing_enabled() -> bool:
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def tracing_plugins() -> list[OpenTelemetryPlugin]:
    if not tracing_enabled():
        return []
    # The ASGI middleware's own "http receive/send" child spans only add noise per request.
    return [
        OpenTelemetryPlugin(
            OpenTelemetryConfig(
                scope_span_details_extractor=_span_details, exclude_spans=["receive", "send"]
            )
        )
    ]


def tracing_hook() -> BeforeRequestHookHandler | None:
    return name_span_after_route if tracing_enabled() else None
