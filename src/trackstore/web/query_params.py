"""Unknown query parameters are refused: `?lmit=10` is a typo whose answer must not pass for
the right one (here, a page of the default size).

One check for every route, run before the handler: the parameters a route takes are the ones its
handler (and the dependencies it uses) declare, read from what Litestar built for each route.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request
from litestar.exceptions import ValidationException
from litestar.routes import HTTPRoute

# A name is echoed back in the 400; a long one is cut, as the rest of the query is not shown.
_MAX_NAME_SHOWN = 64


def declared_query_parameters(app: Litestar) -> dict[int, frozenset[str] | None]:
    """id of each HTTP route handler -> the query parameter names it takes; None for a handler
    that reads the whole query (Litestar's `query` kwarg), which takes any."""
    declared: dict[int, frozenset[str] | None] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler, kwargs_model in route.route_handler_map.values():
            if "query" in kwargs_model.expected_reserved_kwargs:
                declared[id(handler)] = None
            else:
                names = {parameter.field_alias for parameter in kwargs_model.expected_query_params}
                declared[id(handler)] = frozenset(names)
    return declared


class UnknownQueryParameters:
    """A `before_request` hook: 400 naming the query parameters the route does not take."""

    def __init__(self) -> None:
        self._declared: dict[int, frozenset[str] | None] | None = None

    async def __call__(self, request: Request[Any, Any, Any]) -> None:
        if not request.scope["query_string"]:
            return
        if self._declared is None:  # the routes exist only once the app is built
            self._declared = declared_query_parameters(request.app)
        key = id(request.route_handler)
        if key not in self._declared:  # no HTTP route of this app: nothing to check against
            return
        taken = self._declared[key]
        if taken is None:
            return
        unknown = sorted({name for name in request.query_params if name not in taken})
        if unknown:
            raise ValidationException(detail=_message(unknown, taken))


def _message(unknown: list[str], taken: frozenset[str]) -> str:
    names = ", ".join(repr(_shorten(name)) for name in unknown)
    noun = "parameter" if len(unknown) == 1 else "parameters"
    accepted = ", ".join(sorted(taken)) if taken else "none"
    return f"unknown query {noun} {names} (this route takes: {accepted})"


def _shorten(name: str) -> str:
    return name if len(name) <= _MAX_NAME_SHOWN else f"{name[:_MAX_NAME_SHOWN]}..."
