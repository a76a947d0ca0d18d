"""The wall clock, in epoch milliseconds. Injected everywhere so tests can use a fake one."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]  # epoch milliseconds


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
