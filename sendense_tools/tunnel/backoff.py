"""Exponential reconnect delay with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float
    maximum: float
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; doubles each call up to `maximum`.

        Jitter takes the delay uniformly from its upper half, so many nodes that
        lost the same hub do not all come back in the same second.
        """
        ceiling = min(self.maximum, self.initial * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 64)
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
