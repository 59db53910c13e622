"""Reconnect delays: jittered exponential backoff, injectable like websockets' own."""

from __future__ import annotations

import random
from typing import Protocol

__all__ = ["Backoff", "ExponentialBackoff"]


class Backoff(Protocol):
    """Yields the delay before each reconnect attempt; ``reset()`` after a success."""

    def next_delay(self) -> float:
        """Return the seconds to wait before the next attempt."""
        ...

    def reset(self) -> None:
        """Forget past failures (called once a connection proved healthy)."""
        ...


class ExponentialBackoff:
    """Equal-jitter exponential backoff: attempt *n* waits in ``[d/2, d]``, ``d = initial·2ⁿ``.

    With the defaults the delays are 0.25–0.5 s, 0.5–1 s, 1–2 s ... up to 15–30 s,
    the same shape as alpaca-py 0.44. Pass ``rng`` for reproducible tests::

        backoff = ExponentialBackoff(initial=0.5, maximum=30.0, rng=random.Random(1))
        delays = [backoff.next_delay() for _ in range(3)]
        backoff.reset()
    """

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial or factor < 1:
            raise ValueError(
                f"ExponentialBackoff needs 0 < initial <= maximum and factor >= 1; "
                f"got initial={initial!r}, maximum={maximum!r}, factor={factor!r}"
            )
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._rng = rng or random.Random()
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """How many delays were handed out since the last reset."""
        return self._attempt

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * self.factor**self._attempt)
        if ceiling < self.maximum:
            self._attempt += 1
        return ceiling / 2 + self._rng.random() * ceiling / 2

    def reset(self) -> None:
        self._attempt = 0
