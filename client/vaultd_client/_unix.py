"""Connecting to the daemon's Unix socket, and checking who serves it, for every driver."""

from __future__ import annotations

import os
import socket
import struct

from vaultd_protocol import default_socket_path

from .errors import DaemonUnavailable, UntrustedSocket

__all__ = ["RECEIVE_SIZE", "check_listener", "connect_unix", "listener_uid", "resolve_path", "unavailable"]

RECEIVE_SIZE = 65536
_UCRED = struct.Struct("3i")  # pid, uid, gid


def resolve_path(socket_path: str | os.PathLike[str] | None) -> str:
    """``socket_path``, else ``$VAULTD_SOCKET``, else ``$XDG_RUNTIME_DIR/vaultd/vaultd.sock``."""
    return os.fspath(socket_path) if socket_path else default_socket_path(os.environ, os.getuid())


def listener_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected AF_UNIX socket."""
    _, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return int(uid)


def check_listener(sock: socket.socket, path: str) -> None:
    """Raises: UntrustedSocket: another user's process listens there (nothing was sent)."""
    server_uid = listener_uid(sock)
    if server_uid != os.getuid():
        raise UntrustedSocket(path, server_uid)


def unavailable(path: str, exc: OSError) -> DaemonUnavailable:
    return DaemonUnavailable(path, exc.strerror or type(exc).__name__)


def connect_unix(path: str, timeout: float) -> socket.socket:
    """Connect (blocking, with ``timeout``) and check the listener is this very user.

    Raises:
        DaemonUnavailable: nothing listens there.
        UntrustedSocket: another user's process listens there (nothing was sent).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        check_listener(sock, path)
    except OSError as exc:
        sock.close()
        raise unavailable(path, exc) from None
    except UntrustedSocket:
        sock.close()
        raise
    return sock
