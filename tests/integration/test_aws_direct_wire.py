"""The calls trackstore.aws_direct sends straight are on the wire what aiobotocore sends, and come
back as aiobotocore gives them back: same bytes, same headers (the signature too, at a frozen
clock), same parsed answers, same errors, retries and credential refresh. Against a local HTTP
server that records every request and answers as told."""

from __future__ import annotations

import asyncio
import datetime
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import botocore.auth
import msgspec
import pytest
from aiobotocore.credentials import AioRefreshableCredentials
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from tests.aws_emulators import free_port
from trackstore.aws import aws_session
from trackstore.aws_direct import DirectClient
from trackstore.dynamodb.client import dynamodb_client
from trackstore.kinesis.client import kinesis_client

pytestmark = pytest.mark.integration

FROZEN = datetime.datetime(2026, 12, 5, 12, 0, 0, tzinfo=datetime.UTC)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Stub:
    """Answers each request with the next of `answers` (status, body, crc32 or None for the
    right one), then with the last one again; records every request."""

    port: int
    answers: list[tuple[int, bytes, int | None]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    hang_up: bool = False  # close each connection after its answer, without saying so
    chunked: bool = False  # send answers chunked, without a Content-Length

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, status: int, body: Any, crc32: int | None = None) -> None:
        self.answers.append((status, msgspec.json.encode(body), crc32))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                request_line, *lines = head.split("\r\n")[:-2]
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                method, path, _ = request_line.split(" ")
                self.seen.append(Seen(method, path, headers, body))
                status, answer, crc32 = (
                    self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
                )
                framing = (
                    "Transfer-Encoding: chunked\r\n"
                    if self.chunked
                    else f"Content-Length: {len(answer)}\r\n"
                )
                payload = f"{len(answer):x}\r\n".encode() + answer + b"\r\n0\r\n\r\n"
                writer.write(
                    (
                        f"HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.0\r\n"
                        f"{framing}x-amzn-RequestId: REQ{len(self.seen)}\r\n"
                        f"x-amz-crc32: {zlib.crc32(answer) if crc32 is None else crc32}\r\n\r\n"
                    ).encode()
                    + (payload if self.chunked else answer)
                )
                await writer.drain()
                if self.hang_up:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def stub() -> AsyncIterator[Stub]:
    built = Stub(free_port())
    server = await asyncio.start_server(built.handle, "127.0.0.1", built.port)
    async with server:
        yield built


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: FROZEN)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token")
    # The process's one session keeps the credentials it found first: another test's, when one
    # ran before in this process. These tests sign with their own.
    aws_session.cache_clear()
    yield
    aws_session.cache_clear()


def item(n: int) -> dict[str, Any]:
    return {"deviceId": {"S": "bus-1"}, "timestamp": {"N": str(1_800_000_000_000 + n)}}


DYNAMODB_CALLS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "get_item": (
        {"TableName": "devices", "Key": {"deviceId": {"S": "bus-1"}}, "ConsistentRead": True},
        {"Item": {**item(0), "totalUpdates": {"N": "12"}, "name": {"S": "Bus ü"}}},
    ),
    "query": (
        {
            "TableName": "locations",
            "KeyConditionExpression": "#d = :d AND #t BETWEEN :a AND :b",
            "ExpressionAttributeNames": {"#d": "deviceId", "#t": "timestamp"},
            "ExpressionAttributeValues": {
                ":d": {"S": "bus-1"},
                ":a": {"N": "0"},
                ":b": {"N": "9"},
            },
            "ScanIndexForward": False,
            "Limit": 100,
        },
        {"Items": [item(n) for n in range(5)], "Count": 5, "ScannedCount": 5},
    ),
    "batch_write_item": (
        {"RequestItems": {"locations": [{"PutRequest": {"Item": item(n)}} for n in range(25)]}},
        {"UnprocessedItems": {"locations": [{"PutRequest": {"Item": item(3)}}]}},
    ),
    "batch_get_item": (
        {"RequestItems": {"devices": {"Keys": [{"deviceId": {"S": "bus-1"}}]}}},
        {"Responses": {"devices": [item(0)]}, "UnprocessedKeys": {}},
    ),
    "update_item": (
        {
            "TableName": "devices",
            "Key": {"deviceId": {"S": "bus-1"}},
            "UpdateExpression": "SET lastSeen = :t ADD totalUpdates :n",
            "ConditionExpression": "attribute_not_exists(lastSeen) OR lastSeen < :t",
            "ExpressionAttributeValues": {":t": {"N": "5"}, ":n": {"N": "1"}},
            "ReturnValues": "ALL_NEW",
        },
        {"Attributes": item(0)},
    ),
    "put_item": (
        {
            "TableName": "locations",
            "Item": item(1),
            "ConditionExpression": "attribute_not_exists(x)",
        },
        {},
    ),
}
KINESIS_CALLS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "get_records": (
        {"ShardIterator": "AAAA/+==", "Limit": 1000},
        {
            "Records": [
                {
                    "SequenceNumber": "4965",
                    "ApproximateArrivalTimestamp": 1800000000.125,
                    "Data": "eyJhIjoxfQ==",
                    "PartitionKey": "bus-1",
                }
            ],
            "NextShardIterator": "BBBB",
            "MillisBehindLatest": 0,
        },
    ),
    "put_records": (
        {
            "StreamName": "gps",
            "Records": [{"Data": b'{"a":1}\xff', "PartitionKey": "bus-1"}] * 3,
        },
        {
            "FailedRecordCount": 1,
            "Records": [
                # Stored, with the nulls kinesis-local sends; refused; stored.
                {"SequenceNumber": "1", "ShardId": "s-0", "ErrorCode": None, "ErrorMessage": None},
                {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow"},
                {"SequenceNumber": "3", "ShardId": "s-0"},
            ],
        },
    ),
}


