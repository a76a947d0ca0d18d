"""Domain types and the pure rules that go with them: standard library and msgspec only."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Generic, TypeVar

import msgspec

from trackstore.errors import INVALID, Error

DEVICE_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Ids a URL path cannot carry: clients normalise `/devices/..` away before it is sent.
UNADDRESSABLE_IDS = frozenset({".", ".."})
ACTIVE_WINDOW_MS = 5 * 60 * 1000
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_NAME_LENGTH = 256  # a registered device's name, characters
MAX_METADATA_BYTES = 4096  # its metadata, encoded as JSON

Scalar = str | int | float | bool | None
T = TypeVar("T")


class Location(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One GPS position of one device. `timestamp` and `received_at` are epoch milliseconds."""

    device_id: str
    timestamp: int
    latitude: float
    longitude: float
    speed: float | None = None  # km/h
    heading: float | None = None  # degrees, 0 <= h < 360
    altitude: float | None = None  # metres
    accuracy: float | None = None  # metres
    battery: float | None = None  # percent
    attributes: dict[str, Scalar] | None = None
    received_at: int


class DeviceStatus(StrEnum):
    REGISTERED = "registered"  # registered, never reported
    ACTIVE = "active"  # reported within the last five minutes
    INACTIVE = "inactive"


class Device(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    last_seen: int | None = None
    last_location: Location | None = None
    total_updates: int = 0
    registered_at: int | None = None
    name: str | None = None
    metadata: dict[str, object] | None = None

    def status(self, now_ms: int) -> DeviceStatus:
        if self.last_seen is None:
            return DeviceStatus.REGISTERED
        if now_ms - self.last_seen <= ACTIVE_WINDOW_MS:
            return DeviceStatus.ACTIVE
        return DeviceStatus.INACTIVE


class Order(StrEnum):
    ASC = "asc"
    DESC = "desc"


class HistoryQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A device's locations with start <= timestamp <= end (inclusive), one page at a time."""

    device_id: str
    start: int | None = None
    end: int | None = None
    limit: int = DEFAULT_PAGE_SIZE
    order: Order = Order.ASC
    token: str | None = None
    # The query as the caller gave it, before the window was clamped: a token belongs to it.
    binding: str = ""


class WindowQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Every device's locations with start <= timestamp <= end, oldest first, page by page."""

    start: int
    end: int
    limit: int = DEFAULT_PAGE_SIZE
    token: str | None = None
    binding: str = ""  # as HistoryQuery's


class Page(msgspec.Struct, Generic[T], frozen=True):
    """One page of results; `next_token` is None on the last page."""

    items: list[T]
    next_token: str | None = None


class StreamRecord(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One (deaggregated) record as the stream delivered it."""

    data: bytes
    partition_key: str
    shard_id: str
    sequence_number: str
    sub_sequence_number: int = 0
    arrival_ms: int  # when the stream accepted it: the location's receivedAt


def stream_position(shard_id: str, sequence_number: str, sub_sequence_number: int) -> str:
    """A record's place in its stream as one string: `shard/sequence/sub-sequence`. The shard is
    part of it because Kinesis numbers each shard on its own."""
    return f"{shard_id}/{sequence_number}/{sub_sequence_number}"


def shard_of(position: str) -> str:
    return position.rsplit("/", 2)[0]


def position_order(position: str) -> tuple[int, str, int]:
    """Sort key of a position within its shard (`shard/sequence/sub` or `sequence/sub`).
    Sequence numbers grow with time within one shard; two shards' numbers are never compared.

    A sequence number is a decimal of up to 128 bits: compared by length, then digits, which
    orders them as numbers without converting each (int() of 56 digits was 5 % of ingest)."""
    parts = position.rsplit("/", 2)
    sequence, sub = parts[-2:] if len(parts) > 1 else (parts[0], "0")
    digits = sequence.lstrip("0")
    return len(digits), digits, int(sub or 0)


class Arrival(msgspec.Struct, frozen=True, gc=False):
    """A location and the stream position of the record that carried it."""

    location: Location
    position: str


class DeviceMark(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """How far a device's activity has been applied: its `lastSeen`, and per shard the stream
    position up to which that shard's records of the device have been counted.
    `applied_through` is None when no per-shard mark is stored (a device that never reported,
    or an item written before marks were kept per shard)."""

    last_seen: int | None = None
    applied_through: dict[str, str] | None = None

    def through(self, shard_id: str) -> str | None:
        return None if self.applied_through is None else self.applied_through.get(shard_id)


class DeviceActivity(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """What one ingested batch does to one device: applied only if the device's `lastSeen` and
    the marks of the shards in `applied_through` are still what `expected` says (what the
    batch read), so a batch applies at most once."""

    device_id: str
    expected: DeviceMark | None
    newest: Location | None  # set when it is newer than expected.last_seen
    added: int  # distinct locations this batch stored for the first time
    applied_through: dict[str, str]  # shard id -> position of the device's last record there


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID_PATTERN.fullmatch(device_id):
        raise Error(
            INVALID,
            "device id must be 1..128 characters of A-Z a-z 0-9 . _ : -",
        )
    if device_id in UNADDRESSABLE_IDS:
        raise Error(INVALID, f"device id {device_id!r} cannot be addressed in a URL")
    return device_id


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise Error(INVALID, f"limit must be between 1 and {MAX_PAGE_SIZE}")
    return limit
