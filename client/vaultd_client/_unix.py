"""Connecting to the daemon's Unix socket, and checking who serves it, for every driver."""

from __future__ import annotations

import os
import socket
import struct
import time

from vaultd_protocol import default_socket_path

from .errors import DaemonUnavailable, UntrustedSocket

__all__ = [
    "BUSY_RETRY",
    "RECEIVE_SIZE",
    "check_listener",
    "connect_unix",
    "listener_uid",
    "resolve_path",
    "try_connect",
    "unavailable",
]

RECEIVE_SIZE = 65536
_UCRED = struct.Struct("3i")  # pid, uid, gid


def resolve_path(socket_path: str | os.PathLike[str] | None) -> str:
    """``socket_path``, else ``$VAULTD_SOCKET``, else ``$XDG_RUNTIME_DIR/vaultd/vaultd.sock``."""
    return os.fspath(socket_path) if socket_path else default_socket_path(os.environ, os.getuid())


def listener_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected AF_UNIX socket."""
    _, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return int(uid)


def check_listener(sock: socket.socket, path: str, expected_uid: int | None = None) -> None:
    """Raises: UntrustedSocket: the listener runs as another uid than ``expected_uid`` (by
    default this process's own): nothing was sent."""
    server_uid = listener_uid(sock)
    if server_uid != (os.getuid() if expected_uid is None else expected_uid):
        raise UntrustedSocket(path, server_uid)


def unavailable(path: str, exc: OSError) -> DaemonUnavailable:
    return DaemonUnavailable(path, exc.strerror or type(exc).__name__)


#: How long to wait between connect attempts while the daemon's accept backlog is full.
BUSY_RETRY = 0.005


def try_connect(sock: socket.socket, path: str) -> bool:
    """One non-blocking connect: True once connected, False while the accept backlog is full.

    An AF_UNIX connect never completes later: EAGAIN means "busy, try again", not "in
    progress" (which asyncio and trio would take it for, then read uid -1 from SO_PEERCRED).

    Raises:
        OSError: nothing listens there (or another failure).
    """
    try:
        sock.connect(path)
    except BlockingIOError:
        return False
    return True


def connect_unix(path: str, timeout: float, expected_uid: int | None = None) -> socket.socket:
    """Connect within ``timeout`` (waiting while the daemon is busy), then check the listener.

    Raises:
        DaemonUnavailable: nothing listens there, or it stayed busy for ``timeout``.
        UntrustedSocket: another user's process listens there (nothing was sent).
    """
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        while not try_connect(sock, path):
            if time.monotonic() >= deadline:
                raise DaemonUnavailable(path, f"busy: its accept queue stayed full for {timeout:g} s")
            time.sleep(BUSY_RETRY)
        check_listener(sock, path, expected_uid)
    except OSError as exc:
        sock.close()
        raise unavailable(path, exc) from None
    except (DaemonUnavailable, UntrustedSocket):
        sock.close()
        raise
    sock.setblocking(True)
    return sock
