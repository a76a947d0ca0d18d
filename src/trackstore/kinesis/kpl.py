"""The Kinesis Producer Library (KPL) aggregation format, read and written by hand.

A KPL producer packs many user records into one Kinesis record:

    F3 89 9A C2 | protobuf AggregatedRecord | MD5 of the protobuf bytes (16 bytes)

    message AggregatedRecord {
      repeated string partition_key_table     = 1;
      repeated string explicit_hash_key_table = 2;
      repeated Record records                 = 3;
    }
    message Record {
      required uint64 partition_key_index     = 1;
      optional uint64 explicit_hash_key_index = 2;
      required bytes  data                    = 3;
      repeated Tag    tags                    = 4;  // {1: key, 2: value}; ignored here
    }

Sub-records share their parent's sequence number; a sub-record's index in the list that
`deaggregate` returns is its sub-sequence number (the KCL's `checkpointSubSequenceNumber`).

`deaggregate` returns None, never raises, for anything that is not a well-formed aggregate, and
the caller then treats the bytes as one plain record: a record that merely starts with the magic
bytes must not be lost. That includes a well-formed aggregate with no sub-records (the KPL never
writes one): as a plain record it fails decoding as a visible rejection instead of vanishing.

Only the subset of protobuf this schema needs is implemented. Where the spec leaves a choice, it
is strict: a known field with the wrong wire type, groups (wire types 3 and 4) and wire types 6
and 7 are invalid; unknown fields of valid wire types are skipped; a repeated non-repeated field
keeps the last value, as protobuf does; varints may be overlong, up to 10 bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import md5

import msgspec

MAGIC = b"\xf3\x89\x9a\xc2"
DIGEST_SIZE = 16
# A Kinesis record (data plus partition key) may be 1 MiB; the key can take up to 1 KiB of it
# (256 characters of up to 4 UTF-8 bytes), so a round 1,000,000 leaves room for any key.
MAX_AGGREGATED_BYTES = 1_000_000
KINESIS_MAX_RECORD_BYTES = 1024 * 1024
MAX_PARTITION_KEY_CHARS = 256
_MAX_PARTITION_KEY_BYTES = 4 * MAX_PARTITION_KEY_CHARS

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1
_FRAME_BYTES = len(MAGIC) + DIGEST_SIZE

# Tags (field number << 3 | wire type) the decoder dispatches on.
_TAG_PK_TABLE = 0x0A  # AggregatedRecord.partition_key_table, length-delimited
_TAG_EHK_TABLE = 0x12  # AggregatedRecord.explicit_hash_key_table, length-delimited
_TAG_RECORDS = 0x1A  # AggregatedRecord.records, length-delimited
_TAG_PK_INDEX = 0x08  # Record.partition_key_index, varint
_TAG_EHK_INDEX = 0x10  # Record.explicit_hash_key_index, varint
_TAG_DATA = 0x1A  # Record.data, length-delimited
_TAG_TAGS = 0x22  # Record.tags, length-delimited

_AGGREGATE_FIELDS = frozenset({1, 2, 3})
_RECORD_FIELDS = frozenset({1, 2, 3, 4})


class SubRecord(msgspec.Struct, frozen=True, gc=False):
    """One user record out of an aggregated Kinesis record."""

    partition_key: str
    explicit_hash_key: str | None
    data: bytes


_PENDING = SubRecord("", None, b"")


def deaggregate(data: bytes) -> list[SubRecord] | None:
    """The sub-records of a KPL-aggregated record in order, or None when `data` is not one."""
    end = len(data) - DIGEST_SIZE
    # An empty protobuf body cannot hold a record; the reference deaggregators agree.
    if end <= len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        return None
    # A memoryview spares copying up to 1 MB just to hash it.
    if md5(memoryview(data)[len(MAGIC) : end]).digest() != data[end:]:
        return None
    try:
        return _parse(data, len(MAGIC), end)
    except UnicodeDecodeError:
        return None


def _parse(buf: bytes, pos: int, end: int) -> list[SubRecord] | None:
    # The hot path: single-byte tags and varints are decoded inline, longer ones by a call.
    # Tags are `field number << 3 | wire type`, written as literals so that `in` tests use
    # constant tuples; see _TAG_* for their names.
    pk_table: list[str] = []
    ehk_table: list[str] = []
    out: list[SubRecord] = []
    # (slot in out, partition key index, explicit hash key index or -1, data) of records whose
    # table entry was not read yet: legal in protobuf, though no KPL writer does it.
    late: list[tuple[int, int, int, bytes]] = []
    while pos < end:
        tag = buf[pos]
        pos += 1
        if tag >= 0x80:
            tag, pos = _read_varint(buf, pos - 1, end)
            if pos < 0:
                return None
        if tag not in (0x1A, 0x0A, 0x12):  # records, partition keys, explicit hash keys
            pos = _skip_field(buf, pos, end, tag, _AGGREGATE_FIELDS)
            if pos < 0:
                return None
            continue
        if pos >= end:
            return None
        length = buf[pos]
        pos += 1
        if length >= 0x80:
            # Most records and payloads are 128 bytes to 16 KiB long: two-byte lengths.
            if pos < end and buf[pos] < 0x80:
                length = length & 0x7F | buf[pos] << 7
                pos += 1
            else:
                length, pos = _read_varint(buf, pos - 1, end)
                if pos < 0:
                    return None
        stop = pos + length
        if stop > end:
            return None
        if tag != 0x1A:
            (pk_table if tag == 0x0A else ehk_table).append(buf[pos:stop].decode())
            pos = stop
            continue
        pk_index = -1
        ehk_index = -1
        payload: bytes | None = None
        while pos < stop:
            tag = buf[pos]
            pos += 1
            if tag >= 0x80:
                tag, pos = _read_varint(buf, pos - 1, stop)
                if pos < 0:
                    return None
            if tag in (0x08, 0x10):  # partition key index, explicit hash key index
                if pos >= stop:
                    return None
                value = buf[pos]
                pos += 1
                if value >= 0x80:
                    value, pos = _read_varint(buf, pos - 1, stop)
                    if pos < 0:
                        return None
                if tag == 0x08:
                    pk_index = value
                else:
                    ehk_index = value
            elif tag in (0x1A, 0x22):  # data, tags
                if pos >= stop:
                    return None
                length = buf[pos]
                pos += 1
                if length >= 0x80:
                    if pos < stop and buf[pos] < 0x80:
                        length = length & 0x7F | buf[pos] << 7
                        pos += 1
                    else:
                        length, pos = _read_varint(buf, pos - 1, stop)
                        if pos < 0:
                            return None
                if pos + length > stop:
                    return None
                if tag == 0x1A:
                    payload = buf[pos : pos + length]
                pos += length
            else:
                pos = _skip_field(buf, pos, stop, tag, _RECORD_FIELDS)
                if pos < 0:
                    return None
        if pk_index < 0 or payload is None:
            return None
        if pk_index < len(pk_table) and ehk_index < len(ehk_table):
            out.append(
                SubRecord(
                    pk_table[pk_index], ehk_table[ehk_index] if ehk_index >= 0 else None, payload
                )
            )
        else:
            late.append((len(out), pk_index, ehk_index, payload))
            out.append(_PENDING)
    for slot, pk_index, ehk_index, payload in late:
        if pk_index >= len(pk_table) or ehk_index >= len(ehk_table):
            return None
        out[slot] = SubRecord(
            pk_table[pk_index], ehk_table[ehk_index] if ehk_index >= 0 else None, payload
        )
    return out or None


def _read_varint(buf: bytes, pos: int, limit: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it, or (-1, -1) when it is malformed."""
    value = 0
    shift = 0
    # Protobuf's limit: 10 bytes carry 64 bits; the excess bits of the 10th are dropped.
    while pos < limit and shift < 70:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value & _U64, pos
        shift += 7
    return -1, -1


