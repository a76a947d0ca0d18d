"""The contract's "Stream records" table, rule by rule, through RecordDecoder."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from tests.helpers import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    NOW_ISO,
    NOW_MS,
    OMIT,
    TTL_MS,
    payload,
    stream_record,
    with_raw_value,
)
from trackstore.cli.fleet import Fleet
from trackstore.domain import Location, StreamRecord
from trackstore.records import Reason, RecordDecoder, Rejection

DECODER = RecordDecoder(TTL_MS)
REQUIRED = ("deviceId", "timestamp", "latitude", "longitude")
ALIASES = {"deviceId": "busId", "timestamp": "ts", "latitude": "lat", "longitude": "lon"}
OPTIONAL = ("speed", "heading", "altitude", "accuracy", "battery")


def decode(
    body: dict[str, Any] | bytes,
    *,
    now_ms: int = NOW_MS,
    arrival_ms: int = NOW_MS,
    decoder: RecordDecoder = DECODER,
) -> Location | Rejection:
    return decoder.decode(stream_record(body, arrival_ms=arrival_ms), now_ms)


def accepted(body: dict[str, Any] | bytes, **kwargs: Any) -> Location:
    result = decode(body, **kwargs)
    assert isinstance(result, Location), f"expected a Location, got {result!r}"
    return result


def rejected(body: dict[str, Any] | bytes, **kwargs: Any) -> Reason:
    result = decode(body, **kwargs)
    assert isinstance(result, Rejection), f"expected a Rejection, got {result!r}"
    return result.reason


# -- a whole record ------------------------------------------------------------------------------


def test_a_full_record_becomes_a_location_with_every_field() -> None:
    body = payload(
        speed=42.5,
        heading=270,
        altitude=34.0,
        accuracy=4.2,
        battery=87,
        attributes={"route": "M10", "doorsOpen": False, "load": 0.6, "stop": 12, "note": None},
    )

    assert accepted(body, arrival_ms=NOW_MS + 1234) == Location(
        device_id="bus-1",
        timestamp=NOW_MS,
        latitude=52.52,
        longitude=13.405,
        speed=42.5,
        heading=270.0,
        altitude=34.0,
        accuracy=4.2,
        battery=87.0,
        attributes={"route": "M10", "doorsOpen": False, "load": 0.6, "stop": 12, "note": None},
        received_at=NOW_MS + 1234,
    )


def test_a_minimal_record_has_no_optional_fields() -> None:
    location = accepted(payload())

    assert (location.speed, location.heading, location.altitude) == (None, None, None)
    assert (location.accuracy, location.battery, location.attributes) == (None, None, None)


@pytest.mark.parametrize("arrival_ms", [NOW_MS - 7 * MINUTE_MS, NOW_MS, NOW_MS + 999])
def test_received_at_is_when_the_stream_accepted_the_record(arrival_ms: int) -> None:
    location = accepted(payload(timestamp=NOW_MS - HOUR_MS), arrival_ms=arrival_ms)

    assert location.received_at == arrival_ms
    assert location.timestamp == NOW_MS - HOUR_MS


def test_a_rejection_carries_the_record_for_logging() -> None:
    record = stream_record(payload(latitude=91))

    result = DECODER.decode(record, NOW_MS)

    assert isinstance(result, Rejection)
    assert result.reason is Reason.INVALID_LATITUDE
    assert result.record == record
    assert result.detail


# -- required fields -----------------------------------------------------------------------------


@pytest.mark.parametrize("field", REQUIRED)
@pytest.mark.parametrize("absent", [OMIT, None], ids=["missing", "null"])
def test_a_required_field_missing_or_null_is_rejected(field: str, absent: Any) -> None:
    assert rejected(payload(**{field: absent})) is Reason.MISSING_FIELD


# -- deviceId ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "device_id",
    [
        "x",
        "bus-1",
        "Tram.42_north:B-7",
        "ABCxyz0189",
        "x" * 128,
    ],
)
def test_device_ids_of_the_allowed_characters_are_accepted(device_id: str) -> None:
    assert accepted(payload(deviceId=device_id)).device_id == device_id


@pytest.mark.parametrize(
    "device_id",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * 129, id="129-chars"),
        pytest.param("bus 1", id="space"),
        pytest.param("bus/1", id="slash"),
        pytest.param("bus#1", id="hash"),
        pytest.param("büs-1", id="non-ascii-letter"),
        pytest.param("bus-\u0661", id="non-ascii-digit"),
        pytest.param("bus-1\n", id="trailing-newline"),
        pytest.param(42, id="number"),
        pytest.param(True, id="boolean"),
        pytest.param(["bus-1"], id="array"),
        pytest.param({"id": "bus-1"}, id="object"),
    ],
)
def test_invalid_device_ids_are_rejected(device_id: Any) -> None:
    assert rejected(payload(deviceId=device_id)) is Reason.INVALID_DEVICE_ID


# -- timestamp -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "expected_ms"),
    [
        pytest.param(NOW_ISO, NOW_MS, id="iso-z"),
        pytest.param("2027-01-15T07:59:59.123Z", NOW_MS - 877, id="iso-z-millis"),
        pytest.param("2027-01-15T10:00:00+02:00", NOW_MS, id="iso-plus-offset"),
        pytest.param("2027-01-15T10:04:00+02:00", NOW_MS + 4 * MINUTE_MS, id="iso-offset-near"),
        pytest.param("2027-01-15T03:30:00-04:30", NOW_MS, id="iso-minus-offset"),
        pytest.param("2027-01-15T08:00:00+00:00", NOW_MS, id="iso-zero-offset"),
        pytest.param(1_800_000_000, NOW_MS, id="epoch-seconds-int"),
        pytest.param(1_799_999_999.5, NOW_MS - 500, id="epoch-seconds-fraction"),
        pytest.param(1_800_000_000_000, NOW_MS, id="epoch-ms-int"),
        pytest.param(1_799_999_999_999.0, NOW_MS - 1, id="epoch-ms-float"),
        pytest.param("1800000000", NOW_MS, id="seconds-as-string"),
        pytest.param("1799999999.25", NOW_MS - 750, id="fractional-seconds-as-string"),
        pytest.param("1800000000000", NOW_MS, id="ms-as-string"),
    ],
)
def test_timestamps_in_every_accepted_form_become_utc_epoch_ms(
    timestamp: Any, expected_ms: int
) -> None:
    assert accepted(payload(timestamp=timestamp)).timestamp == expected_ms


@pytest.mark.parametrize(
    "timestamp",
    [
        pytest.param("2027-01-15T08:00:00", id="iso-without-offset"),
        pytest.param("2027-01-15", id="date-only"),
        pytest.param("08:00:00Z", id="time-only"),
        pytest.param("2027-13-15T08:00:00Z", id="month-13"),
        pytest.param("2027-01-15T25:00:00Z", id="hour-25"),
        pytest.param("yesterday at noon", id="words"),
        pytest.param("", id="empty-string"),
        pytest.param("1800000000abc", id="digits-and-letters"),
        pytest.param("-", id="dash"),
        pytest.param("\u0661\u0668" + "\u0660" * 8, id="non-ascii-digits"),
        pytest.param("1.8e9", id="exponent-string"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param([1_800_000_000], id="array"),
        pytest.param({"seconds": 1_800_000_000}, id="object"),
    ],
)
def test_invalid_timestamps_are_rejected(timestamp: Any) -> None:
    assert rejected(payload(timestamp=timestamp)) is Reason.INVALID_TIMESTAMP


def test_epoch_numbers_from_10_to_the_11_on_are_milliseconds() -> None:
    # A century of retention so that 1973 is not too old: only the seconds/ms rule is tested.
    decoder = RecordDecoder(100 * 365 * DAY_MS)

    assert accepted(payload(timestamp=10**11), decoder=decoder).timestamp == 10**11
    # one less is seconds: the year 5138, far in the future
    assert rejected(payload(timestamp=10**11 - 1), decoder=decoder) is Reason.IN_FUTURE


# -- the clock window ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [
        pytest.param(NOW_MS - TTL_MS - 1, Reason.TOO_OLD, id="1ms-older-than-ttl"),
        pytest.param(NOW_MS - TTL_MS - DAY_MS, Reason.TOO_OLD, id="a-day-older-than-ttl"),
        pytest.param(0, Reason.TOO_OLD, id="epoch-zero"),
        pytest.param(NOW_MS + 5 * MINUTE_MS + 1, Reason.IN_FUTURE, id="5min-1ms-ahead"),
        pytest.param(NOW_MS + HOUR_MS, Reason.IN_FUTURE, id="an-hour-ahead"),
        pytest.param("2027-01-15T08:05:01Z", Reason.IN_FUTURE, id="iso-5min-1s-ahead"),
    ],
)
def test_records_outside_the_clock_window_are_rejected(timestamp: Any, reason: Reason) -> None:
    assert rejected(payload(timestamp=timestamp)) is reason


@pytest.mark.parametrize(
    "timestamp",
    [
        pytest.param(NOW_MS - TTL_MS, id="exactly-ttl-old"),
        pytest.param(NOW_MS - 1, id="just-now"),
        pytest.param(NOW_MS + 5 * MINUTE_MS, id="exactly-5min-ahead"),
        pytest.param("2027-01-15T08:05:00Z", id="iso-exactly-5min-ahead"),
    ],
)
def test_records_at_the_edges_of_the_clock_window_are_accepted(timestamp: Any) -> None:
    assert isinstance(decode(payload(timestamp=timestamp)), Location)


def test_the_future_is_judged_against_the_records_arrival_so_a_replay_decides_the_same() -> None:
    ahead = NOW_MS + 6 * 60 * 1000  # six minutes after the record reached the stream
    body = payload(timestamp=ahead)

    assert rejected(body) is Reason.IN_FUTURE
    # Replayed an hour later: the consumer's clock has passed the timestamp, the decision stays.
    assert rejected(body, now_ms=NOW_MS + HOUR_MS) is Reason.IN_FUTURE
    # The slow path (an unknown field keeps the record off the fast one) decides the same.
    assert rejected({**body, "extra": 1}, now_ms=NOW_MS + HOUR_MS) is Reason.IN_FUTURE
    # Four minutes ahead of its arrival is within the tolerance, whenever it is delivered.
    within = payload(timestamp=NOW_MS + 4 * 60 * 1000)
    assert accepted(within).timestamp == NOW_MS + 4 * 60 * 1000
    assert accepted(within, now_ms=NOW_MS - HOUR_MS).timestamp == NOW_MS + 4 * 60 * 1000


def test_the_retention_edge_follows_the_given_clock() -> None:
    old = NOW_MS - 29 * DAY_MS

    assert accepted(payload(timestamp=old)).timestamp == old
    assert rejected(payload(timestamp=old), now_ms=NOW_MS + 2 * DAY_MS) is Reason.TOO_OLD


# -- latitude and longitude ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("latitude", -90),
        ("latitude", 90),
        ("latitude", 90.0),
        ("latitude", 0),
        ("latitude", -33.8688),
        ("longitude", -180),
        ("longitude", 180),
        ("longitude", 180.0),
        ("longitude", 0),
        ("longitude", 151.2093),
    ],
)
def test_coordinates_within_bounds_are_accepted(field: str, value: float) -> None:
    assert getattr(accepted(payload(**{field: value})), field) == value


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("latitude", 90.0001, Reason.INVALID_LATITUDE),
        ("latitude", -90.0001, Reason.INVALID_LATITUDE),
        ("latitude", 180, Reason.INVALID_LATITUDE),
        ("latitude", "52.52", Reason.INVALID_LATITUDE),
        ("latitude", True, Reason.INVALID_LATITUDE),
        ("latitude", False, Reason.INVALID_LATITUDE),
        ("latitude", [52.52], Reason.INVALID_LATITUDE),
        ("longitude", 180.0001, Reason.INVALID_LONGITUDE),
        ("longitude", -180.0001, Reason.INVALID_LONGITUDE),
        ("longitude", 360, Reason.INVALID_LONGITUDE),
        ("longitude", "13.405", Reason.INVALID_LONGITUDE),
        ("longitude", True, Reason.INVALID_LONGITUDE),
        ("longitude", {"deg": 13}, Reason.INVALID_LONGITUDE),
    ],
)
def test_coordinates_out_of_bounds_or_not_numbers_are_rejected(
    field: str, value: Any, reason: Reason
) -> None:
    assert rejected(payload(**{field: value})) is reason


# -- optional numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("speed", 0),
        ("speed", 0.0),
        ("speed", 88.5),
        ("speed", 320),
        ("heading", 0),
        ("heading", 0.0),
        ("heading", 180),
        ("heading", 359.999),
        ("altitude", -430.5),
        ("altitude", 0),
        ("altitude", 8848.86),
        ("altitude", -1e6),
        ("accuracy", 0),
        ("accuracy", 3.5),
        ("accuracy", 5000),
        ("battery", 0),
        ("battery", 55.5),
        ("battery", 100),
    ],
)
def test_optional_numbers_within_range_are_kept(field: str, value: float) -> None:
    location = accepted(payload(**{field: value}))

    assert getattr(location, field) == value
    assert location.attributes is None


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("speed", -0.1, Reason.INVALID_SPEED),
        ("speed", -50, Reason.INVALID_SPEED),
        ("speed", "30", Reason.INVALID_SPEED),
        ("speed", True, Reason.INVALID_SPEED),
        ("heading", 360, Reason.INVALID_HEADING),
        ("heading", 360.0, Reason.INVALID_HEADING),
        ("heading", -0.001, Reason.INVALID_HEADING),
        ("heading", 720, Reason.INVALID_HEADING),
        ("heading", "90", Reason.INVALID_HEADING),
        ("altitude", "100", Reason.INVALID_ALTITUDE),
        ("altitude", False, Reason.INVALID_ALTITUDE),
        ("accuracy", -1, Reason.INVALID_ACCURACY),
        ("accuracy", -0.5, Reason.INVALID_ACCURACY),
        ("accuracy", [3], Reason.INVALID_ACCURACY),
        ("battery", 100.1, Reason.INVALID_BATTERY),
        ("battery", -1, Reason.INVALID_BATTERY),
        ("battery", "full", Reason.INVALID_BATTERY),
    ],
)
def test_optional_numbers_out_of_range_or_not_numbers_are_rejected(
    field: str, value: Any, reason: Reason
) -> None:
    assert rejected(payload(**{field: value})) is reason


@pytest.mark.parametrize("field", [*OPTIONAL, "attributes"])
def test_a_null_optional_field_is_treated_as_absent(field: str) -> None:
    location = accepted(payload(**{field: None}))

    assert getattr(location, field) is None
    assert location.attributes is None  # not kept as an unknown field either


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("latitude", Reason.INVALID_LATITUDE),
        ("longitude", Reason.INVALID_LONGITUDE),
        ("speed", Reason.INVALID_SPEED),
        ("heading", Reason.INVALID_HEADING),
        ("altitude", Reason.INVALID_ALTITUDE),
        ("accuracy", Reason.INVALID_ACCURACY),
        ("battery", Reason.INVALID_BATTERY),
    ],
)
def test_a_number_too_large_for_a_float_is_rejected_not_raised(field: str, reason: Reason) -> None:
    data = with_raw_value(payload(), field, "1" + "0" * 400)

    assert rejected(data) is reason


# -- attributes ----------------------------------------------------------------------------------


def test_attributes_of_scalars_are_kept() -> None:
    attributes = {"route": "M10", "doorsOpen": True, "load": 0.25, "stop": 7, "driver": None}

    assert accepted(payload(attributes=attributes)).attributes == attributes


@pytest.mark.parametrize(
    "attributes",
    [
        pytest.param("route=M10", id="string"),
        pytest.param(["M10"], id="array"),
        pytest.param(7, id="number"),
        pytest.param(True, id="boolean"),
    ],
)
def test_attributes_that_are_not_an_object_are_rejected(attributes: Any) -> None:
    assert rejected(payload(attributes=attributes)) is Reason.INVALID_ATTRIBUTES


@pytest.mark.parametrize(
    "attributes",
    [
        pytest.param({"route": "M10", "stops": {"next": 7}}, id="object-value"),
        pytest.param({"route": "M10", "stops": [7, 8]}, id="array-value"),
        pytest.param({"stops": []}, id="empty-array-value"),
    ],
)
def test_attributes_with_nested_values_are_rejected(attributes: dict[str, Any]) -> None:
    assert rejected(payload(attributes=attributes)) is Reason.INVALID_ATTRIBUTES


def _attributes_of_encoded_size(size: int) -> dict[str, str]:
    attributes = {"k": "v" * (size - len(b'{"k":""}'))}
    assert len(msgspec.json.encode(attributes)) == size
    return attributes


def test_attributes_of_exactly_2_kib_encoded_are_accepted() -> None:
    attributes = _attributes_of_encoded_size(2048)

    assert accepted(payload(attributes=attributes)).attributes == attributes


@pytest.mark.parametrize("size", [2049, 10_000])
def test_attributes_over_2_kib_encoded_are_rejected(size: int) -> None:
    attributes = _attributes_of_encoded_size(size)

    assert rejected(payload(attributes=attributes)) is Reason.INVALID_ATTRIBUTES


def test_unknown_fields_count_towards_the_attributes_limit() -> None:
    assert rejected(payload(note="n" * 3000)) is Reason.INVALID_ATTRIBUTES


# -- legacy producers ----------------------------------------------------------------------------


def _legacy(**extra: Any) -> dict[str, Any]:
    return {"busId": "bus-7", "ts": NOW_MS - MINUTE_MS, "lat": 59.33, "lon": 18.07, **extra}


def test_a_legacy_record_is_accepted_under_its_aliases() -> None:
    location = accepted(_legacy())

    assert location.device_id == "bus-7"
    assert location.timestamp == NOW_MS - MINUTE_MS
    assert (location.latitude, location.longitude) == (59.33, 18.07)
    assert location.attributes is None  # the aliases are not kept twice


def test_a_legacy_record_with_an_iso_ts_is_accepted() -> None:
    assert accepted(_legacy(ts="2027-01-15T09:00:00+01:00")).timestamp == NOW_MS


def test_legacy_extras_are_kept_in_attributes() -> None:
    extras = {
        "processed_at": "2027-01-15T07:59:01Z",
        "region": "eu-north-1",
        "quality_score": 0.93,
    }

    assert accepted(_legacy(**extras)).attributes == extras


def test_legacy_extras_are_merged_with_explicit_attributes() -> None:
    body = _legacy(region="eu-north-1", attributes={"route": "M10"})

    assert accepted(body).attributes == {"region": "eu-north-1", "route": "M10"}


@pytest.mark.parametrize("canonical", REQUIRED)
def test_one_alias_mixed_with_canonical_names_is_accepted(canonical: str) -> None:
    body = payload(**{canonical: OMIT})
    body[ALIASES[canonical]] = payload()[canonical]

    location = accepted(body)

    assert location == accepted(payload())
    assert location.attributes is None


def test_all_canonical_names_mixed_with_all_aliases_is_accepted() -> None:
    body = {"deviceId": "bus-7", "ts": NOW_MS, "lat": 59.33, "longitude": 18.07}
    body |= {"busId": "bus-7", "timestamp": NOW_MS, "latitude": 59.33, "lon": 18.07}

    location = accepted(body)

    assert (location.device_id, location.timestamp) == ("bus-7", NOW_MS)
    assert (location.latitude, location.longitude) == (59.33, 18.07)


@pytest.mark.parametrize(
    ("canonical", "alias_value"),
    [
        ("deviceId", "bus-2"),
        ("timestamp", NOW_MS - 1000),
        ("latitude", 52.53),
        ("longitude", 13.0),
    ],
)
def test_a_canonical_field_and_its_alias_that_disagree_are_rejected(
    canonical: str, alias_value: Any
) -> None:
    body = payload(**{ALIASES[canonical]: alias_value})

    assert rejected(body) is Reason.CONFLICTING_FIELDS


@pytest.mark.parametrize("canonical", REQUIRED)
def test_a_canonical_field_and_its_alias_that_agree_are_accepted(canonical: str) -> None:
    body = payload(**{ALIASES[canonical]: payload()[canonical]})

    assert accepted(body) == accepted(payload())


def test_a_null_canonical_field_falls_back_to_its_alias() -> None:
    assert accepted(payload(deviceId=None, busId="bus-9")).device_id == "bus-9"


# -- not a JSON object ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"", Reason.NOT_JSON, id="empty"),
        pytest.param(b"bus-1,1800000000,52.52,13.405", Reason.NOT_JSON, id="csv"),
        pytest.param(b'{"deviceId": "bus-1", "timestamp": ', Reason.NOT_JSON, id="truncated"),
        pytest.param(b'{"deviceId": "bus-1"} {}', Reason.NOT_JSON, id="trailing-data"),
        pytest.param(b"\xff\xfe\x00{", Reason.NOT_JSON, id="binary"),
        pytest.param(
            '{"deviceId": "bus-1"}'.encode("utf-16"), Reason.NOT_JSON, id="utf-16-encoded"
        ),
        pytest.param(
            msgspec.json.encode(payload(region="Königsberg")).decode().encode("latin-1"),
            Reason.NOT_JSON,
            id="latin-1-string-value",
        ),
        pytest.param(
            msgspec.json.encode(payload()).replace(b"bus-1", b"bus-\xff"),
            Reason.NOT_JSON,
            id="invalid-utf8-in-device-id",
        ),
        pytest.param(msgspec.json.encode([payload()]), Reason.NOT_AN_OBJECT, id="array"),
        pytest.param(b'"bus-1"', Reason.NOT_AN_OBJECT, id="string"),
        pytest.param(b"42", Reason.NOT_AN_OBJECT, id="number"),
        pytest.param(b"true", Reason.NOT_AN_OBJECT, id="boolean"),
        pytest.param(b"null", Reason.NOT_AN_OBJECT, id="null"),
    ],
)
def test_data_that_is_not_a_json_object_is_rejected(data: bytes, reason: Reason) -> None:
    assert rejected(data) is reason


def test_the_device_id_comes_from_the_data_not_the_partition_key() -> None:
    record = StreamRecord(
        data=msgspec.json.encode(payload()),
        partition_key="some-other-key",
        shard_id="shardId-000000000003",
        sequence_number="1",
        arrival_ms=NOW_MS,
    )

    location = DECODER.decode(record, NOW_MS)

    assert isinstance(location, Location)
    assert location.device_id == "bus-1"


def test_the_fast_path_agrees_with_the_full_rules_on_a_realistic_mix() -> None:
    # The typed fast path is an optimisation only: wherever it answers, the full rules must
    # give the very same Location (or it must step aside for them to reject).
    rng = random.Random(5)
    fleet = Fleet(devices=40, rate=40, start_ms=NOW_MS - 60_000, legacy_share=0.4)
    decoder = RecordDecoder(TTL_MS)
    answered = 0
    for second in range(1, 30):
        for _, data in fleet.advance(NOW_MS - 60_000 + second * 1000):
            body = msgspec.json.decode(data)
            mutation = rng.random()
            if mutation < 0.1:
                body["latitude" if "latitude" in body else "lat"] = rng.choice(
                    [91, -91, "52", None]
                )
            elif mutation < 0.2:
                body["heading"] = rng.choice([360, -1, 359.9, True])
            elif mutation < 0.3:
                body["attributes"] = rng.choice([{"a": 1}, {"n": {"x": 1}}, {"s": "x" * 3000}, []])
            elif mutation < 0.4:
                body["deviceId"] = rng.choice(["other", body.get("busId", "x"), "bad id", ""])
            record = stream_record(msgspec.json.encode(body))
            fast = decoder._fast(record, NOW_MS)
            full = decoder.decode(record, NOW_MS)
            if fast is not None:
                answered += 1
                assert fast == decoder._location(record, NOW_MS) == full
    assert answered > 500


# -- values DynamoDB cannot store ----------------------------------------------------------------

FORTY_ONE_DIGITS = 12345678901234567890123456789012345678901


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        pytest.param({"altitude": 1e126}, Reason.INVALID_ALTITUDE, id="altitude-overflow"),
        pytest.param({"altitude": 1e-131}, Reason.INVALID_ALTITUDE, id="altitude-underflow"),
        pytest.param({"speed": 1e300}, Reason.INVALID_SPEED, id="speed-overflow"),
        pytest.param({"accuracy": 5e-324}, Reason.INVALID_ACCURACY, id="accuracy-subnormal"),
        pytest.param({"latitude": 1e-200}, Reason.INVALID_LATITUDE, id="latitude-underflow"),
        pytest.param(
            {"lon": -1e-140, "longitude": OMIT}, Reason.INVALID_LONGITUDE, id="legacy-lon-underflow"
        ),
        pytest.param({"battery": 1e-135}, Reason.INVALID_BATTERY, id="battery-underflow"),
        pytest.param({"heading": 2e-300}, Reason.INVALID_HEADING, id="heading-underflow"),
        pytest.param(
            {"attributes": {"n": 1e200}}, Reason.INVALID_ATTRIBUTES, id="attribute-overflow"
        ),
        pytest.param(
            {"attributes": {"n": FORTY_ONE_DIGITS}}, Reason.INVALID_ATTRIBUTES, id="attribute-41"
        ),
        pytest.param({"quality_score": 1e300}, Reason.INVALID_ATTRIBUTES, id="legacy-extra"),
        pytest.param({"odometer": -1e-150}, Reason.INVALID_ATTRIBUTES, id="unknown-field"),
    ],
)
def test_numbers_dynamodb_cannot_store_are_rejected_with_the_fields_reason(
    fields: dict[str, Any], reason: Reason
) -> None:
    result = decode(payload(**fields))
    assert isinstance(result, Rejection), result
    assert result.reason is reason
    assert "DynamoDB" in result.detail or "significant digits" in result.detail


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"altitude": 1e40}, id="1e40"),
        pytest.param({"altitude": 9.9e125}, id="largest"),
        pytest.param({"accuracy": 1e-130}, id="smallest"),
        pytest.param({"attributes": {"n": 10**40}}, id="long-int-one-digit"),
        pytest.param({"attributes": {"n": 10**38 - 1}}, id="38-digits"),
        pytest.param({"quality_score": 1e40}, id="legacy-1e40"),
        pytest.param({"altitude": 0.0}, id="zero"),
        # A measurement is a float: 41 digits become 17, which DynamoDB stores.
        pytest.param({"altitude": FORTY_ONE_DIGITS}, id="measurement-41-digits"),
    ],
)
def test_numbers_at_dynamodbs_edges_are_kept(fields: dict[str, Any]) -> None:
    assert isinstance(decode(payload(**fields)), Location)
