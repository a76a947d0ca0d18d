"""The consumer writes Locations items as DynamoDB JSON text (item_json), not as AttributeValue
dicts: for any location, the text must say exactly what the dicts (items.location_item) say,
and the request body must be what botocore would send for them."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import botocore.session
import msgspec
import pytest
from botocore.serialize import create_serializer
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.location_strategies import FINITE, LOCATIONS
from trackstore.domain import Location
from trackstore.dynamodb.client import JsonBodySerializer
from trackstore.dynamodb.item_json import put_request
from trackstore.dynamodb.items import location_item, number_text

TTL_MS = 30 * 86_400_000
POSITIONS = st.from_regex(r"shardId-[0-9]{12}/[0-9]{1,56}/[0-9]{1,5}", fullmatch=True)
BATCH_WRITE = (
    botocore.session.get_session().get_service_model("dynamodb").operation_model("BatchWriteItem")
)


def reference_item(location: Location, position: str, date_shards: int) -> dict[str, object]:
    item = location_item(location, TTL_MS, date_shards)
    return {**item, "streamPosition": {"S": position}}


@settings(max_examples=400, deadline=None, database=None)
@given(LOCATIONS, POSITIONS, st.integers(1, 64))
def test_the_text_says_what_the_item_dicts_say(
    location: Location, position: str, date_shards: int
) -> None:
    rendered = put_request(location, position, TTL_MS, date_shards)

    assert msgspec.json.decode(rendered) == {
        "PutRequest": {"Item": reference_item(location, position, date_shards)}
    }


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(st.tuples(LOCATIONS, POSITIONS), min_size=1, max_size=25))
def test_a_batch_body_is_what_botocore_sends_for_the_dicts(
    arrivals: list[tuple[Location, str]],
) -> None:
    rendered = [put_request(location, position, TTL_MS, 8) for location, position in arrivals]
    dicts = [{"PutRequest": {"Item": reference_item(*arrival, 8)}} for arrival in arrivals]

    ours = JsonBodySerializer(create_serializer("json", include_validation=False))
    sent = ours.serialize_to_request({"RequestItems": {"Locations": rendered}}, BATCH_WRITE)
    theirs = create_serializer("json", include_validation=True).serialize_to_request(
        {"RequestItems": {"Locations": dicts}}, BATCH_WRITE
    )

    assert json.loads(sent["body"]) == json.loads(theirs["body"])


def repr_spelling(value: float) -> str:
    """The spelling numbers had before msgspec wrote them: repr's digits, without an exponent."""
    text = repr(value)
    return format(Decimal(text), "f") if "e" in text else text


@settings(max_examples=2000, deadline=None, database=None)
@given(FINITE)
def test_numbers_keep_reprs_shortest_digits_without_an_exponent(value: float) -> None:
    assert number_text(value) == repr_spelling(value)


@pytest.mark.parametrize("value", [1e-5, 1e16, 5e-324, 1.7976931348623157e308, -0.0, 12.0])
def test_exponents_are_written_out(value: float) -> None:
    text = number_text(value)

    assert "e" not in text
    assert Decimal(text) == Decimal(repr(value))


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_what_dynamodb_cannot_store_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="cannot store"):
        number_text(value)


def test_strings_that_need_escaping_stay_what_they_were() -> None:
    location = Location(
        device_id="bus-1",
        timestamp=1_800_000_000_000,
        latitude=1.0,
        longitude=2.0,
        attributes={'q"uote\\': "line\nbreak \u0000 \u2028 Zoë", "n": None, "b": False},
        received_at=1_800_000_000_000,
    )

    item = msgspec.json.decode(put_request(location, "s/1/0", TTL_MS, 8))["PutRequest"]["Item"]

    assert item["attributes"]["M"] == {
        'q"uote\\': {"S": "line\nbreak \u0000 \u2028 Zoë"},
        "n": {"NULL": True},
        "b": {"BOOL": False},
    }
