"""The hot AWS calls sent straight: a JSON body, botocore's own SigV4 signer, the client's own
aiohttp session. Everything else, and every answer that is not a plain success, goes through the
aiobotocore client as before.

Why. aiobotocore spends 0.7-0.8 ms of CPU on every call before and after the network: events for
each step, endpoint rules, the request's assembly, the retry bookkeeping, the response's checks
(docs/benchmarks.md, "AWS calls"). On the consumer's path (a BatchWriteItem, conditional updates
and GetRecords for every batch) and on `serve`'s DynamoDB reads that decides how many tasks a fleet
needs. For the few operations named here this module sends what the client would send, built
directly:

- the same body (msgspec, as trackstore.dynamodb.client already encodes it for botocore), to the
  endpoint botocore's rules resolve for that operation (once per operation, then kept);
- the same headers: X-Amz-Target, Content-Type, User-Agent, then X-Amz-Date, the session token
  and Authorization, signed by botocore's SigV4 rules (trackstore.aws_sigv4, tested equal to
  SigV4Auth) with the client's current credentials (refreshed as the client refreshes them),
  amz-sdk-invocation-id and amz-sdk-request as botocore's retry handler adds them, and
  Accept-Encoding: identity as aiobotocore does;
- on keep-alive connections of its own (trackstore.aws_http: aiohttp alone costs more than the
  target for a whole call) with the client's TLS context, timeouts and pool size; through a
  proxy, nothing is sent straight.

A 200 whose body passes DynamoDB's CRC32 check is decoded with msgspec and given the
ResponseMetadata botocore gives. An error botocore would not retry (a failed condition, a bad
request) is parsed by the client's own parser and raised as its modeled exception, as the client
raises it. Anything else (throttling, a 5xx, a failed check, a connection that fails) is handed
to the aiobotocore client as the same call, which then retries, raises and
reports exactly as it always has: for the caller, one attempt more, counted among the answer's
RetryAttempts. Every write TrackStore makes
is safe to send twice (puts of the same item, conditional updates), as botocore's own retries
already assume.

tests/integration/test_aws_direct_wire.py compares the bytes and headers sent (signature
included, at a frozen clock) and the answers with plain aiobotocore for every operation here.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
import zlib
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import msgspec
from botocore.exceptions import ClientError
from botocore.retries.standard import ThrottledRetryableChecker, TransientRetryableChecker

from trackstore.aws_http import EndpointConnections
from trackstore.aws_sigv4 import RouteSigner

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode


class _Route(msgspec.Struct, frozen=True):
    host: str
    signer: RouteSigner
    extra_headers: dict[str, str]
    connections: EndpointConnections | None  # None through a proxy


class DirectClient:
    """An aiobotocore client whose `operations` (botocore names, e.g. "GetItem") are sent
    straight; `convert` turns a decoded answer into what botocore would give, per operation.
    Any other attribute is the client's."""

    def __init__(
        self,
        client: Any,
        operations: Iterable[str],
        convert: dict[str, Callable[[dict[str, Any]], None]] | None = None,
    ) -> None:
        self._client = client
        self._operations = {_snake(name): name for name in operations}
        self._convert = convert or {}
        model = client.meta.service_model
        self._target = model.metadata["targetPrefix"]
        self._content_type = f"application/x-amz-json-{model.metadata['jsonVersion']}"
        self._check_crc32 = model.service_name == "dynamodb"
        self._routes: dict[str, _Route] = {}
        self._connections: dict[str, EndpointConnections] = {}
        config = client.meta.config
        self._user_agent = config.user_agent
        self.direct_calls = 0  # sent straight and answered 200
        self.handed_over = 0  # handed to aiobotocore

    def close(self) -> None:
        """Closes the connections kept for the calls sent straight."""
        for connections in self._connections.values():
            connections.close()

    def __getattr__(self, name: str) -> Any:
        operation = self._operations.get(name)
        if operation is None:
            return getattr(self._client, name)
        return partial(self._call, operation, name)

    async def _call(self, operation: str, method: str, **params: Any) -> Any:
        if _names_an_arn(params):  # endpoint rules may route by the ARN's account: botocore's
            return await self._hand_over(method, params, tried=False)
        try:
            route = self._routes.get(operation) or await self._route(operation, params)
            credentials = await self._credentials()
        except Exception:  # no region, no credentials, a refresh that fails: botocore says it
            return await self._hand_over(method, params, tried=False)
        if credentials is None:
            return await self._hand_over(method, params, tried=False)
        body = _encode(params)
        headers = route.signer.sign(
            {
                "X-Amz-Target": f"{self._target}.{operation}",
                "Content-Type": self._content_type,
                "User-Agent": self._user_agent,
                **route.extra_headers,
            },
            body,
            credentials.access_key,
            credentials.secret_key,
            credentials.token,
        )
        headers["amz-sdk-invocation-id"] = str(uuid.uuid4())
        headers["amz-sdk-request"] = "attempt=1"
        headers["Accept-Encoding"] = "identity"
        if route.connections is None:  # through a proxy: aiobotocore's business
            return await self._hand_over(method, params, tried=False)
        headers["Host"] = route.host
        headers["Content-Length"] = str(len(body))
        headers["Accept"] = "*/*"
        try:
            status, answer_headers, raw = await route.connections.post(headers, body)
        except Exception:  # unreachable, timed out, closed: botocore's retries and errors
            return await self._hand_over(method, params)
        if status != 200 and status < 500:
            error = await self._error(operation, status, answer_headers, raw)
            if error is not None:
                raise error
        if status != 200 or (
            self._check_crc32
            and "x-amz-crc32" in answer_headers
            and zlib.crc32(raw) != int(answer_headers["x-amz-crc32"])
        ):
            return await self._hand_over(method, params)
        answer = _decode(raw) if raw else {}
        convert = self._convert.get(operation)
        if convert is not None:
            convert(answer)
        answer["ResponseMetadata"] = {
            "RequestId": answer_headers.get("x-amzn-requestid", ""),
            "HTTPStatusCode": status,
            "HTTPHeaders": answer_headers,
            "RetryAttempts": 0,
        }
        self.direct_calls += 1
        return answer

    async def _error(
        self, operation: str, status: int, headers: dict[str, str], raw: bytes
    ) -> ClientError | None:
        """An error answer botocore's retries would not retry (a failed condition, a bad
        request), as the client raises it: its parser, its modeled exception class. None for
        one it would retry (throttling, a transient error), which is handed over."""
        client = self._client
        model = client.meta.service_model.operation_model(operation)
        parsed = client._response_parser.parse(
            {"status_code": status, "headers": headers, "body": raw}, model.output_shape
        )
        if inspect.isawaitable(parsed):  # aiobotocore's parsers are coroutines
            parsed = await parsed
        code = parsed.get("Error", {}).get("Code", "")
        if code in _RETRIED_CODES or status == 429:
            return None
        # As botocore's endpoint does: the modeled error's own fields too (its message, a
        # ConditionalCheckFailed's Item).
        shape = client.meta.service_model.shape_for_error_code(code)
        if shape is not None:
            modeled = client._response_parser.parse(
                {"status_code": status, "headers": headers, "body": raw}, shape
            )
            parsed.update(await modeled if inspect.isawaitable(modeled) else modeled)
        parsed.setdefault("ResponseMetadata", {})["RetryAttempts"] = 0
        error_class: type[ClientError] = client.exceptions.from_code(code)
        return error_class(parsed, operation)

    async def _hand_over(self, method: str, params: dict[str, Any], tried: bool = True) -> Any:
        """The call made by aiobotocore; after a straight attempt, its answer or error counts that
        attempt among its retries (ResponseMetadata.RetryAttempts), so retry metrics stay true."""
        self.handed_over += 1
        try:
            answer = await getattr(self._client, method)(**params)
        except ClientError as exc:
            if tried:
                _count_attempt(exc.response)
            raise
        if tried:
            _count_attempt(answer)
        return answer

    async def _credentials(self) -> Any:
        """The client's credentials, frozen; refreshed first when they are about to expire
        (aiobotocore's refreshable credentials refresh inside get_frozen_credentials)."""
        credentials = self._client._request_signer._credentials
        if credentials is None:
            return None
        frozen = credentials.get_frozen_credentials()
        if inspect.isawaitable(frozen):
            frozen = await frozen
        return frozen

    async def _route(self, operation: str, params: dict[str, Any]) -> _Route:
        """Where botocore's endpoint rules send `operation`, and how it is signed."""
        client = self._client
        model = client.meta.service_model.operation_model(operation)
        context = {
            "client_region": client.meta.region_name,
            "client_config": client.meta.config,
            "has_streaming_input": False,
            "auth_type": model.resolved_auth_type,
            "unsigned_payload": model.unsigned_payload,
            "auth_options": client.meta.service_model.metadata.get("auth"),
        }
        url, extra_headers, properties = await client._resolve_endpoint_ruleset(
            model, params, context
        )
        scheme = ((properties or {}).get("authSchemes") or [{}])[0]
        signer = RouteSigner(
            url,
            scheme.get("signingName", client.meta.service_model.signing_name),
            scheme.get("signingRegion", client.meta.region_name),
        )
        http_session = client._endpoint.http_session
        connections = self._connections.get(url)
        if connections is None and not http_session._proxy_config.proxy_url_for(url):
            # aiobotocore's own TLS context: the same verification, the same client certificate.
            ssl_context, _ = await asyncio.to_thread(http_session._build_ssl_contexts, None)
            connections = self._connections[url] = EndpointConnections(
                url,
                ssl_context,
                http_session._max_pool_connections,
                http_session._timeout.sock_connect,
                http_session._timeout.sock_read,
            )
        route = _Route(
            host=signer.host,
            signer=signer,
            extra_headers=dict(extra_headers or {}),
            connections=connections,
        )
        self._routes[operation] = route
        return route


# What botocore's standard retry mode retries besides 5xx (botocore.retries.standard).
_RETRIED_CODES = frozenset(
    {
        *ThrottledRetryableChecker._THROTTLED_ERROR_CODES,
        *TransientRetryableChecker._TRANSIENT_ERROR_CODES,
    }
)


def _count_attempt(response: dict[str, Any]) -> None:
    metadata = response.setdefault("ResponseMetadata", {})
    metadata["RetryAttempts"] = int(metadata.get("RetryAttempts", 0) or 0) + 1


def _names_an_arn(params: dict[str, Any]) -> bool:
    """Whether the call names its table or stream by ARN (TrackStore names them by name)."""
    for key in ("TableName", "StreamARN", "ResourceArn"):
        value = params.get(key)
        if isinstance(value, str) and value.startswith("arn:"):
            return True
    return any(table.startswith("arn:") for table in params.get("RequestItems", ()))


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
