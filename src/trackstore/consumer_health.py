"""Whether a consumer process is doing its job, for its /health endpoint (ECS health checks).

Unhealthy when it is behind but no shard has made progress for `stall_s` (stuck writes, a dead
reader), or when it holds no lease although shards are waiting for an owner. An idle stream is
healthy: no progress is expected when there is nothing to read.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from trackstore.ports import SourceState


class ConsumerHealth:
    def __init__(
        self,
        stall_s: float = 300.0,
        orphan_grace_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        source_state: Callable[[], SourceState | None] | None = None,
    ) -> None:
        self._stall_s = stall_s
        self._orphan_grace_s = orphan_grace_s
        self._clock = clock
        self.source_state = source_state
        self._last_progress = clock()
        self._behind_ms: dict[str, int] = {}
        self._failing_since: float | None = None
        self._orphaned_since: float | None = None

    def progressed(self, shard_id: str, millis_behind: int | None) -> None:
        self._last_progress = self._clock()
        self._failing_since = None
        if millis_behind is not None:
            self._behind_ms[shard_id] = millis_behind

    def failing(self, shard_id: str) -> None:
        if self._failing_since is None:
            self._failing_since = self._clock()

    def checks(self) -> dict[str, str | None]:
        """Each check's failure, or None when it passes."""
        now = self._clock()
        checks: dict[str, str | None] = {"progress": None, "leases": None}
        state = self.source_state() if self.source_state is not None else None
        if state is not None and state.shards is not None:
            # Lost, released or finished: its last lag would otherwise hold the check forever.
            for shard_id in self._behind_ms.keys() - state.shards:
                del self._behind_ms[shard_id]
        behind = max(self._behind_ms.values(), default=0)
        if state is not None:
            behind = max(behind, state.behind_ms)
        stalled_for = now - self._last_progress
        if self._failing_since is not None and now - self._failing_since >= self._stall_s:
            checks["progress"] = f"batches have failed for {now - self._failing_since:.0f} s"
        elif behind > 0 and stalled_for >= self._stall_s:
            checks["progress"] = (
                f"no shard progressed for {stalled_for:.0f} s while {behind} ms behind"
            )
        if state is not None:
            if state.held == 0 and state.orphaned > 0:
                if self._orphaned_since is None:
                    self._orphaned_since = now
                if now - self._orphaned_since >= self._orphan_grace_s:
                    checks["leases"] = f"holds no lease while {state.orphaned} shards have no owner"
            else:
                self._orphaned_since = None
        return checks
