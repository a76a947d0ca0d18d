"""The optional dead-letter stream: rejected records, with why, for someone to look at later."""

from __future__ import annotations

import base64
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
    data: str  # base64: the record may not even be text


_encode = msgspec.json.Encoder().encode


class DeadLetterStream:
    def __init__(self, client: Any, stream: str) -> None:
        self._producer = Producer(client, stream)

    async def __call__(self, rejections: Sequence[Rejection]) -> None:
        entries = []
        for rejection in rejections:
            record = rejection.record
            envelope = _Envelope(
                reason=rejection.reason.value,
                detail=rejection.detail,
                shard_id=record.shard_id,
                sequence_number=record.sequence_number,
                sub_sequence_number=record.sub_sequence_number,
                partition_key=record.partition_key,
                data=base64.b64encode(record.data).decode("ascii"),
            )
            entries.append((record.partition_key or "rejected", _encode(envelope)))
        await self._producer.put(entries)
