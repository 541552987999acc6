"""``vaultd``: parse the command line, claim the socket and data folder, run until a signal.

Start-up (hardening, folders, locks, the socket) runs before the event loop, so every
start-up failure, a folder or vault file that cannot be used included, is one line on stderr
(which path, why, what to do) and exit status 1. Under systemd the socket may come
from the socket unit, and the service manager hears READY, STATUS and STOPPING (see
``_systemd``). Shutdown on SIGTERM or SIGINT locks the vault (dropping every secret), removes
the socket (unless systemd owns it) and exits 0; SIGHUP reloads the log level and the alerts
(``[[notify]]``, ``_notify``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import trio

from vaultd_protocol import Limits, VaultState

from . import __version__, _harden, _paths, _systemd
from ._atomic import StorageError, ensure_private_dir, remove_stale_temps
from ._audit import AuditLog, default_audit_path
from ._errors import RpcError
from ._listen import SocketSetupError, bind_unix_socket, hold_lock_file
from ._metrics import Bound, MetricsAddress, MetricsError, VaultdCollector, bind, configured_metrics, parse_address
from ._metrics_server import serve_metrics
from ._notify import Notifier
from ._notify_config import NotifySettings, load_notify_settings
from ._rpc import Dispatcher
from ._server import ServerLimits, serve
from ._stats import Stats
from ._vault import Vault

__all__ = ["main"]

log = logging.getLogger("vaultd")

EXIT_OK = 0
EXIT_STARTUP = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class DaemonConfig:
    socket_path: Path
    data_dir: Path
    limits: ServerLimits
    #: Whether the socket's and the data folder are vaultd's own defaults (vs. chosen by the
    #: operator, whose folder is warned about rather than chmod-ed).
    own_socket_folder: bool = True
    own_data_folder: bool = True
    #: Where SIGHUP re-reads the log level from, unless --log-level pinned it.
    settings_file: Path | None = None
    #: The audit log (``_audit``); None writes none (tests of other parts).
    audit_log: Path | None = None
    #: Credentials one connection may watch at once.
    max_watch_names: int = 256
    #: Where Prometheus metrics are served (``_metrics``); None: nowhere.
    metrics: MetricsAddress | None = None
    #: The alerts' sinks and thresholds (``[[notify]]``, ``[alerts]``), re-read on SIGHUP from ``settings_path()``.
    notify: NotifySettings = field(default_factory=NotifySettings)
    notify_file: Path | None = None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaultd",
        description=(
            "The vaultd credential daemon. Runs in the foreground (systemd, or a terminal), keeps "
            "credentials sealed at rest and unlocked only in memory, and serves short-lived tokens "
            "to processes of the same user (and of other users a policy rule names) over a Unix socket. "
            "Operate it with 'vaultctl'."
        ),
        epilog=(
            "environment: VAULTD_SOCKET overrides the socket path; XDG_RUNTIME_DIR, XDG_DATA_HOME and "
            "XDG_STATE_HOME move the default socket, data and state folders (the state folder holds the "
            "audit log and a second generation record: a throwaway daemon with --data-dir should get "
            "--audit-log in a throwaway folder too, or it writes to the user's state folder). "
            "Stop with SIGTERM or Ctrl-C: the vault is "
            "locked and the socket removed. Under systemd: takes the socket from vaultd.socket, "
            "notifies READY/STATUS/WATCHDOG, and unlocks itself from a 'vaultd-passphrase' credential."
        ),
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help=(
            "listen here (default: $VAULTD_SOCKET, else $XDG_RUNTIME_DIR/vaultd/vaultd.sock, "
            "else /tmp/vaultd-UID/vaultd.sock)"
        ),
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="keep the vault file here (default: the platform's user data folder, e.g. ~/.local/share/vaultd)",
    )
    parser.add_argument(
        "--max-connections",
        type=_positive_int,
        default=256,
        metavar="N",
        help="refuse connections beyond N (default 256)",
    )
    parser.add_argument(
        "--max-connections-per-uid",
        type=_positive_int,
        default=64,
        metavar="N",
        help="connections any one other user (a uid a policy rule lets in) may hold open at once (default 64)",
    )
    parser.add_argument(
        "--reserved-connections",
        type=int,
        metavar="N",
        help=(
            "of --max-connections, slots only the daemon's own user may use, so other users can never "
            "shut out 'vaultctl lock' (default 16, or a quarter of --max-connections if that is fewer)"
        ),
    )
    parser.add_argument(
        "--max-in-flight",
        type=_positive_int,
        default=32,
        metavar="N",
        help="requests one connection may have in progress; beyond, the daemon stops reading it (default 32)",
    )
    parser.add_argument(
        "--max-queued-notifications",
        type=_positive_int,
        default=256,
        metavar="N",
        help="notifications a watcher may leave unread before it is disconnected (default 256)",
    )
    parser.add_argument(
        "--max-watch-names",
        type=_positive_int,
        default=256,
        metavar="N",
        help="credentials one connection may watch at once, over all its token.watch calls (default 256)",
    )
    parser.add_argument(
        "--max-message-size",
        type=_positive_int,
        default=64 * 1024,
        metavar="BYTES",
        help="largest request accepted, in bytes (default 65536)",
    )
    parser.add_argument(
        "--log-level",
        choices=_systemd.LOG_LEVELS,
        help=(
            "log verbosity on stderr (default: log_level in $XDG_CONFIG_HOME/vaultd/vaultd.toml, re-read "
            "on SIGHUP, else info); secrets are never logged"
        ),
    )
    parser.add_argument(
        "--audit-log",
        type=Path,
        metavar="PATH",
        help="the audit log, one JSON line per decision (default: $XDG_STATE_HOME/vaultd/audit.log)",
    )
    parser.add_argument(
        "--metrics",
        metavar="ADDRESS",
        help=(
            "serve Prometheus metrics (GET /metrics) at unix:PATH or a loopback HOST:PORT such as 127.0.0.1:9477, "
            "[::1]:9477 or localhost:9477 (port 0: any free one, logged); 'off' serves none. Default: 'metrics' "
            "in vaultd.toml, else off"
        ),
    )
    parser.add_argument(
        "--metrics-allow-remote",
        action="store_true",
        help="let --metrics name an address other hosts can reach (the metrics name credentials and their states)",
    )
    parser.add_argument("--version", action="version", version=f"vaultd {__version__}")
    return parser


def _config(args: argparse.Namespace) -> DaemonConfig:
    reserved = min(16, args.max_connections // 4) if args.reserved_connections is None else args.reserved_connections
    if not 0 <= reserved < args.max_connections:
        raise ValueError("--reserved-connections must be at least 0 and fewer than --max-connections")
    limits = ServerLimits(
        protocol=Limits(max_message_size=args.max_message_size),
        max_connections=args.max_connections,
        max_connections_per_uid=args.max_connections_per_uid,
        reserved_connections=reserved,
        max_in_flight=args.max_in_flight,
        max_queued=args.max_queued_notifications,
    )
    explicit = args.socket or os.environ.get("VAULTD_SOCKET")
    metrics = _metrics_address(args)
    return DaemonConfig(
        _paths.socket_path(args.socket),
        _paths.data_dir(args.data_dir),
        limits,
        own_socket_folder=not explicit,
        own_data_folder=not args.data_dir,
        settings_file=None if args.log_level else _systemd.settings_path(),
        audit_log=args.audit_log or default_audit_path(),
        max_watch_names=args.max_watch_names,
        metrics=metrics,
    )


def _metrics_address(args: argparse.Namespace) -> MetricsAddress | None:
    """``--metrics``, else ``metrics`` in vaultd.toml (each with its allow-remote switch).

    Raises:
        ValueError: the address is malformed or not loopback without the switch, or the
            settings file cannot be read.
    """
    if args.metrics is not None:
        if args.metrics == "off":
            return None
        return parse_address(args.metrics, allow_remote=args.metrics_allow_remote)
    settings = _systemd.settings_path()
    configured, remote = configured_metrics(settings)
    if configured is None or configured == "off":
        return None
    return parse_address(configured, allow_remote=remote or args.metrics_allow_remote, source=f"metrics in {settings}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _systemd.check_setting_names(_systemd.settings_path())
        level = args.log_level or _systemd.configured_log_level(_systemd.settings_path()) or "info"
        notify = load_notify_settings(_systemd.settings_path())  # a bad [[notify]]: no start, as a bad log_level
    except ValueError as exc:
        print(f"vaultd: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="vaultd: %(levelname)s: %(name)s: %(message)s")
    # httpx logs every request URL at INFO, and a URL can hold a handle such as a listenKey.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = replace(_config(args), notify=notify, notify_file=_systemd.settings_path())
    except MetricsError as exc:
        print(f"vaultd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        parser.error(str(exc))
    try:
        return _run(config)
    except (SocketSetupError, StorageError, StartupError) as exc:
        print(f"vaultd: {exc}", file=sys.stderr)
        return EXIT_STARTUP


class StartupError(Exception):
    """A folder or file the daemon needs cannot be used. The message is one line: which, why,
    and what to do."""


_DATA_HINT = "vaultd keeps its vault there: fix the folder, or choose a writable one with --data-dir"
_VAULT_HINT = "make it a file this user can read, or restore it (vault.bak is the previous version)"
_STATE_HINT = (
    "vaultd keeps its audit log and a copy of the vault's generation record there: fix the folder, "
    "or choose another audit log path with --audit-log"
)
_SOCKET_HINT = "fix the folder, or choose another socket path with --socket or VAULTD_SOCKET"
#: Plainer words than strerror's where it misleads ("File exists" for a file where a folder goes).
_REASONS = {errno.EEXIST: "it is a file, not a folder", errno.ENOTDIR: "a part of the path is a file, not a folder"}


@contextlib.contextmanager
def _usable(what: str, path: Path, hint: str) -> Iterator[None]:
    """Turn an OSError of start-up into a :class:`StartupError` naming ``what`` and ``path``."""
    try:
        yield
    except SocketSetupError:
        raise  # its message already says what to do
    except OSError as exc:
        reason = _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
        where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != path else ""
        raise StartupError(f"cannot use {what} {path}: {reason}{where}; {hint}") from None


def _check_writable(folder: Path) -> None:
    """Refuse a folder the daemon could open but never write a vault into.

    Raises:
        OSError: EROFS (a read-only file system) or EACCES (no write permission).
    """
    if not os.access(folder, os.W_OK | os.X_OK):
        read_only = os.statvfs(folder).f_flag & os.ST_RDONLY
        code = errno.EROFS if read_only else errno.EACCES
        raise OSError(code, "on a read-only file system" if read_only else "not writable by this user")


def _check_readable(vault_file: Path) -> None:
    """Raises: OSError: ``vault_file`` exists but cannot be read (a missing one is no vault yet)."""
    with contextlib.suppress(FileNotFoundError), vault_file.open("rb") as vault:
        vault.read(1)


def _check_fd_limit(max_connections: int) -> None:
    """Raise the open-files limit to its ceiling; warn if the connection cap still exceeds it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    # Two per connection: its socket, and the mark that watches its peer's exe (``_exe``).
    if soft != resource.RLIM_INFINITY and 2 * max_connections + 64 > soft:
        log.warning(
            "--max-connections %d is close to the open-files limit %d: accepts may fail under load",
            max_connections,
            soft,
        )


