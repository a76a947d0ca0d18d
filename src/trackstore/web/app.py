"""The Litestar application factory: routes, dependencies, error handling, OpenAPI, metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

from litestar import Litestar
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.openapi import OpenAPIConfig
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
from trackstore.config import DEFAULT_TILE_ATTRIBUTION, DEFAULT_TILE_URL, Settings
from trackstore.metrics import Metrics
from trackstore.service import TrackService
from trackstore.snapshot import FleetSnapshot
from trackstore.web.auth import ApiKeyMiddleware
from trackstore.web.devices import (
    get_device,
    get_device_named_search,
    list_devices,
    register_device,
    search_devices,
)
from trackstore.web.docs import docs_page, docs_router
from trackstore.web.fleet_stream import HEAD_SCOPE_KEY, FleetEvents, fleet_stream
from trackstore.web.gtfs_realtime import GtfsFeed, vehicle_positions
from trackstore.web.locations import fleet_window, latest_location, location_history
from trackstore.web.map_page import map_routes
from trackstore.web.openapi_links import add_links
from trackstore.web.problems import EXCEPTION_HANDLERS, send_problem
from trackstore.web.query_params import UnknownQueryParameters
from trackstore.web.reports import REPORT_ROUTES
from trackstore.web.system import health, index, liveness, metrics_text
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
    search_devices,
    get_device_named_search,
    get_device,
    register_device,
    fleet_stream,
    vehicle_positions,
]
UNMATCHED_ROUTE = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_ALLOW = b"allow"


class _ObservedLitestar(Litestar):
    """Litestar that counts, times and traces every HTTP request by route template.

    Litestar runs its middleware only after routing, so requests for unknown routes or with a
    wrong method would go unseen there; wrapping the application entry point sees them all.

    It also answers HEAD on every GET route, which Litestar does not route (RFC 9110 9.3.2: the
    GET answer's status and headers, without its body). The GET it routes carries HEAD_SCOPE_KEY,
    so that a handler whose body never ends (the live stream) can end it at once.
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
        method = scope.get("method", "")
        head = method == "HEAD"
        # A copy for HEAD: the server reads the request's method from its own scope when it
        # sends the answer, and must see HEAD there to send no body.
        routed = cast(Scope, {**scope, "method": "GET", HEAD_SCOPE_KEY: True}) if head else scope

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 405 or method == "OPTIONS":
                    message["headers"] = _allow_head(message["headers"])
            elif head and message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        try:
            await super().__call__(routed, receive, send_and_note_status)
        finally:
            if head and "path_template" in routed:
                scope["path_template"] = routed["path_template"]
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


def _allow_head(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The Allow header of a 405 or an OPTIONS answer lists HEAD wherever it lists GET."""
    allowed = []
    for name, value in headers:
        if name.lower() == _ALLOW:
            methods = [m.strip() for m in value.split(b",")]
            if b"GET" in methods and b"HEAD" not in methods:
                methods.insert(methods.index(b"GET") + 1, b"HEAD")
                value = b", ".join(methods)
        allowed.append((name, value))
    return allowed


def _security(api_keys: Collection[bytes]) -> dict[str, Any]:
    """The API-key schemes in the OpenAPI document, when API keys are configured."""
    if not api_keys:
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


def create_app(
    service: TrackService,
    metrics: Metrics,
    fleet: FleetSnapshot,
    *,
    api_keys: Collection[bytes] = (),
    metrics_public: bool = False,
    lifespan: Sequence[Lifespan] = (),
    gtfs_max_age_s: int = Settings().gtfs_rt_max_age_seconds,
    tile_url: str = DEFAULT_TILE_URL,
    tile_attribution: str = DEFAULT_TILE_ATTRIBUTION,
) -> Litestar:
    """The REST API over `service`, with the fleet views answered from `fleet`, which the app
    keeps fresh while it runs.

    `api_keys` are the SHA-256 digests of the keys callers must present (none: the API is open);
    `metrics_public` leaves /metrics open when keys are required. `lifespan` runs around the app,
    for whatever must be open while it serves. `gtfs_max_age_s` and the tiles are as the
    settings GTFS_RT_MAX_AGE_SECONDS, MAP_TILE_URL and MAP_TILE_ATTRIBUTION.
    """
    fleet_events = FleetEvents(fleet)
    gtfs_feed = GtfsFeed(fleet, gtfs_max_age_s)
    app = _ObservedLitestar(
        metrics=metrics,
        route_handlers=[*ROUTES, *REPORT_ROUTES, *map_routes(tile_url, tile_attribution)],
        dependencies={
            "service": Provide(lambda: service, sync_to_thread=False),
            "metrics": Provide(lambda: metrics, sync_to_thread=False),
            "fleet": Provide(lambda: fleet, sync_to_thread=False),
            "fleet_events": Provide(lambda: fleet_events, sync_to_thread=False),
            "gtfs_feed": Provide(lambda: gtfs_feed, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        # Litestar runs only the nearest layer's before_request: a route or router that sets its
        # own must call this one too.
        before_request=UnknownQueryParameters(),
        openapi_config=OpenAPIConfig(
            title="TrackStore",
            version=trackstore.__version__,
            description="GPS locations of a vehicle fleet: history, latest position, devices.",
            openapi_router=docs_router(),
            render_plugins=[docs_page()],
            tags=[
                Tag(name="locations", description="Where devices have been"),
                Tag(name="devices", description="Devices, their status and registration"),
                Tag(name="fleet", description="The whole fleet, live"),
                Tag(
                    name="reports",
                    description="Daily summaries, stops and trips from a device's history",
                ),
                Tag(name="system", description="Service information and health"),
            ],
            **_security(api_keys),
        ),
        middleware=[ApiKeyMiddleware(api_keys, metrics_public)] if api_keys else [],
        lifespan=[*lifespan, fleet.running],
        # Logging belongs to the process (JSON lines, see telemetry); Litestar must not
        # reconfigure it. Unexpected errors are logged by the 500 handler.
        logging_config=None,
    )
    add_links(app)
    return app
