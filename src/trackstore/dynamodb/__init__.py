"""DynamoDB adapters: location and device repositories, and the table definitions."""

from trackstore.dynamodb.client import dynamodb_client
from trackstore.dynamodb.devices import DynamoDeviceRepository
from trackstore.dynamodb.locations import DynamoLocationRepository

__all__ = ["DynamoDeviceRepository", "DynamoLocationRepository", "dynamodb_client"]
