"""The DynamoDB client encodes request bodies and decodes answers itself (msgspec, no botocore
model walk): for every kind of request the adapters send, the body must say exactly what
botocore's would, and every answer must read as botocore would have parsed it."""

from __future__ import annotations

import json
from typing import Any

import botocore.session
import pytest
from botocore.parsers import create_parser
from botocore.serialize import create_serializer

from trackstore.domain import Location
from trackstore.dynamodb.client import JsonBodySerializer, decode_json_body
from trackstore.dynamodb.items import location_item, to_value

MODEL = botocore.session.get_session().get_service_model("dynamodb")
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
    attributes={"driver": "Zoë \"Z\" O'Neil", "doors": 2, "ok": True, "note": None, "x": 1e-7},
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


@pytest.mark.parametrize(("operation", "status", "answer"), ANSWERS, ids=[a[0] for a in ANSWERS])
def test_answers_read_as_botocore_parses_them(
    operation: str, status: int, answer: dict[str, Any]
) -> None:
    shape = MODEL.operation_model(operation).output_shape

    def response() -> dict[str, Any]:
        return {
            "status_code": status,
            "headers": {"x-amzn-RequestId": "R1", "Content-Type": "application/x-amz-json-1.0"},
            "body": json.dumps(answer).encode(),
            "context": {"operation_name": operation},
        }

    theirs = create_parser("json").parse(response(), shape)
    raw, customized = response(), {}
    decode_json_body(raw, customized)
    assert (raw["body"] == b"{}") is (status < 300), "success is decoded here, errors by botocore"
    ours = create_parser("json").parse(raw, shape)
    ours.update(customized)  # what the endpoint does with the hook's result
    assert ours == theirs
