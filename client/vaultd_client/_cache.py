"""The in-process token cache: a fresh token is answered without touching the socket.

Sans-IO and shared by every driver. A token is reused until ``expires_at - max(min_ttl,
margin)``; a token without a known expiry (a static credential) for ``max_age`` seconds
after it was fetched. A watch open on the same client feeds it: a renewal pushed by the
daemon replaces the cached token at once, an expiry drops it, a lock empties the cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ._types import Token, WatchEvent

__all__ = ["DEFAULT_MARGIN", "DEFAULT_MAX_AGE", "TokenCache"]

#: Seconds before its expiry at which a cached token is no longer handed out.
DEFAULT_MARGIN = 30.0
#: Seconds a token without a known expiry is reused before it is fetched again.
DEFAULT_MAX_AGE = 60.0


class TokenCache:
    """Tokens by credential name, each with the wall-clock time until which it may be reused."""

    __slots__ = ("_clock", "_entries", "generation", "margin", "max_age")

    def __init__(
        self,
        margin: float = DEFAULT_MARGIN,
        max_age: float = DEFAULT_MAX_AGE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if margin < 0 or max_age < 0:
            raise ValueError("cache margin and max_age must not be negative")
        self.margin = margin
        self.max_age = max_age
        self._clock = clock
        # name -> (token, expires_at or None, reusable until when its expiry is unknown)
        self._entries: dict[str, tuple[Token, float | None, float]] = {}
        #: Bumped whenever the daemon's news (a renewal, an expiry, a lock) changes the cache: an
        #: answer fetched before it must not be put back over it.
        self.generation = 0

    def get(self, name: str, min_ttl: float = 0) -> Token | None:
        """The cached token for ``name`` if it stays valid long enough, else None."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        token, expires_at, until = entry
        now = self._clock()
        if expires_at is None:
            return token if now < until else None  # min_ttl cannot be judged: as the daemon does
        return token if now < expires_at - (min_ttl if min_ttl > self.margin else self.margin) else None

    def put(self, token: Token, generation: int | None = None) -> None:
        """Cache ``token``; with ``generation`` (read before the call), only if nothing changed since."""
        if generation is None or generation == self.generation:
            self._entries[token.name] = (token, token.expires_at, self._clock() + self.max_age)

    def apply(self, event: WatchEvent) -> None:
        """Follow what a watch saw: a renewal replaces, an expiry drops, a lock empties."""
        if event.kind == "updated" and event.token is not None:
            self.generation += 1
            self.put(event.token)
        elif event.kind == "expired" and event.name is not None:
            self.drop(event.name)
        elif event.kind == "locked":
            self.clear()

    def drop(self, name: str) -> None:
        self.generation += 1
        self._entries.pop(name, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"TokenCache(names={sorted(self._entries)!r})"
