"""Keeping the audit log readable under a flood: identical decisions fold into one line, other uids get a budget.

Both run in the flush (the worker thread, under the audit log's write lock), never in
:meth:`AuditLog.record <vaultd._audit.AuditLog.record>`, which stays one ``deque.append`` on
the hot path of every request.

**Folding** (:func:`fold`): the entries of one batch (about a second's worth: the log is
flushed every second) that are identical but for their time (same identity, method,
credential, outcome, fingerprint and detail) and fall in the same second of ``time`` become
one line, the first of them, whose ``count`` says how many decisions it stands for. So a
peer repeating itself gives at most one line per second and batch, usually one, and the
first of them is written as promptly as any line (at the next flush).

**A budget for other uids** (:class:`Budgets`): the lines of every uid other than the
daemon's own go through a token bucket per uid (:attr:`Budget.burst` lines at once, then one
per :attr:`Budget.every` seconds) and one shared by all other uids together
(:attr:`Budget.all_burst`, then one per :attr:`Budget.all_every` s). Beyond it, a uid's
lines are only counted; once the buckets allow a line again, one ``LINES_COUNTED`` line
(identity ``{"uid": U}``, method ``audit``) says how many decisions were counted from when
to when, and which (method and outcome). The daemon's own uid has no budget: its decisions
are never folded away by another uid's noise, and other uids cannot write fast enough to
rotate them out of the kept files (README, "Audit log", gives the figures).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_BUDGET", "Budget", "Budgets", "Entry", "fold"]

#: time, identity, method, credential, outcome, fingerprint, detail, count
Entry = tuple[float, dict[str, Any], str, str | None, str, str | None, str | None, int]

#: Entries folded between two releases of the GIL (about 0.1 ms of work, as the encoder's slice).
_GIL_SLICE = 256
#: The (method, outcome) pairs a uid's counted decisions are broken down by; more go under "other".
_MAX_KINDS = 8
_MAX_TEXT = 200


@dataclass(frozen=True)
class Budget:
    """How many lines other uids may write: a token bucket per uid, and one for all of them."""

    #: Lines one other uid may write at once...
    burst: int = 600
    #: ...then one line per this many seconds.
    every: float = 20.0
    #: Lines all other uids together may write at once...
    all_burst: int = 1200
    #: ...then one line per this many seconds.
    all_every: float = 10.0

    def __post_init__(self) -> None:
        if self.burst < 1 or self.all_burst < 1:
            raise ValueError("a budget's bursts must be at least 1 line")
        if not (self.every > 0 and self.all_every > 0 and math.isfinite(self.every + self.all_every)):
            raise ValueError("a budget's intervals must be finite and above 0")


DEFAULT_BUDGET = Budget()


def fold(entries: Iterable[Entry], identity_key: Callable[[dict[str, Any]], str]) -> list[Entry]:
    """``entries`` with those identical but for time, in the same second, folded into the first.

    ``identity_key`` gives an identity's JSON (the encoder's cached one), so that two maps
    fold exactly when their lines would say the same. An entry whose identity cannot be
    encoded, or whose time is not a finite number, is kept as it is.
    """
    folded: list[Entry] = []
    first: dict[tuple[Any, ...], int] = {}
    # An identity is most often the same map for every entry of a connection: its JSON is
    # looked up once per map and batch (by id: the entries keep each map alive meanwhile).
    identities: dict[int, str | None] = {}
    for number, entry in enumerate(entries, start=1):
        if number % _GIL_SLICE == 0:
            time.sleep(0)  # lets the event loop's thread take the GIL
        identity = entry[1]
        who = identities.get(id(identity), "")
        if who == "":
            try:
                who = identity_key(identity)
            except (TypeError, ValueError):
                who = None
            identities[id(identity)] = who
        try:
            key = (who, entry[2], entry[3], entry[4], entry[5], entry[6], int(entry[0]))
            at = first.get(key) if who is not None else None
        except (TypeError, ValueError, OverflowError):
            folded.append(entry)
            continue
        if at is None:
            if who is not None:
                first[key] = len(folded)
            folded.append(entry)
        else:
            kept = folded[at]
            folded[at] = (*kept[:7], kept[7] + entry[7])
    return folded


def _utc(epoch: float) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    except (OverflowError, ValueError, OSError, TypeError):
        return repr(epoch)


@dataclass
class _Bucket:
    tokens: float
    at: float | None = None  # when it was last refilled (None: never)
    counted: int = 0  # decisions counted, not written, since the last summary
    since: float = 0.0  # the time of the first of them
    until: float = 0.0  # and of the last
    kinds: dict[tuple[str, str], int] = field(default_factory=dict)

    def refill(self, now: float, burst: int, every: float) -> None:
        if self.at is None:
            self.at = now
        elif now > self.at:  # a clock stepped back refills nothing
            self.tokens = min(float(burst), self.tokens + (now - self.at) / every)
            self.at = now

    def count(self, entry: Entry) -> None:
        when, _, method, _, outcome, _, _, count = entry
        if not self.counted:
            self.since = when
        self.until = when
        self.counted += count
        kind = (method, outcome)
        if kind not in self.kinds and len(self.kinds) >= _MAX_KINDS:
            kind = ("other", "")
        self.kinds[kind] = self.kinds.get(kind, 0) + count


class Budgets:
    """The budget of lines of each uid other than ``own_uid`` (not thread-safe: the flush's)."""

    def __init__(self, own_uid: int, budget: Budget = DEFAULT_BUDGET) -> None:
        self.own_uid = own_uid
        self.budget = budget
        self._all = _Bucket(float(budget.all_burst))
        self._uids: dict[Any, _Bucket] = {}
        #: Whether decisions were counted that no ``LINES_COUNTED`` line has told of yet (a
        #: plain attribute: the event loop's thread reads it while a flush may be changing the rest).
        self.counting = False

    def admit(self, entries: list[Entry]) -> list[Entry]:
        """The entries to write; the others (other uids beyond their budget) are counted."""
        budget, own, everyone = self.budget, self.own_uid, self._all
        kept: list[Entry] = []
        for entry in entries:
            uid = entry[1].get("uid")
            if type(uid) is int and uid == own:
                kept.append(entry)
                continue
            if type(uid) is not int:
                uid = None  # an identity without a uid: one bucket for all of them
            bucket = self._uids.get(uid)
            if bucket is None:
                bucket = self._uids[uid] = _Bucket(float(budget.burst))
            when = entry[0]
            if isinstance(when, float | int) and math.isfinite(when):
                bucket.refill(when, budget.burst, budget.every)
                everyone.refill(when, budget.all_burst, budget.all_every)
            # A uid that is being counted stays counted until its summary line is out: the
            # tokens that come back go to that line, so that a flood shows as summaries.
            if not bucket.counted and bucket.tokens >= 1 and everyone.tokens >= 1:
                bucket.tokens -= 1
                everyone.tokens -= 1
                kept.append(entry)
            else:
                bucket.count(entry)
                self.counting = True
        return kept

    def summaries(self, now: float, *, final: bool = False) -> list[Entry]:
        """A ``LINES_COUNTED`` line for each uid counted, where the budget allows one now.

        ``final`` (at stop): one for each, whatever the budget, so that no count is lost.
        """
        budget, everyone = self.budget, self._all
        if math.isfinite(now):
            everyone.refill(now, budget.all_burst, budget.all_every)
        lines: list[Entry] = []
        for uid, bucket in list(self._uids.items()):
            if math.isfinite(now):
                bucket.refill(now, budget.burst, budget.every)
            if not bucket.counted:
                if bucket.tokens >= budget.burst:  # full and quiet: nothing to remember
                    del self._uids[uid]
                continue
            if not final:
                if bucket.tokens < 1 or everyone.tokens < 1:
                    continue
                bucket.tokens -= 1
                everyone.tokens -= 1
            lines.append(self._summary(now, uid, bucket))
            bucket.counted, bucket.kinds = 0, {}
        self.counting = any(bucket.counted for bucket in self._uids.values())
        return lines

    def _summary(self, now: float, uid: Any, bucket: _Bucket) -> Entry:
        budget = self.budget
        kinds = sorted(bucket.kinds.items(), key=lambda item: -item[1])
        which = ", ".join(f"{' '.join(filter(None, kind))} x{n}" for kind, n in kinds)
        detail = (
            f"{bucket.counted} decisions from {_utc(bucket.since)} to {_utc(bucket.until)} counted, not written "
            f"(budget: {budget.burst} lines, then 1 per {budget.every:g} s): {which}"
        )[:_MAX_TEXT]
        return (now, {"uid": uid}, "audit", None, "LINES_COUNTED", None, detail, bucket.counted)
