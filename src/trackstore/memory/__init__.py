"""In-process adapters for every port: real implementations of the contracts, for tests and demo."""

from trackstore.memory.repositories import (
    MemoryDeviceRepository,
    MemoryLocationRepository,
    MemoryStore,
)
from trackstore.memory.stream import MemoryStream, MemoryStreamSource

__all__ = [
    "MemoryDeviceRepository",
    "MemoryLocationRepository",
    "MemoryStore",
    "MemoryStream",
    "MemoryStreamSource",
]
