"""Errors as RFC 9457 problem details: the one error-code -> HTTP status table lives here.

Every failure a client can see goes through `problem_response`, so all of them share one shape and
one media type; anything unexpected becomes a 500 that says no more than "Internal error".
"""

from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap, HTTPResponseStartEvent, Send

from trackstore.errors import CONFLICT, INVALID, NOT_FOUND, UNAVAILABLE, Code, Error
from trackstore.web.wire import Problem

PROBLEM_MEDIA_TYPE = "application/problem+json"
UNAVAILABLE_DETAIL = "a storage service is unavailable; retry after the Retry-After seconds"
STATUS: dict[Code, int] = {NOT_FOUND: 404, INVALID: 400, CONFLICT: 409, UNAVAILABLE: 503}
DEFAULT_RETRY_AFTER = 1  # seconds; what a client waits when the failing side gave no hint

# Descriptions shared by the routes' OpenAPI error entries.
BAD_DEVICE = "Invalid device id"
STORE_DOWN = "A store is unavailable; retry after the Retry-After header's seconds"

_DEFAULT_DETAILS = {
    404: "there is no resource at {path}",
    405: "{method} is not allowed on {path}",
    413: "the request body is too large",
}

_log = logging.getLogger(__name__)


def retry_after_header(seconds: float | None) -> str:
    """Retry-After as whole seconds (the header takes no fractions), at least one."""
    if seconds is None or not math.isfinite(seconds):
        return str(DEFAULT_RETRY_AFTER)
    return str(max(1, math.ceil(seconds)))


async def send_problem(
    send: Send,
    status: int,
    detail: str,
    path: str,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """A problem answer sent straight over ASGI, for answers given before Litestar's routing
    and handlers (middleware, the application entry point)."""
    problem = Problem(title=HTTPStatus(status).phrase, status=status, detail=detail, instance=path)
    body = msgspec.json.encode(problem)
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


def problem_response(
    request: Request[Any, Any, Any],
    status: int,
    detail: str,
    headers: dict[str, str] | None = None,
) -> Response[Problem]:
    problem = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path,
    )
    return Response(
        content=problem,
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def handle_error(request: Request[Any, Any, Any], exc: Error) -> Response[Problem]:
    status = STATUS.get(exc.code)
    if status is None:  # INTERNAL, or a code added later without a row here
        return handle_unexpected(request, exc)
    if exc.code is UNAVAILABLE:
        # The message names tables and AWS errors: for the logs (with the trace id), not callers.
        _log.warning("dependency unavailable: %s", exc.message)
        headers = {"Retry-After": retry_after_header(exc.retry_after)}
        return problem_response(request, status, UNAVAILABLE_DETAIL, headers)
    return problem_response(request, status, exc.message)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    """Litestar's own errors: validation (400), unknown route (404), wrong method (405), ..."""
    status = exc.status_code
    if status >= 500:
        return handle_unexpected(request, exc)
    detail = exc.detail
    if detail == HTTPStatus(status).phrase:  # Litestar's default says nothing the title doesn't
        detail = _DEFAULT_DETAILS.get(status, detail).format(
            method=request.method, path=request.url.path
        )
    # Keep Litestar's headers: a 405 carries the Allow header clients need.
    return problem_response(request, status, detail, dict(exc.headers or {}))


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    _log.exception("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(request, 500, "Internal error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    Error: handle_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}


def problem_specs(descriptions: dict[int, str]) -> dict[int, ResponseSpec]:
    """OpenAPI entries for a route's error answers (status -> when); replaces Litestar's own
    400 entry, whose body shape is not what this API sends."""
    every = {
        400: "A path segment holds an encoded slash (%2F)",
        401: "API keys are configured and the request carries no valid one",
        **descriptions,
    }
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=description,
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
        )
        for status, description in every.items()
    }
