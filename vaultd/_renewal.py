"""Renewal timing, as pure functions of time: when to renew, how long to back off, how many calls.

Nothing here reads a clock or sleeps. Callers pass ``now`` (trio's clock for scheduling,
the wall clock for expiry) and a random number in [0, 1), so tests pin every decision.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Budget", "RenewalPolicy"]

_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class RenewalPolicy:
    """docs/ARCHITECTURE.md section 7.

    Renew at the earlier of ``fraction`` of the lifetime (less up to ``jitter`` of the lifetime,
    so that many credentials issued together spread out) and ``expires_at - margin``, where the
    margin never exceeds a third of the lifetime: a 3-second token renews at about 2 s, and no
    lifetime makes it renew at once, so it can never loop.
    """

    fraction: float = 2 / 3
    jitter: float = 0.10
    margin: float = 60.0
    backoff_base: float = 1.0
    backoff_cap: float = 300.0

    def renew_at(self, issued_at: float, expires_at: float, rand: float) -> float:
        """When to renew a token valid from ``issued_at`` to ``expires_at`` (same clock)."""
        lifetime = expires_at - issued_at
        if lifetime <= 0:
            return issued_at
        by_fraction = issued_at + lifetime * (self.fraction - self.jitter * rand)
        by_margin = expires_at - min(self.margin, lifetime / 3)
        return min(by_fraction, by_margin)

    def backoff(self, failures: int, rand: float) -> float:
        """Seconds to wait after ``failures`` consecutive failures (1 or more).

        Full jitter between ``backoff_base`` and the exponential ceiling, capped: 1 s, then
        up to 2 s, 4 s, ... up to 5 minutes. Never zero, so never a tight loop.
        """
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** min(max(failures - 1, 0), 30))
        return self.backoff_base + (ceiling - self.backoff_base) * rand


@dataclass(slots=True)
class Budget:
    """A token bucket of upstream calls for one credential: no retry storm, whatever happens.

    ``capacity`` calls at once, refilled at ``per_minute`` calls a minute.
    """

    capacity: float = 20.0
    per_minute: float = 30.0
    _tokens: float = -1.0
    _stamp: float = 0.0

    def _refill(self, now: float) -> None:
        if self._tokens < 0:
            self._tokens, self._stamp = self.capacity, now
            return
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.per_minute / 60.0)
        self._stamp = now

    def try_spend(self, now: float) -> bool:
        """Take one call if the budget allows it now."""
        self._refill(now)
        if self._tokens >= 1.0 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False

    def next_available(self, now: float) -> float:
        """When the next call will be allowed (``now`` if one is available).

        Never a hair's breadth ahead of ``now``: a wait too small to move a float clock would
        make whoever waits for it spin.
        """
        self._refill(now)
        if self._tokens >= 1.0 - _EPSILON:
            return now
        return now + max((1.0 - self._tokens) * 60.0 / self.per_minute, 0.001)
