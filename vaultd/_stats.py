"""What the daemon counts for its metrics and ``status``: plain numbers, bumped inline, read when asked.

The request path pays one clock read, one dict look-up, one bisect and two list increments per
answer: no lock (the event loop is one thread), no metric object, no label formatting. Those
are built only when a scrape asks (``_metrics``). :class:`Stats` belongs to the dispatcher (one
per daemon); renewals and upstream calls are counted in :data:`UPSTREAM`, one per process,
because providers reach it from deep inside a fetch (a daemon runs one vault).

Labels are never free text from a peer: methods are the protocol's names (``unknown``
otherwise), outcomes ``ok`` or an error code's name, failure reasons one of :data:`REASONS`.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from time import perf_counter_ns
from typing import Protocol

__all__ = [
    "LATENCY_BOUNDS",
    "REASONS",
    "UPSTREAM",
    "UPSTREAM_BOUNDS",
    "Stats",
    "UpstreamStats",
    "failure_reason",
]

#: The request latency histogram's upper bounds, in seconds (``token.get`` from memory is tens
#: of microseconds; a renewal a caller waits for, up to the request timeout).
LATENCY_BOUNDS: tuple[float, ...] = (
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_LATENCY_NS = tuple(round(bound * 1e9) for bound in LATENCY_BOUNDS)
#: The upstream call histogram's upper bounds, in seconds.
UPSTREAM_BOUNDS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: Why a renewal failed, as the ``reason`` label says it: a fixed set, never an upstream's text.
#: ``invalid_grant``: the provider refused the refresh token (OAuth's error code); ``refused``:
#: the long-term credential was refused otherwise (401/403, a revoked key, an expired refresh
#: token); ``http_4xx``/``http_5xx``: another error status; ``timeout``: no answer in time;
#: ``network``: no connection or a broken one; ``bad_answer``: an answer that could not be
#: used (not JSON, too large, a field missing); ``storage``: a rotated refresh token could not
#: be written; ``internal``: a bug (see the daemon's log); ``other``: anything else.
REASONS = (
    "invalid_grant", "refused", "http_4xx", "http_5xx", "timeout", "network", "bad_answer", "storage", "internal",
    "other",
)  # fmt: skip
_HTTP_STATUS = re.compile(r"\bHTTP ([1-5])\d\d\b")


class _Failure(Protocol):
    reauth: bool
    reason: str | None


def failure_reason(exc: _Failure) -> str:
    """The :data:`REASONS` member an ``UpstreamError`` stands for."""
    if exc.reason in REASONS:
        return exc.reason
    text = str(exc)
    if exc.reauth:
        return "invalid_grant" if "invalid_grant" in text else "refused"
    status = _HTTP_STATUS.search(text)
    if status is not None and status.group(1) in "45":
        return f"http_{status.group(1)}xx"
    return "other"


class Stats:
    """The request path's counts. Every method is called on the event loop's thread only."""

    __slots__ = ("_rows", "connections")

    def __init__(self) -> None:
        #: (method, outcome) -> per bucket of :data:`LATENCY_BOUNDS` (and +Inf) a count, then
        #: the sum of the latencies in nanoseconds: the counter and the histogram in one row.
        self._rows: dict[tuple[str, str], list[int]] = {}
        #: uid -> open connections (a uid with none has no entry).
        self.connections: dict[int, int] = {}

    def answered(self, method: str, outcome: str, started_ns: int) -> None:
        """One request answered (``started_ns``: ``perf_counter_ns()`` when it arrived)."""
        elapsed = perf_counter_ns() - started_ns
        row = self._rows.get((method, outcome))
        if row is None:
            row = self._rows[(method, outcome)] = [0] * (len(_LATENCY_NS) + 2)
        row[bisect_left(_LATENCY_NS, elapsed)] += 1
        row[-1] += elapsed

    def connected(self, uid: int) -> None:
        self.connections[uid] = self.connections.get(uid, 0) + 1

    def disconnected(self, uid: int) -> None:
        left = self.connections.get(uid, 0) - 1
        if left > 0:
            self.connections[uid] = left
        else:
            self.connections.pop(uid, None)

    @property
    def requests_total(self) -> int:
        """Requests answered since the daemon started (``status``'s ``requests_total``)."""
        return sum(sum(row[:-1]) for row in self._rows.values())

    @property
    def open_connections(self) -> int:
        return sum(self.connections.values())

    def requests(self) -> dict[tuple[str, str], int]:
        """(method, outcome) -> requests answered."""
        return {key: sum(row[:-1]) for key, row in self._rows.items()}

    def latency(self) -> dict[str, tuple[list[int], float]]:
        """method -> (count per bucket of :data:`LATENCY_BOUNDS` then +Inf, not cumulative; sum in seconds)."""
        merged: dict[str, list[int]] = {}
        for (method, _), row in self._rows.items():
            into = merged.setdefault(method, [0] * len(row))
            for index, value in enumerate(row):
                into[index] += value
        return {method: (row[:-1], row[-1] / 1e9) for method, row in merged.items()}


class UpstreamStats:
    """Renewals and upstream calls, process-wide (see the module's docstring)."""

    __slots__ = ("calls", "failures", "renewals")

    def __init__(self) -> None:
        #: credential -> tokens obtained by renewing it.
        self.renewals: dict[str, int] = {}
        #: (credential, reason) -> failed renewals.
        self.failures: dict[tuple[str, str], int] = {}
        #: host -> (count per bucket of :data:`UPSTREAM_BOUNDS` then +Inf, sum in seconds).
        self.calls: dict[str, tuple[list[int], list[float]]] = {}

    def renewed(self, credential: str) -> None:
        self.renewals[credential] = self.renewals.get(credential, 0) + 1

    def failed(self, credential: str, reason: str) -> None:
        key = (credential, reason if reason in REASONS else "other")
        self.failures[key] = self.failures.get(key, 0) + 1

    def called(self, host: str, seconds: float) -> None:
        """One HTTP exchange with ``host`` took ``seconds`` (answered or not)."""
        entry = self.calls.get(host)
        if entry is None:
            entry = self.calls[host] = ([0] * (len(UPSTREAM_BOUNDS) + 1), [0.0])
        entry[0][bisect_left(UPSTREAM_BOUNDS, seconds)] += 1
        entry[1][0] += seconds


#: The process's one :class:`UpstreamStats`.
UPSTREAM = UpstreamStats()
