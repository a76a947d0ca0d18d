"""The exactly-once plan: how one batch's locations of one device are written and counted.

Delivery is at-least-once, and `totalUpdates` counts distinct (device, timestamp) locations. A
device's mark (`DeviceMark`) holds its `lastSeen` and, per shard, the position up to which that
shard's records of the device were counted. Each location of the batch is one of:

- replayed: at or before its shard's mark. An earlier delivery counted it. Stored only if absent,
  never counted.
- fresh: after its shard's mark and newer than `lastSeen`. No location of the device that new
  can be stored yet, so it goes out in a plain batch write and counts.
- checked: anything that cannot be proven new. Older than `lastSeen` (a producer's resend, a
  straggler), or from a shard the mark has never seen. Kinesis orders sequence numbers only
  within a shard, so a record from another shard (the partition key changed, or it is not the
  device id, or a split moved the device) is never compared with the mark. Stored only if absent
  (or already stored from this very record), and counted only then.

One conditional device update per device per batch then adds the count, moves `lastSeen`
forward and sets the marks of the batch's shards. It holds only if `lastSeen` and those marks are
still what the plan read, so a crash before it leaves a replay the same work, and a crash after
it leaves a replay nothing to do.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from trackstore.domain import (
    Arrival,
    DeviceActivity,
    DeviceMark,
    Location,
    position_order,
    shard_of,
)


class DevicePlan(msgspec.Struct, frozen=True, kw_only=True):
    """One device's share of a batch, sorted against the device's mark."""

    device_id: str
    mark: DeviceMark | None
    fresh: list[Arrival]
    checked: list[Arrival]
    replayed: list[Arrival]
    applied_through: dict[str, str]  # shard -> the last position of this batch on it

    @property
    def changes_device(self) -> bool:
        return bool(self.fresh or self.checked)

    def activity(self, counted_checked: Sequence[Location]) -> DeviceActivity:
        """The device update, given which checked locations were stored as new."""
        counted = [arrival.location for arrival in self.fresh]
        counted.extend(counted_checked)
        last_seen = self.mark.last_seen if self.mark is not None else None
        newest = max(counted, key=lambda location: location.timestamp, default=None)
        if newest is not None and last_seen is not None and newest.timestamp <= last_seen:
            newest = None
        return DeviceActivity(
            device_id=self.device_id,
            expected=self.mark,
            newest=newest,
            added=len(counted),
            applied_through=self.applied_through,
        )


def plan(device_id: str, arrivals: Sequence[Arrival], mark: DeviceMark | None) -> DevicePlan:
    """Sorts one device's arrivals (any shards, any order) against its mark."""
    last_seen = mark.last_seen if mark is not None else None
    fresh: list[Arrival] = []
    checked: list[Arrival] = []
    replayed: list[Arrival] = []
    last: dict[str, tuple[tuple[int, str, int], str]] = {}
    for arrival in arrivals:
        shard = shard_of(arrival.position)
        order = position_order(arrival.position)
        done = mark.through(shard) if mark is not None else None
        if done is not None and order <= position_order(done):
            replayed.append(arrival)
            continue  # a shard's mark never moves back
        if shard not in last or order > last[shard][0]:
            last[shard] = (order, arrival.position)
        if done is None:
            checked.append(arrival)
        elif last_seen is None or arrival.location.timestamp > last_seen:
            fresh.append(arrival)
        else:
            checked.append(arrival)
    return DevicePlan(
        device_id=device_id,
        mark=mark,
        fresh=fresh,
        checked=checked,
        replayed=replayed,
        applied_through={shard: position for shard, (_, position) in last.items()},
    )
