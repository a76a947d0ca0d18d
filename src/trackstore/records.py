"""Raw stream record bytes -> a Location, or a Rejection that says why not. Pure and fast.

The rules are the contract's record table. The platform's legacy producers write `busId`, `lat`,
`lon` and `ts`; those are aliases, and any field the contract does not name is kept in `attributes`
so nothing a producer sent is dropped silently.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import msgspec

from trackstore.domain import (
    DEVICE_ID_PATTERN,
    UNADDRESSABLE_IDS,
    Location,
    Scalar,
    StreamRecord,
)
from trackstore.timefmt import parse_time
from trackstore.values import number_problem, value_problem

FUTURE_TOLERANCE_MS = 5 * 60 * 1000
_T = TypeVar("_T")
MAX_ATTRIBUTES_BYTES = 2048


class Reason(StrEnum):
    """Why a record was rejected; a closed set, so it can label a metric."""

    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    CONFLICTING_FIELDS = "conflicting_fields"
    INVALID_DEVICE_ID = "invalid_device_id"
    INVALID_TIMESTAMP = "invalid_timestamp"
    INVALID_LATITUDE = "invalid_latitude"
    INVALID_LONGITUDE = "invalid_longitude"
    INVALID_SPEED = "invalid_speed"
    INVALID_HEADING = "invalid_heading"
    INVALID_ALTITUDE = "invalid_altitude"
    INVALID_ACCURACY = "invalid_accuracy"
    INVALID_BATTERY = "invalid_battery"
    INVALID_ATTRIBUTES = "invalid_attributes"
    TOO_OLD = "too_old"
    IN_FUTURE = "in_future"
    UNSTORABLE = "unstorable"  # passed these rules, refused by the store all the same


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    reason: Reason
    detail: str
    record: StreamRecord


class _Reject(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail


# canonical name -> legacy alias
_ALIASES = {"deviceId": "busId", "timestamp": "ts", "latitude": "lat", "longitude": "lon"}
_OPTIONAL_NUMBERS: tuple[tuple[str, Reason, float, float, bool], ...] = (
    # name, reason, lowest, highest, highest included
    ("speed", Reason.INVALID_SPEED, 0.0, math.inf, True),
    ("heading", Reason.INVALID_HEADING, 0.0, 360.0, False),
    ("altitude", Reason.INVALID_ALTITUDE, -math.inf, math.inf, True),
    ("accuracy", Reason.INVALID_ACCURACY, 0.0, math.inf, True),
    ("battery", Reason.INVALID_BATTERY, 0.0, 100.0, True),
)
_KNOWN = frozenset(_ALIASES) | frozenset(_ALIASES.values()) | {n[0] for n in _OPTIONAL_NUMBERS}
_KNOWN_WITH_ATTRIBUTES = _KNOWN | {"attributes"}

_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder().encode

_Latitude = Annotated[float, msgspec.Meta(ge=-90, le=90)] | None
_Longitude = Annotated[float, msgspec.Meta(ge=-180, le=180)] | None
_NonNegative = Annotated[float, msgspec.Meta(ge=0)] | None


class _Clean(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A record with only the contract's fields, each of its type and in range: what nearly all
    traffic is. Decoding into it checks all that in C; anything else takes the slow path, which
    tells exactly what is wrong or keeps the unknown fields."""

    deviceId: str | None = None
    busId: str | None = None
    timestamp: int | float | str | None = None
    ts: int | float | str | None = None
    latitude: _Latitude = None
    lat: _Latitude = None
    longitude: _Longitude = None
    lon: _Longitude = None
    speed: _NonNegative = None
    heading: Annotated[float, msgspec.Meta(ge=0, lt=360)] | None = None
    altitude: float | None = None
    accuracy: _NonNegative = None
    battery: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None
    attributes: dict[str, str | int | float | bool | None] | None = None
    # What the platform's legacy producers add; kept in attributes, a null included.
    processed_at: str | int | float | msgspec.UnsetType | None = msgspec.UNSET
    region: str | msgspec.UnsetType | None = msgspec.UNSET
    quality_score: int | float | msgspec.UnsetType | None = msgspec.UNSET


