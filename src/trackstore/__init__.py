"""TrackStore: GPS positions of a vehicle fleet, from Kinesis to DynamoDB to REST."""

__version__ = "0.1.0"
