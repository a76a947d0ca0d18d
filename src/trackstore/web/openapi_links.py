"""OpenAPI links: how a page's `nextToken` leads to the next page of the same query, and a
registered device to its reads. Clients and generators (schemathesis's stateful tests) follow
them; Litestar has no place for them on a route, so they are added to the built document."""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi.spec import Link, OpenAPI, Operation

_PAGE = "$response.body#/nextToken"


def _same_query(*names: str) -> dict[str, str]:
    """The next page's parameters: the token, and the query's own parameters unchanged (a token
    only works for the query it came from)."""
    return {"next_token": _PAGE, **{name: f"$request.query.{name}" for name in names}}


# operationId -> status -> link name -> (target operationId, parameters, description)
LINKS: dict[str, dict[str, dict[str, tuple[str, dict[str, str], str]]]] = {
    "getLocationHistory": {
        "200": {
            "NextPage": (
                "getLocationHistory",
                {
                    "device_id": "$request.path.device_id",
                    **_same_query("start_time", "end_time", "limit", "order"),
                },
                "The next page of this history, while nextToken is not null",
            )
        }
    },
    "getFleetWindow": {
        "200": {
            "NextPage": (
                "getFleetWindow",
                _same_query("start_time", "end_time", "limit"),
                "The next page of this window, while nextToken is not null",
            )
        }
    },
    "listDevices": {
        "200": {
            "NextPage": (
                "listDevices",
                _same_query("limit"),
                "The next page of devices, while nextToken is not null",
            )
        }
    },
    "registerDevice": {
        "201": {
            "GetDevice": (
                "getDevice",
                {"device_id": "$response.body#/deviceId"},
                "The device just registered",
            ),
            "GetLocationHistory": (
                "getLocationHistory",
                {"device_id": "$response.body#/deviceId"},
                "Its locations, once it reports",
            ),
        }
    },
}


def add_links(app: Litestar) -> None:
    """Adds LINKS to the app's OpenAPI document (before it is first served)."""
    openapi: OpenAPI = app.openapi_schema
    for path_item in (openapi.paths or {}).values():
        for operation in (path_item.get, path_item.post):
            if isinstance(operation, Operation) and operation.operation_id in LINKS:
                _link(operation, LINKS[operation.operation_id])


def _link(
    operation: Operation, by_status: dict[str, dict[str, tuple[str, dict[str, str], str]]]
) -> None:
    for status, links in by_status.items():
        response = (operation.responses or {}).get(status)
        if response is None or not hasattr(response, "links"):
            continue
        response.links = {
            name: Link(operation_id=target, parameters=dict(parameters), description=description)
            for name, (target, parameters, description) in links.items()
        }