def _run(config: DaemonConfig) -> int:
    os.umask(0o077)
    hardening = _harden.harden()  # before any secret exists, and before any thread starts
    _check_fd_limit(config.limits.max_connections)
    link = _systemd.ServiceLink.from_environ()
    inherited = _systemd.listen_socket()
    if inherited is not None:  # socket-activated: serve where systemd listens, in the folder it made
        config = replace(config, socket_path=Path(inherited.getsockname()), own_socket_folder=False)
    # The socket first: "another daemon is listening there" is the likeliest conflict.
    with _usable("the socket folder", config.socket_path.parent, _SOCKET_HINT):
        ensure_private_dir(config.socket_path.parent, tighten=config.own_socket_folder)
        socket_lock = hold_lock_file(
            config.socket_path.with_name(config.socket_path.name + ".lock"), f"the socket {config.socket_path}"
        )
    # A failure here ends the process (main prints one line): the lock fds close with it.
    with _usable("the data folder", config.data_dir, _DATA_HINT):
        if not ensure_private_dir(config.data_dir, tighten=config.own_data_folder):
            log.warning("data folder %s is open to other users; the vault file itself is 0600", config.data_dir)
        data_lock = hold_lock_file(config.data_dir / "vault.lock", f"the data folder {config.data_dir}")
        _check_writable(config.data_dir)
        for stale in remove_stale_temps(config.data_dir):
            log.warning("removed a temp file left by an interrupted write: %s", stale.name)
    with _usable("the vault file", config.data_dir / "vault", _VAULT_HINT):
        _check_readable(config.data_dir / "vault")
    if config.audit_log is not None:  # the audit log, and the second generation record beside it
        with _usable("the state folder", config.audit_log.parent, _STATE_HINT):
            ensure_private_dir(config.audit_log.parent, tighten=False)
            _check_writable(config.audit_log.parent)
    sock = inherited or bind_unix_socket(config.socket_path, own_folder=config.own_socket_folder)
    try:
        metrics = None if config.metrics is None else bind(config.metrics)
    except SocketSetupError:
        if inherited is None:
            _remove_own_socket(config.socket_path)
        sock.close()
        raise
    try:
        trio.run(_serve, config, sock, link, hardening, metrics)
    finally:
        if metrics is not None:
            metrics.close()
        if inherited is None:  # systemd's socket stays, for the next activation
            _remove_own_socket(config.socket_path)
        sock.close()
        link.close()
        os.close(data_lock)
        os.close(socket_lock)
    log.info("stopped")
    return EXIT_OK


