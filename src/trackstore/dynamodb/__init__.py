"""DynamoDB adapters: the client, the location and device repositories, the lease store, and the
table definitions."""

from trackstore.dynamodb.client import dynamodb_client
from trackstore.dynamodb.devices import DynamoDeviceRepository
from trackstore.dynamodb.leases import DynamoLeaseStore
from trackstore.dynamodb.locations import DynamoLocationRepository
from trackstore.dynamodb.tables import devices_table, ensure_table, leases_table, locations_table

__all__ = [
    "DynamoDeviceRepository",
    "DynamoLeaseStore",
    "DynamoLocationRepository",
    "devices_table",
    "dynamodb_client",
    "ensure_table",
    "leases_table",
    "locations_table",
]
