"""The DynamoDB client encodes request bodies and decodes answers itself, the Kinesis client
decodes GetRecords answers itself (msgspec, no botocore model walk): for every kind of request
the adapters send, the body must say exactly what botocore's would, and every answer must read
as botocore would have parsed it."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import botocore.session
import pytest
from botocore.parsers import create_parser
from botocore.serialize import create_serializer
from botocore.validate import ParamValidationDecorator

from trackstore.domain import Location
from trackstore.dynamodb.client import JsonBodySerializer, decode_json_body, dynamodb_client
from trackstore.dynamodb.items import location_item, to_value
from trackstore.kinesis.client import decode_get_records, kinesis_client

MODEL = botocore.session.get_session().get_service_model("dynamodb")
KINESIS = botocore.session.get_session().get_service_model("kinesis")
LOCATION = Location(
    device_id="bus-0001",
    timestamp=1_800_000_000_123,
    latitude=-33.865143,
    longitude=151.2099,
    speed=0.0,
    heading=359.9,
    altitude=-12.5,
    accuracy=3.0,
    battery=0.07,
    attributes={"driver": 'Zoë "Z" O\'Neil', "doors": 2, "ok": True, "note": None, "x": 1e-7},
    received_at=1_800_000_000_200,
)
ITEM = {**location_item(LOCATION, 30 * 86_400_000, 8), "streamPosition": {"S": "495/0"}}

REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("BatchWriteItem", {"RequestItems": {"Locations": [{"PutRequest": {"Item": ITEM}}] * 3}}),
    (
        "PutItem",
        {
            "TableName": "Locations",
            "Item": ITEM,
            "ConditionExpression": "attribute_not_exists(#dev) OR #pos = :pos",
            "ExpressionAttributeNames": {"#dev": "deviceId", "#pos": "streamPosition"},
            "ExpressionAttributeValues": {":pos": {"S": "495/0"}},
        },
    ),
    (
        "UpdateItem",
        {
            "TableName": "Devices",
            "Key": {"deviceId": {"S": "bus-0001"}},
            "UpdateExpression": "SET lastLocation = :loc ADD totalUpdates :added",
            "ConditionExpression": "attribute_not_exists(lastSeen)",
            "ExpressionAttributeValues": {":loc": {"M": ITEM}, ":added": {"N": "2"}},
            "ReturnValues": "ALL_NEW",
        },
    ),
    (
        "BatchGetItem",
        {
            "RequestItems": {
                "Devices": {
                    "Keys": [{"deviceId": {"S": "bus-0001"}}, {"deviceId": {"S": "bus-0002"}}],
                    "ConsistentRead": True,
                    "ProjectionExpression": "deviceId, lastSeen, #at",
                    "ExpressionAttributeNames": {"#at": "appliedThrough"},
                }
            }
        },
    ),
    (
        "Query",
        {
            "TableName": "Locations",
            "KeyConditionExpression": "#dev = :dev AND #ts BETWEEN :start AND :end",
            "ExpressionAttributeNames": {"#dev": "deviceId", "#ts": "timestamp"},
            "ExpressionAttributeValues": {":dev": {"S": "bus-0001"}, ":start": {"N": "0"}},
            "ScanIndexForward": False,
            "Limit": 100,
            "ExclusiveStartKey": {"deviceId": {"S": "bus-0001"}, "timestamp": {"N": "5"}},
        },
    ),
    (
        "Scan",
        {"TableName": "Devices", "Limit": 100, "ConsistentRead": False},
    ),
    (
        "CreateTable",
        {
            "TableName": "Leases",
            "AttributeDefinitions": [{"AttributeName": "leaseKey", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "leaseKey", "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    ),
    (
        "PutItem",
        {"TableName": "Devices", "Item": {"metadata": to_value({"tags": ["a", 1, [True]]})}},
    ),
]


@pytest.mark.parametrize(("operation", "parameters"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_bodies_say_what_botocores_would(operation: str, parameters: dict[str, Any]) -> None:
    model = MODEL.operation_model(operation)
    # botocore as shipped: validates, then walks the model.
    theirs = create_serializer("json", include_validation=True).serialize_to_request(
        parameters, model
    )
    ours = JsonBodySerializer(create_serializer("json", include_validation=False))
    request = ours.serialize_to_request(parameters, model)
    assert json.loads(request["body"]) == json.loads(theirs["body"])
    assert {k: v for k, v in request.items() if k != "body"} == {
        k: v for k, v in theirs.items() if k != "body"
    }


ANSWERS: list[tuple[str, int, dict[str, Any]]] = [
    ("Query", 200, {"Items": [ITEM, ITEM], "Count": 2, "ScannedCount": 2, "LastEvaluatedKey": {}}),
    ("BatchGetItem", 200, {"Responses": {"Devices": [ITEM]}, "UnprocessedKeys": {}}),
    ("BatchWriteItem", 200, {"UnprocessedItems": {"Locations": [{"PutRequest": {"Item": ITEM}}]}}),
    ("UpdateItem", 200, {"Attributes": ITEM}),
    ("PutItem", 200, {}),
    ("DescribeTable", 200, {"Table": {"TableName": "Devices", "TableStatus": "ACTIVE"}}),
    (
        "PutItem",
        400,
        {
            "__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
            "message": "The conditional request failed",
        },
    ),
]


def parsed_both_ways(
    model: Any, operation: str, status: int, answer: dict[str, Any], hook: Callable[..., None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ours, botocore's) parse of one answer; ours is botocore's parse of what the hook left,
    updated with the hook's result, as the endpoint does."""
    shape = model.operation_model(operation).output_shape

    def response() -> dict[str, Any]:
        return {
            "status_code": status,
            "headers": {"x-amzn-RequestId": "R1", "Content-Type": "application/x-amz-json-1.0"},
            "body": json.dumps(answer).encode(),
            "context": {"operation_name": operation},
        }

    theirs = create_parser("json").parse(response(), shape)
    raw, customized = response(), {}
    hook(response_dict=raw, customized_response_dict=customized)
    assert (raw["body"] == b"{}") is (status < 300), "success is decoded here, errors by botocore"
    ours = create_parser("json").parse(raw, shape)
    ours.update(customized)
    return ours, theirs