def comparable(seen: Seen) -> dict[str, Any]:
    """A request as sent, less the invocation id (a fresh UUID per call, checked as one)."""
    headers = dict(seen.headers)
    uuid.UUID(headers.pop("amz-sdk-invocation-id"))
    return {"method": seen.method, "path": seen.path, "headers": headers, "body": seen.body}


async def both(
    stub: Stub, direct: DirectClient, method: str, params: dict[str, Any]
) -> tuple[tuple[Seen, Any], tuple[Seen, Any]]:
    """The call through plain aiobotocore, then straight: what each sent and got back."""
    plain = await getattr(direct._client, method)(**params)
    sent_plain = stub.seen[-1]
    answered = await getattr(direct, method)(**params)
    assert direct.handed_over == 0
    return (sent_plain, plain), (stub.seen[-1], answered)


@pytest.mark.parametrize("method", list(DYNAMODB_CALLS))
async def test_dynamodb_calls_are_sent_and_read_as_aiobotocore_does(
    stub: Stub, method: str
) -> None:
    params, answer = DYNAMODB_CALLS[method]
    stub.answer(200, answer)
    async with dynamodb_client("eu-west-1", endpoint_url=stub.url) as traced:
        direct = traced._client
        assert isinstance(direct, DirectClient)
        (sent, got), (sent_direct, got_direct) = await both(stub, direct, method, params)

    assert comparable(sent_direct) == comparable(sent)
    assert sent.headers["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261205/eu-west-1/dynamodb/aws4_request"
    )
    got["ResponseMetadata"]["RequestId"] = "REQ2"  # the second request's answer
    got["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"] = "REQ2"
    assert got_direct == got
    assert direct.direct_calls == 1


@pytest.mark.parametrize("method", list(KINESIS_CALLS))
async def test_kinesis_calls_are_sent_and_read_as_aiobotocore_does(stub: Stub, method: str) -> None:
    params, answer = KINESIS_CALLS[method]
    stub.answer(200, answer)
    async with kinesis_client("eu-west-1", endpoint_url=stub.url) as traced:
        direct = traced._client
        (sent, got), (sent_direct, got_direct) = await both(stub, direct, method, params)

    assert comparable(sent_direct) == comparable(sent)
    assert sent.headers["x-amz-target"].startswith("Kinesis_20131202.")
    got["ResponseMetadata"]["RequestId"] = "REQ2"
    got["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"] = "REQ2"
    assert got_direct == got
    if method == "put_records":  # as botocore's own parser reads it: no nulls
        assert [sorted(r) for r in got_direct["Records"]] == [
            ["SequenceNumber", "ShardId"],
            ["ErrorCode", "ErrorMessage"],
            ["SequenceNumber", "ShardId"],
        ]
    if method == "get_records":
        assert got_direct["Records"][0]["Data"] == b'{"a":1}'
        assert got_direct["Records"][0]["ApproximateArrivalTimestamp"].tzinfo is not None


ERROR = {
    "__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
    "message": "The conditional request failed",
}
THROTTLED = {
    "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
    "message": "Rate exceeded",
}


async def failure(call: Callable[[], Any]) -> ClientError:
    with pytest.raises(ClientError) as caught:
        await call()
    return caught.value


async def test_an_error_answer_is_raised_as_aiobotocore_raises_it(stub: Stub) -> None:
    params, _ = DYNAMODB_CALLS["put_item"]
    stub.answer(400, ERROR)
    async with dynamodb_client("eu-west-1", endpoint_url=stub.url) as traced:
        direct = traced._client
        plain = await failure(lambda: direct._client.put_item(**params))
        sent_before = len(stub.seen)
        straight = await failure(lambda: direct.put_item(**params))

    assert type(straight) is type(plain)
    assert type(plain).__name__ == "ConditionalCheckFailedException"
    plain.response["ResponseMetadata"]["RequestId"] = "REQ2"
    plain.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"] = "REQ2"
    assert straight.response == plain.response
    assert straight.operation_name == plain.operation_name == "PutItem"
    assert str(straight) == str(plain)
    # Neither retries a failed condition: one request each.
    assert len(stub.seen) - sent_before == 1
    assert direct.handed_over == 0


