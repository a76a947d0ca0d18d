"""Property tests: the record decoder and the page tokens, for any input hypothesis thinks of.

- RecordDecoder.decode answers every input (bytes, JSON of any shape, numbers no encoder writes)
  with a Location or a Rejection and never raises; whatever it accepts obeys the contract.
- Any record the contract's "Stream records" table allows decodes to a Location equal to its
  input, whichever names (canonical or legacy) and timestamp form (ISO-8601 with offset, epoch
  seconds or milliseconds, as numbers or digits) it uses.
- The typed fast path never disagrees with the full rules where it answers.
- Page tokens round-trip; anything else handed to decode_token is Error(INVALID), nothing else.
"""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.helpers import NOW_MS, TTL_MS, payload, stream_record, with_raw_value
from trackstore.domain import DEVICE_ID_PATTERN, Location, StreamRecord
from trackstore.dynamodb.items import location_from_item, location_item
from trackstore.errors import INVALID, Error
from trackstore.paging import MAX_TOKEN_LENGTH, decode_token, encode_token
from trackstore.records import (
    FUTURE_TOLERANCE_MS,
    MAX_ATTRIBUTES_BYTES,
    Reason,
    RecordDecoder,
    Rejection,
    _Reject,
)
from trackstore.timefmt import format_ms, parse_iso

DECODER = RecordDecoder(TTL_MS)
ARRIVAL_MS = NOW_MS + 1234
OLDEST_MS = NOW_MS - TTL_MS
NEWEST_MS = NOW_MS + FUTURE_TOLERANCE_MS

# database=None: no .hypothesis/ directory in the work tree; a failure prints its example.
PROPERTY = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(PROPERTY, max_examples=60)

ALIASES = {"deviceId": "busId", "timestamp": "ts", "latitude": "lat", "longitude": "lon"}
OPTIONAL = ("speed", "heading", "altitude", "accuracy", "battery")
LEGACY_EXTRAS = ("processed_at", "region", "quality_score")
NAMED = frozenset(ALIASES) | frozenset(ALIASES.values()) | frozenset(OPTIONAL) | {"attributes"}
FIELD_NAMES = sorted(NAMED | frozenset(LEGACY_EXTRAS))


# -- strategies: JSON of any shape ---------------------------------------------------------------

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
huge_ints = st.integers(min_value=-(10**400), max_value=10**400)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    huge_ints,
    finite_floats,
    st.text(),  # any code point but lone surrogates, which no UTF-8 JSON can carry
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=12), children, max_size=5),
    ),
    max_leaves=40,
)
# Values close to what the fields take, so the checks behind the first ones are reached too.
plausible_values = st.one_of(
    st.from_regex(DEVICE_ID_PATTERN, fullmatch=True),
    st.integers(min_value=OLDEST_MS - 10**9, max_value=NEWEST_MS + 10**9),
    st.integers(min_value=0, max_value=10**11),
    st.sampled_from(["2027-01-15T08:00:00Z", "2027-01-15T08:00:00", "1800000000", "1e9", ""]),
    st.floats(min_value=-400, max_value=400),
    st.sampled_from([-90.0, 90.0, -180.0, 180.0, 0.0, -0.0, 360.0, 100.0, -1e-300]),
    st.dictionaries(st.text(max_size=8), json_scalars, max_size=4),
)
record_like_objects = st.dictionaries(
    st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=10)),
    st.one_of(plausible_values, json_values),
    max_size=14,
)


# -- strategies: valid records -------------------------------------------------------------------


def _iso(ms: int, offset_minutes: int, seconds_only: bool, zulu: bool, lower: bool) -> str:
    moment = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)).astimezone(
        timezone(timedelta(minutes=offset_minutes))
    )
    text = moment.isoformat(timespec="seconds" if seconds_only else "milliseconds")
    if zulu and offset_minutes == 0:
        text = text.removesuffix("+00:00") + "Z"
    return text.lower() if lower else text


