"""Leases hold at 1,000 shards: a live worker renews each lease a third of the failover time after
its own last write, many at once, so no lease stands still long enough to be taken as expired.

The scenario (benchmarks/leases.py) runs on an event loop whose clock jumps to the next timer
whenever nothing is ready: five minutes of 10 ms lease-table calls take seconds of CPU.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

from benchmarks.leases import Outcome, hold_leases

LEASES = 1000
CALL_S = 0.010
FAILOVER_S = 10.0
MINUTES = 5


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        ready = super().select(0)
        if ready:
            return ready
        if timeout is None:
            raise RuntimeError("every task waits and no timer is set: the scenario hangs")
        self.now += max(timeout, 0.0)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """Timers fire in order and at their times, but waiting for them costs nothing."""

    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now


def run_virtual(**scenario: Any) -> Outcome:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        # Empty shards polled rarely: the readers cost CPU and are not what is measured here.
        return runner.run(hold_leases(idle_s=30.0, **scenario))


def test_a_live_worker_keeps_1000_leases_for_5_minutes_of_10_ms_lease_calls() -> None:
    outcome = run_virtual(
        leases=LEASES, call_s=CALL_S, failover_s=FAILOVER_S, duration_s=MINUTES * 60.0
    )

    assert outcome.steals == 0
    assert outcome.held_at_end == LEASES
    # Each lease moves every failover/3, however many leases share the table's latency.
    assert outcome.longest_still_s < FAILOVER_S / 2
    assert outcome.setup_s < FAILOVER_S / 3


def test_leases_renewed_one_call_at_a_time_are_stolen_from_a_live_worker() -> None:
    # The check above can fail: one call at a time, 1,000 renewals of 15 ms outlast the failover.
    outcome = run_virtual(
        leases=LEASES, call_s=0.015, failover_s=FAILOVER_S, duration_s=60.0, max_lease_calls=1
    )

    assert outcome.steals > 0
    assert outcome.longest_still_s >= FAILOVER_S
