"""ConsumerHealth on a fake clock, and the consumer's own HTTP port (create_consumer_app).

The consumer is healthy while idle, unhealthy when it is behind and no shard progressed for
`stall_s`, when batches kept failing for `stall_s`, or when it held no lease for `orphan_grace_s`
although shards were waiting for an owner.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from trackstore.consumer_health import ConsumerHealth
from trackstore.metrics import Metrics
from trackstore.ports import SourceState
from trackstore.web.consumer_app import create_consumer_app

STALL_S = 300.0
GRACE_S = 60.0
SHARD = "shardId-000000000000"
OTHER_SHARD = "shardId-000000000001"
HEALTHY = {"progress": None, "leases": None}


class Clock:
    """Monotonic seconds that move only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Source:
    """What the stream source reports about itself; the test changes it as it goes."""

    def __init__(self, held: int = 1, orphaned: int = 0, behind_ms: int = 0) -> None:
        self.state = SourceState(held=held, orphaned=orphaned, behind_ms=behind_ms)

    def set(self, **changes: int) -> None:
        values = {"held": self.state.held, "orphaned": self.state.orphaned}
        values["behind_ms"] = self.state.behind_ms
        values.update(changes)
        self.state = SourceState(**values)

    def __call__(self) -> SourceState:
        return self.state


@pytest.fixture
def clock() -> Clock:
    return Clock()


def health_of(clock: Clock, source: Source | None = None) -> ConsumerHealth:
    return ConsumerHealth(stall_s=STALL_S, orphan_grace_s=GRACE_S, clock=clock, source_state=source)


# -- progress --------------------------------------------------------------------------------------


def test_idle_consumer_stays_healthy(clock: Clock) -> None:
    health = health_of(clock)
    assert health.checks() == HEALTHY
    clock.advance(10 * STALL_S)
    assert health.checks() == HEALTHY


def test_idle_consumer_caught_up_stays_healthy(clock: Clock) -> None:
    health = health_of(clock, Source(held=2, behind_ms=0))
    health.progressed(SHARD, 0)
    clock.advance(10 * STALL_S)
    assert health.checks() == HEALTHY


def test_behind_without_progress_fails_after_stall_s(clock: Clock) -> None:
    health = health_of(clock)
    health.progressed(SHARD, 4_000)
    clock.advance(STALL_S - 1)
    assert health.checks() == HEALTHY
    clock.advance(1)
    checks = health.checks()
    assert checks["leases"] is None
    assert checks["progress"] is not None
    assert "4000 ms behind" in checks["progress"]
    assert "300 s" in checks["progress"]


def test_one_millisecond_behind_counts_as_behind(clock: Clock) -> None:
    health = health_of(clock)
    health.progressed(SHARD, 1)
    clock.advance(STALL_S)
    assert health.checks()["progress"] is not None


def test_progress_makes_it_healthy_again(clock: Clock) -> None:
    health = health_of(clock)
    health.progressed(SHARD, 4_000)
    clock.advance(STALL_S + 5)
    assert health.checks()["progress"] is not None
    health.progressed(SHARD, 3_000)
    assert health.checks() == HEALTHY
    clock.advance(STALL_S - 1)
    assert health.checks() == HEALTHY
    clock.advance(1)
    assert health.checks()["progress"] is not None


def test_progress_of_any_shard_counts(clock: Clock) -> None:
    health = health_of(clock)
    health.progressed(SHARD, 9_000)  # stuck shard, far behind
    clock.advance(STALL_S - 10)
    health.progressed(OTHER_SHARD, 0)
    clock.advance(20)
    assert health.checks() == HEALTHY


def test_lag_reported_by_the_source_counts_before_any_batch(clock: Clock) -> None:
    """A reader that never hands out a batch while its shards are behind is stuck too."""
    source = Source(held=2, behind_ms=60_000)
    health = health_of(clock, source)
    assert health.checks() == HEALTHY
    clock.advance(STALL_S)
    checks = health.checks()
    assert checks["progress"] is not None
    assert "60000 ms behind" in checks["progress"]
    assert checks["leases"] is None
    source.set(behind_ms=0)
    assert health.checks() == HEALTHY


