"""Kinesis adapters: the client and stream setup, the stream source (shard readers under KCL
leases, checkpoints), KPL aggregation, the producer, and the dead-letter stream."""

from trackstore.kinesis.client import ensure_stream, kinesis_client
from trackstore.kinesis.deadletter import DeadLetterStream
from trackstore.kinesis.producer import Producer
from trackstore.kinesis.source import KinesisStreamSource

__all__ = ["DeadLetterStream", "KinesisStreamSource", "Producer", "ensure_stream", "kinesis_client"]
