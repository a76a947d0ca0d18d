"""Service information, health and metrics: what operators and load balancers call."""

from __future__ import annotations

import logging

import msgspec
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec

import trackstore
from trackstore.metrics import CONTENT_TYPE, Metrics
from trackstore.service import TrackService
from trackstore.web.docs import DOCS_PATH, OPENAPI_PATH
from trackstore.web.problems import retry_after_header
from trackstore.web.wire import HealthOut

_log = logging.getLogger(__name__)


class RouteLinks(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A link to every route; the keys of the first version keep their meaning."""

    health: str
    live: str
    metrics: str
    openapi: str
    docs: str
    devices: str
    device: str
    register: str
    fleet: str
    locations: str
    latest: str
    search: str
    stream: str
    gtfs_rt: str
    map: str
    summary: str
    stops: str
    trips: str


class ServiceInfo(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    service: str
    version: str
    links: RouteLinks


LINKS = RouteLinks(
    health="/health",
    live="/health/live",
    metrics="/metrics",
    openapi=f"{OPENAPI_PATH}/openapi.json",
    docs=DOCS_PATH,
    devices="/devices",
    device="/devices/{device_id}",
    register="/devices/{device_id}/register",
    fleet="/locations",
    locations="/locations/{device_id}",
    latest="/locations/{device_id}/latest",
    search="/devices/search",
    stream="/fleet/stream",
    gtfs_rt="/gtfs-rt/vehicle-positions",
    map="/map",
    summary="/devices/{device_id}/summary",
    stops="/devices/{device_id}/stops",
    trips="/devices/{device_id}/trips",
)


@get("/", operation_id="getServiceInfo", tags=["system"], summary="Service name, version, links")
async def index() -> ServiceInfo:
    return ServiceInfo(service="trackstore", version=trackstore.__version__, links=LINKS)


@get(
    "/health",
    operation_id="getHealth",
    tags=["system"],
    summary="Whether the stores answer",
    description="200 when every dependency answers, else 503 naming the failing checks.",
    responses={
        503: ResponseSpec(
            data_container=HealthOut,
            description="A dependency is down; retry after the Retry-After header's seconds",
            generate_examples=False,
        )
    },
)
async def health(service: NamedDependency[TrackService]) -> Response[HealthOut]:
    checks = await service.health()
    for name, message in checks.items():
        if message is not None:
            _log.warning("health check failed", extra={"check": name, "error": message})
    # Callers learn which check failed, not the table names and AWS errors behind it.
    return health_response(
        {name: None if message is None else "unavailable" for name, message in checks.items()}
    )


@get(
    "/health/live",
    operation_id="getLiveness",
    tags=["system"],
    summary="Whether the process serves at all (for container health checks)",
    description="Always 200 while the process runs: restarting it would not bring a store back.",
)
async def liveness() -> HealthOut:
    return HealthOut(status="ok", checks={})


def health_response(checks: dict[str, str | None]) -> Response[HealthOut]:
    """200 when every check passed (None), else 503 naming the failing ones."""
    failing = any(message is not None for message in checks.values())
    body = HealthOut(
        status="unavailable" if failing else "ok",
        checks={name: "ok" if message is None else message for name, message in checks.items()},
    )
    if failing:
        return Response(body, status_code=503, headers={"Retry-After": retry_after_header(None)})
    return Response(body)


# Prometheus text is no JSON API and Prometheus documents it: kept out of the OpenAPI document.
@get(
    "/metrics",
    operation_id="getMetrics",
    tags=["system"],
    summary="Prometheus text exposition",
    include_in_schema=False,
)
async def metrics_text(metrics: NamedDependency[Metrics]) -> Response[bytes]:
    # A header, not media_type: Litestar would append a second charset to a text/* media type.
    return Response(metrics.render(), headers={"Content-Type": CONTENT_TYPE})
