"""Who owns the TCP listener on a loopback port (inet_diag): plain http goes only to the user expected.

Over ``http://127.0.0.1:PORT`` nothing proves who answers: while OpenBao is down (a restart, a
crash, not yet up at boot), any local user may bind its port and collect the token and the
AppRole secret_id the daemon would send it. Before each call to a loopback http upstream the
daemon asks the kernel (``NETLINK_SOCK_DIAG``, ``inet_diag``) which uids own the sockets
listening on that port, and refuses to send anything unless every one is a uid it trusts.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

__all__ = ["ListenerUnknown", "listener_uids"]

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN = 10
_NLMSG_HEADER = struct.Struct("=IHHII")
#: inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid (48 bytes, zeros: any).
_REQUEST = struct.Struct("=BBBBI48x")
#: inet_diag_msg is 72 bytes: family, state, timer, retrans (1 byte each); inet_diag_sockid (sport
#: and dport big-endian, src and dst 16 bytes each, interface, cookie: 48 bytes); expires, rqueue,
#: wqueue, uid, inode (4 bytes each). The offsets of what is read:
_MESSAGE_SIZE, _SPORT, _SRC, _UID = 72, 4, 8, 64


class ListenerUnknown(OSError):
    """The kernel could not be asked (no sock_diag here, or a sandbox refuses it)."""


def listener_uids(host: str, port: int) -> set[int]:
    """The uids owning a TCP socket that listens on ``port`` and would accept a connection to ``host``
    (bound to ``host`` itself or to the wildcard address of its family); empty if none listens.

    Raises:
        ListenerUnknown: sock_diag cannot be used.
    """
    target = ipaddress.ip_address(host)
    family = socket.AF_INET6 if target.version == 6 else socket.AF_INET
    uids: set[int] = set()
    for bound, uid in _listeners(family, port):
        if bound == target or bound.is_unspecified:
            uids.add(uid)
    if family == socket.AF_INET:  # a dual-stack [::] listener takes IPv4 connections too
        uids.update(uid for bound, uid in _listeners(socket.AF_INET6, port) if bound.is_unspecified)
    return uids


def _listeners(family: int, port: int) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    request = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN)
    header = _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY,
                                _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)  # fmt: skip
    found: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = []
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, _NETLINK_SOCK_DIAG) as link:
            link.settimeout(2.0)
            link.sendto(header + request, (0, 0))
            while True:
                data = link.recv(65536)
                offset = 0
                while offset + _NLMSG_HEADER.size <= len(data):
                    length, kind, _, _, _ = _NLMSG_HEADER.unpack_from(data, offset)
                    if kind == _NLMSG_DONE:
                        return found
                    if kind == _NLMSG_ERROR:
                        code = -struct.unpack_from("=i", data, offset + _NLMSG_HEADER.size)[0]
                        raise ListenerUnknown(code, f"sock_diag: {os.strerror(code)}")
                    body = offset + _NLMSG_HEADER.size
                    if kind == _SOCK_DIAG_BY_FAMILY and length >= _NLMSG_HEADER.size + _MESSAGE_SIZE:
                        sport = struct.unpack_from(">H", data, body + _SPORT)[0]
                        if sport == port:
                            size = 4 if family == socket.AF_INET else 16
                            bound = ipaddress.ip_address(data[body + _SRC : body + _SRC + size])
                            found.append((bound, struct.unpack_from("=I", data, body + _UID)[0]))
                    offset += (length + 3) & ~3
                    if length <= 0:
                        break
    except OSError as exc:
        if isinstance(exc, ListenerUnknown):
            raise
        raise ListenerUnknown(exc.errno, f"sock_diag: {exc.strerror or exc}") from None
    return found
