"""Clocks for the `Clock` port (epoch milliseconds): the wall clock, and a fake one for tests."""

from __future__ import annotations

import time


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class FakeClock:
    """A clock that moves only when told to; for tests and replays."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms
