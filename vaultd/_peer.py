"""Who is on the other end of a Unix socket: SO_PEERCRED, read once at accept."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Peer", "peer_of"]

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class _HasGetsockopt(Protocol):
    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Peer:
    """The kernel's word on the peer process, taken when it connected."""

    pid: int
    uid: int
    gid: int

    def to_wire(self) -> dict[str, Any]:
        return {"pid": self.pid, "uid": self.uid, "gid": self.gid}

    def __str__(self) -> str:
        return f"pid={self.pid} uid={self.uid} gid={self.gid}"


def peer_of(sock: _HasGetsockopt) -> Peer:
    """Read SO_PEERCRED of a connected AF_UNIX socket.

    Raises:
        OSError: the socket has no peer credentials (not AF_UNIX, or already closed).
    """
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return Peer(pid, uid, gid)
