"""What ``vaultctl top`` shows: the model it keeps from ``status`` and ``token.watch``, and its rendering.

No I/O here: :class:`TopModel` takes status answers, watch events and connection failures as
they come, and :func:`render` (rich, for the full-screen view) or :func:`plain_snapshot` (text
without escape codes, for a pipe) turn it into what the operator reads. Nothing a secret is
kept: of a renewal, only its name and expiry. Every string the daemon supplies is drawn through
:func:`.common.printable` and as rich ``Text`` (never markup), so that no name, error or detail
can act on the terminal or break the view.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .common import printable

__all__ = ["STATE_STYLES", "TopModel", "plain_snapshot", "render"]

#: Colour of each credential state; a state not listed here (a newer daemon's) is magenta.
STATE_STYLES = {
    "FRESH": "bold green",
    "RENEW_DUE": "bold cyan",
    "DEGRADED": "bold yellow",
    "EXPIRED": "bold red",
    "NEEDS_REAUTH": "bold red",
    "PULLED": "bold red",
}
UNKNOWN_STATE_STYLE = "bold magenta"
#: A change between these is every renewal's (the renewal's own row tells it): no row of its own.
_ROUTINE = {"FRESH", "RENEW_DUE"}
#: Renewals and other happenings kept for the events pane.
EVENTS_KEPT = 200
_BAR_WIDTH = 16


@dataclass(frozen=True)
class Happening:
    """One line of the events pane."""

    at: float  # epoch seconds
    kind: str  # updated, expired, locked, or top's own: lock, gone, back, unlocked, state
    name: str | None
    detail: str


class TopModel:
    """Everything the view shows, updated by the tasks that talk to the daemon."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.status: dict[str, Any] | None = None
        #: When the last status answer came (epoch seconds).
        self.seen_at: float | None = None
        #: Why the daemon cannot be reached now (None while it answers), and since when.
        self.gone: str | None = None
        self.gone_since: float | None = None
        self.events: deque[Happening] = deque(maxlen=EVENTS_KEPT)
        self.rate: float | None = None
        self._sample: tuple[float, int] | None = None  # (monotonic, requests_total)
        #: The lifetime of each token whose renewal top watched (for the bar): a token issued
        #: before top started has no bar, only its time left.
        self._lifetimes: dict[str, tuple[float, float]] = {}  # name -> (expires_at, lifetime)
        #: The question on the bottom line (the lock's confirmation), and the last outcome.
        self.asking: str | None = None
        self.message: str | None = None
        self.keys = True
        #: top's own load on the daemon, left out of what it shows: the connections it holds
        #: (one), and the calls it made (counted by the app), so that "engines" are the others.
        self.own_connections = 0
        self.own_calls = 0
        self._own_calls_sampled = 0

    # -- what comes in --------------------------------------------------------------------

    def took_status(self, status: dict[str, Any], now: float, mono: float) -> None:
        """A status answer (``now`` epoch, ``mono`` monotonic seconds)."""
        if self.gone is not None:
            self.note(now, "back", None, f"daemon reachable again (pid {status.get('pid', '?')})")
        previous_status = self.status
        self.gone = self.gone_since = None
        self.status, self.seen_at = status, now
        if previous_status is not None:
            self._changes(previous_status, status, now)
        own, self._own_calls_sampled = self.own_calls - self._own_calls_sampled, self.own_calls
        total = status.get("requests_total")
        if isinstance(total, int) and not isinstance(total, bool):
            previous, self._sample = self._sample, (mono, total)
            if previous is not None and mono > previous[0] and total >= previous[1]:
                # top's own calls between the two reads (this status call among them) are not the engines'
                self.rate = max(total - previous[1] - own, 0) / (mono - previous[0])
            elif previous is not None:
                self.rate = None  # the daemon restarted: its count began again
        else:
            self.rate, self._sample = None, None

    def _changes(self, before: dict[str, Any], after: dict[str, Any], now: float) -> None:
        """Rows for what changed between two status reads: the vault's state, each credential's."""
        was, now_state = before.get("state"), after.get("state")
        if was != now_state:
            self.message = None  # "vault locked", "not locked": said of the state that has just ended
            if now_state == "UNLOCKED":
                self.note(now, "unlocked", None, "the vault was unlocked")
            elif now_state == "LOCKED":
                self.note(now, "locked", None, "the vault is locked")
            else:
                self.note(now, "vault", None, f"vault {was} -> {now_state}")
        old = {c["name"]: c for c in _listed(before)}
        for c in _listed(after):
            seen = old.get(c["name"])
            if seen is None:
                continue
            states = {seen.get("state"), c.get("state")}
            if len(states) == 2 and not states <= _ROUTINE:
                why = trouble(c)
                detail = f"{seen.get('state', '?')} -> {c.get('state', '?')}" + (f": {why}" if why else "")
                self.note(now, "state", c["name"], detail)

    def lost(self, reason: str, now: float) -> None:
        """The daemon did not answer."""
        if self.gone is None:
            self.gone_since = now
            self.note(now, "gone", None, f"daemon not reachable: {reason.removesuffix(_RETRY_SUFFIX)}")
        self.gone = reason
        self.rate, self._sample = None, None

    def watched(self, kind: str, name: str | None, expires_at: float | None, ttl: float | None, now: float) -> None:
        """A ``token.watch`` event (its token's value is not kept)."""
        if kind == "updated":
            if expires_at is not None:
                self._lifetimes[name or ""] = (expires_at, ttl if ttl and ttl > 0 else expires_at - now)
                detail = f"renewed, expires in {duration(expires_at - now)} ({clock(expires_at)})"
            else:
                detail = "renewed (no expiry)" if ttl is None else "new version of its key"
        elif kind == "expired":
            detail = "expired, no renewal"
        elif kind == "locked":
            detail = "the vault was locked"
            self.locked_now()
        else:
            detail = kind
        self.note(now, kind, name, detail)

    def locked_now(self) -> None:
        """The vault is locked (a watch event or our own lock said so): no need to wait for status."""
        if self.status is not None:
            self.status = {**self.status, "state": "LOCKED", "credentials": []}

    def note(self, now: float, kind: str, name: str | None, detail: str) -> None:
        self.events.append(Happening(now, kind, name, detail))

    # -- what goes out --------------------------------------------------------------------

    @property
    def credentials(self) -> list[dict[str, Any]]:
        return [] if self.status is None else _listed(self.status)

    @property
    def names(self) -> list[str]:
        """The credentials to watch: all that status lists while the vault is unlocked."""
        if self.gone is not None or self.status is None or self.status.get("state") != "UNLOCKED":
            return []
        return sorted(c["name"] for c in self.credentials)

    def fraction_left(self, name: str, expires_at: float | None, now: float) -> float | None:
        """How much of the token's lifetime is left, when top saw it issued (else None: no bar)."""
        known = self._lifetimes.get(name)
        if expires_at is None or known is None or known[0] != expires_at or known[1] <= 0:
            return None
        return min(max((expires_at - now) / known[1], 0.0), 1.0)

    def engines(self) -> int | None:
        """The connections of others than top itself (None while the daemon is gone or does not say)."""
        if self.gone is not None:
            return None
        count = connections(self.status.get("connections") if self.status else None)
        return None if count is None else max(count - self.own_connections, 0)

    @property
    def stale(self) -> bool:
        """The rows are the last ones seen before the daemon went away."""
        return self.gone is not None and self.seen_at is not None


