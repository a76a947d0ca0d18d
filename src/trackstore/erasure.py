"""A device's data erased on request (data protection), by an operator: `trackstore erase`.

The locations go first, oldest first, a batch at a time, each batch read strongly consistently
and deleted before the next is read; then the device's lastLocation, if it was erased; then,
when the whole history goes, the device record. Every step can be repeated, so an erasure that is
interrupted (Ctrl-C, a crash, an outage) finishes by running it again. `totalUpdates` counts
updates over the device's lifetime and stays as it is while the record does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec

from trackstore.domain import check_device_id
from trackstore.ports import DeviceRepository, LocationRepository

BATCH = 500  # 20 BatchWriteItem calls of 25, sent concurrently


class ErasureReport(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    before: int | None
    locations_erased: int
    oldest_erased: int | None
    newest_erased: int | None
    last_location_cleared: bool
    device_deleted: bool


class Erasure:
    """One device's erasure: `count()` what is left to erase, `run()` it batch by batch
    (yielding how many each batch erased), then `finish()` with the device record."""

    def __init__(
        self,
        locations: LocationRepository,
        devices: DeviceRepository,
        device_id: str,
        before: int | None,
        batch: int = BATCH,
    ) -> None:
        check_device_id(device_id)
        self._locations = locations
        self._devices = devices
        self.device_id = device_id
        self.before = before
        self._batch = batch
        self._erased = 0
        self._oldest: int | None = None
        self._newest: int | None = None

    async def count(self) -> int:
        return await self._locations.stored_count(self.device_id, self.before)

    async def run(self) -> AsyncIterator[int]:
        while True:
            timestamps = await self._locations.oldest_timestamps(
                self.device_id, self.before, self._batch
            )
            if not timestamps:
                return
            await self._locations.delete(self.device_id, timestamps)
            if self._oldest is None:
                self._oldest = timestamps[0]
            self._newest = timestamps[-1]
            self._erased += len(timestamps)
            yield len(timestamps)

    async def finish(self) -> ErasureReport:
        """After run(): the device's lastLocation cleared if it is among what was erased, and
        without `before` its record deleted."""
        cleared = False
        deleted = False
        device = await self._devices.get(self.device_id)
        if device is not None and device.last_location is not None:
            stamp = device.last_location.timestamp
            if self.before is None or stamp < self.before:
                cleared = await self._devices.forget_location(self.device_id, stamp)
        if self.before is None:
            deleted = await self._devices.delete(self.device_id)
        return ErasureReport(
            device_id=self.device_id,
            before=self.before,
            locations_erased=self._erased,
            oldest_erased=self._oldest,
            newest_erased=self._newest,
            last_location_cleared=cleared,
            device_deleted=deleted,
        )
