"""Alerts: which conditions of the vault deserve a notice now, each said once, sent in the background.

The :class:`Notifier` looks at the vault when it says it changed (its ``on_change`` listeners)
and on a periodic tick (for conditions that time alone brings: DEGRADED for longer than
``degraded_after``, an expiry coming within ``expiring_days``). Each condition is a key
(event, subject, detail); a key that appears is notified once, again after ``remind`` while
it holds, and forgotten when it clears, so that it is notified anew if it comes back. While
the vault is locked its credentials cannot be seen: what was known about them is kept, not
cleared, so a lock and unlock does not repeat every notice.

Notices wait in a bounded queue (overflow dropped, logged and counted) for one task that
hands each to its sinks (``_notify_send``), all sinks at once, each within its timeout: no
request, renewal or lock ever waits for a notice. A notice is built from public descriptions
only (``describe``: states, times, ``last_error`` text, itself secret-free, and capped here).
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import trio

from vaultd_protocol import CredentialState, VaultState

from . import __version__
from ._notify_config import EVENTS, NotifySettings, Sink
from ._notify_send import deliver

__all__ = ["TICK", "Notifier", "iso_utc"]

log = logging.getLogger("vaultd.notify")

#: How often time-based conditions are looked at, without a change to prompt it (seconds).
TICK = 30.0
#: Changes closer together than this are looked at once.
SETTLE = 0.2
#: Characters of a reason (a last_error) a notice carries.
REASON_MAX = 300

#: (event, subject, detail): subject is "credential:NAME", "upstream:NAME" or "" (the vault).
Key = tuple[str, str, str]
Send = Callable[[Sink, Mapping[str, Any]], Awaitable[str | None]]


class Watched(Protocol):
    """What the notifier reads of the vault (``Vault`` has it; unit tests give a stand-in)."""

    @property
    def state(self) -> VaultState: ...

    alarms: list[dict[str, Any]]
    rollback_refused: str | None

    def describe(self) -> list[dict[str, Any]]: ...

    def upstream_list(self) -> list[dict[str, Any]]: ...


def iso_utc(epoch: float) -> str:
    """``2026-12-07T01:02:03Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _capped(text: str | None) -> str:
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= REASON_MAX else line[: REASON_MAX - 3] + "..."


def _span(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} hours"
    minutes = round(max(seconds, 0) / 60)
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