def _skip_field(buf: bytes, pos: int, limit: int, tag: int, known: frozenset[int]) -> int:
    """The position after an unknown field's value, or -1 when the field is invalid here."""
    field = tag >> 3
    # Known fields with their right wire type never get here, so a known one is mistyped.
    if field == 0 or tag > _U32 or field in known:
        return -1
    wire_type = tag & 7
    if wire_type == 0:
        return _read_varint(buf, pos, limit)[1]
    if wire_type == 1:
        pos += 8
    elif wire_type == 5:
        pos += 4
    elif wire_type == 2:
        length, pos = _read_varint(buf, pos, limit)
        if pos < 0:
            return -1
        pos += length
    else:
        return -1
    return pos if pos <= limit else -1


def aggregate(records: Sequence[tuple[str, bytes]]) -> bytes:
    """One aggregated record holding `records` ((partition key, data) pairs) in order.

    Raises ValueError for no records, or a partition key Kinesis would refuse (empty, longer than
    256 characters, or not encodable as UTF-8).
    """
    if not records:
        raise ValueError("an aggregated record needs at least one record")
    index: dict[str, int] = {}
    table = bytearray()
    body = bytearray()
    for key, payload in records:
        key_index = index.get(key)
        if key_index is None:
            key_index = index[key] = len(index)
            encoded = _encode_key(key)
            table.append(_TAG_PK_TABLE)
            _put_varint(table, len(encoded))
            table += encoded
        inner = 2 + _varint_size(key_index) + _varint_size(len(payload)) + len(payload)
        body.append(_TAG_RECORDS)
        _put_varint(body, inner)
        body.append(_TAG_PK_INDEX)
        _put_varint(body, key_index)
        body.append(_TAG_DATA)
        _put_varint(body, len(payload))
        body += payload
    # Serialized in field-number order, as protobuf writers do: the tables before the records.
    message = bytes(table + body)
    return MAGIC + message + md5(message).digest()


