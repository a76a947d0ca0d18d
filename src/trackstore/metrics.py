"""Prometheus metrics of one process, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from trackstore.records import Reason

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.records_received = Counter(
            "trackstore_records_received", "Stream records received", registry=r
        )
        self.records_stored = Counter(
            "trackstore_records_stored",
            "Distinct locations stored for the first time (replays and resends not counted)",
            registry=r,
        )
        self.records_foreign_key = Counter(
            "trackstore_records_partition_key_mismatch",
            "Records whose partition key is not their device id (they may share no shard)",
            registry=r,
        )
        self.dead_letters_failed = Counter(
            "trackstore_dead_letters_failed",
            "Rejected records that could not be sent to the dead-letter stream",
            registry=r,
        )
        self.records_rejected = Counter(
            "trackstore_records_rejected", "Records rejected, by reason", ["reason"], registry=r
        )
        self.records_duplicate = Counter(
            "trackstore_records_duplicate",
            "Valid records whose location was stored already (resends, replays, repeats)",
            registry=r,
        )
        self.batches = Counter("trackstore_batches", "Batches checkpointed", registry=r)
        self.batch_failures = Counter(
            "trackstore_batch_failures", "Batch attempts that failed and were retried", registry=r
        )
        self.batch_seconds = Histogram(
            "trackstore_batch_seconds", "Time to store one batch", registry=r
        )
        self.millis_behind_latest = Gauge(
            "trackstore_millis_behind_latest", "Consumer lag per shard", ["shard"], registry=r
        )
        self.http_requests = Counter(
            "trackstore_http_requests",
            "HTTP requests, by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "trackstore_http_request_seconds",
            "HTTP request latency, by route template",
            ["route", "method"],
            registry=r,
        )
        self.aws_calls = Counter(
            "trackstore_aws_calls",
            "AWS API calls, by service, operation and outcome (ok, throttled, error)",
            ["service", "operation", "outcome"],
            registry=r,
        )
        self.aws_retries = Counter(
            "trackstore_aws_retries",
            "Retries botocore made inside AWS calls (mostly throttling), by service and operation",
            ["service", "operation"],
            registry=r,
        )
        self.dynamodb_unprocessed = Counter(
            "trackstore_dynamodb_unprocessed_items",
            "Items DynamoDB handed back unprocessed from BatchWriteItem (partial throttling)",
            registry=r,
        )
        self.leases_held = Gauge(
            "trackstore_leases_held", "Shard leases this consumer holds", registry=r
        )
        for reason in Reason:  # every reason shows from the start, at zero
            self.records_rejected.labels(reason=reason.value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