class Notifier:
    """Turns the vault's conditions into de-duplicated notices and delivers them."""

    def __init__(
        self,
        vault: Watched,
        settings: NotifySettings,
        *,
        wall: Callable[[], float] = time.time,
        send: Send = deliver,
        host: str | None = None,
    ) -> None:
        """``wall`` is the wall clock (expiries are compared with it, ``at`` is written from
        it); durations (degraded for how long, when to remind) run on trio's clock."""
        self._vault = vault
        self.settings = settings
        self._wall = wall
        self._send = send
        self._host = host if host is not None else socket.gethostname()
        self._changed = trio.Event()
        self._wake = trio.Event()
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        #: Each condition holding now, and when (trio's clock) it was last notified.
        self._active: dict[Key, float] = {}
        #: When each credential was first seen DEGRADED (trio's clock), while it stays so.
        self._degraded_since: dict[str, float] = {}
        #: Credentials (by subject) whose first attempt since an unlock has not ended: undecided.
        self._undecided: set[str] = set()
        #: When each credential began awaiting its first login (``vaultctl login --kind oauth2``).
        self._awaiting_since: dict[str, float] = {}
        self._unlocked_once = False
        #: A lock seen by :meth:`changed` since the last look (a lock and unlock within SETTLE counts).
        self._lock_seen = False
        self._started: float | None = None
        #: Notices dropped because the queue was full, delivered to every sink, failed at one.
        self.dropped = 0
        self.delivered = 0
        self.failed = 0

    # -- input -------------------------------------------------------------------------------

    def changed(self) -> None:
        """The vault's ``on_change`` listener: look again soon. Returns at once."""
        state = self._vault.state
        if state is VaultState.UNLOCKED:
            self._unlocked_once = True
        elif state is VaultState.LOCKED and self._unlocked_once:
            self._lock_seen = True
        self._changed.set()

    def reload(self, settings: NotifySettings) -> None:
        """New settings (SIGHUP); what was already notified stays notified."""
        self.settings = settings
        self._changed.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Look at the vault on every change and every :data:`TICK`; deliver notices. Runs forever."""
        self._started = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver_forever)
            task_status.started()
            while True:
                try:
                    self.check()
                except Exception as exc:  # a bug in a rule must not stop the daemon, nor the alerts after it
                    log.error("notify: the conditions could not be checked (%s)", type(exc).__name__, exc_info=exc)
                with trio.move_on_after(TICK):
                    await self._changed.wait()
                self._changed = trio.Event()
                await trio.sleep(SETTLE)

    # -- the rules ---------------------------------------------------------------------------

    def check(self) -> None:
        """Notify the conditions that began, or are due a reminder; forget those that cleared."""
        if not self.settings.sinks:
            self._lock_seen = False
            return
        now, wall = trio.current_time(), self._wall()
        vault = self._vault
        unlocked = vault.state is VaultState.UNLOCKED
        current: dict[Key, dict[str, Any]] = {}
        if unlocked:
            self._unlocked_once = True
            self._credential_conditions(current, now, wall)
            self._upstream_conditions(current, vault.upstream_list())
        self._vault_conditions(current, now)
        for key, event in current.items():
            last = self._active.get(key)
            if last is None or now - last >= self.settings.remind:
                self._active[key] = now
                self._post({**event, "reminder": last is not None}, wall)
        for key in list(self._active):
            if key not in current and (unlocked or not key[1]):  # locked: credentials unseen, not cleared
                if key[1] in self._undecided:
                    continue  # its first renewal since the unlock has not said yet: nothing cleared
                del self._active[key]

    def _credential_conditions(self, out: dict[Key, dict[str, Any]], now: float, wall: float) -> None:
        seen: set[str] = set()
        self._undecided = set()
        for entry in self._vault.describe():
            name, state = str(entry["name"]), str(entry["state"])
            subject, error = f"credential:{name}", _capped(entry.get("last_error"))
            seen.add(name)
            if state == CredentialState.RENEW_DUE and entry.get("expires_at") is None and not error:
                # Unlocked a moment ago: no attempt has told yet whether what was said still holds.
                self._undecided.add(subject)
            base = {"credential": name, "state": state}
            if state == CredentialState.DEGRADED:
                since = self._degraded_since.setdefault(name, now)
                if now - since >= self.settings.degraded_after:
                    why = f"renewals have failed for {_span(now - since)}; the token is served until it expires"
                    out["degraded", subject, ""] = {**base, "event": "degraded", "reason": _join(why, error)}
            else:
                self._degraded_since.pop(name, None)
            awaiting = state == CredentialState.NEEDS_REAUTH and (error or "").startswith("awaiting login")
            if awaiting:  # a new credential whose operator is logging it in: told only if it is left so
                since = self._awaiting_since.setdefault(name, now)
                if now - since >= self.settings.degraded_after:
                    why = f"it has awaited its first login for {_span(now - since)}; engines get NEEDS_REAUTH"
                    out["needs_reauth", subject, ""] = {**base, "event": "needs_reauth", "reason": _join(why, error)}
            else:
                self._awaiting_since.pop(name, None)
            if state == CredentialState.NEEDS_REAUTH and not awaiting:
                why = "renewal needs an operator (log in again, or replace the credential); engines get NEEDS_REAUTH"
                out["needs_reauth", subject, ""] = {**base, "event": "needs_reauth", "reason": _join(why, error)}
            elif state == CredentialState.EXPIRED:
                why = "the token has expired and none is served; engines get EXPIRED"
                out["expired", subject, ""] = {**base, "event": "expired", "reason": _join(why, error)}
            self._expiring(out, entry, base, wall)
        for name in set(self._degraded_since) - seen:
            del self._degraded_since[name]
        for name in set(self._awaiting_since) - seen:
            del self._awaiting_since[name]

    def _expiring(
        self, out: dict[Key, dict[str, Any]], entry: dict[str, Any], base: dict[str, Any], wall: float
    ) -> None:
        settings = entry.get("settings") if isinstance(entry.get("settings"), dict) else {}
        ends = (
            ("refresh_token", _refresh_expiry(entry, settings or {}), "the refresh token expires", "log in again"),
            ("not_after", (settings or {}).get("not_after"), "the static token stops being served", "replace it"),
        )
        for what, at, says, fix in ends:
            if isinstance(at, bool) or not isinstance(at, (int, float)) or not wall < at:
                continue
            left = at - wall
            reached = [days for days in self.settings.expiring_days if left <= days * 86400]
            if not reached:
                continue
            level = min(reached)  # the nearest threshold passed: a new key at each, so 2 days then 1
            out["expiring", f"credential:{base['credential']}", f"{what}:{level:g}"] = {
                **base,
                "event": "expiring",
                "reason": f"{says} at {iso_utc(at)} (in {_span(left)}): {fix} before then",
                "expires_at": iso_utc(at),
                "expiring": what,
            }

    def _upstream_conditions(self, out: dict[Key, dict[str, Any]], upstreams: list[dict[str, Any]]) -> None:
        for upstream in upstreams:
            state, name = str(upstream.get("state")), str(upstream.get("name"))
            if state in (CredentialState.NEEDS_REAUTH, CredentialState.EXPIRED):
                event = "needs_reauth" if state == CredentialState.NEEDS_REAUTH else "expired"
                why = f"upstream {name} cannot log in; credentials sourced from it are not refreshed"
                out[event, f"upstream:{name}", ""] = {
                    "event": event,
                    "upstream": name,
                    "state": state,
                    "reason": _join(why, _capped(upstream.get("last_error"))),
                }
        latest: dict[str, dict[str, Any]] = {}
        for alarm in self._vault.alarms:
            latest[str(alarm.get("upstream"))] = alarm
        for name, alarm in latest.items():
            out["upstream_alarm", f"upstream:{name}", ""] = {
                "event": "upstream_alarm",
                "upstream": name,
                "state": "ALARM",
                "reason": _capped(str(alarm.get("message", ""))),
            }

    def _vault_conditions(self, out: dict[Key, dict[str, Any]], now: float) -> None:
        vault = self._vault
        started = self._started if self._started is not None else now
        lock_seen, self._lock_seen = self._lock_seen, False
        locked = vault.state is VaultState.LOCKED
        if lock_seen or (locked and (self._unlocked_once or now - started >= self.settings.degraded_after)):
            out["locked", "", ""] = {
                "event": "locked",
                "state": "LOCKED",
                "reason": "the vault is locked: no token is served until 'vaultctl unlock'"
                if locked
                else "the vault was locked, and is unlocked again",
            }
        if vault.rollback_refused and vault.state is not VaultState.UNLOCKED:
            out["rollback", "", ""] = {
                "event": "rollback",
                "state": str(vault.state),
                "reason": _capped(f"unlock refused: {vault.rollback_refused}"),
            }

    # -- delivery ----------------------------------------------------------------------------

    def sample(self, event: str) -> dict[str, Any]:
        """A notice of kind ``event`` about no real credential, marked ``"test": true``."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r} (known: {', '.join(EVENTS)})")
        subject = "upstream" if event == "upstream_alarm" else None if event in ("locked", "rollback") else "credential"
        wall = self._wall()
        extra = {"expires_at": iso_utc(wall + 86400), "expiring": "refresh_token"} if event == "expiring" else {}
        return self._shape(
            {
                "event": event,
                "credential": "example" if subject == "credential" else None,
                "upstream": "example" if subject == "upstream" else None,
                "state": "TEST",
                "reason": "a test notice from 'vaultctl notify test': nothing is wrong",
                "test": True,
                **extra,  # the same shape a real notice of that kind has
            },
            wall,
        )

    async def test(self, event: str) -> list[dict[str, Any]]:
        """Send :meth:`sample` to every sink now (whatever its ``events``); each sink's outcome."""
        notice = self.sample(event)
        sinks = self.settings.sinks
        outcomes: list[str | None] = [None] * len(sinks)

        async def one(index: int, sink: Sink) -> None:
            try:
                outcomes[index] = await self._send(sink, notice)
            except Exception as exc:  # as in delivery: one sink's bug is its own outcome
                outcomes[index] = f"internal error ({type(exc).__name__})"
                log.error("notify %s: delivery failed", sink.label, exc_info=exc)

        async with trio.open_nursery() as nursery:
            for index, sink in enumerate(sinks):
                nursery.start_soon(one, index, sink)
        for sink, outcome in zip(sinks, outcomes, strict=True):
            self._log_outcome(sink, notice, outcome)
        return [
            {"sink": sink.label, "ok": outcome is None, "error": outcome}
            for sink, outcome in zip(sinks, outcomes, strict=True)
        ]

    def _shape(self, event: dict[str, Any], wall: float) -> dict[str, Any]:
        return {
            "credential": None,
            "upstream": None,
            "reminder": False,
            "test": False,
            **event,
            "at": iso_utc(wall),
            "host": self._host,
            "daemon": f"vaultd {__version__} (pid {os.getpid()})",
        }

    def _post(self, event: dict[str, Any], wall: float) -> None:
        notice = self._shape(event, wall)
        if len(self._queue) >= self.settings.queue:
            self.dropped += 1
            log.warning(
                "notify: %d notices wait for delivery: dropped a %r notice for %s (%d dropped so far)",
                len(self._queue),
                notice["event"],
                _subject(notice),
                self.dropped,
            )
            return
        self._queue.append(notice)
        self._wake.set()

    async def _deliver_forever(self) -> None:
        while True:
            if not self._queue:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            notice = self._queue.popleft()
            async with trio.open_nursery() as nursery:
                for sink in self.settings.sinks:
                    if notice["event"] in sink.events:
                        nursery.start_soon(self._deliver_one, sink, notice)

    async def _deliver_one(self, sink: Sink, notice: dict[str, Any]) -> None:
        try:
            outcome = await self._send(sink, notice)
        except Exception as exc:  # a bug in delivery must not end the notifier
            outcome = f"internal error ({type(exc).__name__})"
            log.error("notify %s: delivery failed", sink.label, exc_info=exc)
        self._log_outcome(sink, notice, outcome)

    def _log_outcome(self, sink: Sink, notice: Mapping[str, Any], outcome: str | None) -> None:
        """One line per delivery: the sink, the event and its subject; never the notice itself."""
        if outcome is None:
            self.delivered += 1
            log.info("notify %s: %s notice for %s delivered", sink.label, notice["event"], _subject(notice))
        else:
            self.failed += 1
            log.warning(
                "notify %s: %s notice for %s not delivered: %s", sink.label, notice["event"], _subject(notice), outcome
            )


def _refresh_expiry(entry: Mapping[str, Any], settings: Mapping[str, Any]) -> Any:
    """When the refresh token expires: the description's own field (what the provider last said,
    ``refresh_token_expires_in``), else the one configured in the oauth2 settings; None: unknown."""
    found = entry.get("refresh_token_expires_at")
    return found if found is not None else settings.get("refresh_token_expires_at")


def _join(why: str, error: str) -> str:
    return _capped(f"{why}: last error: {error}" if error else why)


def _subject(notice: Mapping[str, Any]) -> str:
    if notice.get("credential"):
        return f"credential {notice['credential']}"
    if notice.get("upstream"):
        return f"upstream {notice['upstream']}"
    return "the vault"
