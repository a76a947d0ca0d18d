"""Baseline for benchmarks/ingest.py: the ingest path of the service TrackStore replaces.

Written the way that service did it, but well: `json.loads` per record, a pydantic v2 model with
the contract's rules and legacy aliases (busId/lat/lon/ts, ISO or epoch timestamps, ranges,
attributes, unknown fields kept), duplicates dropped per batch, and boto3's `TypeSerializer` per
item (numbers as `Decimal`, as boto3 requires) to build the same Locations items, sent as
BatchWriteItem chunks of 25, plus one UpdateItem per device for its newest location and count.

What it leaves out, as that service did: reading the devices' marks (BatchGetItem) and the
conditional PutItems that make replays and resends count once. Its UpdateItem is conditional only
on `lastSeen` not moving backwards. KPL aggregates are unpacked with TrackStore's own
`deaggregate`, so the two sides differ only in what the benchmark is about.

Needs pydantic>=2 and boto3 (benchmarks/requirements.txt, in .venv-bench).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from trackstore.kinesis.kpl import deaggregate

DAY_MS = 86_400_000
FUTURE_TOLERANCE_MS = 5 * 60 * 1000
EPOCH_SECONDS_LIMIT = 10**11  # below: epoch seconds, else milliseconds (the contract's rule)
MAX_ATTRIBUTES_BYTES = 2048
MAX_BATCH_ITEMS = 25
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_ALIASES = {"deviceId": "busId", "timestamp": "ts", "latitude": "lat", "longitude": "lon"}
_OPTIONAL = ("speed", "heading", "altitude", "accuracy", "battery")
_KNOWN = frozenset((*_ALIASES, *_ALIASES.values(), *_OPTIONAL, "attributes"))


def _number(**constraints: Any) -> Any:
    # strict: a JSON string or a boolean is never a measurement; ints are accepted as floats.
    return Annotated[float, Field(strict=True, allow_inf_nan=False, **constraints)]


FiniteFloat = _number()
Latitude = _number(ge=-90, le=90)
Longitude = _number(ge=-180, le=180)
NonNegative = _number(ge=0)
Heading = _number(ge=0, lt=360)
Percent = _number(ge=0, le=100)
AttributeValue = StrictStr | StrictBool | StrictInt | FiniteFloat | None


class GpsRecord(BaseModel):
    """One record as producers write it, in the contract's names or the legacy ones."""

    model_config = ConfigDict(extra="allow")

    device_id: StrictStr = Field(
        validation_alias=AliasChoices("deviceId", "busId"), pattern=r"^[A-Za-z0-9._:-]{1,128}$"
    )
    timestamp: int = Field(validation_alias=AliasChoices("timestamp", "ts"))
    latitude: Latitude = Field(validation_alias=AliasChoices("latitude", "lat"))
    longitude: Longitude = Field(validation_alias=AliasChoices("longitude", "lon"))
    speed: NonNegative | None = None
    heading: Heading | None = None
    altitude: FiniteFloat | None = None
    accuracy: NonNegative | None = None
    battery: Percent | None = None
    attributes: dict[str, AttributeValue] | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_conflicting_aliases(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, alias in _ALIASES.items():
                value, legacy = data.get(name), data.get(alias)
                if value is not None and legacy is not None and value != legacy:
                    raise ValueError(f"{name} and {alias} are both set and differ")
        return data

    @field_validator("timestamp", mode="before")
    @classmethod
    def _epoch_ms(cls, value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("a boolean is not a time")
        if isinstance(value, int | float):
            return _epoch_to_ms(value)
        if isinstance(value, str):
            text = value.strip()
            if text.isascii() and text.replace(".", "", 1).isdigit():
                return _epoch_to_ms(float(text))
            moment = datetime.fromisoformat(text.upper())
            if moment.tzinfo is None:
                raise ValueError("an ISO-8601 time needs a UTC offset")
            delta = moment - _EPOCH
            return delta.days * DAY_MS + delta.seconds * 1000 + delta.microseconds // 1000
        raise ValueError("must be an ISO-8601 string or epoch number")

    @field_validator("timestamp")
    @classmethod
    def _in_window(cls, value: int, info: ValidationInfo) -> int:
        context = info.context or {}
        now_ms, ttl_ms = context["now_ms"], context["ttl_ms"]
        if value < now_ms - ttl_ms:
            raise ValueError("timestamp is older than the retention period")
        if value > now_ms + FUTURE_TOLERANCE_MS:
            raise ValueError("timestamp is more than 5 minutes in the future")
        return value

    @model_validator(mode="after")
    def _collect_attributes(self) -> GpsRecord:
        # Fields the contract does not name are kept as attributes; explicit ones win.
        merged: dict[str, Any] = {}
        for key, value in (self.model_extra or {}).items():
            if key not in _KNOWN:
                merged[key] = value if _is_scalar(value) else _compact(value)
        if self.attributes:
            merged.update(self.attributes)
        if merged and len(_compact(merged).encode()) > MAX_ATTRIBUTES_BYTES:
            raise ValueError("attributes exceed 2 KiB encoded")
        self.attributes = merged or None
        return self


def _epoch_to_ms(value: float) -> int:
    if not math.isfinite(value):
        raise ValueError("timestamp is not a finite number")
    return round(value * 1000) if abs(value) < EPOCH_SECONDS_LIMIT else round(value)


def _is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _dynamo(value: Any) -> Any:
    """boto3 refuses floats: every number goes in as a Decimal of its shortest repr."""
    if isinstance(value, float):
        return Decimal(repr(value))
    return value


class OldIngest:
    """One batch of raw GetRecords records in, BatchWriteItem chunks and UpdateItems out."""

    def __init__(
        self,
        client: Any,
        locations_table: str,
        devices_table: str,
        ttl_days: int,
        date_shards: int,
        clock: Callable[[], int],
    ) -> None:
        self._client = client
        self._locations = locations_table
        self._devices = devices_table
        self._ttl_ms = ttl_days * DAY_MS
        self._date_shards = date_shards
        self._clock = clock
        self._serializer = TypeSerializer()

    def ingest(self, raw_records: Sequence[dict[str, Any]]) -> dict[str, int]:
        context = {"now_ms": self._clock(), "ttl_ms": self._ttl_ms}
        unique: dict[tuple[str, int], tuple[GpsRecord, int, str]] = {}
        received = duplicates = rejected = 0
        for record in raw_records:
            arrival = record.get("ApproximateArrivalTimestamp")
            arrival_ms = int(arrival.timestamp() * 1000) if arrival is not None else 0
            sequence = record["SequenceNumber"]
            parts = deaggregate(record["Data"])
            payloads = [record["Data"]] if parts is None else [part.data for part in parts]
            for sub, data in enumerate(payloads):
                received += 1
                try:
                    gps = GpsRecord.model_validate(json.loads(data), context=context)
                except ValueError:  # ValidationError, JSONDecodeError, UnicodeDecodeError
                    rejected += 1
                    continue
                key = (gps.device_id, gps.timestamp)
                if key in unique:
                    duplicates += 1
                    continue
                unique[key] = (gps, arrival_ms, f"{sequence}/{sub}")

        serialize = self._serializer.serialize
        items = []
        newest: dict[str, tuple[GpsRecord, int]] = {}
        counts: dict[str, int] = {}
        for gps, arrival_ms, position in unique.values():
            attributes = self._location(gps, arrival_ms)
            attributes["date"] = self._date_key(gps.device_id, gps.timestamp)
            attributes["expiresAt"] = (gps.timestamp + self._ttl_ms) // 1000
            attributes["streamPosition"] = position
            items.append({name: serialize(value) for name, value in attributes.items()})
            device = gps.device_id
            counts[device] = counts.get(device, 0) + 1
            best = newest.get(device)
            if best is None or gps.timestamp > best[0].timestamp:
                newest[device] = (gps, arrival_ms)

        for start in range(0, len(items), MAX_BATCH_ITEMS):
            self._batch_write(items[start : start + MAX_BATCH_ITEMS])
        for device, (gps, arrival_ms) in newest.items():
            self._update_device(device, gps, arrival_ms, counts[device])
        return {
            "received": received,
            "stored": len(unique),
            "duplicates": duplicates,
            "rejected": rejected,
        }

    def _location(self, gps: GpsRecord, arrival_ms: int) -> dict[str, Any]:
        location: dict[str, Any] = {
            "deviceId": gps.device_id,
            "timestamp": gps.timestamp,
            "latitude": _dynamo(gps.latitude),
            "longitude": _dynamo(gps.longitude),
            "receivedAt": arrival_ms,
        }
        for name in _OPTIONAL:
            value = getattr(gps, name)
            if value is not None:
                location[name] = _dynamo(value)
        if gps.attributes:
            location["attributes"] = {k: _dynamo(v) for k, v in gps.attributes.items()}
        return location

    def _date_key(self, device_id: str, timestamp: int) -> str:
        digest = hashlib.md5(device_id.encode()).digest()
        shard = int.from_bytes(digest[:4], "big") % self._date_shards
        day = datetime.fromtimestamp(timestamp / 1000, tz=UTC).strftime("%Y-%m-%d")
        return f"{day}#{shard:02d}"

    def _batch_write(self, chunk: list[dict[str, Any]]) -> None:
        requests = [{"PutRequest": {"Item": item}} for item in chunk]
        while requests:
            response = self._client.batch_write_item(RequestItems={self._locations: requests})
            requests = response.get("UnprocessedItems", {}).get(self._locations, [])

    def _update_device(self, device: str, gps: GpsRecord, arrival_ms: int, count: int) -> None:
        serialize = self._serializer.serialize
        values = {
            ":ls": serialize(gps.timestamp),
            ":loc": serialize(self._location(gps, arrival_ms)),
            ":active": serialize("active"),
            ":n": serialize(count),
        }
        try:
            self._client.update_item(
                TableName=self._devices,
                Key={"deviceId": serialize(device)},
                UpdateExpression="SET lastSeen = :ls, lastLocation = :loc, #st = :active "
                "ADD totalUpdates :n",
                ConditionExpression="attribute_not_exists(lastSeen) OR lastSeen <= :ls",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            # A newer location is already stored: only the count moves.
            self._client.update_item(
                TableName=self._devices,
                Key={"deviceId": serialize(device)},
                UpdateExpression="ADD totalUpdates :n",
                ExpressionAttributeValues={":n": values[":n"]},
            )
