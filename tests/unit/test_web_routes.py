"""What every route does alike: HEAD, unknown query parameters, the index of links, and the docs
page's files, as a client sees them (create_app over the in-memory adapters)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.memory_api import MemoryApi, memory_app

PROBLEM = "application/problem+json"
Client = AsyncTestClient[Litestar]

# The docs and the OpenAPI document are no operations of the API, so the document leaves them out.
UNDOCUMENTED_GETS = ["/metrics", "/schema", "/schema/swagger", "/schema/openapi.json"]


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    app = memory_app()
    async with AsyncTestClient(app=app) as client:
        yield client


async def operations(client: Client) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path template, operation) for every operation of the OpenAPI document."""
    document = (await client.get("/schema/openapi.json")).json()
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def concrete(path: str) -> str:
    return path.replace("{device_id}", "bus-1")


async def every_get_path(client: Client) -> list[str]:
    documented = [concrete(p) for m, p, _ in await operations(client) if m == "GET"]
    return documented + UNDOCUMENTED_GETS + ["/schema/assets/swagger-ui-bundle.js"]


def assert_problem(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    detail: str = response.json()["detail"]
    return detail


# -- HEAD -----------------------------------------------------------------------------------------


async def test_head_answers_on_every_get_route_like_get_without_a_body(client: Client) -> None:
    paths = await every_get_path(client)
    assert {"/health", "/devices/bus-1", "/locations/bus-1/latest"} <= set(paths)
    for path in paths:
        if path == "/fleet/stream":
            continue  # a GET never ends: the next test
        got = await client.get(path)
        head = await client.head(path)

        assert head.status_code == got.status_code, path
        assert head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
        if path != "/metrics":  # its counters move between the two requests
            assert head.headers["content-length"] == got.headers["content-length"], path
        assert got.headers.get("etag") == head.headers.get("etag"), path


async def test_head_of_the_live_stream_answers_at_once(client: Client) -> None:
    head = await asyncio.wait_for(client.head("/fleet/stream"), 5)
    assert head.status_code == 200
    assert head.headers["content-type"].startswith("text/event-stream")
    assert head.content == b""


async def test_head_of_a_missing_resource_is_404_without_a_body(client: Client) -> None:
    response = await client.head("/devices/no-such-bus")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.content == b""


async def test_head_on_a_post_only_route_is_405_allowing_post(client: Client) -> None:
    response = await client.head("/devices/bus-1/register")

    assert response.status_code == 405
    assert "POST" in response.headers["allow"]
    assert "HEAD" not in response.headers["allow"]


async def test_a_get_route_says_it_allows_head(client: Client) -> None:
    wrong_method = await client.delete("/health")
    options = await client.options("/health")

    assert_problem(wrong_method, 405)
    for response in (wrong_method, options):
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert {"GET", "HEAD"} <= allowed, response.headers


async def test_head_requests_are_counted_as_head_by_route(client: Client) -> None:
    await client.head("/devices/bus-1")

    metrics = (await client.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    counted = {
        (s.labels["route"], s.labels["method"], s.labels["status"])
        for s in families["trackstore_http_requests"].samples
        if s.name.endswith("_total")
    }
    assert ("/devices/{device_id}", "HEAD", "404") in counted


# -- unknown query parameters ---------------------------------------------------------------------


async def test_a_misspelt_parameter_is_a_400_naming_it(client: Client) -> None:
    detail = assert_problem(await client.get("/devices?lmit=1"), 400)

    assert "unknown query parameter 'lmit'" in detail
    assert "limit" in detail  # what the route does take


async def test_every_route_refuses_a_parameter_it_does_not_take(client: Client) -> None:
    routes = [(m, concrete(p)) for m, p, _ in await operations(client)]
    routes += [("GET", path) for path in UNDOCUMENTED_GETS]
    for method, path in routes:
        response = await client.request(method, path, params={"bogus": "1"})
        detail = assert_problem(response, 400)
        assert "'bogus'" in detail, (method, path, detail)


async def test_no_documented_parameter_is_taken_for_an_unknown_one(client: Client) -> None:
    checked = 0
    for method, path, operation in await operations(client):
        for parameter in operation.get("parameters", []):
            if parameter["in"] != "query":
                continue
            name = parameter["name"]
            params = {name: "x"}
            if path == "/fleet/stream" and name != "status":
                params["status"] = "x"  # a 400 at once: an answered stream would never end
            response = await client.request(method, concrete(path), params=params)
            # The value may well be refused ("x" is no time), but never the name.
            assert "unknown query parameter" not in response.text, (path, name, response.text)
            checked += 1
    assert checked >= 10  # limit, next_token, order, start_time, end_time over four routes


async def test_paging_parameters_are_known_on_the_second_page_too(client: Client) -> None:
    response = await client.get("/devices", params={"limit": "1", "next_token": "not-a-token"})

    detail = assert_problem(response, 400)
    assert "unknown" not in detail
    assert "next_token" in detail


async def test_several_unknown_parameters_are_all_named(client: Client) -> None:
    detail = assert_problem(await client.get("/locations/bus-1?ordr=desc&lmit=2&limit=3"), 400)

    assert "'lmit'" in detail
    assert "'ordr'" in detail


async def test_an_unknown_name_is_cut_short_in_the_answer(client: Client) -> None:
    detail = assert_problem(await client.get("/health", params={"x" * 5000: "1"}), 400)

    assert len(detail) < 300


# -- the index ------------------------------------------------------------------------------------


async def test_index_links_every_route(client: Client) -> None:
    links = (await client.get("/")).json()["links"]

    routes = {path for _, path, _ in await operations(client)} - {"/"}  # no link to itself
    routes |= {"/metrics", "/schema/openapi.json", "/schema/swagger", "/map"}
    assert set(links.values()) == routes
    assert links["fleet"] == "/locations"
    assert links["live"] == "/health/live"
    posts = {path for method, path, _ in await operations(client) if method == "POST"}
    for name, path in links.items():
        if "{" in path or path in posts:
            continue
        # The live stream never ends: HEAD shows it answers.
        method = client.head if path == links["stream"] else client.get
        assert (await method(path)).status_code == 200, name


async def test_a_device_called_search_reads_like_any_other() -> None:
    api = MemoryApi()
    async with AsyncTestClient(app=api.app()) as client:
        assert (await client.get("/devices/search")).status_code == 404
        await api.service.register("search", "A bus named search", None)
        found = await client.get("/devices/search")
        assert found.status_code == 200
        assert found.json()["name"] == "A bus named search"


# -- the docs page's files ------------------------------------------------------------------------


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


@pytest.mark.parametrize("page", ["/schema", "/schema/swagger"])
async def test_docs_page_loads_only_files_this_service_serves(client: Client, page: str) -> None:
    response = await client.get(page)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    references = _References()
    references.feed(response.text)
    assert len(references.urls) >= 3  # Swagger UI's script, its preset and its style sheet
    assert not re.search(r"https?://", response.text.split("<body", 1)[0]), "a URL elsewhere"
    for url in references.urls:
        assert url.startswith("/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        if url.endswith(".js"):
            # Swagger UI's scripts hold non-ASCII text: read as anything but UTF-8, they fail.
            assert asset.headers["content-type"] == "text/javascript; charset=utf-8"


@pytest.mark.parametrize(
    "path",
    [
        "/schema/nope",
        "/schema/swagger/nope",
        "/schema/openapi.yaml",
        "/schema/assets/index.html",  # in the package, but not ours: it fetches from the internet
        "/schema/assets/nope.js",
    ],
)
async def test_unknown_paths_under_schema_are_404_problems(client: Client, path: str) -> None:
    detail = assert_problem(await client.get(path), 404)

    assert path in detail
