"""Prometheus metrics: where to serve them (``--metrics``, ``metrics =``), and what a scrape reads.

Opt-in. The address is a Unix socket (``unix:PATH``, 0600 in a 0700 folder) or a loopback TCP
address (``127.0.0.1:PORT``, ``[::1]:PORT``, ``localhost:PORT``); any other address only with
``--metrics-allow-remote``. The families are built from the daemon's own state and counters
(``_stats``) when a scrape asks, by :class:`VaultdCollector` through the official
``prometheus_client`` library, which also writes the text exposition. No metric and no label
ever holds a secret: credential names, kinds, states, uids, methods, error names, reasons and
upstream host names only. ``_metrics_server`` serves them over HTTP.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from vaultd_protocol import CredentialState, VaultState

from . import __version__
from ._atomic import StorageError, ensure_private_dir
from ._listen import SocketSetupError, bind_unix_socket, hold_lock_file
from ._stats import LATENCY_BOUNDS, UPSTREAM, UPSTREAM_BOUNDS, Stats, UpstreamStats

__all__ = ["MetricsAddress", "VaultdCollector", "bind", "configured_metrics", "parse_address"]

ALLOW_REMOTE_FLAG = "--metrics-allow-remote"


class MetricsError(ValueError):
    """The metrics address is not usable; the message says what is expected."""


@dataclass(frozen=True)
class MetricsAddress:
    """A Unix socket ``path``, or a TCP ``host`` and ``port`` (0: any free port)."""

    path: Path | None = None
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str, *, allow_remote: bool = False, source: str = "--metrics") -> MetricsAddress:
    """``unix:PATH`` or ``HOST:PORT`` (an IPv6 host in brackets); ``localhost`` means 127.0.0.1.

    Raises:
        MetricsError: malformed, or an address other hosts could reach without ``allow_remote``.
    """
    expected = f"{source} must be unix:PATH or HOST:PORT (127.0.0.1:9477, [::1]:9477, localhost:9477)"
    if text.startswith("unix:"):
        path = text.removeprefix("unix:")
        if not path:
            raise MetricsError(f"{expected}: the path after 'unix:' is empty")
        return MetricsAddress(path=Path(path).expanduser().absolute())
    host, colon, port_text = text.rpartition(":")
    if not colon or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise MetricsError(f"{expected}, with a port from 0 to 65535; got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise MetricsError(f"{expected}: put an IPv6 address in brackets, e.g. [::1]:9477")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False  # a host name: whatever it resolves to, it is not known to be loopback
    if not loopback and not allow_remote:
        raise MetricsError(
            f"{source} {text!r} is not a loopback address: other hosts could read the metrics "
            f"(credential names and states); pass {ALLOW_REMOTE_FLAG} (or set metrics_allow_remote = true in "
            "vaultd.toml) to serve them there anyway"
        )
    return MetricsAddress(host=host, port=int(port_text))


def configured_metrics(path: Path) -> tuple[str | None, bool]:
    """``metrics`` and ``metrics_allow_remote`` from the settings file (``vaultd.toml``).

    Raises:
        MetricsError: the file is not TOML, or either setting has the wrong type.
    """
    try:
        with path.open("rb") as handle:
            settings = tomllib.load(handle)
    except FileNotFoundError:
        return None, False
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MetricsError(f"{path}: {exc}") from None
    address, remote = settings.get("metrics"), settings.get("metrics_allow_remote", False)
    if address is not None and not isinstance(address, str):
        raise MetricsError(f'{path}: metrics must be a string such as "127.0.0.1:9477" or "unix:/path"')
    if not isinstance(remote, bool):
        raise MetricsError(f"{path}: metrics_allow_remote must be true or false")
    return address, remote


@dataclass
class Bound:
    """The metrics listener, bound before the event loop starts; :meth:`close` at stop."""

    sock: socket.socket
    address: MetricsAddress
    lock_fd: int | None = None

    def shown(self) -> str:
        if self.address.path is not None:
            return f"unix:{self.address.path}"
        host, port = self.sock.getsockname()[:2]
        return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"

    def close(self) -> None:
        if self.address.path is not None:
            with contextlib.suppress(OSError):  # ours: we still hold its lock
                self.address.path.unlink()
        self.sock.close()
        if self.lock_fd is not None:
            os.close(self.lock_fd)


def bind(address: MetricsAddress) -> Bound:
    """Bind and listen (plain blocking calls, before the event loop).

    Raises:
        SocketSetupError: the address is in use, its folder unusable, or it cannot be bound (the message says which).
    """
    if address.path is not None:
        path = address.path
        try:
            ensure_private_dir(path.parent, tighten=False)  # a new one is 0700; an open one is warned about
            lock = hold_lock_file(path.with_name(path.name + ".lock"), f"the metrics socket {path}")
        except (StorageError, OSError) as exc:
            raise SocketSetupError(
                f"cannot use the metrics socket folder {path.parent}: {exc}; fix it, or choose another with --metrics"
            ) from None
        try:
            sock = bind_unix_socket(path, backlog=16, own_folder=False)
        except BaseException:
            os.close(lock)
            raise
        return Bound(sock, address, lock)
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(address.host, address.port, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SocketSetupError(f"cannot resolve the metrics host {address.host!r}: {exc.strerror}") from None
    sock = socket.socket(infos[0][0], socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(infos[0][4])
        sock.listen(16)
    except OSError as exc:
        sock.close()
        raise SocketSetupError(
            f"cannot listen for metrics on {address}: {exc.strerror or exc}; choose another with --metrics"
        ) from None
    return Bound(sock, address)


class VaultdCollector(Collector):
    """The daemon's metric families, built at each scrape from what the daemon holds now.

    ``vault`` is the :class:`~vaultd._vault.Vault` (state, generation, credential descriptions);
    ``audit`` the :class:`~vaultd._audit.AuditLog` or None.
    """

    def __init__(
        self,
        vault: Any,
        stats: Stats,
        *,
        audit: Any = None,
        notifier: Any = None,
        upstream: UpstreamStats = UPSTREAM,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._vault = vault
        self._stats = stats
        self._audit = audit
        self._notifier = notifier
        self._upstream = upstream
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        vault, now = self._vault, self._clock()
        info = GaugeMetricFamily("vaultd_build_info", "The running vaultd's version (always 1).", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        state = vault.state
        unlocked = GaugeMetricFamily(
            "vaultd_vault_unlocked", "1 while the vault is unlocked (credentials served), else 0."
        )
        unlocked.add_metric([], 1 if state is VaultState.UNLOCKED else 0)
        yield unlocked
        states = GaugeMetricFamily(
            "vaultd_vault_state", "The vault's state: 1 for the current one, 0 for the others.", labels=["state"]
        )
        for member in VaultState:
            states.add_metric([member.value], 1 if member is state else 0)
        yield states
        generation = GaugeMetricFamily(
            "vaultd_vault_generation", "The vault file's generation: every write advances it (0 without a vault)."
        )
        generation.add_metric([], vault.generation)
        yield generation
        yield from self._credentials(vault.describe(), now)
        yield from self._requests()
        yield from self._renewals()
        dropped = CounterMetricFamily(
            "vaultd_audit_lines_dropped",
            "Audit log lines dropped since the daemon started (the queue of unwritten lines was full).",
        )
        dropped.add_metric([], 0 if self._audit is None else self._audit.dropped_total)
        yield dropped
        if self._notifier is not None:
            notices = CounterMetricFamily(
                "vaultd_notices",
                "Alert notices ([[notify]]) since the daemon started, by outcome: delivered to a sink, failed "
                "there (exit status, HTTP error, timeout), or dropped because the queue was full.",
                labels=["outcome"],
            )
            notifier = self._notifier
            for outcome, count in (("delivered", notifier.delivered), ("failed", notifier.failed)):
                notices.add_metric([outcome], count)
            notices.add_metric(["dropped"], notifier.dropped)
            yield notices

    def _credentials(self, described: list[dict[str, Any]], now: float) -> Iterator[Metric]:
        labels = ["credential", "kind"]
        state = GaugeMetricFamily(
            "vaultd_credential_state",
            "Each credential's state: 1 for the current one, 0 for the others (none while the vault is locked).",
            labels=[*labels, "state"],
        )
        expiry = GaugeMetricFamily(
            "vaultd_credential_expires_in_seconds",
            "Seconds until the credential's current token expires (negative once past; absent when it never "
            "does or there is none).",
            labels=labels,
        )
        refresh = GaugeMetricFamily(
            "vaultd_credential_refresh_token_expires_in_seconds",
            "Seconds until the credential's refresh token expires (absent when unknown).",
            labels=labels,
        )
        calls = CounterMetricFamily(
            "vaultd_credential_upstream_calls",
            "Upstream calls made for the credential since the vault was unlocked.",
            labels=labels,
        )
        for described_one in described:
            key = [described_one["name"], described_one["kind"]]
            current = described_one["state"]
            for member in CredentialState:
                state.add_metric([*key, member.value], 1 if member.value == current else 0)
            if described_one.get("expires_at") is not None:
                expiry.add_metric(key, described_one["expires_at"] - now)
            refresh_at = described_one.get("refresh_token_expires_at")
            if refresh_at is None:
                refresh_at = (described_one.get("settings") or {}).get("refresh_token_expires_at")
            if refresh_at is not None:
                refresh.add_metric(key, refresh_at - now)
            calls.add_metric(key, described_one.get("upstream_calls", 0))
        yield from (state, expiry, refresh, calls)

    def _requests(self) -> Iterator[Metric]:
        stats = self._stats
        requests = CounterMetricFamily(
            "vaultd_requests",
            "Requests answered, by method and outcome ('ok', or the error's name such as FORBIDDEN or LOCKED; "
            "'cancelled' when the peer left first).",
            labels=["method", "outcome"],
        )
        for (method, outcome), count in sorted(stats.requests().items()):
            requests.add_metric([method, outcome], count)
        yield requests
        latency = HistogramMetricFamily(
            "vaultd_request_duration_seconds",
            "Time from a request's arrival to its answer, inside the daemon, by method.",
            labels=["method"],
        )
        for method, (counts, total) in sorted(stats.latency().items()):
            latency.add_metric([method], _buckets(LATENCY_BOUNDS, counts), total)
        yield latency
        connections = GaugeMetricFamily(
            "vaultd_connections", "Client connections open now, by the peer's uid.", labels=["uid"]
        )
        for uid, count in sorted(stats.connections.items()):
            connections.add_metric([str(uid)], count)
        yield connections

    def _renewals(self) -> Iterator[Metric]:
        upstream = self._upstream
        renewals = CounterMetricFamily(
            "vaultd_renewals",
            "Tokens obtained by renewing a credential, since the daemon started.",
            labels=["credential"],
        )
        for name, count in sorted(upstream.renewals.items()):
            renewals.add_metric([name], count)
        yield renewals
        failures = CounterMetricFamily(
            "vaultd_renewal_failures",
            "Failed renewals, by reason: invalid_grant, refused, http_4xx, http_5xx, timeout, network, bad_answer, "
            "storage, internal, other.",
            labels=["credential", "reason"],
        )
        for (name, reason), count in sorted(upstream.failures.items()):
            failures.add_metric([name, reason], count)
        yield failures
        calls = HistogramMetricFamily(
            "vaultd_upstream_request_duration_seconds",
            "HTTP exchanges with token endpoints (and keepalive calls), answered or not, by host.",
            labels=["host"],
        )
        for host, (counts, total) in sorted(upstream.calls.items()):
            calls.add_metric([host], _buckets(UPSTREAM_BOUNDS, counts), total[0])
        yield calls


def _buckets(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (the last is +Inf) as the cumulative ``le`` buckets Prometheus expects."""
    out, running = [], 0
    for bound, count in zip((*map(str, bounds), "+Inf"), counts, strict=True):
        running += count
        out.append((bound, float(running)))
    return out
