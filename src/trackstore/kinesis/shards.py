"""The stream's shards, as ListShards pages them."""

from __future__ import annotations

from typing import Any

import msgspec

from trackstore.kinesis.client import translate


class Shard(msgspec.Struct, frozen=True):
    shard_id: str
    parents: frozenset[str]
    closed: bool  # it has an ending sequence number: resharding closed it


async def list_shards(client: Any, stream: str) -> list[Shard]:
    shards: list[Shard] = []
    request: dict[str, Any] = {"StreamName": stream}
    while True:
        try:
            response = await client.list_shards(**request)
        except Exception as exc:
            raise translate(exc, f"list shards of {stream}") from exc
        for shard in response.get("Shards", []):
            parents = {shard.get("ParentShardId"), shard.get("AdjacentParentShardId")}
            shards.append(
                Shard(
                    shard_id=shard["ShardId"],
                    parents=frozenset(p for p in parents if p),
                    closed="EndingSequenceNumber" in shard.get("SequenceNumberRange", {}),
                )
            )
        token = response.get("NextToken")
        if not token:
            return shards
        # With a NextToken, ListShards refuses the stream name.
        request = {"NextToken": token}
