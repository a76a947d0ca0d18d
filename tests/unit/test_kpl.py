"""KPL aggregation: round trips, interoperability with aws-kinesis-agg, framing errors, fuzzing."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from collections.abc import Sequence

import pytest

# aws_kinesis_agg.aggregator puts its own folder on sys.path, which messages_pb2's imports need:
# it must stay imported first.
from aws_kinesis_agg.aggregator import RecordAggregator
from aws_kinesis_agg.deaggregator import iter_deaggregate_records
from aws_kinesis_agg.messages_pb2 import AggregatedRecord
from google.protobuf.message import DecodeError

from trackstore.kinesis.kpl import (
    MAGIC,
    MAX_AGGREGATED_BYTES,
    SubRecord,
    aggregate,
    aggregate_chunks,
    deaggregate,
)

EHK_A = str(2**127 + 12345)
EHK_B = str(2**64)


# --- protobuf by hand, to build what no well-behaved writer would --------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, wire_type: int, value: bytes | int) -> bytes:
    """One field; `value` is an int for varints, else the raw bytes (length-prefixed for type 2)."""
    tag = varint(number << 3 | wire_type)
    if isinstance(value, int):
        return tag + varint(value)
    if wire_type == 2:
        return tag + varint(len(value)) + value
    return tag + value


def record(*fields: bytes) -> bytes:
    return field(3, 2, b"".join(fields))


def framed(body: bytes) -> bytes:
    """`body` as an aggregated record with the right magic and MD5, so the parser must judge it."""
    return MAGIC + body + hashlib.md5(body).digest()


def key(text: str) -> bytes:
    return field(1, 2, text.encode())


PK_INDEX_0 = field(1, 0, 0)
DATA = field(3, 2, b"payload")


# --- the reference library ------------------------------------------------------------------


def reference_aggregate(items: Sequence[tuple[str, bytes, str | None]]) -> bytes:
    aggregator = RecordAggregator()
    for partition_key, data, explicit_hash_key in items:
        assert aggregator.add_user_record(partition_key, data, explicit_hash_key) is None
    agg_record = aggregator.clear_and_get()
    assert agg_record is not None
    return bytes(agg_record.get_contents()[2])


def reference_deaggregate(blob: bytes) -> list[tuple[str, str | None, bytes, int]] | None:
    """(partition key, explicit hash key, data, sub-sequence number) per sub-record, or None when
    the reference passes the record through as not aggregated."""
    parent = {
        "SequenceNumber": "49590338271490256608559692538361571095921575989136588898",
        "PartitionKey": "parent",
        "ApproximateArrivalTimestamp": 0,
        "Data": blob,
    }
    out = list(iter_deaggregate_records([parent], data_format="Boto3"))
    if len(out) == 1 and not out[0]["kinesis"].get("aggregated"):
        assert out[0]["kinesis"]["data"] == blob
        return None
    return [
        (
            r["kinesis"]["partitionKey"],
            r["kinesis"]["explicitHashKey"],
            base64.b64decode(r["kinesis"]["data"]),
            r["kinesis"]["subSequenceNumber"],
        )
        for r in out
    ]


def sub_records(items: Sequence[tuple[str, bytes, str | None]]) -> list[SubRecord]:
    return [SubRecord(pk, ehk, data) for pk, data, ehk in items]


def gps_json(rng: random.Random, device: str) -> bytes:
    return json.dumps(
        {
            "deviceId": device,
            "timestamp": f"2026-11-28T07:{rng.randrange(60):02d}:{rng.randrange(60):02d}.123Z",
            "latitude": round(rng.uniform(-90, 90), 6),
            "longitude": round(rng.uniform(-180, 180), 6),
            "speed": round(rng.uniform(0, 30), 1),
            "heading": rng.randrange(360),
        },
        separators=(",", ":"),
    ).encode()


def gps_records(count: int, devices: int = 20, seed: int = 7) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        device = f"bus-{i % devices:04d}"
        out.append((device, gps_json(rng, device)))
    return out


UNICODE_KEYS = ["bus-ü", "車両-42", "🚌-7", "Ω" * 256, "a b\tc\n", "\u0000nul"]


# --- round trips through our own aggregate ------------------------------------------------


@pytest.mark.parametrize(
    "records",
    [
        [("bus-1", b'{"a":1}')],
        [("bus-1", b"x"), ("bus-2", b"y"), ("bus-1", b"z")],
        [("bus-1", b"")],
        [("bus-1", b""), ("bus-1", b""), ("bus-2", b"")],
        [(k, k.encode() * 3) for k in UNICODE_KEYS],
        [("bus-1", bytes(range(256)) * 40)],  # binary data, a three-byte length
        [("bus-1", MAGIC + b"nested")],
    ],
    ids=["one", "shared-keys", "empty-data", "all-empty", "unicode-keys", "binary", "magic-data"],
)
def test_round_trip(records: list[tuple[str, bytes]]) -> None:
    assert deaggregate(aggregate(records)) == [SubRecord(pk, None, d) for pk, d in records]


def test_round_trip_500_records() -> None:
    records = gps_records(500)
    blob = aggregate(records)
    subs = deaggregate(blob)
    assert subs is not None
    assert [(s.partition_key, s.data) for s in subs] == records
    assert all(s.explicit_hash_key is None for s in subs)
    # 20 devices: the key table holds each once.
    assert len(AggregatedRecord.FromString(blob[4:-16]).partition_key_table) == 20


def test_aggregate_deduplicates_keys_in_first_seen_order() -> None:
    blob = aggregate([("b", b"1"), ("a", b"2"), ("b", b"3"), ("c", b"4"), ("a", b"5")])
    message = AggregatedRecord.FromString(blob[4:-16])
    assert list(message.partition_key_table) == ["b", "a", "c"]
    assert [r.partition_key_index for r in message.records] == [0, 1, 0, 2, 1]
    assert blob[:4] == MAGIC
    assert blob[-16:] == hashlib.md5(blob[4:-16]).digest()


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([], "at least one"),
        ([("", b"x")], "1 to 256"),
        ([("ok", b"x"), ("k" * 257, b"x")], "1 to 256"),
        ([("\ud800", b"x")], "surrogate"),
    ],
    ids=["no-records", "empty-key", "long-key", "unencodable-key"],
)
def test_aggregate_refuses(records: list[tuple[str, bytes]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        aggregate(records)


def test_sub_record_is_frozen() -> None:
    sub = SubRecord("bus-1", None, b"x")
    with pytest.raises(AttributeError):
        sub.data = b"y"  # type: ignore[misc]


# --- interoperability with aws-kinesis-agg -----------------------------------------------

INTEROP_CASES: dict[str, list[tuple[str, bytes, str | None]]] = {
    "no-ehk": [(pk, d, None) for pk, d in gps_records(100)],
    "all-ehk": [(pk, d, EHK_A if i % 3 else EHK_B) for i, (pk, d) in enumerate(gps_records(50))],
    "unicode": [(k, f"data for {k}".encode(), None) for k in UNICODE_KEYS],
    "empty-data": [("bus-1", b"", None), ("bus-2", b"", None), ("bus-1", b"", None)],
    "single": [("bus-1", b'{"deviceId":"bus-1"}', None)],
}


@pytest.mark.parametrize("items", INTEROP_CASES.values(), ids=INTEROP_CASES.keys())
def test_reference_aggregate_decodes_identically(
    items: list[tuple[str, bytes, str | None]],
) -> None:
    blob = reference_aggregate(items)
    assert deaggregate(blob) == sub_records(items)


def test_reference_aggregate_with_some_explicit_hash_keys() -> None:
    # The reference deaggregator reads a missing explicit hash key index as 0 (protobuf's default)
    # whenever the table is not empty, so it is no oracle here: compare with the input instead.
    items = [(pk, d, EHK_A if i % 2 else None) for i, (pk, d) in enumerate(gps_records(30))]
    assert deaggregate(reference_aggregate(items)) == sub_records(items)


@pytest.mark.parametrize("items", INTEROP_CASES.values(), ids=INTEROP_CASES.keys())
def test_reference_and_ours_agree_on_reference_records(
    items: list[tuple[str, bytes, str | None]],
) -> None:
    blob = reference_aggregate(items)
    ours = deaggregate(blob)
    assert ours is not None
    expected = [(s.partition_key, s.explicit_hash_key, s.data, i) for i, s in enumerate(ours)]
    assert reference_deaggregate(blob) == expected


@pytest.mark.parametrize(
    "records",
    [
        gps_records(100),
        gps_records(500, devices=500),
        [(k, b"") for k in UNICODE_KEYS],
        [("bus-1", bytes(range(256)) * 400)],
    ],
    ids=["gps-100", "gps-500-distinct-keys", "unicode-empty-data", "100-KiB"],
)
def test_our_aggregate_decodes_identically_with_reference(records: list[tuple[str, bytes]]) -> None:
    blob = aggregate(records)
    expected = [(pk, None, d, i) for i, (pk, d) in enumerate(records)]
    assert reference_deaggregate(blob) == expected
    # The same encoding, byte for byte: table first, keys deduplicated in first-seen order.
    assert blob == reference_aggregate([(pk, d, None) for pk, d in records])


# --- framing: anything malformed is one plain record --------------------------------------

VALID = aggregate([("bus-1", b'{"deviceId":"bus-1"}'), ("bus-2", b"{}")])


def flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0xFF]) + blob[index + 1 :]


INVALID: dict[str, bytes] = {
    "empty": b"",
    "plain-json": b'{"deviceId":"bus-1","timestamp":"2026-11-28T07:15:00Z","latitude":1}',
    "plain-json-20-bytes": b'{"deviceId":"b-1"}  ',
    "magic-only": MAGIC,
    "magic-and-md5-of-nothing": MAGIC + hashlib.md5(b"").digest(),
    "three-magic-bytes": MAGIC[:3],
    "wrong-magic": flip(VALID, 0),
    "wrong-last-magic-byte": flip(VALID, 3),
    "md5-first-byte-flipped": flip(VALID, len(VALID) - 16),
    "md5-last-byte-flipped": flip(VALID, len(VALID) - 1),
    "body-byte-flipped": flip(VALID, 10),
    "truncated-by-one": VALID[:-1],
    "one-byte-appended": VALID + b"\x00",
    "md5-missing": VALID[:-16],
    "pk-index-out-of-table": framed(key("a") + record(field(1, 0, 1), DATA)),
    "pk-index-huge": framed(key("a") + record(field(1, 0, 2**64 - 1), DATA)),
    "pk-index-without-table": framed(record(PK_INDEX_0, DATA)),
    "ehk-index-out-of-table": framed(
        key("a") + field(2, 2, EHK_A.encode()) + record(PK_INDEX_0, field(2, 0, 1), DATA)
    ),
    "ehk-index-without-table": framed(key("a") + record(PK_INDEX_0, field(2, 0, 0), DATA)),
    "pk-index-missing": framed(key("a") + record(DATA)),
    "data-missing": framed(key("a") + record(PK_INDEX_0)),
    "one-good-one-bad-record": framed(
        key("a") + record(PK_INDEX_0, DATA) + record(field(1, 0, 5), DATA)
    ),
    "no-records": framed(key("a")),
    "only-unknown-field": framed(field(9, 0, 1)),
    "record-longer-than-message": framed(key("a") + b"\x1a\x7f" + PK_INDEX_0 + DATA),
    "data-longer-than-record": framed(key("a") + field(3, 2, PK_INDEX_0 + b"\x1a\x05ab")),
    "key-longer-than-message": framed(b"\x0a\x05ab"),
    "length-varint-cut-short": framed(key("a") + b"\x1a\x80"),
    "tag-varint-cut-short": framed(key("a") + record(PK_INDEX_0, DATA) + b"\x80"),
    "index-varint-cut-short-by-record-end": framed(key("a") + record(DATA, b"\x08\xff")),
    "index-varint-11-bytes": framed(key("a") + record(b"\x08" + b"\xff" * 10 + b"\x01", DATA)),
    "unknown-varint-11-bytes": framed(key("a") + b"\x48" + b"\x80" * 10 + b"\x00"),
    "tag-over-32-bits": framed(key("a") + varint(1 << 33 | 0) + b"\x00"),
    "field-number-zero": framed(key("a") + record(PK_INDEX_0, DATA) + b"\x00\x00"),
    "field-number-zero-in-record": framed(key("a") + record(PK_INDEX_0, DATA, b"\x00\x00")),
    "pk-table-as-varint": framed(field(1, 0, 3) + key("a") + record(PK_INDEX_0, DATA)),
    "ehk-table-as-fixed32": framed(field(2, 5, b"abcd") + key("a") + record(PK_INDEX_0, DATA)),
    "records-as-varint": framed(key("a") + field(3, 0, 1) + record(PK_INDEX_0, DATA)),
    "pk-index-as-bytes": framed(key("a") + record(field(1, 2, b"\x00"), DATA)),
    "ehk-index-as-fixed64": framed(key("a") + record(PK_INDEX_0, field(2, 1, bytes(8)), DATA)),
    "data-as-varint": framed(key("a") + record(PK_INDEX_0, field(3, 0, 7))),
    "tags-as-varint": framed(key("a") + record(PK_INDEX_0, DATA, field(4, 0, 1))),
    "fixed64-cut-short": framed(key("a") + record(PK_INDEX_0, DATA) + field(9, 1, bytes(7))),
    "fixed32-cut-short-in-record": framed(key("a") + record(PK_INDEX_0, DATA, field(9, 5, b"ab"))),
    "unknown-bytes-cut-short": framed(key("a") + record(PK_INDEX_0, DATA) + b"\x4a\x09abc"),
    "invalid-utf8-key": framed(field(1, 2, b"\xff\xfe") + record(PK_INDEX_0, DATA)),
    "invalid-utf8-unused-key": framed(key("a") + field(1, 2, b"\xc3") + record(PK_INDEX_0, DATA)),
    "invalid-utf8-ehk": framed(
        key("a") + field(2, 2, b"\xed\xa0\x80") + record(PK_INDEX_0, field(2, 0, 0), DATA)
    ),
}
for _wire_type in (3, 4, 6, 7):
    INVALID[f"wire-type-{_wire_type}"] = framed(
        key("a") + record(PK_INDEX_0, DATA) + varint(9 << 3 | _wire_type) + b"\x00"
    )
    INVALID[f"wire-type-{_wire_type}-in-record"] = framed(
        key("a") + record(PK_INDEX_0, DATA, varint(9 << 3 | _wire_type), b"\x00")
    )


@pytest.mark.parametrize("blob", INVALID.values(), ids=INVALID.keys())
def test_invalid_framing_is_a_plain_record(blob: bytes) -> None:
    assert deaggregate(blob) is None


def test_invalid_cases_are_valid_before_the_damage() -> None:
    # The damaged cases above start from good records: check the starting points do decode.
    assert deaggregate(VALID) == [
        SubRecord("bus-1", None, b'{"deviceId":"bus-1"}'),
        SubRecord("bus-2", None, b"{}"),
    ]
    assert deaggregate(framed(key("a") + record(PK_INDEX_0, DATA))) == [
        SubRecord("a", None, b"payload")
    ]


# --- what protobuf allows must decode ----------------------------------------------------

UNKNOWN_FIELDS = (
    field(9, 0, 2**63)
    + field(10, 1, bytes(8))
    + field(11, 2, b"skip me")
    + field(12, 5, bytes(4))
    + field(1000, 2, b"")  # a two-byte tag
    + field(2**29 - 1, 0, 1)  # the largest field number: a five-byte tag
)
TAG = field(4, 2, field(1, 2, b"k") + field(2, 2, b"v"))

VALID_EDGES: dict[str, tuple[bytes, list[SubRecord]]] = {
    "unknown-fields-top-level": (
        UNKNOWN_FIELDS + key("a") + UNKNOWN_FIELDS + record(PK_INDEX_0, DATA) + UNKNOWN_FIELDS,
        [SubRecord("a", None, b"payload")],
    ),
    "unknown-fields-in-record": (
        key("a") + record(UNKNOWN_FIELDS, PK_INDEX_0, UNKNOWN_FIELDS, DATA, UNKNOWN_FIELDS),
        [SubRecord("a", None, b"payload")],
    ),
    "tags-ignored": (
        key("a") + record(TAG, PK_INDEX_0, TAG, DATA, TAG),
        [SubRecord("a", None, b"payload")],
    ),
    "fields-in-any-order": (
        record(DATA, field(2, 0, 0), field(1, 0, 1))
        + key("a")
        + field(2, 2, b"12345")
        + key("b")
        + record(field(1, 0, 0), field(3, 2, b"second")),
        [SubRecord("b", "12345", b"payload"), SubRecord("a", None, b"second")],
    ),
    "last-value-wins": (
        key("a") + key("b") + record(field(1, 0, 0), DATA, field(1, 0, 1), field(3, 2, b"last")),
        [SubRecord("b", None, b"last")],
    ),
    "overlong-varints": (
        b"\x8a\x00\x01a"  # tag 0x0A in two bytes, then "a"
        + b"\x9a\x80\x00"
        + b"\x0d"  # records tag in three bytes, length 13
        + b"\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00"  # index 0 in ten bytes
        + b"\x1a\x00",  # empty data
        [SubRecord("a", None, b"")],
    ),
    "ten-byte-varint-top-bits-dropped": (
        key("a") + record(b"\x08" + b"\x80" * 9 + b"\x7e", DATA),  # 0x7e << 63 wraps to 0
        [SubRecord("a", None, b"payload")],
    ),
    "empty-key-and-data": (
        field(1, 2, b"") + record(PK_INDEX_0, field(3, 2, b"")),
        [SubRecord("", None, b"")],
    ),
    "empty-record-messages-inside-a-long-body": (
        key("a") + record(PK_INDEX_0, field(3, 2, b"z" * 300)) * 3,
        [SubRecord("a", None, b"z" * 300)] * 3,
    ),
}


@pytest.mark.parametrize(("body", "expected"), VALID_EDGES.values(), ids=VALID_EDGES.keys())
def test_protobuf_edge_cases_decode(body: bytes, expected: list[SubRecord]) -> None:
    assert deaggregate(framed(body)) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [v for k, v in VALID_EDGES.items() if k not in ("fields-in-any-order",)],
    ids=[k for k in VALID_EDGES if k not in ("fields-in-any-order",)],
)
def test_protobuf_edge_cases_agree_with_protobuf(body: bytes, expected: list[SubRecord]) -> None:
    # "fields-in-any-order" mixes records with and without an explicit hash key, which the
    # reference deaggregator misreports (see above); the others must match it exactly.
    assert reference_deaggregate(framed(body)) == [
        (s.partition_key, s.explicit_hash_key, s.data, i) for i, s in enumerate(expected)
    ]


# --- fuzzing -----------------------------------------------------------------------------


def mutate(rng: random.Random, blob: bytes) -> bytes:
    data = bytearray(blob)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(5)
        at = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1 and data:
            data[min(at, len(data) - 1)] = rng.choice((0x00, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif choice == 2:
            data[at:at] = rng.randbytes(rng.randint(1, 12))
        elif choice == 3:
            del data[at : at + rng.randint(1, 12)]
        else:
            data = data[:at]
    return bytes(data)


def protobuf_view(body: bytes) -> list[tuple[str, bytes]] | None:
    """(partition key, data) per record as the protobuf library parses `body`, or None."""
    try:
        message = AggregatedRecord.FromString(body)
        table = list(message.partition_key_table)
        out = [(table[r.partition_key_index], r.data) for r in message.records]
    except (DecodeError, IndexError, UnicodeDecodeError):
        return None
    return out


def check(blob: bytes) -> list[SubRecord] | None:
    result = deaggregate(blob)
    if result is not None:
        assert isinstance(result, list)
        assert result
        for sub in result:
            assert type(sub) is SubRecord
            assert isinstance(sub.partition_key, str)
            assert sub.explicit_hash_key is None or isinstance(sub.explicit_hash_key, str)
            assert type(sub.data) is bytes
    return result


def test_fuzz_never_raises() -> None:
    rng = random.Random(20261128)
    tagged = framed(VALID_EDGES["tags-ignored"][0])
    seeds = [
        aggregate(gps_records(5)),
        aggregate([("k", b"")]),
        reference_aggregate([(pk, d, EHK_A) for pk, d in gps_records(3)]),
        framed(VALID_EDGES["unknown-fields-top-level"][0]),
        framed(VALID_EDGES["overlong-varints"][0]),
        tagged,
    ]
    decoded = 0
    for i in range(4000):
        kind = i % 4
        seed = rng.choice(seeds)
        if kind == 0:  # noise, sometimes behind the magic
            noise = rng.randbytes(rng.randint(0, 64))
            blob = MAGIC + noise if rng.random() < 0.5 else noise
        elif kind == 1:  # noise with a correct frame: the protobuf parser must judge it
            blob = framed(rng.randbytes(rng.randint(1, 64)))
        elif kind == 2:  # a damaged aggregate: the MD5 or the magic must catch it
            blob = mutate(rng, seed)
            if blob != seed:
                assert deaggregate(blob) is None, blob.hex()
            continue
        else:  # damaged protobuf, reframed, so that the damage reaches the parser
            blob = framed(mutate(rng, seed[4:-16]))
        result = check(blob)
        if result is None:
            continue
        decoded += 1
        # Wherever we accept, protobuf reads the same keys and data. It accepts more (mistyped
        # known fields, missing required ones), and refuses Tag messages whose content we skip.
        reference = protobuf_view(blob[4:-16])
        if reference is None:
            assert kind == 3, blob.hex()
            assert seed is tagged, blob.hex()
        else:
            assert reference == [(s.partition_key, s.data) for s in result], blob.hex()
    # The mutations must reach deep enough to leave some inputs decodable.
    assert decoded > 50


def test_fuzz_every_truncation_and_every_byte_flip() -> None:
    blob = reference_aggregate([("bus-1", b'{"a":1}', EHK_A), ("bus-2", b"", None)])
    body = blob[4:-16]
    for cut in range(len(blob)):
        assert deaggregate(blob[:cut]) is None
    for index in range(len(blob)):
        assert deaggregate(flip(blob, index)) is None  # the MD5 or the magic catches it
    for cut in range(len(body)):
        check(framed(body[:cut]))
    for index in range(len(body)):
        for bit in range(8):
            damaged = bytearray(body)
            damaged[index] ^= 1 << bit
            check(framed(bytes(damaged)))


# --- aggregate_chunks ---------------------------------------------------------------------


def flatten(chunks: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    out = []
    for chunk_key, blob in chunks:
        subs = deaggregate(blob)
        assert subs is not None
        assert chunk_key == subs[0].partition_key
        out.extend((s.partition_key, s.data) for s in subs)
    return out


def test_chunks_respect_max_bytes_and_lose_nothing() -> None:
    rng = random.Random(3)
    keys = [f"bus-{i:04d}" for i in range(300)] + UNICODE_KEYS
    records = [
        (rng.choice(keys), rng.randbytes(rng.choice((0, 1, 150, 127, 128, 2000))))
        for _ in range(3000)
    ]
    max_bytes = 50_000
    chunks = aggregate_chunks(records, max_bytes)
    assert len(chunks) > 10
    assert all(len(blob) <= max_bytes for _, blob in chunks)
    assert flatten(chunks) == records
    # Greedy: each chunk is closed only when the next record would not fit.
    position = 0
    for _, blob in chunks[:-1]:
        count = len(deaggregate(blob) or [])
        position += count
        assert len(aggregate(records[position - count : position + 1])) > max_bytes


def test_chunks_default_limit_with_large_records() -> None:
    records = [(f"bus-{i}", bytes([i]) * 300_000) for i in range(7)]
    chunks = aggregate_chunks(records)
    assert [len(deaggregate(blob) or []) for _, blob in chunks] == [3, 3, 1]
    assert all(len(blob) <= MAX_AGGREGATED_BYTES for _, blob in chunks)
    assert flatten(chunks) == records


def test_chunks_boundary_is_exact() -> None:
    records = gps_records(40)
    size = len(aggregate(records))
    assert aggregate_chunks(records, size) == [(records[0][0], aggregate(records))]
    split = aggregate_chunks(records, size - 1)
    assert [len(deaggregate(blob) or []) for _, blob in split] == [39, 1]
    assert flatten(split) == records


def test_chunks_of_nothing() -> None:
    assert aggregate_chunks([]) == []


def test_chunks_refuse_a_record_too_big_alone() -> None:
    with pytest.raises(ValueError, match="record 1 needs"):
        aggregate_chunks([("a", b"x"), ("b", b"y" * 2000)], max_bytes=1000)


def test_chunks_refuse_a_limit_kinesis_would_refuse() -> None:
    with pytest.raises(ValueError, match="no room"):
        aggregate_chunks([("a", b"x")], max_bytes=1024 * 1024)