def aggregate_chunks(
    records: Sequence[tuple[str, bytes]], max_bytes: int = MAX_AGGREGATED_BYTES
) -> list[tuple[str, bytes]]:
    """`records` packed in order into aggregated records of at most `max_bytes` each.

    Returns (partition key, aggregated bytes) pairs ready for PutRecords; the key is that of the
    chunk's first record, as the KPL does. PutRecords' own limits (500 records, 5 MiB a call)
    are the caller's. Raises ValueError when one record cannot fit in `max_bytes` on its own,
    when `max_bytes` leaves no room for a partition key under Kinesis's 1 MiB record limit, or
    for a partition key `aggregate` refuses.
    """
    if max_bytes > KINESIS_MAX_RECORD_BYTES - _MAX_PARTITION_KEY_BYTES:
        raise ValueError(f"max_bytes {max_bytes} leaves no room for the partition key")
    chunks: list[tuple[str, bytes]] = []
    start = 0
    size = _FRAME_BYTES
    index: dict[str, int] = {}
    for position, (key, payload) in enumerate(records):
        cost, is_new_key = _record_cost(key, payload, index)
        if size + cost > max_bytes and position > start:
            chunks.append((records[start][0], aggregate(records[start:position])))
            start = position
            size = _FRAME_BYTES
            index = {}
            cost, is_new_key = _record_cost(key, payload, index)
        if size + cost > max_bytes:
            raise ValueError(
                f"record {position} needs {size + cost} bytes aggregated alone, over {max_bytes}"
            )
        if is_new_key:
            index[key] = len(index)
        size += cost
    if start < len(records):
        chunks.append((records[start][0], aggregate(records[start:])))
    return chunks


def _record_cost(key: str, payload: bytes, index: dict[str, int]) -> tuple[int, bool]:
    """Bytes one more record adds to an aggregate whose key table is `index`; whether its key is
    new. Mirrors `aggregate`'s encoding exactly, so chunk sizes are known before encoding."""
    cost = 0
    key_index = index.get(key)
    is_new_key = key_index is None
    if key_index is None:
        key_index = len(index)
        key_bytes = len(_encode_key(key))
        cost += 1 + _varint_size(key_bytes) + key_bytes
    inner = 2 + _varint_size(key_index) + _varint_size(len(payload)) + len(payload)
    return cost + 1 + _varint_size(inner) + inner, is_new_key


def _encode_key(key: str) -> bytes:
    # Kinesis refuses such keys at PutRecords; failing here names the record that has one.
    if not 1 <= len(key) <= MAX_PARTITION_KEY_CHARS:
        raise ValueError(f"a partition key must have 1 to 256 characters, got {len(key)}")
    return key.encode()


def _put_varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)
