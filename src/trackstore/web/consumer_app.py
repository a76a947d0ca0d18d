"""The consumer's own small HTTP port: /metrics for scrapers, /health for ECS health checks."""

from __future__ import annotations

from litestar import Litestar, Response, get
from litestar.di import NamedDependency, Provide

from trackstore.consumer_health import ConsumerHealth
from trackstore.metrics import Metrics
from trackstore.web.problems import EXCEPTION_HANDLERS
from trackstore.web.system import health_response, liveness, metrics_text
from trackstore.web.wire import HealthOut


@get("/health", operation_id="getConsumerHealth", summary="Whether the consumer makes progress")
async def consumer_health(health: NamedDependency[ConsumerHealth]) -> Response[HealthOut]:
    return health_response(health.checks())


def create_consumer_app(metrics: Metrics, health: ConsumerHealth) -> Litestar:
    return Litestar(
        route_handlers=[consumer_health, liveness, metrics_text],
        dependencies={
            "metrics": Provide(lambda: metrics, sync_to_thread=False),
            "health": Provide(lambda: health, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=None,
        logging_config=None,
    )