@st.composite
def timestamps(draw: st.DrawFn) -> tuple[Any, int]:
    """A timestamp in the window the decoder accepts, in one of the contract's forms, and the
    epoch milliseconds it stands for."""
    ms = draw(st.integers(min_value=OLDEST_MS, max_value=NEWEST_MS))
    form = draw(
        st.sampled_from(
            ["ms", "ms-float", "ms-text", "s", "s-float", "s-text", "s-text-fraction", "iso"]
        )
    )
    whole_seconds = ms - ms % 1000
    if form == "ms":
        return ms, ms
    if form == "ms-float":
        return float(ms), ms
    if form == "ms-text":
        return draw(st.sampled_from(["{}", " {} "])).format(ms), ms
    if form == "s":
        return whole_seconds // 1000, whole_seconds
    if form == "s-float":
        return ms / 1000, ms
    if form == "s-text":
        return str(whole_seconds // 1000), whole_seconds
    if form == "s-text-fraction":
        return f"{ms // 1000}.{ms % 1000:03d}", ms
    offset = draw(st.integers(min_value=-14 * 60, max_value=14 * 60))
    seconds_only = draw(st.booleans())
    text = _iso(ms, offset, seconds_only, zulu=draw(st.booleans()), lower=draw(st.booleans()))
    return text, whole_seconds if seconds_only else ms


def _numbers(low: float | None, high: float | None, *, exclude_max: bool = False) -> Any:
    floats = st.floats(
        min_value=low,
        max_value=high,
        exclude_max=exclude_max,
        allow_nan=False,
        allow_infinity=False,
    )
    int_low = -(10**18) if low is None else math.ceil(low)
    int_high = 10**18 if high is None else math.floor(high) - (1 if exclude_max else 0)
    return st.one_of(floats, st.integers(min_value=int_low, max_value=int_high))


REQUIRED_NUMBERS = {"latitude": _numbers(-90, 90), "longitude": _numbers(-180, 180)}
OPTIONAL_NUMBERS = {
    "speed": _numbers(0, None),
    "heading": _numbers(0, 360, exclude_max=True),
    "altitude": _numbers(None, None),
    "accuracy": _numbers(0, None),
    "battery": _numbers(0, 100),
}
attribute_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), finite_floats, st.text(max_size=20)
)
small_json = st.recursive(
    attribute_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
legacy_extra_values = {
    "processed_at": st.one_of(st.text(max_size=30), st.integers(), finite_floats),
    "region": st.text(max_size=20),
    "quality_score": st.one_of(finite_floats, st.integers()),
}
unknown_names = st.text(min_size=1, max_size=12).filter(
    lambda name: name not in NAMED and name not in LEGACY_EXTRAS
)


def _as_attribute(value: Any) -> Any:
    """What the decoder keeps of a field the contract does not name: scalars as they are,
    anything else as its JSON text."""
    if value is None or isinstance(value, str | int | float):
        return value
    return msgspec.json.encode(value).decode()


def _put(body: dict[str, Any], name: str, value: Any, spelling: str) -> None:
    """The required field under its name, its legacy alias, or both with the same value."""
    if spelling in ("canonical", "both"):
        body[name] = value
    if spelling in ("alias", "both"):
        body[ALIASES[name]] = value


def dynamodb_can_store(number: float) -> bool:
    """DynamoDB's number rule, written from its documentation: zero, or 38 significant digits
    at most with a magnitude from 1E-130 to below 1E+126. A float counts by its shortest repr."""
    value = Decimal(repr(number)) if isinstance(number, float) else Decimal(number)
    if value == 0:
        return True
    digits = value.normalize().as_tuple().digits
    return len(digits) <= 38 and -130 <= value.adjusted() <= 125


def _numbers_in(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [value]
    if isinstance(value, dict):
        return [n for item in value.values() for n in _numbers_in(item)]
    return []


@st.composite
def valid_records(draw: st.DrawFn) -> tuple[dict[str, Any], Location | Reason]:
    """A record by the contract's rules, and the Location it must decode to (or, when its kept
    attributes exceed 2 KiB encoded, the rejection reason)."""
    spellings = st.sampled_from(["canonical", "alias", "both"])
    body: dict[str, Any] = {}
    device_id = draw(
        st.from_regex(DEVICE_ID_PATTERN, fullmatch=True).filter(lambda d: d not in {".", ".."})
    )
    stamp, expected_ms = draw(timestamps())
    latitude = draw(REQUIRED_NUMBERS["latitude"])
    longitude = draw(REQUIRED_NUMBERS["longitude"])
    _put(body, "deviceId", device_id, draw(spellings))
    _put(body, "timestamp", stamp, draw(spellings))
    _put(body, "latitude", latitude, draw(spellings))
    _put(body, "longitude", longitude, draw(spellings))

    optional: dict[str, float] = {}
    for name, numbers in OPTIONAL_NUMBERS.items():
        choice = draw(st.sampled_from(["absent", "null", "set"]))
        if choice == "null":
            body[name] = None
        elif choice == "set":
            body[name] = draw(numbers)
            optional[name] = float(body[name])

    kept: dict[str, Any] = {}
    for name, values in legacy_extra_values.items():
        if draw(st.booleans()):
            body[name] = kept[name] = draw(values)
    unknown = draw(st.none() | st.dictionaries(unknown_names, small_json, min_size=1, max_size=3))
    for name, value in (unknown or {}).items():
        body[name] = value
        kept[name] = _as_attribute(value)
    explicit = draw(
        st.none() | st.dictionaries(st.text(max_size=10), attribute_scalars, max_size=5)
    )
    if explicit is not None:
        body["attributes"] = explicit
        kept.update(explicit)  # an explicit attribute wins over a top-level field of its name

    measured = {"latitude": latitude, "longitude": longitude, **optional}
    for name in ("latitude", "longitude", *OPTIONAL_NUMBERS):
        if name in measured and not dynamodb_can_store(float(measured[name])):
            return body, Reason(f"invalid_{name}")
    if kept and not all(dynamodb_can_store(v) for v in _numbers_in(kept)):
        return body, Reason.INVALID_ATTRIBUTES
    if kept and len(msgspec.json.encode(kept)) > MAX_ATTRIBUTES_BYTES:
        return body, Reason.INVALID_ATTRIBUTES
    return body, Location(
        device_id=device_id,
        timestamp=expected_ms,
        latitude=float(latitude),
        longitude=float(longitude),
        attributes=kept or None,
        received_at=ARRIVAL_MS,
        **optional,
    )


@st.composite
def mutated_records(draw: st.DrawFn) -> dict[str, Any]:
    """A valid record with a few fields dropped, nulled or replaced by anything at all."""
    body, _ = draw(valid_records())
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        name = draw(
            st.sampled_from([*FIELD_NAMES, *body]) | st.sampled_from(LEGACY_EXTRAS) | unknown_names
        )
        action = draw(st.sampled_from(["drop", "null", "plausible", "any"]))
        if action == "drop":
            body.pop(name, None)
        elif action == "null":
            body[name] = None
        elif action == "plausible":
            body[name] = draw(plausible_values)
        else:
            body[name] = draw(json_values)
    return body


number_literals = st.from_regex(
    r"-?(0|[1-9][0-9]{0,420})(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,4})?", fullmatch=True
)


# -- checks --------------------------------------------------------------------------------------


def _decode(data: dict[str, Any] | bytes) -> tuple[StreamRecord, Location | Rejection]:
    record = stream_record(data, arrival_ms=ARRIVAL_MS)
    return record, DECODER.decode(record, NOW_MS)


def _assert_answered(record: StreamRecord, result: object) -> None:
    """A Rejection of this record, or a Location that obeys every rule of the contract."""
    if isinstance(result, Rejection):
        assert result.record is record
        assert isinstance(result.reason, Reason)
        return
    assert isinstance(result, Location), f"neither a Location nor a Rejection: {result!r}"
    assert DEVICE_ID_PATTERN.fullmatch(result.device_id)
    assert OLDEST_MS <= result.timestamp <= NEWEST_MS
    assert -90 <= result.latitude <= 90
    assert -180 <= result.longitude <= 180
    for name in OPTIONAL:
        value = getattr(result, name)
        assert value is None or math.isfinite(value), f"{name} is {value!r}"
    assert result.speed is None or result.speed >= 0
    assert result.heading is None or 0 <= result.heading < 360
    assert result.accuracy is None or result.accuracy >= 0
    assert result.battery is None or 0 <= result.battery <= 100
    if result.attributes is not None:
        assert result.attributes, "empty attributes must be None"
        assert len(msgspec.json.encode(result.attributes)) <= MAX_ATTRIBUTES_BYTES
        for key, value in result.attributes.items():
            assert isinstance(key, str)
            assert value is None or isinstance(value, str | int | bool) or math.isfinite(value)
    assert result.received_at == record.arrival_ms


def _outcome(path: Any, record: StreamRecord) -> Location | Reason | None:
    try:
        result: Location | None = path(record, NOW_MS)
    except _Reject as reject:
        return reject.reason
    return result


def _assert_fast_path_agrees(record: StreamRecord) -> None:
    """Where the typed fast path answers (a Location, or a rejection), the full rules give the
    same answer; where it does not (None), there is nothing to compare."""
    fast = _outcome(DECODER._fast, record)
    if fast is None:
        return
    full = _outcome(DECODER._location, record)
    assert fast == full, f"fast path: {fast!r}\nfull rules: {full!r}\ndata: {record.data!r}"


# -- the decoder never raises --------------------------------------------------------------------


@PROPERTY
@given(st.binary(max_size=600))
@example(b"")
@example(b"\xff\xfe{}")
@example(b'{"deviceId": "bus-1", "timestamp": 1800000000000, "latitude": 1, "longitude": 2')
def test_any_bytes_decode_to_a_location_or_a_rejection(data: bytes) -> None:
    record, result = _decode(data)
    _assert_answered(record, result)


@PROPERTY
@given(st.one_of(json_values, record_like_objects, mutated_records()))
def test_any_json_value_decodes_to_a_location_or_a_rejection(value: Any) -> None:
    record, result = _decode(msgspec.json.encode(value))
    _assert_answered(record, result)


@FEW
@given(
    field=st.sampled_from([*FIELD_NAMES, "other"]),
    literal=st.one_of(
        number_literals,
        st.sampled_from(["1e400", "-1e400", "1e-400", "-0", "1" + "0" * 400, "1E+2", "-0.0e-0"]),
    ),
)
def test_numbers_no_encoder_writes_decode_to_a_location_or_a_rejection(
    field: str, literal: str
) -> None:
    record, result = _decode(with_raw_value(payload(), field, literal))
    _assert_answered(record, result)
    _assert_fast_path_agrees(record)


@FEW
@given(
    depth=st.integers(min_value=1, max_value=5000),
    opening=st.sampled_from(["[", '{"a":']),
    inside_a_record=st.booleans(),
)
@example(depth=5000, opening="[", inside_a_record=False)
@example(depth=5000, opening='{"a":', inside_a_record=True)
def test_deeply_nested_json_decodes_to_a_location_or_a_rejection(
    depth: int, opening: str, inside_a_record: bool
) -> None:
    # A 1 MiB Kinesis record has room for hundreds of thousands of levels.
    closing = "]" if opening == "[" else "}"
    nested = (opening * depth + "0" + closing * depth).encode()
    data = with_raw_value(payload(), "nested", nested.decode()) if inside_a_record else nested

    record, result = _decode(data)

    _assert_answered(record, result)


# -- valid records round-trip --------------------------------------------------------------------


BIG_QUALITY_SCORE = 10_000_000_000_000_001  # an integer a double cannot hold exactly


@PROPERTY
@given(valid_records())
@example(
    (
        payload(quality_score=BIG_QUALITY_SCORE),
        Location(
            device_id="bus-1",
            timestamp=NOW_MS,
            latitude=52.52,
            longitude=13.405,
            attributes={"quality_score": BIG_QUALITY_SCORE},
            received_at=ARRIVAL_MS,
        ),
    )
)
def test_every_valid_record_decodes_to_a_location_equal_to_its_fields(
    case: tuple[dict[str, Any], Location | Reason],
) -> None:
    body, expected = case
    record, result = _decode(body)

    if isinstance(expected, Reason):
        assert isinstance(result, Rejection)
        assert result.reason is expected
    else:
        assert result == expected
    assert _outcome(DECODER._location, record) == expected
    _assert_fast_path_agrees(record)


@PROPERTY
@given(st.one_of(mutated_records(), record_like_objects))
@example(payload(region=None))
@example(payload(processed_at=None, quality_score=0.5))
@example(payload(quality_score=BIG_QUALITY_SCORE))
def test_the_fast_path_never_disagrees_with_the_full_rules(body: dict[str, Any]) -> None:
    _assert_fast_path_agrees(stream_record(body, arrival_ms=ARRIVAL_MS))


# -- page tokens ---------------------------------------------------------------------------------

token_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), huge_ints, finite_floats, st.text(max_size=40)
)
token_keys = st.dictionaries(st.text(max_size=40), token_scalars, max_size=6)
scopes = st.text(max_size=160)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@PROPERTY
@given(scope=scopes, key=token_keys)
@example(scope="", key={})
@example(scope="locations#bus-1#desc", key={"deviceId": "bus-1", "timestamp": NOW_MS})
def test_a_token_round_trips_its_scope_and_key(scope: str, key: dict[str, Any]) -> None:
    token = encode_token(scope, key)
    # Keys come from the stores and are far below this; hypothesis's are not, always.
    if len(token) > MAX_TOKEN_LENGTH:
        return

    decoded = decode_token(token, scope)

    assert decoded == key
    assert {name: type(value) for name, value in decoded.items()} == {
        name: type(value) for name, value in key.items()
    }


