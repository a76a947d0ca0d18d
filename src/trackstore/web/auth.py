"""Optional API keys (TRACKSTORE_API_KEYS): `Authorization: Bearer <key>` or `X-Api-Key: <key>`;
on the live stream also `?access_token=<key>`, since browsers' EventSource cannot set headers.

Keys are kept only as SHA-256 digests and compared in constant time, so neither the process's
memory nor the time an answer takes gives a key away. `/`, `/health` and `/health/live` stay
open for load balancers; `/metrics` too when METRICS_PUBLIC=true; and the map page with its
static files, which hold no data (the page asks for a key and sends it with its requests).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection
from urllib.parse import parse_qsl

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from trackstore.web.problems import send_problem

OPEN_PATHS = frozenset({"/", "/health", "/health/live", "/map"})
OPEN_PREFIXES = ("/map/static/",)
QUERY_KEY_PATHS = frozenset({"/fleet/stream"})
_QUERY_KEY = b"access_token"


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeyMiddleware(ASGIMiddleware):
    def __init__(self, digests: Collection[bytes], metrics_public: bool) -> None:
        self._digests = tuple(digests)
        self._open = OPEN_PATHS | ({"/metrics"} if metrics_public else set())

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        path = scope["path"]
        if (
            scope["type"] != ScopeType.HTTP
            or path in self._open
            or path.startswith(OPEN_PREFIXES)
            or self._allowed(scope)
        ):
            await next_app(scope, receive, send)
            return
        await send_problem(
            send,
            401,
            "a valid API key is required",
            scope["path"],
            headers=((b"www-authenticate", b'Bearer realm="trackstore"'),),
        )

    def _allowed(self, scope: Scope) -> bool:
        presented = None
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                presented = value[7:].strip()
            elif name == b"x-api-key":
                presented = value.strip()
        if not presented and scope["path"] in QUERY_KEY_PATHS:
            presented = _query_key(scope["query_string"])
        if not presented:
            return False
        digest = hashlib.sha256(presented).digest()
        # Every key is compared, so the time taken does not tell which one came close.
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return matched


def _query_key(query_string: bytes) -> bytes | None:
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if name == _QUERY_KEY:
            return value.strip()
    return None
