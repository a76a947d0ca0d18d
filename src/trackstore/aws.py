"""What every AWS adapter shares: one botocore session, client settings, and the translation of
botocore failures into the domain's error codes at the adapter edge."""

from __future__ import annotations

import functools

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from trackstore.errors import INTERNAL, UNAVAILABLE, Error

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


@functools.cache
def aws_session() -> AioSession:
    """One botocore session per process: it caches the service models clients are built from."""
    return get_session()


def client_config(max_pool: int = 50) -> AioConfig:
    return AioConfig(
        # Few, quick retries: callers answer 503 or retry the batch themselves, and an API
        # request must not hang for many seconds on an unreachable endpoint.
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=2,
        read_timeout=10,
        max_pool_connections=max_pool,
    )


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
