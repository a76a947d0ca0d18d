"""The fleet map at /map: every device's latest position, live from /fleet/stream, and a chosen
device's track from /locations/{device_id}.

Everything the page loads comes from this app: Leaflet's files from the installed xstatic-leaflet
package, the page's own script and style from `static/map` beside this module. Only the map's
tiles come from elsewhere (MAP_TILE_URL); where they cannot load (offline, a private VPC) the
markers and tracks still draw, on a plain background.

The page holds no data, so it and its files are open when API keys are configured (see auth):
the script asks for a key when the API answers 401 and sends it with its requests. Its settings
reach the script as JSON in an HTML-escaped data attribute, never as inline script, so the
Content-Security-Policy can forbid inline script and style outright.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

import xstatic.pkg.leaflet  # type: ignore[import-untyped]  # the package ships no py.typed
from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.enums import MediaType
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

MAP_PATH = "/map"
STATIC_PATH = f"{MAP_PATH}/static"  # open without a key (auth.OPEN_PREFIXES)
LEAFLET_PATH = f"{STATIC_PATH}/leaflet"
APP_PATH = f"{STATIC_PATH}/app"

_LEAFLET_DIR = Path(xstatic.pkg.leaflet.BASE_DIR)
_APP_DIR = Path(__file__).with_name("static") / "map"

# A CSP host-source: scheme, host (a leading "*." at most) and port; anything else (a placeholder
# the wildcard cannot stand for) widens the source to the tile URL's scheme.
_HOST_SOURCE = re.compile(
    r"^(?:https?://)?(?:\*\.)?(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$"
)
_PLACEHOLDER = re.compile(r"\{[^}]*\}")

_PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>TrackStore fleet map</title>
<link rel="icon" type="image/svg+xml" href="$app/favicon.svg">
<link rel="stylesheet" href="$leaflet/leaflet.css">
<link rel="stylesheet" href="$app/map.css">
<script src="$leaflet/leaflet.js" defer></script>
<script src="$app/map.js" defer></script>
</head>
<body>
<header class="bar">
  <h1>TrackStore fleet</h1>
  <div class="field">
    <label for="track-range">Track window</label>
    <select id="track-range">
      <option value="15">15 min</option>
      <option value="60" selected>1 h</option>
      <option value="360">6 h</option>
      <option value="1440">24 h</option>
    </select>
  </div>
  <p id="track-info" class="track-info" hidden>
    <span id="track-text"></span>
    <button type="button" id="track-clear">Clear track</button>
  </p>
  <ul class="legend" aria-label="Marker colours">
    <li><span class="swatch status-active"></span>active</li>
    <li><span class="swatch status-inactive"></span>inactive</li>
    <li><span class="swatch status-registered"></span>registered</li>
  </ul>
  <p class="status">
    <span id="device-count">0 devices</span>
    <span id="connection" role="status">connecting</span>
    <span id="updated"></span>
    <span id="tiles-note" hidden>no map tiles (offline?)</span>
    <button type="button" id="key-open" hidden>Enter API key</button>
  </p>
</header>
<main id="map" aria-label="Map of the fleet" data-config="$config"></main>
<dialog id="key-dialog" aria-labelledby="key-title">
  <form id="key-form">
    <h2 id="key-title">API key needed</h2>
    <p>This TrackStore requires an API key to show the fleet. The key is kept in this tab only.</p>
    <label for="key-input">API key</label>
    <input id="key-input" name="key" type="password" autocomplete="off" required>
    <p id="key-error" class="key-error" role="alert"></p>
    <div class="buttons">
      <button type="submit">Show the fleet</button>
    </div>
  </form>
</dialog>
</body>
</html>
""")


def map_routes(tile_url: str, tile_attribution: str) -> list[ControllerRouterHandler]:
    """The page at MAP_PATH and its static files under STATIC_PATH."""
    page = render_page(tile_url, tile_attribution)
    headers = {
        "Content-Security-Policy": content_security_policy(tile_url),
        "X-Content-Type-Options": "nosniff",
        # Tile servers such as OpenStreetMap's want to know the site that shows their tiles: the
        # origin, never the path.
        "Referrer-Policy": "strict-origin-when-cross-origin",
        "Cache-Control": "no-cache",
    }

    @get(MAP_PATH, name="map-page", include_in_schema=False, sync_to_thread=False)
    def map_page() -> Response[bytes]:
        return Response(page, media_type=MediaType.HTML, headers=headers)

    return [
        map_page,
        create_static_files_router(
            LEAFLET_PATH,
            [_LEAFLET_DIR],
            name="map-leaflet",
            # The files change only with the installed package.
            cache_control=CacheControlHeader(max_age=86_400),
            include_in_schema=False,
        ),
        create_static_files_router(
            APP_PATH,
            [_APP_DIR],
            name="map-app",
            cache_control=CacheControlHeader(no_cache=True),
            include_in_schema=False,
        ),
    ]


def render_page(tile_url: str, tile_attribution: str) -> bytes:
    config = {
        "tileUrl": tile_url,
        # HTML (Leaflet shows it as such): the operator's setting, like the tile URL.
        "attribution": tile_attribution,
    }
    return _PAGE.substitute(
        app=APP_PATH,
        leaflet=LEAFLET_PATH,
        config=html.escape(json.dumps(config), quote=True),
    ).encode()


def content_security_policy(tile_url: str) -> str:
    """Scripts, styles and data from this origin only; images also from the tile server (and
    data: URLs, which Leaflet puts in place of tiles it stops loading)."""
    images = " ".join(filter(None, ("'self'", "data:", tile_source(tile_url))))
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {images}",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def tile_source(tile_url: str) -> str | None:
    """The CSP source that lets the page load `tile_url`'s tiles; None when 'self' does (a path
    on this server). A placeholder in the host (`{s}.tile.example.org`) becomes a wildcard."""
    parts = urlsplit(tile_url)
    netloc = parts.netloc.rpartition("@")[2]  # no user:password in a policy
    if not netloc:
        return None
    scheme = parts.scheme.lower()
    prefix = f"{scheme}://" if scheme else ""  # "//host/...": the page's own scheme
    host, colon, port = netloc.rpartition(":") if not netloc.endswith("]") else (netloc, "", "")
    if not colon or "]" in port:
        host, port = netloc, ""
    labels = host.lower().split(".")
    templated = [i for i, label in enumerate(labels) if _PLACEHOLDER.search(label)]
    if templated:
        labels = ["*", *labels[templated[-1] + 1 :]]
    source = prefix + ".".join(labels) + (f":{port}" if port else "")
    if (templated and len(labels) < 3) or not _HOST_SOURCE.match(source):
        # "*.org" or stranger: no narrower source would do; the scheme at least.
        return f"{scheme or 'https'}:"
    return source
