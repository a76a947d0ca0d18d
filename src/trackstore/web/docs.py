"""The API's docs page: Swagger UI over the OpenAPI document, at /schema and /schema/swagger.

Swagger UI's files come from an installed package (swagger-ui-bundle-v2) and are served by this
app, so the page works where the service cannot reach the internet (a private VPC) and loads
nothing from any other host: Litestar's default pages load their scripts from a CDN.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle  # type: ignore[import-untyped]  # the package ships no py.typed
from litestar import Response, Router, get
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import OpenAPIRenderPlugin, SwaggerRenderPlugin
from litestar.params import FromPath
from litestar.response import File

OPENAPI_PATH = "/schema"
DOCS_PATH = f"{OPENAPI_PATH}/swagger"
ASSETS_PATH = f"{OPENAPI_PATH}/assets"

_ASSETS_DIR = Path(str(swagger_ui_bundle.swagger_ui_path))
# Only what the page loads. The package's directory also holds Swagger UI's own demo page, which
# fetches an example API from the internet: it is no page of ours.
_BUNDLE = "swagger-ui-bundle.js"
_PRESET = "swagger-ui-standalone-preset.js"
_CSS = "swagger-ui.css"
_FAVICON = "favicon-32x32.png"
# Said outright, as Litestar would send application/octet-stream; it adds charset=utf-8 to text/*,
# which the scripts need (they hold non-ASCII text).
_JS = "text/javascript"
_ASSETS = {_BUNDLE: _JS, _PRESET: _JS, _CSS: "text/css", _FAVICON: "image/png"}


# Registered on the docs router, whose path is OPENAPI_PATH.
@get(f"{ASSETS_PATH.removeprefix(OPENAPI_PATH)}/{{file_name:str}}", sync_to_thread=False)
def docs_asset(file_name: FromPath[str]) -> File:
    media_type = _ASSETS.get(file_name)
    if media_type is None:
        raise NotFoundException()
    return File(
        _ASSETS_DIR / file_name,
        filename=file_name,
        media_type=media_type,
        content_disposition_type="inline",
    )


def docs_page() -> OpenAPIRenderPlugin:
    """Swagger UI with every asset from this app; the first render plugin, so /schema shows it."""
    return SwaggerRenderPlugin(
        js_url=f"{ASSETS_PATH}/{_BUNDLE}",
        css_url=f"{ASSETS_PATH}/{_CSS}",
        standalone_preset_js_url=f"{ASSETS_PATH}/{_PRESET}",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/{_FAVICON}'>",
    )


async def _not_found_as_problem(response: Response[object]) -> Response[object]:
    # Litestar answers unknown paths under the docs router with an HTML page of its own; raising
    # here hands them to the problem handler, as every other 404 of this API.
    if response.status_code == 404:
        raise NotFoundException()
    return response


def docs_router() -> Router:
    """The router Litestar fills with the docs page and /schema/openapi.json (one per app)."""
    return Router(
        OPENAPI_PATH,
        route_handlers=[docs_asset],
        after_request=_not_found_as_problem,
        include_in_schema=False,
    )
