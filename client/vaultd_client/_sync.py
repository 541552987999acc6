"""The synchronous client: a blocking Unix socket, shared safely by many threads.

Connects lazily on the first call, and again on the next call after the connection
broke; a read-only call that finds a stale connection (the daemon restarted) is retried
once on a fresh one. After a failed connect it backs off: calls answer DaemonUnavailable
at once until the next attempt is due. Every call has a timeout. A fresh token from the
in-process cache is answered without the lock or the socket.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping

from vaultd_protocol import Method, Response

from ._cache import DEFAULT_MARGIN, TokenCache
from ._session import (
    RETRY_SAFE,
    Backoff,
    ClientSession,
    breaks_connection,
    hello_params,
    sign_many_params,
    sign_params,
    signed_many,
    token_params,
)
from ._types import Signed, Token
from ._unix import RECEIVE_SIZE, connect_unix, resolve_path
from ._watch import Watch
from .errors import ConnectionLost, DaemonUnavailable, MalformedResponse, RemoteError, Timeout

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an engine ~7 ms of import: annotations only
    from typing import Any

__all__ = ["Client"]


class _NotDelivered(ConnectionLost):
    """The request could not be sent at all, so it is safe to send again."""


class Client:
    """Talk to the local vaultd.

    ``socket_path`` defaults to ``$VAULTD_SOCKET``, else ``$XDG_RUNTIME_DIR/vaultd/vaultd.sock``.
    ``timeout`` (seconds) bounds every call; calls that run the passphrase KDF use
    ``slow_timeout``. ``cache`` keeps tokens in process until ``cache_margin`` seconds before
    they expire (a token without a known expiry for a minute); a watch opened with
    :meth:`watch` replaces a cached token as soon as the daemon renews it. ``server_uid`` is
    the uid the daemon must run as: by default this process's own (an engine of another user,
    let in by the daemon's policy, names the daemon's uid here).
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 10.0,
        slow_timeout: float = 120.0,
        cache: bool = True,
        cache_margin: float = DEFAULT_MARGIN,
        server_uid: int | None = None,
    ) -> None:
        self.socket_path = resolve_path(socket_path)
        self.server_uid = server_uid
        self.timeout = timeout
        self.slow_timeout = slow_timeout
        self._cache = TokenCache(margin=cache_margin) if cache else None
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._session = ClientSession()
        self._backoff = Backoff()
        self._retry_at = 0.0
        self._last_failure: str | None = None

    # -- the engine's methods ---------------------------------------------------------------

    def token(self, name: str, min_ttl: float = 0) -> Token:
        """A token for credential ``name`` valid for at least ``min_ttl`` more seconds.

        Raises:
            Locked, UnknownCredential, TokenExpired, ...: the daemon's errors.
            DaemonUnavailable, Timeout, ConnectionLost: transport errors.
        """
        cache = self._cache
        if cache is None:
            return Token.from_result(name, self.call(Method.TOKEN_GET, token_params(name, min_ttl)))
        if min_ttl >= 0 and (cached := cache.get(name, min_ttl)) is not None:
            return cached
        generation = cache.generation
        token = Token.from_result(name, self.call(Method.TOKEN_GET, token_params(name, min_ttl)))
        cache.put(token, generation)  # unless a lock, expiry or renewal was seen meanwhile
        return token

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
        schemes: Iterable[str] | None = None,
    ) -> Signed:
        """Have the daemon sign one request with credential ``name``; the secret never leaves it.

        ``timestamp`` (ms) defaults to the daemon's clock; ``nonce`` is for schemes that take
        one (the daemon picks Kraken's). With ``schemes`` (scheme names, such as
        ``["binance-hmac", "binance-ed25519"]``) the daemon signs only if the credential's scheme
        is one of them, else InvalidParams naming both: nothing signed, no nonce taken. Raises
        Forbidden outside the credential's allow-list.
        """
        params = sign_params(name, method, url, body, timestamp, nonce, options, schemes)
        return Signed.from_result(self.call(Method.TOKEN_SIGN, params))

    def sign_many(self, requests: Iterable[Mapping[str, Any]]) -> list[Signed | RemoteError]:
        """Have the daemon sign many requests in one call (``token.sign_many``): an order burst.

        ``requests`` is a list of dicts with :meth:`sign`'s argument names (``name``, ``method``,
        ``url``; optionally ``body``, ``timestamp``, ``nonce``, ``options``, ``schemes``), at most 256. The
        answer is a list in the same order, each item either the request's :class:`Signed` or,
        where the daemon refused that request alone, the exception it would have raised for a
        lone :meth:`sign` (:class:`~vaultd_client.errors.Forbidden`, ``UnknownCredential``,
        ``InvalidParams``, ...), returned, not raised: check ``isinstance(item, Signed)``. Each
        request is judged (policy, allow-list) and audited on its own; one refusal does not stop
        the others. A Kraken credential's requests get strictly increasing nonces in list order.
        An empty list is answered ``[]`` without asking the daemon.

        Raises:
            TypeError: a request that is not such a dict.
            InvalidParams: more than 256 requests (nothing signed).
            Locked, ...: errors of the whole call; DaemonUnavailable, Timeout, ConnectionLost.
        """
        params = sign_many_params(requests)
        if not params["requests"]:
            return []
        return signed_many(self.call(Method.TOKEN_SIGN_MANY, params), len(params["requests"]))

    def status(self) -> dict[str, Any]:
        """The daemon's state and each credential's public description (never a secret)."""
        result: dict[str, Any] = self.call(Method.STATUS)
        return result

    def hello(self, client: str = "vaultd_client") -> dict[str, Any]:
        """Protocol and server version, vault state, and the identity the daemon saw."""
        result: dict[str, Any] = self.call(Method.HELLO, hello_params(client))
        return result

    def watch(self, names: Iterable[str], *, timeout: float | None = None) -> Watch:
        """Follow renewals as they happen: an iterator of :class:`WatchEvent`.

        It has its own connection; iterate it in a thread of its own, or with ``timeout``
        (seconds without an event before :class:`Timeout`). Close it (or use ``with``)
        when done. Subscribe first, then call :meth:`token` for the current value. Its
        events refresh this client's token cache; after a daemon restart it subscribes
        again by itself.
        """
        if isinstance(names, str):
            raise TypeError("watch takes a list of credential names, not one string")
        return Watch(
            self.socket_path,
            list(names),
            connect_timeout=self.timeout,
            timeout=timeout,
            cache=self._cache,
            server_uid=self.server_uid,
        )

    def lock(self) -> dict[str, Any]:
        """Lock the vault now: every token method answers Locked until an unlock (this client's
        cache is emptied too)."""
        try:
            result: dict[str, Any] = self.call(Method.VAULT_LOCK)
        finally:  # also when the answer was lost: the lock may have happened
            if self._cache is not None:
                self._cache.clear()
        return result

    def unlock(self, passphrase: str, *, accept_rollback: bool = False) -> dict[str, Any]:
        """Unlock the vault. Raises BadPassphrase (after a growing delay) if it is wrong, and
        Rollback if the file is older than one written before, unless ``accept_rollback``."""
        params: dict[str, Any] = {"passphrase": passphrase}
        if accept_rollback:
            params["accept_rollback"] = True
        result: dict[str, Any] = self.call(Method.VAULT_UNLOCK, params, timeout=self.slow_timeout)
        return result

    # -- plumbing ---------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Send one request and return its result (any method, for tools such as vaultctl).

        ``timeout`` (default: the client's) bounds the whole call: waiting for another thread's
        call, connecting, sending, the answer, and a retry.
        """
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        if not self._lock.acquire(timeout=max(limit, 0.0)):
            raise Timeout(f"no answer to {method} within {limit:g} s (other threads' calls held the connection)")
        try:
            reused = self._sock is not None
            try:
                return self._call_locked(method, params, deadline, limit)
            except _NotDelivered:
                if not reused:
                    raise
            except ConnectionLost:
                if not (reused and method in RETRY_SAFE):
                    raise
            # The daemon restarted since this connection was made: one more try on a new one.
            return self._call_locked(method, params, deadline, limit)
        except _NotDelivered as exc:
            raise ConnectionLost(str(exc)) from None
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(socket_path={self.socket_path!r})"

    def _connect(self, deadline: float) -> socket.socket:
        if time.monotonic() < self._retry_at and self._last_failure is not None:
            raise DaemonUnavailable(self.socket_path, self._last_failure)  # backing off: at once
        try:
            sock = connect_unix(self.socket_path, _remaining(deadline), self.server_uid)
        except DaemonUnavailable as exc:
            self._last_failure = f"{exc.reason} (will try again shortly)"
            self._retry_at = time.monotonic() + self._backoff.next_delay()
            raise
        self._backoff.reset()
        self._last_failure = None
        self._sock = sock
        self._session = ClientSession()
        return sock

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _call_locked(self, method: str, params: dict[str, Any] | None, deadline: float, limit: float) -> Any:
        sock = self._sock or self._connect(deadline)
        msgid, data = self._session.request(method, params)
        try:
            sock.settimeout(_remaining(deadline))
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError) as exc:
                # The daemon had closed its end before the request was whole: it cannot have run it.
                raise _NotDelivered(f"connection to vaultd lost: {exc.strerror}") from None
            response = self._wait_for(sock, msgid, deadline)
        except TimeoutError:
            self._disconnect()  # a late answer would confuse the next call
            raise Timeout(f"no answer to {method} within {limit:g} s") from None
        except OSError as exc:
            self._disconnect()
            raise ConnectionLost(f"connection to vaultd lost: {exc.strerror or type(exc).__name__}") from None
        except (ConnectionLost, MalformedResponse):
            self._disconnect()
            raise
        try:
            return ClientSession.result(response)
        except RemoteError as exc:
            if breaks_connection(exc):
                self._disconnect()  # the daemon closes the connection after these
            raise

    def _wait_for(self, sock: socket.socket, msgid: int, deadline: float) -> Response:
        while True:
            message = self._session.next_message()
            if message is None:
                sock.settimeout(_remaining(deadline))
                self._session.receive_data(sock.recv(RECEIVE_SIZE))
            elif isinstance(message, Response) and message.msgid == msgid:
                return message
            # Notifications do not come on this connection: watches have their own.


def _remaining(deadline: float) -> float:
    """Seconds left before ``deadline``; a socket timeout of 0 would mean non-blocking, so the
    least is a millisecond (the next operation then times out)."""
    return max(deadline - time.monotonic(), 0.001)