_LEGACY_EXTRAS = ("processed_at", "region", "quality_score")
_clean_decode = msgspec.json.Decoder(_Clean).decode


class RecordDecoder:
    """Decodes and validates records against a clock window: not older than the TTL, not more
    than five minutes in the future."""

    def __init__(self, ttl_ms: int) -> None:
        self._ttl_ms = ttl_ms

    def decode(self, record: StreamRecord, now_ms: int) -> Location | Rejection:
        try:
            return self._fast(record, now_ms) or self._location(record, now_ms)
        except _Reject as reject:
            return Rejection(reason=reject.reason, detail=reject.detail, record=record)

    def _fast(self, record: StreamRecord, now_ms: int) -> Location | None:
        """The record as a Location when it is clean, else None (then _location decides)."""
        try:
            clean = _clean_decode(record.data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return None
        attributes = clean.attributes
        extras = {
            name: value
            for name in _LEGACY_EXTRAS
            if (value := getattr(clean, name)) is not msgspec.UNSET
        }
        if extras:
            attributes = {**extras, **(attributes or {})}
        device_id = _one(clean.deviceId, clean.busId)
        stamp = _one(clean.timestamp, clean.ts)
        latitude = _one(clean.latitude, clean.lat)
        longitude = _one(clean.longitude, clean.lon)
        if (
            device_id is None
            or stamp is None
            or latitude is None
            or longitude is None
            or not DEVICE_ID_PATTERN.fullmatch(device_id)
            or device_id in UNADDRESSABLE_IDS
            or (attributes and len(_json_encode(attributes)) > MAX_ATTRIBUTES_BYTES)
            or not _storable(clean, attributes)
        ):
            return None
        timestamp = _timestamp(stamp)
        if not now_ms - self._ttl_ms <= timestamp <= record.arrival_ms + FUTURE_TOLERANCE_MS:
            return None
        return Location(
            device_id=device_id,
            timestamp=timestamp,
            latitude=latitude,
            longitude=longitude,
            speed=clean.speed,
            heading=clean.heading,
            altitude=clean.altitude,
            accuracy=clean.accuracy,
            battery=clean.battery,
            attributes=attributes or None,
            received_at=record.arrival_ms,
        )

    def _location(self, record: StreamRecord, now_ms: int) -> Location:
        try:
            raw = _json_decode(record.data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise _Reject(Reason.NOT_JSON, f"data is not UTF-8 JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise _Reject(Reason.NOT_AN_OBJECT, "data is JSON but not an object")

        device_id = _required(raw, "deviceId")
        if not isinstance(device_id, str) or not DEVICE_ID_PATTERN.fullmatch(device_id):
            raise _Reject(
                Reason.INVALID_DEVICE_ID,
                "deviceId must be a string of 1..128 characters of A-Z a-z 0-9 . _ : -",
            )
        if device_id in UNADDRESSABLE_IDS:
            raise _Reject(Reason.INVALID_DEVICE_ID, "deviceId '.' and '..' cannot be addressed")
        timestamp = _timestamp(_required(raw, "timestamp"))
        if timestamp < now_ms - self._ttl_ms:
            raise _Reject(Reason.TOO_OLD, "timestamp is older than the retention period")
        if timestamp > record.arrival_ms + FUTURE_TOLERANCE_MS:
            raise _Reject(
                Reason.IN_FUTURE,
                "timestamp is more than 5 minutes after the record reached the stream",
            )
        latitude = _number(_required(raw, "latitude"), Reason.INVALID_LATITUDE, "latitude")
        if not -90.0 <= latitude <= 90.0:
            raise _Reject(Reason.INVALID_LATITUDE, "latitude must be between -90 and 90")
        longitude = _number(_required(raw, "longitude"), Reason.INVALID_LONGITUDE, "longitude")
        if not -180.0 <= longitude <= 180.0:
            raise _Reject(Reason.INVALID_LONGITUDE, "longitude must be between -180 and 180")

        optional: dict[str, float] = {}
        for name, reason, low, high, high_included in _OPTIONAL_NUMBERS:
            value = raw.get(name)
            if value is None:
                continue
            number = _number(value, reason, name)
            if number < low or number > high or (number == high and not high_included):
                raise _Reject(reason, f"{name} is out of range: {number}")
            optional[name] = number

        return Location(
            device_id=device_id,
            timestamp=timestamp,
            latitude=latitude,
            longitude=longitude,
            attributes=_attributes(raw),
            received_at=record.arrival_ms,
            **optional,
        )


def _one(value: _T | None, alias: _T | None) -> _T | None:
    """The field's value from its name or its legacy alias; None when missing or when both are
    set and differ (the slow path then says which)."""
    if alias is None:
        return value
    if value is None or value == alias:
        return alias
    return None


def _required(raw: dict[str, Any], name: str) -> Any:
    value = raw.get(name)
    alias_value = raw.get(_ALIASES[name])
    if value is None:
        value = alias_value
    elif alias_value is not None and alias_value != value:
        raise _Reject(
            Reason.CONFLICTING_FIELDS, f"{name} and {_ALIASES[name]} are both set and differ"
        )
    if value is None:
        raise _Reject(Reason.MISSING_FIELD, f"{name} (or {_ALIASES[name]}) is required")
    return value


def _number(value: Any, reason: Reason, name: str) -> float:
    # bool is an int in Python but never a coordinate.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Reject(reason, f"{name} must be a number")
    try:
        number = float(value)
    except OverflowError:  # an integer literal too large for a double
        raise _Reject(reason, f"{name} is out of range") from None
    if not math.isfinite(number):
        raise _Reject(reason, f"{name} must be a finite number")
    if problem := number_problem(number):
        raise _Reject(reason, f"{name} {problem}")
    return number


def _timestamp(value: Any) -> int:
    try:
        return parse_time(value)
    except (ValueError, OverflowError) as exc:
        raise _Reject(Reason.INVALID_TIMESTAMP, f"timestamp is not valid: {exc}") from None


def _attributes(raw: dict[str, Any]) -> dict[str, Scalar] | None:
    explicit = raw.get("attributes")
    if explicit is not None and not isinstance(explicit, dict):
        raise _Reject(Reason.INVALID_ATTRIBUTES, "attributes must be an object")
    attributes: dict[str, Scalar] = {}
    # Fields the contract does not name (legacy `region`, `quality_score`...) are kept, not lost;
    # an explicit attribute of the same name wins.
    for key, value in raw.items():
        if key not in _KNOWN_WITH_ATTRIBUTES:
            attributes[key] = value if _is_scalar(value) else _json_encode(value).decode()
    if explicit:
        for key, value in explicit.items():
            if not _is_scalar(value):
                raise _Reject(
                    Reason.INVALID_ATTRIBUTES, f"attribute {key!r} must be a string, number or bool"
                )
            attributes[key] = value
    if not attributes:
        return None
    if problem := value_problem(attributes):
        raise _Reject(Reason.INVALID_ATTRIBUTES, f"attributes{problem}")
    if len(_json_encode(attributes)) > MAX_ATTRIBUTES_BYTES:
        raise _Reject(Reason.INVALID_ATTRIBUTES, "attributes exceed 2 KiB encoded")
    return attributes


def _is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


_FLOAT_FIELDS = (
    *("latitude", "lat", "longitude", "lon"),
    *("speed", "heading", "altitude", "accuracy", "battery"),
)


def _storable(clean: _Clean, attributes: dict[str, Any] | None) -> bool:
    """Whether DynamoDB can store every number of a clean record: the common case answered
    with comparisons; anything else goes to the slow path, which says what is wrong."""
    for name in _FLOAT_FIELDS:
        value = getattr(clean, name)
        if value is not None and not (value == 0.0 or 1e-130 <= abs(value) < 1e126):
            return False
    if attributes:
        for value in attributes.values():
            if isinstance(value, int | float) and number_problem(value) is not None:
                return False
    return True
