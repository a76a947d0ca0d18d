"""Who may call the API: optional API keys, open health for load balancers, and answers that
never show callers what is behind them."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.unit.memory_api import MemoryApi, memory_app
from trackstore.config import Settings

KEY = "fleet-ops-key-0123456789"
OTHER = "another-valid-key-987654"


def settings(keys: str, metrics_public: bool = False) -> Settings:
    environ = {
        "TRACKSTORE_BACKEND": "memory",
        "TRACKSTORE_API_KEYS": keys,
        "METRICS_PUBLIC": "true" if metrics_public else "false",
    }
    return Settings.from_env(environ, dotenv=None)


async def client_for(config: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    app = memory_app(api_keys=config.api_key_digests, metrics_public=config.metrics_public)
    async with AsyncTestClient(app=app) as client:
        yield client


@pytest.fixture
async def guarded() -> AsyncIterator[AsyncTestClient[Litestar]]:
    async for client in client_for(
        settings(f"{KEY}, sha256:{hashlib.sha256(OTHER.encode()).hexdigest()}")
    ):
        yield client


@pytest.mark.parametrize(
    "path", ["/devices", "/devices/bus-1", "/locations/bus-1", "/metrics", "/schema/openapi.json"]
)
async def test_without_a_key_every_guarded_route_is_401_with_a_problem(
    guarded: AsyncTestClient[Litestar], path: str
) -> None:
    response = await guarded.get(path)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["status"] == 401
    assert KEY not in response.text


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": f"bearer {KEY}"},
        {"X-Api-Key": KEY},
        {"X-Api-Key": OTHER},  # configured by its sha256: digest only
    ],
)
async def test_a_configured_key_opens_the_api(
    guarded: AsyncTestClient[Litestar], headers: dict[str, str]
) -> None:
    response = await guarded.get("/devices", headers=headers)

    assert response.status_code == 200
    assert response.json() == {"devices": [], "nextToken": None}


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": f"Basic {KEY}"},
        {"X-Api-Key": ""},
        {"X-Api-Key": KEY[:-1]},
    ],
)
async def test_a_wrong_key_is_401(
    guarded: AsyncTestClient[Litestar], headers: dict[str, str]
) -> None:
    assert (await guarded.get("/devices", headers=headers)).status_code == 401


@pytest.mark.parametrize("path", ["/", "/health", "/health/live"])
async def test_load_balancer_paths_stay_open(guarded: AsyncTestClient[Litestar], path: str) -> None:
    assert (await guarded.get(path)).status_code == 200


async def test_metrics_can_be_made_public() -> None:
    async for client in client_for(settings(KEY, metrics_public=True)):
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/devices")).status_code == 401


async def test_without_keys_the_api_is_open() -> None:
    async for client in client_for(Settings()):
        assert (await client.get("/devices")).status_code == 200


async def test_an_outage_answer_names_neither_tables_nor_errors() -> None:
    api = MemoryApi()
    api.store.available = False
    async with AsyncTestClient(app=api.app()) as client:
        query = await client.get("/devices/bus-1")
        health = await client.get("/health")

    assert query.status_code == health.status_code == 503
    assert "switched off" not in query.text + health.text  # the adapter's own words stay in logs
    assert health.json()["checks"] == {"locations": "unavailable", "devices": "unavailable"}


async def test_a_register_body_over_16_kib_is_413() -> None:
    async for client in client_for(Settings()):
        body = b'{"name": "x", "metadata": {"pad": "' + b"x" * 16_400 + b'"}}'
        response = await client.post("/devices/bus-1/register", content=body)
        assert response.status_code == 413
        assert (await client.get("/devices/bus-1")).status_code == 404


@pytest.mark.parametrize("keys", ["short", "sha256:abc", "sha256:" + "zz" * 32])
def test_bad_key_configuration_is_refused(keys: str) -> None:
    from trackstore.errors import INVALID, Error

    with pytest.raises(Error) as raised:
        settings(keys)
    assert raised.value.code is INVALID
