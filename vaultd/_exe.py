"""The executable a peer connected with: read so that no exec can slip in first, and watched for one after.

The kernel records the connecting process's pid and credentials at ``connect()`` (SO_PEERCRED),
but not its program: ``/proc/PID/exe`` is read later, at accept, and a process that connected
as one program and then exec'd another (keeping the connection through a forked child) would
pass for the second. Two facts close most of that gap:

- **An exec closes close-on-exec descriptors**, and a socket is close-on-exec by default in
  Python, Go, Rust and Node (libuv), and in C wherever ``SOCK_CLOEXEC`` is used. So if the
  process still holds the peer end of this very connection after its executable was read, it
  has not exec'd since it connected (unless it made that descriptor inheritable: see README).
- **An exec replaces the address space**, and an open ``/proc/PID/pagemap`` (or ``maps``) stays
  bound to the one it was opened on: once that one is gone (an exec, or the process's exit)
  reading it gives nothing. Opening it also waits for an exec under way to finish (the kernel's
  ``mm_access`` takes the ``exec_update_lock`` that an exec holds from the switch of address
  space until its close-on-exec descriptors are closed), so no half-done exec is seen.

:func:`exe_at_connect` does the reads in the order that makes both hold, and returns an
:class:`ExeMark` (one descriptor) that says, cheaply, per request, whether the process still runs
the program that connected. Linux only, as the daemon is.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
from typing import Final

__all__ = ["MAX_FDS_SCANNED", "ExeMark", "exe_at_connect", "peer_inode"]

log = logging.getLogger("vaultd.peer")

#: Descriptors of the peer looked at, at most, to find its end of the connection: a bound on
#: the work one accept can cost (about 1.7 ms). An engine whose connection is not among its
#: first 1,024 descriptors has its ``exe`` unknown.
MAX_FDS_SCANNED: Final = 1024

# sock_diag (linux/sock_diag.h, linux/unix_diag.h): ask the kernel for a Unix socket's peer.
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_UDIAG_SHOW_PEER = 0x04
_UNIX_DIAG_PEER = 2
_NO_COOKIE = 0xFFFFFFFF
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")  # family, protocol, pad, states, ino, show, cookie[2]
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")  # family, type, state, pad, ino, cookie[2]
_NLATTR = struct.Struct("=HH")  # len, type
_U32 = struct.Struct("=I")
_INT = struct.Struct("=i")

_warned: set[int] = set()


class ExeMark:
    """The address space a peer had when it connected, held by one open descriptor.

    :meth:`holds` is True while that address space lives: False once the process has exec'd
    (or exited), or after :meth:`close`. One ``pread`` of 8 bytes, no path lookup.
    """

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def holds(self) -> bool:
        fd = self._fd
        if fd < 0:
            return False
        try:
            return bool(os.pread(fd, 8, 0))
        except OSError:  # ESRCH: the process is gone
            return False

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:  # a Peer dropped without close(): the descriptor goes with it
        with contextlib.suppress(Exception):  # at interpreter exit, os may be half torn down
            self.close()

    def __repr__(self) -> str:
        return f"ExeMark(fd={self._fd})"


def exe_at_connect(sock_fd: int, pid: int, proc: str = "/proc") -> tuple[str | None, ExeMark | None]:
    """The executable ``pid`` ran when it connected on ``sock_fd``'s peer end, and its mark.

    ``(None, None)`` when that cannot be said for certain: the process has exec'd since it
    connected (it no longer holds its end), it holds none of its descriptors where we can see
    (passed on, closed, or beyond :data:`MAX_FDS_SCANNED`), it is not ours to inspect, or the
    kernel cannot name the peer socket. The caller must still check that ``pid`` is the process
    that connected (a pidfd) once this returns, and close the mark if not.
    """
    mark = _pin(pid, proc)  # first: waits out an exec under way, then binds to this address space
    if mark is None:
        return None, None
    try:
        exe = _readlink(f"{proc}/{pid}/exe")
        # The address space still alive after the read: the exe read is that of the pinned one.
        # The peer end still held: no exec between connect() and the pin (it would have closed it).
        if exe is None or not _holds(pid, sock_fd, proc) or not mark.holds():
            mark.close()
            return None, None
    except BaseException:
        mark.close()
        raise
    return exe, mark


def peer_inode(sock_fd: int) -> int | None:
    """The inode of the other end of the connected AF_UNIX socket ``sock_fd`` (sock_diag), or None."""
    own = os.fstat(sock_fd).st_ino
    request = _UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, 0xFFFFFFFF, own, _UDIAG_SHOW_PEER, _NO_COOKIE, _NO_COOKIE)
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, _NETLINK_SOCK_DIAG) as link:
            link.send(header + request)
            reply = link.recv(8192)
    except OSError as exc:
        _warn_once(exc.errno, f"cannot ask the kernel for a peer socket (sock_diag: {exc.strerror})")
        return None
    if len(reply) < _NLMSGHDR.size + _UNIX_DIAG_MSG.size:
        return None
    length, kind = _NLMSGHDR.unpack_from(reply)[:2]
    if kind == _NLMSG_ERROR:
        code = -_INT.unpack_from(reply, _NLMSGHDR.size)[0]
        if code != errno.ENOENT:  # ENOENT: the socket is gone; anything else is the kernel saying no
            _warn_once(code, f"cannot ask the kernel for a peer socket (sock_diag: {os.strerror(code)})")
        return None
    if kind != _SOCK_DIAG_BY_FAMILY or _UNIX_DIAG_MSG.unpack_from(reply, _NLMSGHDR.size)[4] != own:
        return None
    offset, end = _NLMSGHDR.size + _UNIX_DIAG_MSG.size, min(length, len(reply))
    while offset + _NLATTR.size <= end:
        size, attribute = _NLATTR.unpack_from(reply, offset)
        if size < _NLATTR.size:
            return None
        if attribute == _UNIX_DIAG_PEER and size >= _NLATTR.size + _U32.size:
            inode = int(_U32.unpack_from(reply, offset + _NLATTR.size)[0])
            return inode or None
        offset += (size + 3) & ~3
    return None


def _pin(pid: int, proc: str) -> ExeMark | None:
    # pagemap is the cheaper read; maps where pagemap is compiled out or kept for root (before 4.2).
    # Both fail alike (EACCES) for another user's or a non-dumpable process, and for one gone.
    for name in ("pagemap", "maps"):
        try:
            return ExeMark(os.open(f"{proc}/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            continue
    return None


def _holds(pid: int, sock_fd: int, proc: str) -> bool:
    """Whether ``pid`` has the peer end of ``sock_fd`` among its descriptors (the first
    :data:`MAX_FDS_SCANNED`, in the kernel's order: lowest numbers first)."""
    inode = peer_inode(sock_fd)
    if inode is None:
        return False
    wanted = f"socket:[{inode}]"
    try:
        folder = os.open(f"{proc}/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        with os.scandir(folder) as entries:  # read in batches: a huge table is not listed whole
            for seen, entry in enumerate(entries):
                if seen >= MAX_FDS_SCANNED:
                    break
                try:
                    if os.readlink(entry.name, dir_fd=folder) == wanted:  # about 1.7 us each
                        return True
                except OSError:  # closed while we looked
                    continue
    except OSError:
        return False
    finally:
        os.close(folder)
    return False


def _readlink(path: str) -> str | None:
    """The link's target; None if unreadable (another user's or a non-dumpable process) or not UTF-8."""
    try:
        target = os.readlink(path)
        target.encode("utf-8")  # a surrogate from an undecodable name cannot go on the wire
    except (OSError, UnicodeEncodeError):
        return None
    return target


def _warn_once(code: int | None, message: str) -> None:
    key = code or 0
    if key not in _warned:
        _warned.add(key)
        log.warning("%s: no connection can match an 'exe' rule", message)