@pytest.mark.parametrize(("operation", "status", "answer"), ANSWERS, ids=[a[0] for a in ANSWERS])
def test_answers_read_as_botocore_parses_them(
    operation: str, status: int, answer: dict[str, Any]
) -> None:
    ours, theirs = parsed_both_ways(MODEL, operation, status, answer, decode_json_body)
    assert ours == theirs


def _kinesis_record(n: int, arrival: float | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "SequenceNumber": f"4959033827149025660855969253836157109592157598913658889{n}",
        "Data": base64.b64encode(bytes(range(n, n + 40)) + b'{"deviceId":"bus-1"}').decode(),
        "PartitionKey": f"bus-{n}",
    }
    if arrival is not None:
        record["ApproximateArrivalTimestamp"] = arrival
    return record


GET_RECORDS: list[tuple[str, int, dict[str, Any]]] = [
    (
        "records",
        200,
        {
            "Records": [_kinesis_record(1, 1_800_000_000.123), _kinesis_record(2, 1_800_000_001)],
            "NextShardIterator": "AAAA" * 50,
            "MillisBehindLatest": 1200,
        },
    ),
    ("no arrival time", 200, {"Records": [_kinesis_record(3, None)], "MillisBehindLatest": 0}),
    (
        "shard end",
        200,
        {
            "Records": [],
            "MillisBehindLatest": 0,
            "ChildShards": [
                {
                    "ShardId": "shardId-000000000002",
                    "ParentShards": ["shardId-000000000000"],
                    "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "17014118346046923"},
                }
            ],
        },
    ),
    ("expired", 400, {"__type": "ExpiredIteratorException", "message": "Iterator expired"}),
]


@pytest.mark.parametrize(("case", "status", "answer"), GET_RECORDS, ids=[a[0] for a in GET_RECORDS])
def test_get_records_answers_read_as_botocore_parses_them(
    case: str, status: int, answer: dict[str, Any]
) -> None:
    ours, theirs = parsed_both_ways(KINESIS, "GetRecords", status, answer, decode_get_records)
    assert ours == theirs
    for mine, botocores in zip(ours.get("Records", []), theirs.get("Records", []), strict=True):
        assert type(mine["Data"]) is bytes
        assert mine.get("ApproximateArrivalTimestamp") == botocores.get(
            "ApproximateArrivalTimestamp"
        )


def _handlers(client: Any, event: str) -> list[Any]:
    return list(client.meta.events._emitter._handlers.prefix_search(event))


async def test_the_clients_use_these_codecs(monkeypatch: pytest.MonkeyPatch) -> None:
    # botocore would still work without them, only slower: this is what would notice.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    async with dynamodb_client("us-east-1", "http://127.0.0.1:9") as traced:
        client = traced._client
        assert isinstance(client._serializer, JsonBodySerializer)
        # DynamoDB validates every request; botocore's own check would walk the model again.
        assert not isinstance(client._serializer._serializer, ParamValidationDecorator)
        assert decode_json_body in _handlers(client, "before-parse.dynamodb.Query")
    async with kinesis_client("us-east-1", "http://127.0.0.1:9") as traced:
        assert decode_get_records in _handlers(traced._client, "before-parse.kinesis.GetRecords")
