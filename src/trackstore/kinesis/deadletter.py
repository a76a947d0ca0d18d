"""The optional dead-letter stream: rejected records, with why, for someone to look at later.

Each dead letter is a JSON envelope: the reason and detail, where the record was (shard,
sequence and sub-sequence number, partition key), its size and SHA-256, and its data in base64,
cut to its first 64 KiB when larger (`dataTruncated`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

from trackstore.kinesis.producer import Producer
from trackstore.records import Rejection


class _Envelope(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    reason: str
    detail: str
    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    partition_key: str
    data: str  # base64 (the record may not even be text); its first bytes only when truncated
    data_bytes: int
    data_sha256: str
    data_truncated: bool


_encode = msgspec.json.Encoder().encode
# Kinesis takes at most 1 MiB of data plus partition key, and base64 adds a third: a rejected
# record near the limit would make an envelope Kinesis refuses for ever. What is kept of a big
# record is enough to look at; its size and digest identify it.
MAX_RECORD_BYTES = 1024 * 1024
KEPT_DATA_BYTES = 64 * 1024


def envelope(rejection: Rejection) -> tuple[str, bytes]:
    """The dead letter of a rejected record: (partition key, data), always small enough."""
    record = rejection.record
    truncated = len(record.data) > KEPT_DATA_BYTES
    kept = record.data[:KEPT_DATA_BYTES]
    encoded = _encode(
        _Envelope(
            reason=rejection.reason.value,
            detail=rejection.detail[:1024],
            shard_id=record.shard_id,
            sequence_number=record.sequence_number,
            sub_sequence_number=record.sub_sequence_number,
            partition_key=record.partition_key,
            data=base64.b64encode(kept).decode("ascii"),
            data_bytes=len(record.data),
            data_sha256=hashlib.sha256(record.data).hexdigest(),
            data_truncated=truncated,
        )
    )
    # At most ~90 KB: 64 KiB in base64, a 1 KiB detail, a 256-character partition key.
    return record.partition_key or "rejected", encoded


class DeadLetterStream:
    def __init__(self, client: Any, stream: str, deadline_s: float = 30.0) -> None:
        self._producer = Producer(client, stream, deadline_s=deadline_s)

    async def __call__(self, rejections: Sequence[Rejection]) -> None:
        """Sends the dead letters; raises Error(UNAVAILABLE) when some are refused until the
        deadline (the caller logs and counts them: the shard never waits on them)."""
        await self._producer.put([envelope(rejection) for rejection in rejections])