@PROPERTY
@given(scope=scopes, other=scopes, key=token_keys)
def test_a_token_is_rejected_for_any_other_scope(
    scope: str, other: str, key: dict[str, Any]
) -> None:
    if scope == other:
        other = scope + "x"
    token = encode_token(scope, key)

    with pytest.raises(Error) as raised:
        decode_token(token, other)

    assert raised.value.code is INVALID


def _nested_token(depth: int) -> str:
    return _b64(b'{"s":"scope","k":{"a":' + b"[" * depth + b"]" * depth + b"}}")


arbitrary_tokens = st.one_of(
    st.text(max_size=MAX_TOKEN_LENGTH + 10),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/"),
    st.binary(max_size=600).map(_b64),
    json_values.map(lambda value: _b64(msgspec.json.encode(value))),
    st.fixed_dictionaries({"s": json_values, "k": json_values}).map(
        lambda value: _b64(msgspec.json.encode(value))
    ),
    st.integers(min_value=1, max_value=1600).map(_nested_token),
)


@PROPERTY
@given(arbitrary_tokens)
@example("")
@example("=")
@example("!!!")
@example("e30")  # {}
@example("eyJzIjoiw6kiLCJrIjp7fX0")  # {"s":"é","k":{}}: a scope digest that is not ASCII
@example("x" * (MAX_TOKEN_LENGTH + 1))
@example(_nested_token(760))  # as deep as MAX_TOKEN_LENGTH allows
def test_any_text_as_a_token_is_a_key_or_an_invalid_error(token: str) -> None:
    try:
        key = decode_token(token, "scope")
    except Error as error:
        code = error.code
    else:
        assert isinstance(key, dict)  # a well-formed token of this scope, by chance
        return
    assert code is INVALID