def holding(*shards: str) -> SourceState:
    return SourceState(held=len(shards), orphaned=0, behind_ms=0, shards=frozenset(shards))


def test_the_lag_of_a_shard_no_longer_held_is_forgotten(clock: Clock) -> None:
    """Lost, released or finished: its last batch's lag must not fail the check forever."""
    source = Source()
    source.state = holding(SHARD, OTHER_SHARD)
    health = health_of(clock, source)
    health.progressed(SHARD, 9_000)
    health.progressed(OTHER_SHARD, 0)
    source.state = holding(OTHER_SHARD)

    clock.advance(STALL_S + 5)  # the one shard held is idle and caught up
    assert health.checks() == HEALTHY

    # Taken again later and behind: its lag counts again from its next batch.
    source.state = holding(SHARD, OTHER_SHARD)
    health.progressed(SHARD, 5_000)
    clock.advance(STALL_S)
    assert "5000 ms behind" in (health.checks()["progress"] or "")


def test_batches_failing_for_stall_s_fail_the_check(clock: Clock) -> None:
    health = health_of(clock)
    health.failing(SHARD)
    clock.advance(STALL_S / 2)
    health.failing(SHARD)  # still failing: the first failure's time counts
    assert health.checks() == HEALTHY
    clock.advance(STALL_S / 2)
    checks = health.checks()
    assert checks["progress"] is not None
    assert "failed" in checks["progress"]
    assert checks["leases"] is None


def test_a_stored_batch_ends_the_failure(clock: Clock) -> None:
    health = health_of(clock)
    health.failing(SHARD)
    clock.advance(STALL_S)
    assert health.checks()["progress"] is not None
    health.progressed(SHARD, 0)
    assert health.checks() == HEALTHY
    health.failing(SHARD)  # failing again starts a new period
    clock.advance(STALL_S - 1)
    assert health.checks() == HEALTHY


# -- leases ----------------------------------------------------------------------------------------


def test_no_lease_while_shards_are_orphaned_fails_after_the_grace(clock: Clock) -> None:
    source = Source(held=0, orphaned=3)
    health = health_of(clock, source)
    assert health.checks() == HEALTHY
    clock.advance(GRACE_S - 1)
    assert health.checks() == HEALTHY
    clock.advance(1)
    checks = health.checks()
    assert checks["progress"] is None
    assert checks["leases"] is not None
    assert "3 shards" in checks["leases"]


def test_holding_a_lease_recovers_the_leases_check(clock: Clock) -> None:
    source = Source(held=0, orphaned=3)
    health = health_of(clock, source)
    health.checks()
    clock.advance(GRACE_S)
    assert health.checks()["leases"] is not None
    source.set(held=1, orphaned=2)
    assert health.checks() == HEALTHY
    # Losing it again starts a new grace period.
    source.set(held=0, orphaned=3)
    assert health.checks() == HEALTHY
    clock.advance(GRACE_S - 1)
    assert health.checks() == HEALTHY
    clock.advance(1)
    assert health.checks()["leases"] is not None


def test_no_lease_is_fine_when_no_shard_is_waiting(clock: Clock) -> None:
    """Other workers own every shard: this one is a spare, not broken."""
    health = health_of(clock, Source(held=0, orphaned=0))
    health.checks()
    clock.advance(10 * GRACE_S)
    assert health.checks() == HEALTHY


def test_orphans_gone_before_the_grace_ends_keep_it_healthy(clock: Clock) -> None:
    source = Source(held=0, orphaned=2)
    health = health_of(clock, source)
    health.checks()
    clock.advance(GRACE_S - 1)
    source.set(orphaned=0)  # another worker took them
    assert health.checks() == HEALTHY
    source.set(orphaned=1)
    clock.advance(GRACE_S - 1)
    assert health.checks() == HEALTHY


