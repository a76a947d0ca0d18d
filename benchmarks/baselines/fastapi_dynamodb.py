"""The API benchmark's yardstick on DynamoDB: fastapi_app's endpoints and models, reading the tables
`trackstore init` creates and TrackStore fills, with boto3, as the old service read them.

Written as a strong FastAPI developer would for speed, not as the old service was:
- sync endpoints, which FastAPI runs on its thread pool, around one boto3 client (thread-safe,
  a connection per thread: max_pool_connections 64, retries standard);
- the low-level client, not the resource layer, and AttributeValues turned into the models by
  hand (floats, not Decimals);
- the same queries as TrackStore: a device's newest live item (Limit 1, newest first, the TTL
  filter), a page of its history (Limit = page size, the TTL filter), and GetItem on Devices.

Run: `python benchmarks/baselines/fastapi_dynamodb.py --port 8002` with AWS_ENDPOINT_URL_DYNAMODB
(and credentials, region) in the environment; LOCATION_TABLE_NAME and DEVICE_TABLE_NAME as for
TrackStore (their defaults too).
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import boto3
from botocore.config import Config
from fastapi import FastAPI, HTTPException, Query
from fastapi_app import (
    MAX_LIMIT,
    TTL_DAYS,
    BadRequest,
    DeviceId,
    DeviceOut,
    DeviceRecord,
    History,
    Location,
    _decode_token,
    _device_out,
    _encode_token,
    _ms_to_datetime,
    _parse_time,
    install_problem_handlers,
    serve,
)

_OPTIONAL = ("speed", "heading", "altitude", "accuracy", "battery")


def _scalar(value: dict[str, Any]) -> Any:
    ((kind, raw),) = value.items()
    if kind == "N":
        return float(raw) if any(c in raw for c in ".eE") else int(raw)
    if kind == "NULL":
        return None
    return raw  # S, BOOL


def _location(item: dict[str, Any]) -> Location:
    present: dict[str, Any] = {name: float(item[name]["N"]) for name in _OPTIONAL if name in item}
    if "attributes" in item:
        present["attributes"] = {k: _scalar(v) for k, v in item["attributes"]["M"].items()}
    return Location(
        device_id=item["deviceId"]["S"],
        timestamp=_ms_to_datetime(int(item["timestamp"]["N"])),
        latitude=float(item["latitude"]["N"]),
        longitude=float(item["longitude"]["N"]),
        received_at=_ms_to_datetime(int(item["receivedAt"]["N"])),
        **present,
    )


def create_app() -> FastAPI:
    client = boto3.client(
        "dynamodb",
        config=Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 3}),
    )
    locations = os.environ.get("LOCATION_TABLE_NAME", "transport-locations-dev")
    devices = os.environ.get("DEVICE_TABLE_NAME", "transport-devices-dev")
    ttl = timedelta(days=TTL_DAYS)
    app = FastAPI(title="TrackStore baseline (FastAPI, boto3)")
    alive = {"FilterExpression": "#exp > :now"}

    def _now_s() -> str:
        return str(int(time.time()))

    @app.get(
        "/locations/{device_id}/latest",
        response_model=Location,
        response_model_exclude_unset=True,
    )
    def latest_location(device_id: DeviceId) -> Location:
        response = client.query(
            TableName=locations,
            KeyConditionExpression="#dev = :dev",
            ExpressionAttributeNames={"#dev": "deviceId", "#exp": "expiresAt"},
            ExpressionAttributeValues={":dev": {"S": device_id}, ":now": {"N": _now_s()}},
            ScanIndexForward=False,
            Limit=1,
            **alive,
        )
        items = response.get("Items", [])
        if not items:
            raise HTTPException(404, f"device {device_id} has no retained location")
        return _location(items[0])

    @app.get(
        "/locations/{device_id}",
        response_model=History,
        response_model_exclude_unset=True,
    )
    def location_history(
        device_id: DeviceId,
        start_time: str | None = None,
        end_time: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        order: Literal["asc", "desc"] = "asc",
        next_token: str | None = None,
    ) -> History:
        start = _parse_time("start_time", start_time)
        end = _parse_time("end_time", end_time)
        oldest = datetime.now(UTC) - ttl
        start = oldest if start is None else max(start, oldest)
        start_ms = int(start.timestamp() * 1000)
        end_ms = 2**53 if end is None else int(end.timestamp() * 1000)
        scope = f"{device_id}:{order}"
        request: dict[str, Any] = {
            "TableName": locations,
            "KeyConditionExpression": "#dev = :dev AND #ts BETWEEN :start AND :end",
            "ExpressionAttributeNames": {
                "#dev": "deviceId",
                "#ts": "timestamp",
                "#exp": "expiresAt",
            },
            "ExpressionAttributeValues": {
                ":dev": {"S": device_id},
                ":start": {"N": str(start_ms)},
                ":end": {"N": str(end_ms)},
                ":now": {"N": _now_s()},
            },
            "ScanIndexForward": order == "asc",
            "Limit": limit,
            **alive,
        }
        if next_token is not None:
            after = _decode_token(next_token, scope)
            if not isinstance(after, int):
                raise BadRequest("next_token is not valid")
            request["ExclusiveStartKey"] = {
                "deviceId": {"S": device_id},
                "timestamp": {"N": str(after)},
            }
        response = client.query(**request)
        last = response.get("LastEvaluatedKey")
        return History(
            device_id=device_id,
            locations=[_location(item) for item in response.get("Items", [])],
            next_token=_encode_token(scope, int(last["timestamp"]["N"])) if last else None,
        )

    @app.get("/devices/{device_id}", response_model=DeviceOut, response_model_exclude_unset=True)
    def get_device(device_id: DeviceId) -> DeviceOut:
        item = client.get_item(TableName=devices, Key={"deviceId": {"S": device_id}}).get("Item")
        if item is None:
            raise HTTPException(404, f"device {device_id} is not known")
        record = DeviceRecord(
            device_id=device_id,
            last_seen=_ms_to_datetime(int(item["lastSeen"]["N"])) if "lastSeen" in item else None,
            last_location=_location(item["lastLocation"]["M"]) if "lastLocation" in item else None,
            total_updates=int(item.get("totalUpdates", {"N": "0"})["N"]),
            registered_at=(
                _ms_to_datetime(int(item["registeredAt"]["N"])) if "registeredAt" in item else None
            ),
            name=item["name"]["S"] if "name" in item else None,
        )
        return _device_out(record, datetime.now(UTC))

    install_problem_handlers(app)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    serve(create_app(), args.host, args.port)


if __name__ == "__main__":
    main()
