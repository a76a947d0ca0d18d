"""The aiobotocore DynamoDB client, opened once per process, and the translation of its failures
into the domain's error codes at the adapter edge."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
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


def client_config(max_pool: int = 50) -> AioConfig:
    return AioConfig(
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=3,
        read_timeout=10,
        max_pool_connections=max_pool,
    )


@asynccontextmanager
async def dynamodb_client(region: str, endpoint_url: str | None = None) -> AsyncIterator[Any]:
    """A DynamoDB client; without `endpoint_url`, botocore's AWS_ENDPOINT_URL(_DYNAMODB) or AWS."""
    session = get_session()
    async with session.create_client(
        "dynamodb", region_name=region, endpoint_url=endpoint_url, config=client_config()
    ) as client:
        yield client


class TableProbe:
    """Answers health checks from a recent success: load balancers ask every few seconds per
    task, and DescribeTable is a rate-limited control-plane call."""

    def __init__(self, client: Any, table: str, cache_s: float = 5.0) -> None:
        self._client = client
        self._table = table
        self._cache_s = cache_s
        self._ok_at = -cache_s

    async def ping(self) -> None:
        if time.monotonic() - self._ok_at < self._cache_s:
            return
        try:
            await self._client.describe_table(TableName=self._table)
        except Exception as exc:
            raise translate(exc, f"describe {self._table}") from exc
        self._ok_at = time.monotonic()


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def translate(exc: Exception, what: str) -> Error:
    """A botocore failure as the domain's Error; `what` names the call for the message."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in THROTTLING:
            return Error(UNAVAILABLE, f"DynamoDB is throttling {what} ({code})", retry_after=1)
        if code == "ResourceNotFoundException":
            return Error(UNAVAILABLE, f"{what}: not found (run `trackstore init`)", retry_after=5)
        if code in {"AccessDeniedException", "UnrecognizedClientException"}:
            return Error(UNAVAILABLE, f"{what}: access denied ({code})", retry_after=5)
        return Error(INTERNAL, f"{what}: DynamoDB error {code}: {_message(exc)}")
    if isinstance(exc, NoCredentialsError):
        return Error(UNAVAILABLE, f"{what}: no AWS credentials found", retry_after=5)
    if isinstance(exc, EndpointConnectionError | ConnectionError | ReadTimeoutError):
        return Error(UNAVAILABLE, f"{what}: DynamoDB is unreachable", retry_after=2)
    if isinstance(exc, BotoCoreError | OSError | TimeoutError):
        return Error(UNAVAILABLE, f"{what}: DynamoDB call failed: {exc}", retry_after=2)
    raise exc


def _message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", ""))
