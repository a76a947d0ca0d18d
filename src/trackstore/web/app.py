"""The Litestar application factory: routes, dependencies, error handling, OpenAPI, metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag
from litestar.types import (
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    Message,
    Receive,
    Scope,
    Send,
)
from prometheus_client import Counter, Histogram

import trackstore
from trackstore.config import Settings
from trackstore.container import Container, resolve, resources
from trackstore.metrics import Metrics
from trackstore.service import TrackService
from trackstore.web.auth import ApiKeyMiddleware
from trackstore.web.devices import get_device, list_devices, register_device
from trackstore.web.locations import fleet_window, latest_location, location_history
from trackstore.web.problems import EXCEPTION_HANDLERS, send_problem
from trackstore.web.system import OPENAPI_PATH, health, index, liveness, metrics_text
from trackstore.web.tracing import finish_request_span, request_span, tracing_enabled

Lifespan = Callable[[Litestar], AbstractAsyncContextManager[Any]] | AbstractAsyncContextManager[Any]

ROUTES = [
    index,
    health,
    liveness,
    metrics_text,
    location_history,
    fleet_window,
    latest_location,
    list_devices,
    get_device,
    register_device,
]
UNMATCHED_ROUTE = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _ObservedLitestar(Litestar):
    """Litestar that counts, times and traces every HTTP request by route template.

    Litestar runs its middleware only after routing, so requests for unknown routes or with a
    wrong method would go unseen there; wrapping the application entry point sees them all.
    """

    def __init__(self, *, metrics: Metrics, **config: Any) -> None:
        super().__init__(**config)
        self._http_requests = metrics.http_requests
        self._http_seconds = metrics.http_seconds
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._traced = tracing_enabled()

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        if scope["type"] != ScopeType.HTTP:
            await super().__call__(scope, receive, send)
            return
        # An "http" scope comes with the http receive and send.
        http_scope, http_receive, http_send = cast(
            tuple[Scope, Receive, Send], (scope, receive, send)
        )
        if not self._traced:
            await self._serve(http_scope, http_receive, http_send)
            return
        with request_span(http_scope) as span:
            status = await self._serve(http_scope, http_receive, http_send)
            finish_request_span(span, http_scope, status)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Answers the request, counts and times it; returns the status sent."""
        raw_path = scope.get("raw_path")
        if isinstance(raw_path, bytes) and b"%2f" in raw_path.lower():
            # The server decodes %2F before routing, which would let "a/b" pose as two path
            # segments; no path segment of this API (a device id least of all) holds a slash.
            await send_problem(
                send, 400, "a path segment must not contain '/' (%2F)", str(scope.get("path", ""))
            )
            self._record(scope, 400, 0.0)
            return 400
        started = time.perf_counter()
        status = 500  # if nothing is ever sent, the client saw a failure

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await super().__call__(scope, receive, send_and_note_status)
        finally:
            self._record(scope, status, time.perf_counter() - started)
        return status

    def _record(self, scope: Mapping[str, Any], status: int, seconds: float) -> None:
        # The template, never the raw path: one series per route, not one per device.
        route = scope.get("path_template") or UNMATCHED_ROUTE
        method = scope.get("method", "")
        if method not in _METHODS:
            method = "OTHER"  # arbitrary method names must not create series
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:
            # prometheus_client's labels() validates and locks on every call: look each up once.
            series = self._series[key] = (
                self._http_requests.labels(route=route, method=method, status=str(status)),
                self._http_seconds.labels(route=route, method=method),
            )
        series[0].inc()
        series[1].observe(seconds)


def _security(settings: Settings) -> dict[str, Any]:
    """The API-key schemes in the OpenAPI document, when API keys are configured."""
    if not settings.api_key_digests:
        return {}
    return {
        "components": Components(
            security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer"),
                "apiKey": SecurityScheme(
                    type="apiKey", name="X-Api-Key", security_scheme_in="header"
                ),
            }
        ),
        "security": [{"bearer": []}, {"apiKey": []}],
    }


def _auth(settings: Settings) -> list[ApiKeyMiddleware]:
    if not settings.api_key_digests:
        return []
    return [ApiKeyMiddleware(settings.api_key_digests, settings.metrics_public)]


def create_app(container: Container, lifespan: Sequence[Lifespan] | None = None) -> Litestar:
    """The REST API over `container`'s TrackService. The app opens the container's clients
    (DynamoDB) at startup and closes them at shutdown; `lifespan` adds more of the same."""
    metrics: Metrics = container.metrics()

    async def service() -> TrackService:
        return await resolve(container.service())

    return _ObservedLitestar(
        metrics=metrics,
        route_handlers=ROUTES,
        dependencies={
            "service": Provide(service),
            "metrics": Provide(lambda: metrics, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(
            title="TrackStore",
            version=trackstore.__version__,
            description="GPS locations of a vehicle fleet: history, latest position, devices.",
            path=OPENAPI_PATH,
            render_plugins=[ScalarRenderPlugin()],
            tags=[
                Tag(name="locations", description="Where devices have been"),
                Tag(name="devices", description="Devices, their status and registration"),
                Tag(name="system", description="Service information and health"),
            ],
            **_security(container.settings()),
        ),
        state=State({"container": container}),
        middleware=_auth(container.settings()),
        lifespan=[lambda _: resources(container), *(lifespan or [])],
        # Logging belongs to the process (JSON lines, see telemetry); Litestar must not
        # reconfigure it. Unexpected errors are logged by the 500 handler.
        logging_config=None,
    )
