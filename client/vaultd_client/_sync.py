"""The synchronous client: a blocking Unix socket, shared safely by many threads.

Connects lazily on the first call, and again on the next call after the connection
breaks; a read-only call that finds a stale connection (the daemon restarted) is retried
once on a fresh one. Every call has a timeout.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterable
from typing import Any

from vaultd_protocol import PROTOCOL_VERSION, Method, Response, default_socket_path

from ._session import ClientSession
from ._types import Signed, Token
from ._watch import Watch
from .errors import (
    ConnectionLost,
    DaemonUnavailable,
    MalformedResponse,
    ProtocolError,
    Timeout,
    TooLarge,
    UntrustedSocket,
)

__all__ = ["Client"]

_RETRY_SAFE = frozenset({Method.HELLO, Method.STATUS, Method.TOKEN_GET, Method.VAULT_LOCK})
_RECV = 65536
_UCRED = struct.Struct("3i")  # pid, uid, gid


class _NotDelivered(ConnectionLost):
    """The request could not be sent at all, so it is safe to send again."""


def listener_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected AF_UNIX socket."""
    _, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return int(uid)


def connect_unix(path: str, timeout: float) -> socket.socket:
    """Connect to the daemon's socket, and check it is served by this very user.

    Raises:
        DaemonUnavailable: nothing listens there.
        UntrustedSocket: another user's process listens there (nothing was sent).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        server_uid = listener_uid(sock)
    except OSError as exc:
        sock.close()
        raise DaemonUnavailable(path, exc.strerror or type(exc).__name__) from None
    if server_uid != os.getuid():
        sock.close()
        raise UntrustedSocket(path, server_uid)
    return sock


class Client:
    """Talk to the local vaultd.

    ``socket_path`` defaults to ``$VAULTD_SOCKET``, else ``$XDG_RUNTIME_DIR/vaultd/vaultd.sock``.
    ``timeout`` (seconds) bounds every call; calls that run the passphrase KDF use
    ``slow_timeout``.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 10.0,
        slow_timeout: float = 120.0,
    ) -> None:
        self.socket_path = os.fspath(socket_path) if socket_path else default_socket_path(os.environ, os.getuid())
        self.timeout = timeout
        self.slow_timeout = slow_timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._session = ClientSession()

    # -- the engine's methods ---------------------------------------------------------------

    def token(self, name: str, min_ttl: float = 0) -> Token:
        """A token for credential ``name`` valid for at least ``min_ttl`` more seconds.

        Raises:
            Locked, UnknownCredential, TokenExpired, ...: the daemon's errors.
            DaemonUnavailable, Timeout, ConnectionLost: transport errors.
        """
        result = self.call(Method.TOKEN_GET, {"name": name, "min_ttl": min_ttl})
        return Token.from_result(name, result)

    def sign(
        self,
        name: str,
        method: str,
        url: str,
        *,
        body: bytes | str = b"",
        timestamp: int | None = None,
        nonce: int | None = None,
        options: dict[str, str] | None = None,
    ) -> Signed:
        """Have the daemon sign one request with credential ``name``; the secret never leaves it.

        ``timestamp`` (ms) defaults to the daemon's clock; ``nonce`` is for schemes that take
        one (the daemon picks Kraken's). Raises Forbidden outside the credential's allow-list.
        """
        params: dict[str, Any] = {"name": name, "method": method, "url": url, "body": body}
        if timestamp is not None:
            params["timestamp"] = timestamp
        if nonce is not None:
            params["nonce"] = nonce
        if options:
            params["options"] = options
        return Signed.from_result(self.call(Method.TOKEN_SIGN, params))

    def status(self) -> dict[str, Any]:
        """The daemon's state and each credential's public description (never a secret)."""
        result: dict[str, Any] = self.call(Method.STATUS)
        return result

    def hello(self, client: str = "vaultd_client") -> dict[str, Any]:
        """Protocol and server version, vault state, and the identity the daemon saw."""
        result: dict[str, Any] = self.call(Method.HELLO, {"protocol": PROTOCOL_VERSION, "client": client})
        return result

    def watch(self, names: Iterable[str], *, timeout: float | None = None) -> Watch:
        """Follow renewals as they happen: an iterator of :class:`WatchEvent`.

        It has its own connection; iterate it in a thread of its own, or with ``timeout``
        (seconds without an event before :class:`Timeout`). Close it (or use ``with``)
        when done. Subscribe first, then call :meth:`token` for the current value.
        """
        return Watch(self.socket_path, list(names), connect_timeout=self.timeout, timeout=timeout)

    def lock(self) -> dict[str, Any]:
        """Lock the vault now: every token method answers Locked until an unlock."""
        result: dict[str, Any] = self.call(Method.VAULT_LOCK)
        return result

    def unlock(self, passphrase: str) -> dict[str, Any]:
        """Unlock the vault. Raises BadPassphrase (after a growing delay) if it is wrong."""
        result: dict[str, Any] = self.call(Method.VAULT_UNLOCK, {"passphrase": passphrase}, timeout=self.slow_timeout)
        return result

    # -- plumbing ---------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Send one request and return its result (any method, for tools such as vaultctl)."""
        with self._lock:
            reused = self._sock is not None
            try:
                return self._call_locked(method, params, timeout)
            except _NotDelivered:
                if not reused:
                    raise
            except ConnectionLost:
                if not (reused and method in _RETRY_SAFE):
                    raise
            # The daemon restarted since this connection was made: one more try on a new one.
            return self._call_locked(method, params, timeout)

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(socket_path={self.socket_path!r})"

    def _connect(self) -> socket.socket:
        sock = connect_unix(self.socket_path, self.timeout)
        self._sock = sock
        self._session = ClientSession()
        return sock

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _call_locked(self, method: str, params: dict[str, Any] | None, timeout: float | None) -> Any:
        sock = self._sock or self._connect()
        sock.settimeout(timeout or self.timeout)
        msgid, data = self._session.request(method, params)
        try:
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError) as exc:
                # The daemon had closed its end before the request was whole: it cannot have run it.
                raise _NotDelivered(f"connection to vaultd lost: {exc.strerror}") from None
            response = self._wait_for(sock, msgid)
        except TimeoutError:
            self._disconnect()  # a late answer would confuse the next call
            raise Timeout(f"no answer to {method} within {timeout or self.timeout:.0f} s") from None
        except OSError as exc:
            self._disconnect()
            raise ConnectionLost(f"connection to vaultd lost: {exc.strerror or type(exc).__name__}") from None
        except (ConnectionLost, MalformedResponse):
            self._disconnect()
            raise
        try:
            return ClientSession.result(response)
        except (TooLarge, ProtocolError):
            self._disconnect()  # the daemon closes the connection after these
            raise

    def _wait_for(self, sock: socket.socket, msgid: int) -> Response:
        while True:
            message = self._session.next_message()
            if message is None:
                self._session.receive_data(sock.recv(_RECV))
            elif isinstance(message, Response) and message.msgid == msgid:
                return message
            # Notifications (and nothing else yet) are ignored by the sync client.
