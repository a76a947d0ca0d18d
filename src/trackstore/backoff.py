"""Capped exponential backoff with full jitter: retries that spread out instead of stampeding."""

from __future__ import annotations

import random


class Backoff:
    def __init__(
        self, base: float = 0.05, cap: float = 5.0, rng: random.Random | None = None
    ) -> None:
        self._base = base
        self._cap = cap
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (1 for the first retry)."""
        ceiling = min(self._cap, self._base * 2 ** min(attempt, 30))
        return self._rng.uniform(0, ceiling)
