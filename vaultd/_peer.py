"""Who is on the other end of a Unix socket: its credentials, systemd unit and executable, read once at accept.

The kernel gives uid, gid and pid (SO_PEERCRED) as they were when the peer connected. The unit
(from ``/proc/PID/cgroup``) and the executable (``/proc/PID/exe``) are read through the pid, so
the pid must still be the peer's when they are read: a pidfd pins the peer process (SO_PEERPIDFD,
Linux 6.5+, else ``pidfd_open`` at once), and what was read counts only if that process is still
alive afterwards, so a recycled pid cannot pass for another process. Otherwise they are unknown
(None). The pidfd is closed before returning.

The executable is also the one the process had when it *connected*, not one it exec'd since
(``_exe``): it counts only if the process still holds its end of the connection. The peer then
keeps an :class:`~vaultd._exe.ExeMark` (one descriptor, closed by :meth:`Peer.close`) that says
whether it still runs that program: the policy asks it on each request an ``exe`` rule decides.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from ._exe import ExeMark, exe_at_connect

__all__ = ["Peer", "peer_of", "unit_of"]

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_INT = struct.Struct("i")
SO_PEERPIDFD: Final[int] = getattr(socket, "SO_PEERPIDFD", 77)
_UNIT_SUFFIXES = (".service", ".scope")


class _HasGetsockopt(Protocol):
    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...
    def fileno(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Peer:
    """The kernel's word on the peer process, taken when it connected.

    ``unit`` is its systemd unit (``engine-a.service``, ``session-2.scope``) and ``exe`` its
    executable's path; each is None when it could not be read for certain. ``mark`` (from
    :func:`peer_of` when ``exe`` is known) tells whether the process still runs ``exe``; a Peer
    built by hand has none, and its ``exe`` is taken as given.
    """

    pid: int
    uid: int
    gid: int
    unit: str | None = None
    exe: str | None = None
    mark: ExeMark | None = field(default=None, compare=False, repr=False)

    def exe_holds(self) -> bool:
        """Whether the process that connected still runs ``exe``: it has not exec'd or exited since
        (False when ``exe`` is unknown)."""
        return self.exe is not None and (self.mark is None or self.mark.holds())

    def close(self) -> None:
        """Let go of the mark's descriptor (when the connection ends); ``exe_holds`` is then False."""
        if self.mark is not None:
            self.mark.close()

    def to_wire(self) -> dict[str, Any]:
        return {"pid": self.pid, "uid": self.uid, "gid": self.gid, "unit": self.unit, "exe": self.exe}

    def __str__(self) -> str:
        return f"pid={self.pid} uid={self.uid} gid={self.gid} unit={_shown(self.unit)} exe={_shown(self.exe)}"


def peer_of(sock: _HasGetsockopt, proc: str = "/proc") -> Peer:
    """Read the identity of the peer of a connected AF_UNIX socket.

    Raises:
        OSError: the socket has no peer credentials (not AF_UNIX, or already closed).
    """
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    if pid <= 0:  # in a pid namespace we cannot see
        return Peer(pid, uid, gid)
    pidfd = _pidfd(sock, pid)
    if pidfd is None:
        return Peer(pid, uid, gid)
    mark = None
    try:
        unit = unit_of(_read_text(f"{proc}/{pid}/cgroup"))
        exe, mark = exe_at_connect(sock.fileno(), pid, proc)
        if not _alive(pidfd):  # the pid may now be another process's: what we read may be too
            unit = exe = None
            if mark is not None:
                mark.close()
                mark = None
    finally:
        os.close(pidfd)
    return Peer(pid, uid, gid, unit, exe, mark)


def unit_of(cgroup: str | None) -> str | None:
    """The systemd unit in ``/proc/PID/cgroup``'s text: the last path component ending in
    ``.service`` or ``.scope``, from the unified hierarchy (``0::``), else the ``name=systemd`` one."""
    if cgroup is None:
        return None
    unified = named = None
    for line in cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and not controllers:
            unified = path
        elif "name=systemd" in controllers.split(","):
            named = path
    for found in (unified, named):
        for component in reversed((found or "").split("/")):
            if component.endswith(_UNIT_SUFFIXES) and component.isprintable():
                return component
    return None


def _pidfd(sock: _HasGetsockopt, pid: int) -> int | None:
    """A pidfd for the peer: the kernel's own (SO_PEERPIDFD), else one opened on ``pid`` now."""
    try:
        return int(_INT.unpack(sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, _INT.size))[0])
    except OSError as exc:
        if exc.errno != errno.ENOPROTOOPT:  # the kernel knows the option: the peer is gone
            return None
    try:  # an older kernel: the pid could be recycled between SO_PEERCRED and now (a tiny window)
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def _alive(pidfd: int) -> bool:
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except PermissionError:  # another user's process: it exists
        return True
    except OSError:  # ESRCH: it has exited
        return False
    return True


def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(65536).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _shown(value: str | None) -> str:
    if value is None:
        return "?"
    return value if value.isprintable() and " " not in value else repr(value)
