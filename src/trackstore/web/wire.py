"""What goes over the wire: response and request Structs, and converters from domain types.

The domain keeps epoch milliseconds and snake_case; users get camelCase JSON and ISO-8601 UTC
strings, so the conversion happens here once instead of in every handler.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from trackstore.domain import Device, DeviceStatus, Location, Scalar
from trackstore.timefmt import format_ms

# Shown in the OpenAPI document, so clients know the exact time format to expect.
IsoTime = Annotated[
    str,
    msgspec.Meta(
        description="ISO-8601 UTC date-time with milliseconds",
        examples=["2026-11-28T12:00:00.123Z"],
    ),
]


class LocationOut(msgspec.Struct, rename="camel", frozen=True, kw_only=True, omit_defaults=True):
    """One GPS position; optional fields appear only when the record carried them."""

    device_id: str
    timestamp: IsoTime
    latitude: float
    longitude: float
    speed: float | None = None
    heading: float | None = None
    altitude: float | None = None
    accuracy: float | None = None
    battery: float | None = None
    attributes: dict[str, Scalar] | None = None
    received_at: IsoTime


class DeviceOut(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A device. Every key is always present (null when unknown), so clients need no guessing."""

    device_id: str
    status: DeviceStatus
    last_seen: IsoTime | None
    last_location: LocationOut | None
    total_updates: int
    registered_at: IsoTime | None
    name: str | None
    metadata: dict[str, Any] | None


class ListedDeviceOut(DeviceOut, frozen=True, omit_defaults=True):
    """A device in a listing; `distanceM` (metres) only when the listing was asked `near`."""

    distance_m: float | None = None


class HistoryOut(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    device_id: str
    locations: list[LocationOut]
    next_token: str | None


class WindowOut(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    locations: list[LocationOut]
    next_token: str | None


class DevicesOut(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    devices: list[ListedDeviceOut]
    next_token: str | None


class HealthOut(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    status: str  # "ok" or "unavailable"
    checks: dict[str, str]  # check name -> "ok" or why it failed


class Problem(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """An RFC 9457 problem details body."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str


class RegisterIn(
    msgspec.Struct, rename="camel", frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """The optional body of a registration; unknown fields are refused, not silently dropped."""

    name: str | None = None
    metadata: dict[str, Any] | None = None


def location_out(location: Location) -> LocationOut:
    return LocationOut(
        device_id=location.device_id,
        timestamp=format_ms(location.timestamp),
        latitude=location.latitude,
        longitude=location.longitude,
        speed=location.speed,
        heading=location.heading,
        altitude=location.altitude,
        accuracy=location.accuracy,
        battery=location.battery,
        attributes=location.attributes,
        received_at=format_ms(location.received_at),
    )


def device_out(device: Device, now_ms: int) -> DeviceOut:
    return DeviceOut(**_device_fields(device, now_ms))


def listed_out(device: Device, now_ms: int, distance_m: float | None = None) -> ListedDeviceOut:
    return ListedDeviceOut(**_device_fields(device, now_ms), distance_m=distance_m)


def _device_fields(device: Device, now_ms: int) -> dict[str, Any]:
    return {
        "device_id": device.device_id,
        "status": device.status(now_ms),
        "last_seen": _format_optional(device.last_seen),
        "last_location": None
        if device.last_location is None
        else location_out(device.last_location),
        "total_updates": device.total_updates,
        "registered_at": _format_optional(device.registered_at),
        "name": device.name,
        "metadata": device.metadata,
    }


def _format_optional(ms: int | None) -> str | None:
    return None if ms is None else format_ms(ms)