async def test_throttling_is_retried_by_aiobotocore_after_the_straight_attempt(
    stub: Stub,
) -> None:
    params, answer = DYNAMODB_CALLS["get_item"]
    stub.answer(400, THROTTLED)
    stub.answer(400, THROTTLED)
    stub.answer(200, answer)
    async with dynamodb_client("eu-west-1", endpoint_url=stub.url) as traced:
        got = await traced.get_item(**params)

    assert got["Item"] == answer["Item"]
    # botocore's retry, and the straight attempt before it.
    assert got["ResponseMetadata"]["RetryAttempts"] == 2
    attempts = [s.headers["amz-sdk-request"] for s in stub.seen]
    assert attempts[:2] == ["attempt=1", "attempt=1"]  # straight, then aiobotocore's first
    assert "attempt=2" in attempts[2]


async def test_a_body_that_fails_its_crc32_is_not_taken(stub: Stub) -> None:
    params, answer = DYNAMODB_CALLS["get_item"]
    stub.answer(200, {"Item": {"deviceId": {"S": "garbled"}}}, crc32=1)
    stub.answer(200, answer)
    async with dynamodb_client("eu-west-1", endpoint_url=stub.url) as traced:
        got = await traced.get_item(**params)

    assert got["Item"] == answer["Item"]
    assert traced._client.handed_over == 1


async def test_an_unreachable_endpoint_raises_what_aiobotocore_raises() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    params, _ = DYNAMODB_CALLS["get_item"]
    async with dynamodb_client("eu-west-1", endpoint_url=url) as traced:
        with pytest.raises(EndpointConnectionError):
            await traced._client._client.get_item(**params)
        with pytest.raises(EndpointConnectionError):
            await traced.get_item(**params)


async def test_credentials_are_refreshed_before_signing(stub: Stub) -> None:
    params, answer = DYNAMODB_CALLS["get_item"]
    stub.answer(200, answer)
    refreshed = 0

    async def refresh() -> dict[str, str]:
        nonlocal refreshed
        refreshed += 1
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
            seconds=60 if refreshed == 1 else 3600
        )
        return {
            "access_key": f"AKIDREFRESHED{refreshed}",
            "secret_key": "secret",
            "token": f"token-{refreshed}",
            "expiry_time": expiry.isoformat(),
        }

    async with dynamodb_client("eu-west-1", endpoint_url=stub.url) as traced:
        credentials = AioRefreshableCredentials.create_from_metadata(
            await refresh(), refresh_using=refresh, method="test"
        )
        traced._client._client._request_signer._credentials = credentials
        await traced.get_item(**params)  # 60 s left: within botocore's refresh window

    assert refreshed == 2
    assert "Credential=AKIDREFRESHED2/" in stub.seen[-1].headers["authorization"]
    assert stub.seen[-1].headers["x-amz-security-token"] == "token-2"


async def test_a_connection_the_server_closed_while_idle_costs_nothing_but_a_new_one(
    stub: Stub,
) -> None:
    params, answer = DYNAMODB_CALLS["get_item"]
    stub.answer(200, answer)
    stub.hang_up = True
    async with dynamodb_client("eu-west-1", endpoint_url=stub.url) as traced:
        answers = [await traced.get_item(**params) for _ in range(5)]

    assert all(got["Item"] == answer["Item"] for got in answers)
    # Each call after the first may find its idle connection closed: then aiobotocore sends it.
    assert traced._client.direct_calls + traced._client.handed_over == 5
    assert traced._client.direct_calls >= 1


async def test_an_answer_without_a_length_is_left_to_aiobotocore(stub: Stub) -> None:
    params, answer = DYNAMODB_CALLS["query"]
    stub.answer(200, answer)
    stub.chunked = True
    async with dynamodb_client("eu-west-1", endpoint_url=stub.url) as traced:
        got = await traced.query(**params)

    assert got["Items"] == answer["Items"]
    assert traced._client.handed_over == 1


async def test_without_credentials_the_error_is_aiobotocores(stub: Stub) -> None:
    params, answer = DYNAMODB_CALLS["get_item"]
    stub.answer(200, answer)
    async with dynamodb_client("eu-west-1", endpoint_url=stub.url) as traced:
        # What a client gets where the chain found none (the session caches what it found).
        traced._client._client._request_signer._credentials = None
        with pytest.raises(NoCredentialsError):
            await traced.get_item(**params)

    assert stub.seen == []  # nothing unsigned went out
