"""PutRecords as the simulator and the dead-letter stream use it: limits per call, and records
Kinesis refuses one by one (throttling) sent again until accepted."""

from __future__ import annotations

from typing import Any

import pytest

from trackstore.backoff import Backoff
from trackstore.errors import UNAVAILABLE, Error
from trackstore.kinesis.producer import MAX_RECORDS_PER_CALL, Producer


class FakeKinesis:
    """Accepts records, except that each of the first `refuse` calls refuses every other one."""

    def __init__(self, refuse: int = 0) -> None:
        self.refuse = refuse
        self.calls: list[list[dict[str, Any]]] = []
        self.accepted: list[tuple[str, bytes]] = []

    async def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(Records)
        results = []
        for i, record in enumerate(Records):
            if self.refuse and i % 2 == 0:
                results.append({"ErrorCode": "ProvisionedThroughputExceededException"})
            else:
                self.accepted.append((record["PartitionKey"], record["Data"]))
                results.append({"SequenceNumber": str(len(self.accepted)), "ShardId": "s"})
        self.refuse = max(0, self.refuse - 1)
        return {"FailedRecordCount": sum("ErrorCode" in r for r in results), "Records": results}


def entries(count: int, size: int = 10) -> list[tuple[str, bytes]]:
    return [(f"bus-{i % 7}", f"{i:0{size}d}".encode()) for i in range(count)]


async def test_records_go_out_in_calls_of_at_most_500() -> None:
    kinesis = FakeKinesis()

    await Producer(kinesis, "gps").put(entries(1234))

    assert [len(call) for call in kinesis.calls] == [500, 500, 234]
    assert kinesis.accepted == entries(1234)


async def test_a_call_stays_under_5_mib() -> None:
    kinesis = FakeKinesis()

    await Producer(kinesis, "gps").put(entries(12, size=1_000_000))

    assert all(sum(len(r["Data"]) for r in call) <= 5 * 1024 * 1024 for call in kinesis.calls)
    assert len(kinesis.accepted) == 12
    assert max(len(call) for call in kinesis.calls) < MAX_RECORDS_PER_CALL


async def test_refused_records_are_sent_again_until_accepted() -> None:
    kinesis = FakeKinesis(refuse=3)
    producer = Producer(kinesis, "gps", backoff=Backoff(base=0.001, cap=0.002))

    await producer.put(entries(10))

    assert sorted(kinesis.accepted) == sorted(entries(10))
    assert producer.retried > 0


async def test_records_still_refused_at_the_deadline_fail_loudly() -> None:
    kinesis = FakeKinesis(refuse=10**6)
    producer = Producer(kinesis, "gps", deadline_s=0.05, backoff=Backoff(base=0.01, cap=0.02))

    with pytest.raises(Error) as raised:
        await producer.put(entries(4))

    assert raised.value.code is UNAVAILABLE
