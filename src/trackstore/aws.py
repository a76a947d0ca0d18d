"""What every AWS adapter shares: one botocore session, client settings, and the translation of
botocore failures into the domain's error codes at the adapter edge."""

from __future__ import annotations

import asyncio
import functools
import os
import platform
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)
from botocore.utils import is_valid_uri
from opentelemetry.trace import Span, SpanKind

from trackstore import __version__
from trackstore.errors import INTERNAL, INVALID, UNAVAILABLE, Error
from trackstore.metrics import Metrics
from trackstore.telemetry import tracer, tracing_on

# Throttling that outlasts botocore's own retries is the caller's to back off from.
THROTTLING = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "LimitExceededException",
    }
)


# aiobotocore adds its own and botocore's versions after it.
_USER_AGENT = f"trackstore/{__version__} python/{platform.python_version()}"


@functools.cache
def aws_session() -> AioSession:
    """One botocore session per process: it caches the service models clients are built from."""
    return get_session()


ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KINESIS", "AWS_ENDPOINT_URL_DYNAMODB")
NO_CREDENTIALS = (
    "no AWS credentials found (environment, shared config/credentials file, ECS container or "
    "EC2 instance role)"
)
# The chain ends with the EC2 instance metadata service, which botocore asks with a 1 s timeout
# per attempt; where none answers (a laptop, a container without a role) the lookup must not
# hold up the start for long. The ECS container provider, before it, answers in milliseconds.
CREDENTIALS_TIMEOUT_S = 5.0

# botocore's rule (a DNS label, not all digits) in lower case only: every AWS region is, and a
# request signed for `EU-WEST-1` is refused.
_REGION = re.compile(r"^(?![0-9]+$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def check_aws_configuration(values: Mapping[str, str], region: str) -> None:
    """Error(INVALID) naming the variable when `region` or an endpoint override in `values` is
    one botocore cannot use: it would otherwise fail at the first client, with a traceback."""
    if not _REGION.match(region):
        variable = "AWS_REGION" if values.get("AWS_REGION") else "AWS_DEFAULT_REGION"
        raise Error(
            INVALID,
            f"{variable} must be a region name such as eu-west-1 (lower-case letters, digits, "
            f"hyphens), got {region!r}",
        )
    for variable in ENDPOINT_VARIABLES:
        url = values.get(variable, "")
        if url and not _is_endpoint_url(url):
            raise Error(INVALID, f"{variable} must be an http(s)://host[:port] URL, got {url!r}")


def _is_endpoint_url(url: str) -> bool:
    if any(c.isspace() for c in url):
        return False  # urlsplit drops some of them silently, botocore sends them
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number or out of range
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and parts.username is None
        and not parts.query
        and not parts.fragment
        and is_valid_uri(url)
    )


async def check_credentials(timeout_s: float = CREDENTIALS_TIMEOUT_S) -> None:
    """Resolves botocore's credential chain once, so that a process without credentials stops
    at start with one line instead of failing each call later; the session keeps what it found
    for the clients. Error(INVALID) when nothing is found or the configuration is wrong,
    Error(UNAVAILABLE) when a credentials endpoint does not answer."""
    try:
        async with asyncio.timeout(timeout_s):
            credentials = await aws_session().get_credentials()
    except TimeoutError:
        raise Error(INVALID, f"{NO_CREDENTIALS} within {timeout_s:g} s") from None
    except ProfileNotFound as exc:
        variable = "AWS_PROFILE" if os.environ.get("AWS_PROFILE") else "AWS_DEFAULT_PROFILE"
        raise Error(INVALID, f"{variable}: {exc}") from None
    except CredentialRetrievalError as exc:
        raise Error(UNAVAILABLE, f"AWS credentials: {exc}") from None
    except BotoCoreError as exc:  # partial keys, a config file that does not parse, ...
        raise Error(INVALID, f"AWS credentials: {exc}") from None
    if credentials is None:
        raise Error(INVALID, NO_CREDENTIALS)


def client_config(max_pool: int = 50) -> AioConfig:
    return AioConfig(
        # A fixed User-Agent: botocore otherwise assembles its own twice per request from a dozen
        # sanitised parts (~8% of the consumer's CPU), and this one tells CloudTrail who called.
        user_agent=_USER_AGENT,
        # Few, quick retries: callers answer 503 or retry the batch themselves, and an API
        # request must not hang for many seconds on an unreachable endpoint.
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=2,
        read_timeout=10,
        max_pool_connections=max_pool,
    )


class JsonBodySerializer:
    """botocore's request serializer for a JSON-protocol service (DynamoDB, Kinesis) with the
    body encoded by msgspec, compact, as trackstore.aws_direct encodes it too.

    botocore walks the API model for every value it validates and serializes: ~80 us per
    location item in a BatchWriteItem, three times what building the item costs (see
    docs/benchmarks.md). Our requests hold only what JSON holds as is (strings, numbers, maps,
    lists, booleans) and blobs, which msgspec writes as botocore does (base64), so the body is
    encoded straight from the parameters; botocore still makes the envelope (method, target
    header). Not for parameters botocore would convert otherwise (a datetime: TrackStore sends
    none). The services validate every request themselves, so the client-side check is off.
    """

    def __init__(self, serializer: Any) -> None:
        self._serializer = serializer

    def serialize_to_request(self, parameters: dict[str, Any], operation_model: Any) -> Any:
        request = self._serializer.serialize_to_request({}, operation_model)
        request["body"] = _encode_body(parameters)
        return request


_encode_body = msgspec.json.Encoder().encode


