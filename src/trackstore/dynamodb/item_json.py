"""Locations items written as DynamoDB JSON text, straight from the decoded location.

The consumer stores every record it reads. Built as AttributeValue dicts (`items.location_item`),
an item is about fifteen small dicts that the client then walks again to encode; written as text
here, it is one string, which the request encoder inserts as it is (`msgspec.Raw`). The dicts stay
the reference: tests/unit/test_item_json.py checks that both say the same for every kind of
location.
"""

from __future__ import annotations

import functools

import msgspec

from trackstore.domain import Location
from trackstore.dynamodb.items import date_key, number_text, to_value

_quote = msgspec.json.Encoder().encode


def put_request(location: Location, position: str, ttl_ms: int, date_shards: int) -> msgspec.Raw:
    """A BatchWriteItem PutRequest of the location's Locations item, `streamPosition` included."""
    device_id = location.device_id
    timestamp = location.timestamp
    text = (
        f'{{"PutRequest":{{"Item":{{"deviceId":{{"S":{_name(device_id)}}}'
        f',"timestamp":{{"N":"{timestamp}"}}'
        f',"latitude":{{"N":"{number_text(location.latitude)}"}}'
        f',"longitude":{{"N":"{number_text(location.longitude)}"}}'
        f',"receivedAt":{{"N":"{location.received_at}"}}'
        f',"date":{{"S":"{date_key(device_id, timestamp, date_shards)}"}}'
        f',"expiresAt":{{"N":"{(timestamp + ttl_ms) // 1000}"}}'
        f',"streamPosition":{{"S":{_string(position)}}}'
    )
    # Unrolled, as in items.location_attributes: this runs for every record stored.
    if location.speed is not None:
        text += f',"speed":{{"N":"{number_text(location.speed)}"}}'
    if location.heading is not None:
        text += f',"heading":{{"N":"{number_text(location.heading)}"}}'
    if location.altitude is not None:
        text += f',"altitude":{{"N":"{number_text(location.altitude)}"}}'
    if location.accuracy is not None:
        text += f',"accuracy":{{"N":"{number_text(location.accuracy)}"}}'
    if location.battery is not None:
        text += f',"battery":{{"N":"{number_text(location.battery)}"}}'
    if location.attributes:
        values = ",".join(
            [f"{_name(name)}:{_value(value)}" for name, value in location.attributes.items()]
        )
        text += f',"attributes":{{"M":{{{values}}}}}'
    return msgspec.Raw(f"{text}}}}}}}".encode())


def _value(value: object) -> str:
    # By exact type, commonest first; bool before the int | float check (True is an int too).
    kind = type(value)
    if kind is str:
        return _string_value(value)
    if kind is float or kind is int:
        return f'{{"N":"{number_text(value)}"}}'  # type: ignore[arg-type]
    if kind is bool:
        return '{"BOOL":true}' if value else '{"BOOL":false}'
    if value is None:
        return '{"NULL":true}'
    return _quote(to_value(value)).decode()  # not a record's scalar: the general walk


def _string(text: str) -> str:
    """A JSON string literal."""
    return _quote(text).decode()


@functools.lru_cache(maxsize=65_536)
def _string_value(text: str) -> str:
    # Cached: a fleet's attribute strings (route, trip, start date and time) repeat for hours.
    return f'{{"S":{_string(text)}}}'


@functools.lru_cache(maxsize=65_536)
def _name(text: str) -> str:
    """A JSON string literal of what recurs: device ids and attribute names."""
    return _string(text)