# -- times on the wire ----------------------------------------------------------------------------


@PROPERTY
@given(st.integers(min_value=0, max_value=253_402_300_799_999))  # through 9999-12-31
@example(0)
@example(1_800_000_000_000)
@example(951_782_400_000)  # 2000-02-29, a leap day
def test_formatted_times_are_iso_8601_and_parse_back(ms: int) -> None:
    text = format_ms(ms)
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    assert text == moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    assert parse_iso(text) == ms


def _item_numbers(value: Any) -> list[str]:
    """Every N of a DynamoDB item, however deep."""
    if isinstance(value, dict):
        if set(value) == {"N"}:
            return [value["N"]]
        return [n for item in value.values() for n in _item_numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in _item_numbers(item)]
    return []


def _same_number(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and not isinstance(a, bool):
        return Decimal(repr(a) if isinstance(a, float) else a) == Decimal(
            repr(b) if isinstance(b, float) else b
        )
    return bool(a == b)


@PROPERTY
@given(valid_records())
def test_every_accepted_location_is_an_item_dynamodb_stores_and_reads_back_equal(
    case: tuple[dict[str, Any], Location | Reason],
) -> None:
    body, _ = case
    _, result = _decode(body)
    if not isinstance(result, Location):
        return
    item = location_item(result, TTL_MS, 8)
    for text in _item_numbers(item):
        assert "e" not in text.lower(), text
        assert dynamodb_can_store(int(text) if text.lstrip("-").isdigit() else float(text)), text
        digits = text.lstrip("-").replace(".", "").strip("0")
        assert len(digits) <= 38, text
    back = location_from_item(item)
    assert msgspec.structs.replace(back, attributes=None) == msgspec.structs.replace(
        result, attributes=None
    )
    assert (back.attributes or {}).keys() == (result.attributes or {}).keys()
    for name, value in (result.attributes or {}).items():
        assert _same_number(value, (back.attributes or {})[name]), name
