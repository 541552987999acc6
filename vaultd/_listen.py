"""The daemon's listening socket: a private folder, a stale-socket check, a 0600 bind.

Runs before the event loop starts, with plain blocking calls. Two daemons cannot race
for one socket path: each takes an exclusive ``flock`` on ``<socket>.lock`` first.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import stat
from pathlib import Path

from ._atomic import StorageError, ensure_private_dir

log = logging.getLogger("vaultd.listen")

__all__ = ["AlreadyRunning", "SocketSetupError", "bind_unix_socket", "hold_lock_file"]


class SocketSetupError(Exception):
    """The socket cannot be set up. The message says what to do."""


class AlreadyRunning(SocketSetupError):
    """Another vaultd answers on this socket, or holds its lock."""


def hold_lock_file(path: Path, what: str) -> int:
    """Take an exclusive, non-blocking flock on ``path``; return the fd (keep it open).

    Raises:
        AlreadyRunning: another process holds it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(f"another vaultd is already using {what} (lock {path} is held)") from None
    return fd


def _someone_listens(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:
        # EAGAIN (backlog full) or a timeout: a live listener, just busy.
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
    return True


def bind_unix_socket(path: Path, backlog: int = 128, *, own_folder: bool = True) -> socket.socket:
    """Create the 0700 folder, refuse if a daemon answers, replace a stale socket, bind 0600.

    ``own_folder`` says the folder is vaultd's own (the default path), so a loose mode is
    tightened; a folder the operator chose is only warned about.

    Raises:
        AlreadyRunning: a daemon answers on ``path``.
        SocketSetupError: the folder is not ours, or ``path`` is something other than a socket.
    """
    try:
        private = ensure_private_dir(path.parent, tighten=own_folder)
    except (StorageError, OSError) as exc:
        raise SocketSetupError(f"cannot use socket folder {path.parent}: {exc}") from None
    if not private:
        log.warning(
            "socket folder %s is open to other users; the socket itself is 0600 and every peer's uid is checked",
            path.parent,
        )
    with contextlib.suppress(FileNotFoundError):
        st = path.lstat()
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketSetupError(f"{path} exists and is not a socket; move it away")
        if _someone_listens(path):
            raise AlreadyRunning(f"another vaultd is already listening on {path}")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise SocketSetupError(f"cannot bind {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(backlog)
    return sock