async def _serve(
    config: DaemonConfig,
    sock: socket.socket,
    link: _systemd.ServiceLink,
    hardening: _harden.Hardening,
    metrics: Bound | None = None,
) -> None:
    listener = trio.socket.from_stdlib_socket(sock)
    audit = None if config.audit_log is None else AuditLog(config.audit_log)
    async with trio.open_nursery() as nursery:

        def changed() -> None:
            link.changed()
            if audit is not None and audit.pending and vault.state is not VaultState.UNLOCKED:
                nursery.start_soon(trio.to_thread.run_sync, audit.flush)  # at lock: what led up to it

        elsewhere = () if config.audit_log is None else (config.audit_log.parent,)  # a second generation record
        vault = Vault(config.data_dir, nursery=nursery, on_change=changed, record_dirs=elsewhere)
        notifier = Notifier(vault, config.notify)
        vault.add_listener(notifier.changed)
        try:
            await nursery.start(_on_signals, nursery.cancel_scope, config, link, vault, notifier)
            await nursery.start(notifier.run)
            if audit is not None:
                await nursery.start(audit.run)  # flushes at least every second, and once more at stop
            await _unattended_unlock(vault)
            stats = Stats()
            dispatcher = Dispatcher(
                vault,
                config.socket_path,
                memory_locked=hardening.memory_locked,
                audit=audit,
                max_watch_names=config.max_watch_names,
                stats=stats,
                notifier=notifier,
            )
            await nursery.start(serve, listener, dispatcher, config.limits)
            if metrics is not None:
                collector = VaultdCollector(vault, stats, audit=audit, notifier=notifier)
                await nursery.start(serve_metrics, trio.socket.from_stdlib_socket(metrics.sock), collector)
                log.info("metrics at %s (GET /metrics)", metrics.shown())
            log.info(
                "vaultd %s listening on %s (vault %s: %s; audit log %s)",
                __version__,
                config.socket_path,
                vault.path,
                vault.state,
                config.audit_log or "off",
            )
            link.ready(_systemd.status_line(vault))
            nursery.start_soon(link.follow_status, lambda: _systemd.status_line(vault))
            nursery.start_soon(link.watchdog)
            await trio.sleep_forever()
        finally:
            vault.lock()
    if audit is not None:
        audit.close()


