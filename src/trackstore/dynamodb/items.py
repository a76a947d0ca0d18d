"""DynamoDB items built straight from domain structs and back, without boto3's TypeSerializer.

Attribute names are the contract's (other services read these tables): Locations carry `deviceId`,
`timestamp` (N, epoch ms), the measurements, `attributes` (M), `receivedAt`, `date` (the GSI key,
`YYYY-MM-DD#NN`) and `expiresAt` (N, epoch seconds, the TTL attribute).
"""

from __future__ import annotations

import functools
import hashlib
import math
from decimal import Decimal
from typing import Any

import msgspec

from trackstore.domain import Device, Location, Scalar
from trackstore.timefmt import DAY_MS, utc_date

Item = dict[str, dict[str, Any]]

_encode_float = msgspec.json.Encoder().encode
_OPTIONAL = ("speed", "heading", "altitude", "accuracy", "battery")


def number(value: float) -> dict[str, str]:
    return {"N": number_text(value)}


def number_text(value: float) -> str:
    """A DynamoDB N: repr's shortest exact digits (at most 17), written out without an exponent.

    Spelling a float's binary value out in full (`format(x, ".17f")`) gave 1e40 41 significant
    digits, which DynamoDB refuses, and wrote 1e-20 as "0". The record rules
    (trackstore.values) have already refused what no spelling could store.
    """
    if isinstance(value, int):
        return str(value)
    # msgspec writes the same shortest digits as repr at a quarter of its cost (tested equal),
    # exponents and nan/inf (as null) only with a lower-case e or n: one test for both.
    text = _encode_float(value).decode()
    if "e" in text or "n" in text:
        if not math.isfinite(value):
            raise ValueError(f"DynamoDB cannot store {value}")
        text = format(Decimal(text), "f")
    return text


def to_value(value: Any) -> dict[str, Any]:
    """Any JSON-like value to an AttributeValue (metadata and attributes are free-form)."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return number(value)
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, dict):
        return {"M": {str(k): to_value(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [to_value(v) for v in value]}
    raise TypeError(f"cannot store a {type(value).__name__} in DynamoDB")


def from_value(value: dict[str, Any]) -> Any:
    ((kind, raw),) = value.items()
    if kind == "S":
        return raw
    if kind == "N":
        return int(raw) if raw.lstrip("-").isdigit() else float(raw)
    if kind == "BOOL":
        return raw
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: from_value(v) for k, v in raw.items()}
    if kind == "L":
        return [from_value(v) for v in raw]
    raise ValueError(f"unexpected DynamoDB type {kind}")


def date_key(device_id: str, timestamp: int, shards: int) -> str:
    """The GSI partition: the UTC day, spread over `shards` write shards by device."""
    return _date_key(device_id, timestamp // DAY_MS, shards)


@functools.lru_cache(maxsize=65_536)
def _date_key(device_id: str, day: int, shards: int) -> str:
    # A fleet's devices come back batch after batch, day after day: each key is made once.
    return f"{utc_date(day * DAY_MS)}#{_write_shard(device_id, shards):02d}"


def _write_shard(device_id: str, shards: int) -> int:
    return int.from_bytes(hashlib.md5(device_id.encode()).digest()[:4], "big") % shards


def location_attributes(location: Location) -> Item:
    """The attributes a location shares between a Locations item and a device's lastLocation."""
    item: Item = {
        "deviceId": {"S": location.device_id},
        "timestamp": {"N": str(location.timestamp)},
        "latitude": number(location.latitude),
        "longitude": number(location.longitude),
        "receivedAt": {"N": str(location.received_at)},
    }
    # Unrolled: this runs for every record stored.
    if location.speed is not None:
        item["speed"] = number(location.speed)
    if location.heading is not None:
        item["heading"] = number(location.heading)
    if location.altitude is not None:
        item["altitude"] = number(location.altitude)
    if location.accuracy is not None:
        item["accuracy"] = number(location.accuracy)
    if location.battery is not None:
        item["battery"] = number(location.battery)
    if location.attributes:
        item["attributes"] = {"M": {k: to_value(v) for k, v in location.attributes.items()}}
    return item


def location_item(location: Location, ttl_ms: int, date_shards: int) -> Item:
    item = location_attributes(location)
    item["date"] = {"S": date_key(location.device_id, location.timestamp, date_shards)}
    item["expiresAt"] = {"N": str((location.timestamp + ttl_ms) // 1000)}
    return item


def location_from_item(item: Item) -> Location:
    optional = {name: _float(item[name]) for name in _OPTIONAL if name in item}
    attributes: dict[str, Scalar] | None = None
    if "attributes" in item:
        attributes = {k: from_value(v) for k, v in item["attributes"]["M"].items()}
    return Location(
        device_id=item["deviceId"]["S"],
        timestamp=int(item["timestamp"]["N"]),
        latitude=_float(item["latitude"]),
        longitude=_float(item["longitude"]),
        attributes=attributes,
        received_at=int(item["receivedAt"]["N"]) if "receivedAt" in item else 0,
        **optional,
    )


def device_from_item(item: Item) -> Device:
    last_location = None
    if "lastLocation" in item:
        last_location = location_from_item(item["lastLocation"]["M"])
    return Device(
        device_id=item["deviceId"]["S"],
        last_seen=int(item["lastSeen"]["N"]) if "lastSeen" in item else None,
        last_location=last_location,
        total_updates=int(item["totalUpdates"]["N"]) if "totalUpdates" in item else 0,
        registered_at=int(item["registeredAt"]["N"]) if "registeredAt" in item else None,
        name=item["name"]["S"] if "name" in item else None,
        metadata=from_value(item["metadata"]) if "metadata" in item else None,
    )


def _float(value: dict[str, str]) -> float:
    return float(value["N"])
