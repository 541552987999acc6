"""Where a sourced credential's configuration comes from (an upstream's KV record), and how fresh it is.

A credential added with ``vaultctl add NAME --kind KIND --from UPSTREAM:PATH`` carries a
:class:`Source`: the record's path, the version held, when the upstream last confirmed it
current, and whether it was pulled (deleted or destroyed upstream). Pure state and timing:
the reads themselves are ``_upstreams``'s. The copy is served from memory whatever OpenBao
does, until it is pulled or older than the upstream's ``max_stale``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vaultd_protocol import CredentialState, ErrorCode

from ._errors import RpcError
from ._providers._base import shown_name

__all__ = [
    "DEFAULT_MAX_STALE",
    "DEFAULT_REFRESH",
    "MIN_REFRESH",
    "Source",
    "parse_source",
]

DEFAULT_REFRESH = 60.0
MIN_REFRESH = 1.0
MAX_REFRESH = 86_400.0
DEFAULT_MAX_STALE = 86_400.0
#: A refresh is due every ``refresh`` seconds, plus or minus this fraction of it.
JITTER = 0.10
#: The confirmation time is written to the vault at most this often (the copy's age after a
#: restart errs older by at most this much, never younger).
CONFIRM_WRITE_EVERY = 3600.0


@dataclass(eq=False)
class Source:
    """One sourced credential's link to its upstream record."""

    upstream: str
    path: str
    refresh: float
    #: The KV version held (the credential's configuration is that version's data).
    version: int
    #: When the upstream last answered with the version held or a higher one (wall clock).
    confirmed_at: float
    #: Why the credential is not served: its record was deleted or destroyed upstream.
    pulled: str | None = None
    #: The upstream's ``max_stale`` (set from it at unlock and when it is replaced).
    max_stale: float = DEFAULT_MAX_STALE
    #: The last failed read (None after a good one), and how many in a row.
    last_error: str | None = None
    failures: int = 0
    #: When the next read is planned (wall clock), for ``status``.
    next_read: float | None = None
    #: What the vault file holds as ``confirmed_at`` (it is written at most hourly).
    written_confirmed_at: float = 0.0
    #: When OpenBao says the version held was written: the same version number with another
    #: time is another record (an OpenBao rebuilt or restored), not this one.
    created_time: str = ""

    def age(self, now: float) -> float:
        return max(0.0, now - self.confirmed_at)

    def stale(self, now: float) -> bool:
        return self.age(now) > self.max_stale

    def blocked_state(self, now: float) -> CredentialState | None:
        """PULLED or EXPIRED when the copy must not be served now, else None."""
        if self.pulled is not None:
            return CredentialState.PULLED
        if self.stale(now):
            return CredentialState.EXPIRED
        return None

    def refusal(self, name: str, now: float) -> RpcError | None:
        """Why ``name`` is not served now (PULLED, or TOKEN_EXPIRED past ``max_stale``), else None."""
        if self.pulled is not None:
            return RpcError(
                ErrorCode.PULLED,
                f"credential {name!r} was pulled upstream ({self.upstream}:{self.path}: {self.pulled}); "
                "it is served again when a new version is written there",
            )
        if self.stale(now):
            return RpcError(
                ErrorCode.TOKEN_EXPIRED,
                f"credential {name!r}: its copy from {self.upstream}:{self.path} is {self.age(now):.0f} s old, "
                f"past the upstream's max_stale ({self.max_stale:.0f} s), and could not be refreshed: "
                f"{self.last_error or 'no answer yet'}",
            )
        return None

    def degraded(self) -> bool:
        return self.last_error is not None

    def confirm_due_write(self) -> bool:
        """Whether the confirmation time should be written now (at most hourly)."""
        return self.confirmed_at - self.written_confirmed_at >= CONFIRM_WRITE_EVERY

    def next_delay(self, rand: float) -> float:
        """Seconds to the next read: ``refresh`` with jitter after a good read, else a backoff
        from 1 s with full jitter that never exceeds ``refresh`` (so a credential recovers
        within one refresh of the upstream coming back)."""
        if not self.failures:
            return self.refresh * (1.0 - JITTER + 2 * JITTER * rand)
        ceiling = min(self.refresh, 2.0 ** min(self.failures - 1, 30))
        return min(self.refresh, 1.0 + (ceiling - 1.0) * rand) if ceiling > 1.0 else ceiling

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "upstream": self.upstream,
            "path": self.path,
            "refresh": self.refresh,
            "version": self.version,
            "created_time": self.created_time,
            "confirmed_at": self.confirmed_at,
            "age": self.age(now),
            "max_stale": self.max_stale,
            "pulled": self.pulled,
            "last_error": self.last_error,
            "next_read": self.next_read,
        }

    def to_record(self) -> dict[str, Any]:
        self.written_confirmed_at = self.confirmed_at
        return {
            "upstream": self.upstream,
            "path": self.path,
            "refresh": self.refresh,
            "version": self.version,
            "confirmed_at": self.confirmed_at,
            "pulled": self.pulled,
            "created_time": self.created_time,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Source:
        """Raises: KeyError, ValueError, TypeError: a record this version cannot read."""
        pulled = record.get("pulled")
        if pulled is not None and not isinstance(pulled, str):
            raise TypeError("source.pulled")
        confirmed_at = float(record["confirmed_at"])
        return cls(
            upstream=str(record["upstream"]),
            path=str(record["path"]),
            refresh=float(record["refresh"]),
            version=int(record["version"]),
            confirmed_at=confirmed_at,
            pulled=pulled,
            written_confirmed_at=confirmed_at,
            created_time=str(record.get("created_time") or ""),
        )


def parse_source(given: dict[str, Any]) -> tuple[str, str, float]:
    """``credential.put``'s ``source`` map: (upstream, path, refresh).

    Raises:
        RpcError: INVALID_PARAMS, naming the field at fault.
    """
    unknown = set(given) - {"upstream", "path", "refresh"}
    if unknown:
        shown = ", ".join(sorted(shown_name(k) for k in unknown))
        raise RpcError(
            ErrorCode.INVALID_PARAMS, f"unknown field(s) in 'source': {shown} (known: path, refresh, upstream)"
        )
    upstream, path = given.get("upstream"), given.get("path")
    if not isinstance(upstream, str) or not upstream:
        raise RpcError(ErrorCode.INVALID_PARAMS, "'source.upstream' must name an upstream")
    if not isinstance(path, str) or not path or len(path) > 512:
        raise RpcError(ErrorCode.INVALID_PARAMS, "'source.path' must be a KV path of 1 to 512 characters")
    refresh = given.get("refresh", DEFAULT_REFRESH)
    if refresh is None:
        refresh = DEFAULT_REFRESH
    if isinstance(refresh, bool) or not isinstance(refresh, (int, float)) or not math.isfinite(refresh):
        raise RpcError(ErrorCode.INVALID_PARAMS, "'source.refresh' must be a number of seconds")
    if not MIN_REFRESH <= refresh <= MAX_REFRESH:
        raise RpcError(
            ErrorCode.INVALID_PARAMS, f"'source.refresh' must be between {MIN_REFRESH:g} and {MAX_REFRESH:g} seconds"
        )
    return upstream, path, float(refresh)
