"""``vaultd``: parse the command line, claim the socket and data folder, run until a signal.

Start-up (folders, locks, the socket) runs before the event loop, so every start-up
failure is one line on stderr and exit status 1. Shutdown on SIGTERM or SIGINT locks the
vault (dropping every secret), removes the socket and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import resource
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import trio

from vaultd_protocol import Limits

from . import __version__, _paths
from ._atomic import StorageError, ensure_private_dir, remove_stale_temps
from ._listen import SocketSetupError, bind_unix_socket, hold_lock_file
from ._rpc import Dispatcher
from ._server import ServerLimits, serve
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
            "to processes of the same user over a Unix socket. Operate it with 'vaultctl'."
        ),
        epilog=(
            "environment: VAULTD_SOCKET overrides the socket path; XDG_RUNTIME_DIR and XDG_DATA_HOME "
            "move the default socket and data folders. Stop with SIGTERM or Ctrl-C: the vault is "
            "locked and the socket removed."
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
        type=int,
        default=256,
        metavar="N",
        help="refuse connections beyond N (default 256)",
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
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity on stderr (default info); secrets are never logged",
    )
    parser.add_argument("--version", action="version", version=f"vaultd {__version__}")
    return parser


def _config(args: argparse.Namespace) -> DaemonConfig:
    limits = ServerLimits(protocol=Limits(max_message_size=args.max_message_size), max_connections=args.max_connections)
    explicit = args.socket or os.environ.get("VAULTD_SOCKET")
    return DaemonConfig(
        _paths.socket_path(args.socket),
        _paths.data_dir(args.data_dir),
        limits,
        own_socket_folder=not explicit,
        own_data_folder=not args.data_dir,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="vaultd: %(levelname)s: %(name)s: %(message)s"
    )
    # httpx logs every request URL at INFO, and a URL can hold a handle such as a listenKey.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = _config(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        return _run(config)
    except (SocketSetupError, StorageError) as exc:
        print(f"vaultd: {exc}", file=sys.stderr)
        return EXIT_STARTUP


def _check_fd_limit(max_connections: int) -> None:
    """Raise the open-files limit to its ceiling; warn if the connection cap still exceeds it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft != resource.RLIM_INFINITY and max_connections + 64 > soft:
        log.warning(
            "--max-connections %d is close to the open-files limit %d: accepts may fail under load",
            max_connections,
            soft,
        )


def _run(config: DaemonConfig) -> int:
    os.umask(0o077)
    _check_fd_limit(config.limits.max_connections)
    # The socket first: "another daemon is listening there" is the likeliest conflict.
    ensure_private_dir(config.socket_path.parent, tighten=config.own_socket_folder)
    socket_lock = hold_lock_file(
        config.socket_path.with_name(config.socket_path.name + ".lock"), f"the socket {config.socket_path}"
    )
    if not ensure_private_dir(config.data_dir, tighten=config.own_data_folder):
        log.warning("data folder %s is open to other users; the vault file itself is 0600", config.data_dir)
    data_lock = hold_lock_file(config.data_dir / "vault.lock", f"the data folder {config.data_dir}")
    for stale in remove_stale_temps(config.data_dir):
        log.warning("removed a temp file left by an interrupted write: %s", stale.name)
    sock = bind_unix_socket(config.socket_path, own_folder=config.own_socket_folder)
    try:
        trio.run(_serve, config, sock)
    finally:
        _remove_own_socket(config.socket_path)
        sock.close()
        os.close(data_lock)
        os.close(socket_lock)
    log.info("stopped")
    return EXIT_OK


async def _serve(config: DaemonConfig, sock: socket.socket) -> None:
    listener = trio.socket.from_stdlib_socket(sock)
    async with trio.open_nursery() as nursery:
        vault = Vault(config.data_dir, nursery=nursery)
        try:
            await nursery.start(_stop_on_signal, nursery.cancel_scope)
            await nursery.start(serve, listener, Dispatcher(vault, config.socket_path), config.limits)
            log.info(
                "vaultd %s listening on %s (vault %s: %s)",
                __version__,
                config.socket_path,
                vault.path,
                vault.state,
            )
            await trio.sleep_forever()
        finally:
            vault.lock()


async def _stop_on_signal(
    cancel_scope: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            log.info("received %s: locking the vault and stopping", signal.Signals(signum).name)
            cancel_scope.cancel()
            return


def _remove_own_socket(path: Path) -> None:
    """Unlink our socket file. Safe: we still hold its lock, so no successor has bound it."""
    with contextlib.suppress(OSError):
        path.unlink()