def test_orphan_grace_is_measured_from_a_clock_at_zero() -> None:
    """The clock is injectable; a clock reading 0.0 is a time like any other."""
    clock = Clock(start=0.0)
    source = Source(held=0, orphaned=1)
    health = health_of(clock, source)
    assert health.checks() == HEALTHY  # first seen orphaned at t = 0
    clock.advance(GRACE_S / 2)
    assert health.checks() == HEALTHY
    clock.advance(GRACE_S / 2)
    assert health.checks()["leases"] is not None, "grace restarted: 0.0 was taken for 'unset'"


def test_both_checks_can_fail_at_once(clock: Clock) -> None:
    source = Source(held=0, orphaned=4, behind_ms=1_000)
    health = health_of(clock, source)
    health.checks()
    clock.advance(max(STALL_S, GRACE_S))
    checks = health.checks()
    assert checks["progress"] is not None
    assert checks["leases"] is not None


# -- the consumer's HTTP port ----------------------------------------------------------------------


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def source() -> Source:
    return Source(held=2, orphaned=0)


@pytest.fixture
def http(
    clock: Clock, metrics: Metrics, source: Source
) -> Iterator[tuple[TestClient[Any], ConsumerHealth]]:
    health = health_of(clock, source)
    with TestClient(create_consumer_app(metrics, health)) as client:
        yield client, health


def test_health_is_200_then_503_naming_the_failing_check(
    http: tuple[TestClient[Any], ConsumerHealth], clock: Clock
) -> None:
    client, health = http
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"progress": "ok", "leases": "ok"}}

    health.progressed(SHARD, 12_000)
    clock.advance(STALL_S + 1)
    response = client.get("/health")
    assert response.status_code == 503
    retry_after = response.headers.get("Retry-After")
    assert retry_after is not None
    assert retry_after.isdigit()
    assert int(retry_after) >= 1
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["leases"] == "ok"
    assert body["checks"]["progress"] != "ok"
    assert "12000 ms behind" in body["checks"]["progress"]

    health.progressed(SHARD, 0)
    assert client.get("/health").status_code == 200


def test_health_names_the_leases_check(
    http: tuple[TestClient[Any], ConsumerHealth], clock: Clock, source: Source
) -> None:
    client, _ = http
    source.set(held=0, orphaned=2)
    assert client.get("/health").status_code == 200  # within the grace
    clock.advance(GRACE_S)
    response = client.get("/health")
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    checks = response.json()["checks"]
    assert checks["progress"] == "ok"
    assert "no lease" in checks["leases"]


def test_liveness_is_200_even_when_unhealthy(
    http: tuple[TestClient[Any], ConsumerHealth], clock: Clock
) -> None:
    client, health = http
    assert client.get("/health/live").status_code == 200
    health.failing(SHARD)
    clock.advance(STALL_S)
    assert client.get("/health").status_code == 503
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_metrics_are_prometheus_text(
    http: tuple[TestClient[Any], ConsumerHealth], metrics: Metrics
) -> None:
    client, _ = http
    metrics.records_stored.inc(7)
    metrics.records_rejected.labels(reason="not_json").inc(2)
    metrics.leases_held.set(2)
    metrics.millis_behind_latest.labels(shard=SHARD).set(1500)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "version=0.0.4" in response.headers["content-type"]

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert samples[("trackstore_records_stored_total", ())] == 7
    assert samples[("trackstore_records_rejected_total", (("reason", "not_json"),))] == 2
    assert samples[("trackstore_records_rejected_total", (("reason", "too_old"),))] == 0
    assert samples[("trackstore_leases_held", ())] == 2
    assert samples[("trackstore_millis_behind_latest", (("shard", SHARD),))] == 1500
    assert ("process_cpu_seconds_total", ()) in samples
