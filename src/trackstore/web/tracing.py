"""HTTP request spans, named after the route template (`GET /devices/{device_id}`), never the
raw path: one span name per route, not one per device."""

from __future__ import annotations

from typing import Any

from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.types import Scope
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE


def _span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    template = str(scope.get("path_template") or scope.get("path", ""))
    method = str(scope.get("method", "")).strip()
    return (f"{method} {template}" if method else template), {HTTP_ROUTE: template}


def tracing_plugin() -> OpenTelemetryPlugin:
    # The ASGI middleware's own "http receive/send" child spans only add noise per request.
    return OpenTelemetryPlugin(
        OpenTelemetryConfig(
            scope_span_details_extractor=_span_details, exclude_spans=["receive", "send"]
        )
    )