def answer_decoder(
    convert: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[..., None]:
    """A `before-parse` hook that decodes a successful JSON answer with msgspec, `convert`
    turning what needs it into botocore's types in place, and leaves botocore an empty body to
    parse (it still adds the ResponseMetadata and still parses errors). botocore's parser walks
    the service model for every value: 3 ms for a DynamoDB Query of 100 items against 0.2 ms,
    14 us per Kinesis record against 1 (docs/benchmarks.md)."""

    def decode(
        response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any
    ) -> None:
        if response_dict["status_code"] >= 300 or not response_dict["body"]:
            return
        answer = _decode_answer(response_dict["body"])
        if convert is not None:
            convert(answer)
        customized_response_dict.update(answer)
        response_dict["body"] = b"{}"

    return decode


_decode_answer = msgspec.json.Decoder(dict[str, Any]).decode


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def translate(exc: Exception, what: str, service: str) -> Error:
    """A botocore failure of `service` as the domain's Error; `what` names the call."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in THROTTLING:
            return Error(UNAVAILABLE, f"{service} is throttling {what} ({code})", retry_after=1)
        if code == "ResourceNotFoundException":
            return Error(UNAVAILABLE, f"{what}: not found (run `trackstore init`)", retry_after=5)
        if code in {"AccessDeniedException", "UnrecognizedClientException"}:
            return Error(UNAVAILABLE, f"{what}: access denied ({code})", retry_after=5)
        return Error(INTERNAL, f"{what}: {service} error {code}: {_message(exc)}")
    if isinstance(exc, NoCredentialsError):
        return Error(UNAVAILABLE, f"{what}: no AWS credentials found", retry_after=5)
    if isinstance(exc, EndpointConnectionError | ConnectionError | ReadTimeoutError):
        return Error(UNAVAILABLE, f"{what}: {service} is unreachable", retry_after=2)
    if isinstance(exc, BotoCoreError | OSError | TimeoutError):
        return Error(UNAVAILABLE, f"{what}: {service} call failed: {exc}", retry_after=2)
    raise exc


def _message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", ""))


class TracedClient:
    """An aiobotocore client whose every API call is a span and is counted: operation, table or
    stream, item count, retries botocore made, throttling. The adapters use it like the client.

    Without a tracer provider (no exporter configured: trackstore.telemetry) no span is made at
    all; each operation's wrapper is built once. Together that was ~30 us of a call's ~170."""

    def __init__(self, client: Any, service: str, metrics: Metrics | None = None) -> None:
        self._client = client
        self._service = service
        self._metrics = metrics
        self._counters: dict[tuple[str, str], Any] = {}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name.startswith("_") or not callable(attribute) or name in _NOT_API_CALLS:
            return attribute
        operation = "".join(part.title() for part in name.split("_"))
        span_name = f"{self._service}.{operation}"

        async def call(**request: Any) -> Any:
            # The client's attribute, looked up per call: a test may replace it.
            method = getattr(self._client, name)
            if not tracing_on():
                return await self._counted(operation, method, request, None)
            with tracer().start_as_current_span(
                span_name,
                kind=SpanKind.CLIENT,
                attributes=_request_attributes(self._service, operation, request),
            ) as span:
                return await self._counted(operation, method, request, span)

        self.__dict__[name] = call  # later lookups skip __getattr__
        return call

    async def _counted(
        self, operation: str, method: Any, request: dict[str, Any], span: Span | None
    ) -> Any:
        try:
            response = await method(**request)
        except ClientError as exc:
            code = error_code(exc)
            outcome = "throttled" if code in THROTTLING else "error"
            self._note(span, operation, exc.response, outcome, code)
            raise
        except Exception as exc:  # unreachable, timed out: no AWS answer at all
            self._note(span, operation, {}, "error", type(exc).__name__)
            raise
        self._note(span, operation, response, "ok")
        if operation == "BatchWriteItem":
            unprocessed = sum(len(v) for v in response.get("UnprocessedItems", {}).values())
            if span is not None:
                span.set_attribute("aws.dynamodb.unprocessed_items", unprocessed)
            if self._metrics is not None and unprocessed:
                self._metrics.dynamodb_unprocessed.inc(unprocessed)
        return response

    def _note(
        self,
        span: Span | None,
        operation: str,
        response: Any,
        outcome: str,
        error: str | None = None,
    ) -> None:
        retries = int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0)
        if span is not None:
            span.set_attribute("aws.retries", retries)
            span.set_attribute("aws.outcome", outcome)
            if error is not None:
                span.set_attribute("aws.error_code", error)
        if self._metrics is not None:
            counter = self._counters.get((operation, outcome))
            if counter is None:  # labels() costs a few us a call: looked up once
                counter = self._metrics.aws_calls.labels(self._service, operation, outcome)
                self._counters[operation, outcome] = counter
            counter.inc()
            if retries:
                self._metrics.aws_retries.labels(self._service, operation).inc(retries)


_NOT_API_CALLS = frozenset({"get_paginator", "get_waiter", "can_paginate", "close"})


def _request_attributes(service: str, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "rpc.system": "aws-api",
        "rpc.service": service,
        "rpc.method": operation,
    }
    if "TableName" in request:
        attributes["aws.dynamodb.table_names"] = [request["TableName"]]
    if "RequestItems" in request:
        items = request["RequestItems"]
        attributes["aws.dynamodb.table_names"] = sorted(items)
        attributes["aws.item_count"] = sum(
            len(v) if isinstance(v, list) else len(v.get("Keys", [])) for v in items.values()
        )
    if "StreamName" in request:
        attributes["aws.kinesis.stream_name"] = request["StreamName"]
    if "ShardId" in request:
        attributes["aws.kinesis.shard_id"] = request["ShardId"]
    if "Records" in request:
        attributes["aws.item_count"] = len(request["Records"])
    return attributes
