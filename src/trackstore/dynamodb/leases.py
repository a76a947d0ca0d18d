"""The KCL lease table on DynamoDB: `leaseKey` (the shard id), `leaseOwner`, `leaseCounter`,
`checkpoint`, `checkpointSubSequenceNumber`, `ownerSwitchesSinceCheckpoint`, `parentShardId`.

Every write is conditional on the counter and owner last read (fencing); a failed condition is
reported as None, the caller's sign that the lease is no longer what it thought.
"""

from __future__ import annotations

from typing import Any

import msgspec

from trackstore.dynamodb.client import conditional, translate
from trackstore.leasing import Lease


class DynamoLeaseStore:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    async def list(self) -> list[Lease]:
        leases: list[Lease] = []
        request: dict[str, Any] = {"TableName": self._table, "ConsistentRead": True}
        while True:
            try:
                response = await self._client.scan(**request)
            except Exception as exc:
                raise translate(exc, f"scan {self._table}") from exc
            leases.extend(_lease(item) for item in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if not last:
                return leases
            request["ExclusiveStartKey"] = last

    async def create(self, lease: Lease) -> bool:
        item: dict[str, Any] = {
            "leaseKey": {"S": lease.shard_id},
            "leaseCounter": {"N": str(lease.counter)},
            "checkpoint": {"S": lease.checkpoint},
            "checkpointSubSequenceNumber": {"N": str(lease.checkpoint_sub)},
            "ownerSwitchesSinceCheckpoint": {"N": "0"},
        }
        if lease.parents:
            item["parentShardId"] = {"SS": sorted(lease.parents)}
        created = await conditional(
            self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(leaseKey)",
            ),
            f"create lease in {self._table}",
        )
        return created is not None

    async def take(self, lease: Lease, owner: str) -> Lease | None:
        switches = lease.owner_switches + (1 if lease.owner != owner else 0)
        return await self._update(
            lease,
            "SET leaseOwner = :owner, leaseCounter = :next, ownerSwitchesSinceCheckpoint = :sw",
            {":owner": {"S": owner}, ":sw": {"N": str(switches)}},
            owner=owner,
            owner_switches=switches,
        )

    async def renew(self, lease: Lease) -> Lease | None:
        return await self._update(lease, "SET leaseCounter = :next", {})

    async def checkpoint(self, lease: Lease, checkpoint: str, sub: int) -> Lease | None:
        return await self._update(
            lease,
            "SET leaseCounter = :next, checkpoint = :cp, checkpointSubSequenceNumber = :sub, "
            "ownerSwitchesSinceCheckpoint = :zero",
            {":cp": {"S": checkpoint}, ":sub": {"N": str(sub)}, ":zero": {"N": "0"}},
            checkpoint=checkpoint,
            checkpoint_sub=sub,
            owner_switches=0,
        )

    async def release(self, lease: Lease) -> Lease | None:
        return await self._update(
            lease, "SET leaseCounter = :next REMOVE leaseOwner", {}, owner=None
        )

    async def delete(self, lease: Lease) -> None:
        try:
            await self._client.delete_item(
                TableName=self._table, Key={"leaseKey": {"S": lease.shard_id}}
            )
        except Exception as exc:
            raise translate(exc, f"delete lease in {self._table}") from exc

    async def _update(
        self, lease: Lease, expression: str, values: dict[str, Any], **changes: Any
    ) -> Lease | None:
        values = {
            **values,
            ":counter": {"N": str(lease.counter)},
            ":next": {"N": str(lease.counter + 1)},
        }
        condition = "leaseCounter = :counter AND "
        if lease.owner is None:
            condition += "attribute_not_exists(leaseOwner)"
        else:
            condition += "leaseOwner = :was"
            values[":was"] = {"S": lease.owner}
        updated = await conditional(
            self._client.update_item(
                TableName=self._table,
                Key={"leaseKey": {"S": lease.shard_id}},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            ),
            f"update lease in {self._table}",
        )
        expected = msgspec.structs.replace(lease, counter=lease.counter + 1, **changes)
        if updated is None and not await self._is(expected):
            return None
        return expected

    async def _is(self, expected: Lease) -> bool:
        """Whether the table holds exactly `expected`. When an answer is lost after DynamoDB
        applied the write, botocore's retry fails the condition against that very write: the
        lease is ours all the same, and dropping it would strand the shard."""
        try:
            response = await self._client.get_item(
                TableName=self._table,
                Key={"leaseKey": {"S": expected.shard_id}},
                ConsistentRead=True,
            )
        except Exception as exc:
            raise translate(exc, f"read lease in {self._table}") from exc
        item = response.get("Item")
        if item is None:
            return False
        current = _lease(item)
        return (current.owner, current.counter, current.checkpoint, current.checkpoint_sub) == (
            expected.owner,
            expected.counter,
            expected.checkpoint,
            expected.checkpoint_sub,
        )


def _lease(item: dict[str, Any]) -> Lease:
    return Lease(
        shard_id=item["leaseKey"]["S"],
        owner=item["leaseOwner"]["S"] if "leaseOwner" in item else None,
        counter=int(item.get("leaseCounter", {"N": "0"})["N"]),
        checkpoint=item.get("checkpoint", {"S": "TRIM_HORIZON"})["S"],
        checkpoint_sub=int(item.get("checkpointSubSequenceNumber", {"N": "0"})["N"]),
        parents=frozenset(item.get("parentShardId", {"SS": []})["SS"]),
        owner_switches=int(item.get("ownerSwitchesSinceCheckpoint", {"N": "0"})["N"]),
    )