def _listed(status: dict[str, Any]) -> list[dict[str, Any]]:
    found = status.get("credentials")
    return [c for c in found if isinstance(c, dict) and "name" in c] if isinstance(found, list) else []


def connections(value: Any) -> int | None:
    """``status``'s ``connections`` as one number: a count, a list of them, or a map (``total``, or per uid)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, list):
        return len(value)
    if isinstance(value, dict):
        total = value.get("total")
        if isinstance(total, int) and not isinstance(total, bool):
            return total
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
            return sum(value.values())
        return len(value)
    return None


# -- words and numbers ----------------------------------------------------------------------


def duration(seconds: float) -> str:
    """``2d 3h``, ``4h 5m``, ``6m 7s``, ``8s``; ``0s`` for the past."""
    s = max(int(seconds), 0)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {s}s"
    return f"{s}s"


def clock(epoch: float) -> str:
    """``HH:MM:SSZ`` (UTC)."""
    try:
        return time.strftime("%H:%M:%SZ", time.gmtime(epoch))
    except (OverflowError, OSError, ValueError):
        return "?"


def _when(epoch: Any, now: float, stale: bool = False) -> str:
    """``in 4m 2s``, ``3s ago``; ``at HH:MM:SSZ`` for a row kept from a daemon now gone (no clock to count from)."""
    if not isinstance(epoch, (int, float)) or isinstance(epoch, bool):
        return "-"
    if stale:
        return f"at {clock(epoch)}"
    if epoch <= now:
        return f"{duration(now - epoch)} ago"
    return f"in {duration(epoch - now)}"


def trouble(c: dict[str, Any]) -> str:
    """What the last column says: why it is on hold (a restored copy), else the last error ('' if none)."""
    return str(c.get("hold") or c.get("last_error") or "")


def refresh_expiry(credential: dict[str, Any]) -> Any:
    """The refresh token's expiry: the description's own field, else the oauth2 setting."""
    value = credential.get("refresh_token_expires_at")
    if value is None:
        settings = credential.get("settings")
        value = settings.get("refresh_token_expires_at") if isinstance(settings, dict) else None
    return value


def _rate(model: TopModel) -> str:
    return "-" if model.rate is None or model.gone is not None else f"{model.rate:.1f}"


def _engines(model: TopModel) -> str:
    count = model.engines()
    return "-" if count is None else str(count)


def _ttl(model: TopModel, c: dict[str, Any], now: float) -> tuple[str, float | None]:
    expires = c.get("expires_at")
    if not isinstance(expires, (int, float)) or isinstance(expires, bool):
        return "never" if c.get("state") == "FRESH" else "-", None
    if model.stale:
        return f"to {clock(expires)}", None
    return duration(expires - now), model.fraction_left(c["name"], float(expires), now)


# -- the full-screen view -------------------------------------------------------------------


def _text(value: Any, style: str = "") -> Text:
    """Daemon-supplied text for a cell: escapes shown, never markup, one line."""
    return Text(printable(value), style=style, no_wrap=True, overflow="ellipsis")


def _bar(fraction: float | None, label: str, width: int) -> Text:
    """``  4m 2s ██████░░░░``: the time left, then (when top saw the token issued) a bar of its lifetime."""
    bar = Text(f"{label:>7}", no_wrap=True, overflow="ellipsis")
    if fraction is not None and width > 0:
        filled = round(fraction * width)
        bar.append(" ")
        bar.append("█" * filled, style="green" if fraction > 0.5 else "yellow" if fraction > 0.2 else "red")
        bar.append("░" * (width - filled), style="dim")
    return bar


#: What the daemon's connection error adds that the header says in its own words.
_RETRY_SUFFIX = " (will try again shortly)"


def _header(model: TopModel, now: float) -> Group:
    line = Text("vaultd top", style="bold", no_wrap=True, overflow="ellipsis")
    status = model.status
    if model.gone is not None:
        since = clock(model.gone_since) if model.gone_since else "?"
        line.append("  daemon NOT REACHABLE", style="bold red reverse")
        line.append(f" since {since}, trying again every {model.interval:g} s: ")
        line.append(printable(model.gone.removesuffix(_RETRY_SUFFIX)))
    elif status is None:
        line.append("  connecting...", style="dim")
    else:
        state = printable(status.get("state", "?"))
        line.append("  vault ")
        line.append(state, style="bold green" if state == "UNLOCKED" else "bold red reverse")
        line.append(printable(
            f"  vaultd {status.get('version', '?')} pid {status.get('pid', '?')}"
            f" up {duration(_number(status.get('uptime')))}  generation {status.get('generation', '?')}"
        ))  # fmt: skip
    numbers = Text(f"requests/s {_rate(model)}   engines {_engines(model)}   {clock(now)}", no_wrap=True)
    return Group(line, numbers)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _table(title: str) -> Table:
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        expand=True,
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
    )


def _credential_table(model: TopModel, now: float, width: int, rows: int) -> Table:
    """The credentials, at most ``rows`` of them; fits ``width`` columns (80 and up) without wrapping a line."""
    stale = model.stale
    table = _table("credentials" + (f" (as last seen at {clock(model.seen_at or 0)})" if stale else ""))
    narrow = width < 100
    bar_width = 0 if narrow else 8 if width < 120 else _BAR_WIDTH
    table.add_column("NAME", no_wrap=True, overflow="ellipsis", max_width=24)
    table.add_column("KIND", no_wrap=True, overflow="ellipsis", max_width=9)
    table.add_column("STATE", no_wrap=True, overflow="ellipsis", min_width=12)
    table.add_column("TTL LEFT", no_wrap=True, overflow="ellipsis", min_width=8)
    table.add_column("RENEWAL" if narrow else "NEXT RENEWAL", no_wrap=True, overflow="ellipsis", min_width=7)
    table.add_column("REFRESH" if narrow else "REFRESH TOKEN", no_wrap=True, overflow="ellipsis", min_width=7)
    table.add_column("LAST ERROR", no_wrap=True, overflow="ellipsis", ratio=1, min_width=10)
    listed = model.credentials
    shown = listed if len(listed) <= rows else listed[: max(rows - 1, 0)]
    for c in shown:
        state = printable(c.get("state", "?"))
        label, fraction = _ttl(model, c, now)
        why = trouble(c)
        table.add_row(
            _text(c["name"]),
            _text(c.get("kind", "?")),
            _text(state, STATE_STYLES.get(state, UNKNOWN_STATE_STYLE)),
            _bar(fraction, label, bar_width),
            _text(_when(c.get("next_renewal"), now, stale)),
            _text(_when(refresh_expiry(c), now, stale)),
            _text(why or "-", "yellow" if why else "dim"),
            style="dim" if stale else None,
        )
    if len(shown) < len(listed):
        table.add_row(Text(f"... {len(listed) - len(shown)} more (a taller terminal shows them)", style="dim"))
    if not listed:
        vault = model.status.get("state") if model.status else None
        if vault == "LOCKED":
            why = "the vault is LOCKED: no credential is served (vaultctl unlock)"
        elif vault == "UNINITIALIZED":
            why = "no vault yet (vaultctl init)"
        elif model.status is None:
            why = "waiting for the daemon"
        else:
            why = "no credentials"
        table.caption = Text(why, style="bold red" if vault == "LOCKED" else "dim", no_wrap=True, overflow="ellipsis")
        table.caption_justify = "left"
    return table


_EVENT_STYLES = {
    "updated": "green", "expired": "red", "locked": "bold red", "gone": "bold red", "back": "green",
    "unlocked": "green", "state": "yellow",
}  # fmt: skip


def _events(model: TopModel, rows: int) -> Table:
    table = _table("renewals and events")
    table.add_column("TIME", no_wrap=True)
    table.add_column("EVENT", no_wrap=True, overflow="ellipsis", max_width=10)
    table.add_column("CREDENTIAL", no_wrap=True, overflow="ellipsis", max_width=24)
    table.add_column("", ratio=1, overflow="ellipsis", no_wrap=True)
    shown = list(model.events)[-max(rows, 1) :]
    for event in reversed(shown):  # newest first
        style = _EVENT_STYLES.get(event.kind, "")
        table.add_row(Text(clock(event.at)), _text(event.kind, style), _text(event.name), _text(event.detail))
    if not shown:
        table.add_row("", Text("none yet", style="dim"), "", "")
    return table


def _footer(model: TopModel) -> Text:
    if model.asking:
        return Text(model.asking, style="bold reverse", no_wrap=True, overflow="ellipsis")
    line = Text(no_wrap=True, overflow="ellipsis")
    if model.keys:
        line.append("l", style="bold")
        line.append(" lock the vault   ")
        line.append("q", style="bold")
        line.append(" quit")
    else:
        line.append("no terminal to read keys from: Ctrl-C quits")
    if model.message:
        line.append(f"   {printable(model.message)}", style="bold")
    return line


#: Lines around the two tables: header (2), blank, credentials' title, head and rule (3), blank,
#: events' title, head and rule (3), footer (1).
_FRAME_LINES = 2 + 1 + 3 + 1 + 3 + 1
#: Rows the events pane keeps however many credentials there are (when the terminal has them).
_EVENT_ROWS_KEPT = 3


def render(model: TopModel, now: float, height: int, width: int = 120) -> RenderableType:
    """The whole screen for a terminal ``height`` lines tall and ``width`` columns wide: every line fits."""
    room = max(height - _FRAME_LINES, 2)
    credential_rows = max(room - _EVENT_ROWS_KEPT, 1)
    table = _credential_table(model, now, width, credential_rows)
    drawn = min(len(model.credentials), credential_rows)
    used = max(drawn, 1)  # the rows, or the caption saying why there are none
    parts: list[RenderableType] = [_header(model, now), Text(""), table, Text("")]
    if room - used >= 1:
        parts.append(_events(model, room - used))
    parts.append(_footer(model))
    return Group(*parts)


# -- plain text -----------------------------------------------------------------------------


def plain_snapshot(model: TopModel, now: float) -> str:
    """One snapshot as plain text (no escape codes), for a pipe or a log."""
    status = model.status or {}
    lines = [
        printable(
            f"vault {status.get('state', '?')}  vaultd {status.get('version', '?')} pid {status.get('pid', '?')}"
            f"  generation {status.get('generation', '?')}"
        )
        + f"  at {clock(now)}",
        f"requests/s {_rate(model)}  engines {_engines(model)}",
    ]
    rows = [("NAME", "KIND", "STATE", "TTL LEFT", "NEXT RENEWAL", "REFRESH TOKEN", "LAST ERROR")]
    for c in model.credentials:
        label, fraction = _ttl(model, c, now)
        rows.append((
            printable(c["name"]), printable(c.get("kind", "?")), printable(c.get("state", "?")),
            label if fraction is None else f"{label} ({fraction:.0%})",
            _when(c.get("next_renewal"), now), _when(refresh_expiry(c), now), printable(trouble(c) or "-"),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
    if not model.credentials:
        lines.append("(vault LOCKED: no credentials shown)" if status.get("state") == "LOCKED" else "(no credentials)")
    return "\n".join(line.rstrip() for line in lines)
