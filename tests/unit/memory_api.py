"""The REST API as the web tests build it: a TrackService over the memory fakes, handed straight
to create_app (no container: the web adapter never sees one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Litestar

from trackstore.clock import wall_clock_ms
from trackstore.config import Settings
from trackstore.memory import MemoryDeviceRepository, MemoryLocationRepository, MemoryStore
from trackstore.metrics import Metrics
from trackstore.ports import Clock, LocationRepository
from trackstore.service import TrackService
from trackstore.snapshot import FleetSnapshot
from trackstore.web import create_app


class MemoryApi:
    """The service over one MemoryStore (switch `store.available` off for an outage), its
    metrics, and apps over them."""

    def __init__(
        self,
        clock: Clock = wall_clock_ms,
        locations: Callable[[MemoryStore], LocationRepository] = MemoryLocationRepository,
    ) -> None:
        self.store = MemoryStore()
        devices = MemoryDeviceRepository(self.store, clock)
        self.service = TrackService(
            locations(self.store), devices, clock=clock, ttl_days=Settings().location_ttl_days
        )
        self.metrics = Metrics()
        # Refreshed by the tests when they need it (`await api.fleet.refresh()`), never by time.
        self.fleet = FleetSnapshot(devices, clock, refresh_s=3600)

    def app(self, **options: Any) -> Litestar:
        return create_app(self.service, self.metrics, self.fleet, **options)


def memory_app(**options: Any) -> Litestar:
    """An app over empty memory stores; `options` as create_app takes them (api_keys, ...)."""
    return MemoryApi().app(**options)
