"""The alert settings of ``vaultd.toml``: ``[[notify]]`` sinks and the ``[alerts]`` thresholds, checked.

Read once at start (a bad table stops the daemon with one line naming the table and field, as a
bad ``log_level`` does) and again on SIGHUP (a bad file is then logged and the settings in
effect are kept). Nothing here runs or sends anything (``_notify_send`` does).
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EVENTS", "NotifySettings", "Sink", "load_notify_settings", "parse_notify_settings"]

#: Every event a ``[[notify]]`` table may ask for, in the order the README lists them.
EVENTS = ("degraded", "needs_reauth", "expired", "expiring", "locked", "rollback", "upstream_alarm")
_SINK_KEYS = frozenset({"command", "webhook", "events", "timeout"})
_ALERT_KEYS = frozenset({"degraded_after", "expiring_days", "remind", "queue"})
#: Hosts a webhook may reach over plain http: the loopback interface only.
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
_MAX_ARGS = 64
_MAX_ARG = 4096


@dataclass(frozen=True)
class Sink:
    """One ``[[notify]]`` table: a command to run, or a webhook to POST to (not both)."""

    #: 1-based position in the file, as messages name it (``[[notify]] #2``).
    number: int
    command: tuple[str, ...] | None
    webhook: str | None
    events: frozenset[str]
    #: Seconds one delivery may take (the command is killed after it).
    timeout: float

    @property
    def label(self) -> str:
        """How logs and ``vaultctl notify test`` name the sink: the program, or the webhook's
        scheme and host (a webhook's path and query may hold its secret; never shown)."""
        if self.command is not None:
            return f"#{self.number} command {self.command[0]}"
        parts = urllib.parse.urlsplit(self.webhook or "")
        return f"#{self.number} webhook {parts.scheme}://{parts.netloc.rpartition('@')[2]}"


@dataclass(frozen=True)
class NotifySettings:
    """The sinks and the thresholds that decide when a condition is worth a notice."""

    sinks: tuple[Sink, ...] = ()
    #: A credential DEGRADED for this long (seconds) is notified.
    degraded_after: float = 600.0
    #: Days before a refresh token's or a static token's expiry at which to warn, largest first.
    expiring_days: tuple[float, ...] = (2.0, 1.0)
    #: A condition that holds is notified again after this long (seconds).
    remind: float = 86400.0
    #: Notices waiting for delivery beyond which new ones are dropped (and counted).
    queue: int = 64
    source: Path | None = field(default=None, compare=False)


def load_notify_settings(path: Path) -> NotifySettings:
    """The alert settings in ``path`` (``vaultd.toml``); the defaults, no sink, if it is absent.

    Raises:
        ValueError: not TOML, or a table or field that is wrong (the message names it and says
            what is expected).
    """
    try:
        with path.open("rb") as handle:
            settings = tomllib.load(handle)
    except FileNotFoundError:
        return NotifySettings(source=None)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    try:
        return parse_notify_settings(settings, source=path)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def parse_notify_settings(settings: dict[str, Any], *, source: Path | None = None) -> NotifySettings:
    """Check the ``notify`` and ``alerts`` parts of a parsed ``vaultd.toml``.

    Raises:
        ValueError: the message names the table and field at fault.
    """
    tables = settings.get("notify", [])
    if isinstance(tables, dict):
        raise ValueError("notify must be an array of tables: write [[notify]] (two brackets), once per sink")
    if not isinstance(tables, list):
        raise ValueError("notify must be [[notify]] tables, each with a command or a webhook")
    sinks = tuple(_sink(number, table) for number, table in enumerate(tables, start=1))
    alerts = settings.get("alerts", {})
    if not isinstance(alerts, dict):
        raise ValueError("alerts must be a table: [alerts] with degraded_after, expiring_days, remind")
    unknown = sorted(set(alerts) - _ALERT_KEYS)
    if unknown:
        raise ValueError(f"[alerts]: unknown field {unknown[0]!r} (known: {', '.join(sorted(_ALERT_KEYS))})")
    degraded_after = _number(alerts, "degraded_after", "[alerts]", 10.0, minimum=0.0) * 60
    remind = _number(alerts, "remind", "[alerts]", 24.0, minimum=1 / 60) * 3600
    queue = alerts.get("queue", 64)
    if not isinstance(queue, int) or isinstance(queue, bool) or not 1 <= queue <= 10_000:
        raise ValueError("[alerts]: queue must be a whole number from 1 to 10000 (notices waiting for delivery)")
    return NotifySettings(sinks, degraded_after, _days(alerts), remind, queue, source)


def _sink(number: int, table: Any) -> Sink:
    where = f"[[notify]] #{number}"
    if not isinstance(table, dict):
        raise ValueError(f'{where} must be a table with command = [...] or webhook = "https://..."')
    unknown = sorted(set(table) - _SINK_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(_SINK_KEYS))})")
    if ("command" in table) == ("webhook" in table):
        raise ValueError(f'{where}: give exactly one of command = ["/path/to/program", ...] or webhook = "https://..."')
    command = _command(where, table["command"]) if "command" in table else None
    webhook = _webhook(where, table["webhook"]) if "webhook" in table else None
    events = table.get("events", list(EVENTS))
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise ValueError(f"{where}: events must be a non-empty list of event names ({', '.join(EVENTS)})")
    for event in events:
        if event not in EVENTS:
            raise ValueError(f"{where}: events: unknown event {event!r} (known: {', '.join(EVENTS)})")
    timeout = _number(table, "timeout", where, 10.0, minimum=0.1, maximum=300.0)
    return Sink(number, command, webhook, frozenset(events), timeout)


def _command(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise ValueError(f"{where}: command must be a non-empty list of strings (argv, run without a shell)")
    if len(value) > _MAX_ARGS or any(len(a) > _MAX_ARG or "\0" in a for a in value):
        raise ValueError(f"{where}: command has more than {_MAX_ARGS} arguments, or one too long or with a NUL")
    program = value[0]
    if not program:
        raise ValueError(f"{where}: command[0] is empty: give the program's path")
    if os.sep in program:
        if not os.path.isabs(program):
            raise ValueError(f"{where}: command[0] {program!r} must be an absolute path (or a bare name on PATH)")
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise ValueError(f"{where}: command[0] {program} is not an executable file")
    return tuple(value)


def _webhook(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: webhook must be a URL string, https://...")
    try:
        parts = urllib.parse.urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{where}: webhook is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError(f"{where}: webhook must be an https:// URL with a host")
    if parts.scheme == "http" and not _loopback(host):
        raise ValueError(
            f"{where}: webhook must use https:// (plain http only to 127.0.0.1, [::1] or localhost): "
            "a notice says which credential is in trouble"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{where}: webhook must not carry a user or password in the URL")
    return value


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _number(
    table: dict[str, Any], key: str, where: str, default: float, *, minimum: float, maximum: float = 1e9
) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: {key} must be a number")
    if not minimum <= value <= maximum:
        raise ValueError(f"{where}: {key} must be from {minimum:g} to {maximum:g}")
    return float(value)


def _days(alerts: dict[str, Any]) -> tuple[float, ...]:
    value = alerts.get("expiring_days", [2, 1])
    ok = isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 365 for v in value
    )
    if not ok or len(value) > 8:
        raise ValueError(
            "[alerts]: expiring_days must be a list of up to 8 numbers of days, each above 0 and at most 365"
        )
    return tuple(sorted({float(v) for v in value}, reverse=True))
