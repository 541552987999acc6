"""Who owns the TCP listener on a loopback port (inet_diag): plain http goes only to the user expected.

Over ``http://127.0.0.1:PORT`` nothing proves who answers: while OpenBao is down (a restart, a
crash, not yet up at boot), any local user may bind its port and collect the token and the
AppRole secret_id the daemon would send it. Before each call to a loopback http upstream the
daemon asks the kernel (``NETLINK_SOCK_DIAG``, ``inet_diag``) which uids own the sockets
listening on that port, and refuses to send anything unless every one is a uid it trusts; and
after each new connection, which uid owns the socket that accepted it (a socket that listened
only for a moment between the two would otherwise slip through).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import struct
from typing import Any

__all__ = ["ListenerUnknown", "checked_pool", "connection_owner", "listener_uids"]

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
_MESSAGE_SIZE, _SPORT, _SRC, _DST, _UID = 72, 4, 8, 24, 64


class ListenerUnknown(OSError):
    """The kernel could not be asked (no sock_diag here, or a sandbox refuses it)."""


def listener_uids(port: int) -> set[int]:
    """The uids owning a TCP socket that listens on ``port``, on any address of either family
    (an IPv4-mapped or wildcard IPv6 listener takes IPv4 connections too); empty if none listens.

    Raises:
        ListenerUnknown: sock_diag cannot be used.
    """
    return {uid for family in (socket.AF_INET, socket.AF_INET6) for _, uid in _listeners(family, port)}


_ALL_BUT_LISTEN = 0xFFF & ~(1 << _TCP_LISTEN)
_ESTABLISHED = 1 << 1
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _listeners(family: int, port: int) -> list[tuple[_Address, int]]:
    return [(bound, uid) for bound, _, _, uid in _sockets(family, port, 1 << _TCP_LISTEN)]


def _sockets(family: int, port: int, states: int) -> list[tuple[_Address, _Address, int, int]]:
    """(bound address, remote address, remote port, uid) of each TCP socket of ``family`` in
    ``states`` whose own port is ``port``."""
    request = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, states)
    header = _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY,
                                _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)  # fmt: skip
    size = 4 if family == socket.AF_INET else 16
    found: list[tuple[_Address, _Address, int, int]] = []
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, _NETLINK_SOCK_DIAG) as link:
            link.settimeout(2.0)
            link.sendto(header + request, (0, 0))
            while True:
                data = link.recv(1 << 16)
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
                        sport, dport = struct.unpack_from(">HH", data, body + _SPORT)
                        if sport == port:
                            bound = ipaddress.ip_address(data[body + _SRC : body + _SRC + size])
                            remote = ipaddress.ip_address(data[body + _DST : body + _DST + size])
                            found.append((bound, remote, dport, struct.unpack_from("=I", data, body + _UID)[0]))
                    if length <= 0:
                        break
                    offset += (length + 3) & ~3
    except ListenerUnknown:
        raise
    except OSError as exc:
        raise ListenerUnknown(exc.errno, f"sock_diag: {exc.strerror or exc}") from None


def connection_owner(sock: socket.socket, *, connected_only: bool = False) -> int | None:
    """The uid owning the socket at the other end of ``sock``, a TCP connection to this host, or
    None if the kernel lists none (the peer closed it already).

    ``connected_only``: count the peer only while its socket is ESTABLISHED. A peer that closed
    at once (before the accept) leaves a TIME_WAIT mini-socket in FIN_WAIT2, which inet_diag
    reports as uid 0: without this, a daemon running as root would take it for itself. (The
    OpenBao check looks at a server's socket that may not be accepted yet: it takes any state.)

    Raises:
        ListenerUnknown: sock_diag cannot be used.
    """
    local_host, local_port = sock.getsockname()[:2]
    peer_host, peer_port = sock.getpeername()[:2]
    local, peer = _plain(local_host), _plain(peer_host)
    for family in (socket.AF_INET, socket.AF_INET6):  # an IPv6 socket may hold an IPv4 (mapped) connection
        states = _ESTABLISHED if connected_only else _ALL_BUT_LISTEN
        for bound, remote, remote_port, uid in _sockets(family, peer_port, states):
            if remote_port == local_port and _plain(bound) == peer and _plain(remote) == local:
                return uid
    return None


def _plain(address: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as compared: an IPv4-mapped IPv6 address as the IPv4 one."""
    parsed = (
        address
        if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
        else ipaddress.ip_address(str(address).split("%")[0])
    )
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


def checked_pool(context: ssl.SSLContext, trusted: frozenset[int], size: int) -> Any:
    """httpx's connection pool, as ``httpx.AsyncHTTPTransport`` makes it, but whose every new
    connection is checked: the socket that accepted it must belong to a ``trusted`` uid."""
    import httpcore  # noqa: PLC0415 - httpx's own transport layer, loaded with it

    class Checked(httpcore.AsyncNetworkBackend):
        def __init__(self) -> None:
            self._inner = httpcore.AnyIOBackend()

        # httpcore's interface names the parameter: it is its timeout, not one of ours.
        async def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,  # noqa: ASYNC109
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> Any:
            stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
            try:
                owner = connection_owner(stream.get_extra_info("socket"))
            except ListenerUnknown as exc:
                await stream.aclose()
                raise httpcore.ConnectError(f"who accepted the connection cannot be checked ({exc})") from None
            if owner not in trusted:
                await stream.aclose()
                raise httpcore.ConnectError(
                    f"the socket that accepted it belongs to uid {owner}, not "
                    f"{'/'.join(str(u) for u in sorted(trusted))}: nothing sent"
                )
            return stream

        async def connect_unix_socket(
            self,
            path: str,
            timeout: float | None = None,  # noqa: ASYNC109
            socket_options: Any = None,
        ) -> Any:
            return await self._inner.connect_unix_socket(path, timeout, socket_options)

        async def sleep(self, seconds: float) -> None:
            await self._inner.sleep(seconds)

    return httpcore.AsyncConnectionPool(
        ssl_context=context, max_connections=size, max_keepalive_connections=size, network_backend=Checked()
    )