async def _unattended_unlock(vault: Vault) -> None:
    """Unlock with the systemd credential 'vaultd-passphrase', if the unit gives one."""
    passphrase = _systemd.credential_passphrase()
    if passphrase is None:
        return
    try:
        if vault.state is VaultState.UNINITIALIZED:
            log.warning("a passphrase credential is set, but there is no vault yet: create one with 'vaultctl init'")
            return
        await vault.unlock(passphrase)
    except RpcError as exc:
        log.error("unattended unlock from the %r credential failed: %s", _systemd.PASSPHRASE_CREDENTIAL, exc.code.name)
    finally:
        passphrase.wipe()


async def _on_signals(
    cancel_scope: trio.CancelScope,
    config: DaemonConfig,
    link: _systemd.ServiceLink,
    vault: Vault,
    notifier: Notifier,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """SIGTERM and SIGINT stop the daemon; SIGHUP reloads the log level and the alerts (RELOADING=1, READY=1)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGHUP:
                announced = link.reloading()
                _reload_log_level(config.settings_file)
                _reload_notify(config.notify_file, notifier)
                if announced:
                    link.ready(_systemd.status_line(vault))
                continue
            log.info("received %s: locking the vault and stopping", signal.Signals(signum).name)
            link.stopping()
            cancel_scope.cancel()
            return


def _reload_log_level(settings_file: Path | None) -> None:
    """The one setting a running daemon can change; the others need a restart."""
    if settings_file is None:
        log.info("SIGHUP: the log level is set by --log-level; nothing to reload")
        return
    try:
        level = _systemd.configured_log_level(settings_file) or "info"
    except ValueError as exc:
        log.error("SIGHUP: settings not reloaded: %s", exc)
        return
    logging.getLogger().setLevel(level.upper())
    log.info("SIGHUP: log level %s (from %s)", level, settings_file)


def _reload_notify(settings_file: Path | None, notifier: Notifier) -> None:
    """The ``[[notify]]`` sinks and ``[alerts]``; a bad file keeps the ones in effect."""
    if settings_file is None:
        return
    try:
        _systemd.check_setting_names(settings_file)
        settings = load_notify_settings(settings_file)
    except ValueError as exc:
        log.error("SIGHUP: alerts not reloaded (the previous ones stay in effect): %s", exc)
        return
    notifier.reload(settings)
    log.info("SIGHUP: alerts: %d notify sink(s) (from %s)", len(settings.sinks), settings_file)


def _remove_own_socket(path: Path) -> None:
    """Unlink our socket file. Safe: we still hold its lock, so no successor has bound it."""
    with contextlib.suppress(OSError):
        path.unlink()
