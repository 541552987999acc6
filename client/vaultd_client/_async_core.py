"""The asyncio and trio clients' shared engine: one pipelined connection, and whoever waits reads.

There is no background task. Any number of calls share one connection: each sends its
request, then waits; one waiter at a time reads the socket for everyone and hands each answer
to its caller (a late answer to a call that timed out is dropped). A watcher waiting for
events reads the same way, so notifications are seen as soon as anyone waits, and a daemon
that went away is noticed by whoever is waiting. The connection is made on first use and
made again on the next use after it broke; between failed attempts the client backs off
(and answers ``DaemonUnavailable`` at once meanwhile). Watchers subscribe again by
themselves after a reconnect, retrying while the daemon is down or still locked.

The I/O primitives come from a small :class:`Backend` (``_asyncio`` or ``_trio``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections import deque
from collections.abc import Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Protocol, Self

from vaultd_protocol import Method, Notification, Response

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
    watch_event,
)
from ._types import Signed, Token, WatchEvent
from ._unix import BUSY_RETRY, check_listener, resolve_path, try_connect, unavailable
from .errors import (
    ConnectionLost,
    DaemonUnavailable,
    Locked,
    MalformedResponse,
    NotInitialized,
    RemoteError,
    Timeout,
    TransportError,
)

__all__ = ["AsyncClientBase", "AsyncCore", "AsyncWatch", "Backend"]

#: While resubscribing, these mean "not yet": the daemon is down, restarting, or still locked.
_NOT_YET = (TransportError, Locked, NotInitialized)


class _Event(Protocol):
    def set(self) -> None: ...
    async def wait(self) -> Any: ...


class Backend(Protocol):
    """What a driver supplies: socket I/O and its event loop's primitives.

    ``send`` and ``receive_some`` must be safe to cancel: cancelled, they have sent or read
    nothing. Each raises OSError when the socket is gone.
    """

    too_slow: tuple[type[BaseException], ...]

    def wrap(self, sock: socket.socket) -> Any: ...  # a connected non-blocking socket, for this loop
    def shutdown(self, sock: Any) -> None: ...  # both ways: wakes a task reading or writing it
    async def send(self, sock: Any, data: memoryview) -> int: ...  # bytes written, at least one
    async def receive_some(self, sock: Any) -> bytes: ...  # b"" at end of stream
    def close(self, sock: Any) -> None: ...
    def event(self) -> _Event: ...
    def lock(self) -> AbstractAsyncContextManager[Any]: ...
    def fail_after(self, seconds: float) -> AbstractAsyncContextManager[Any]: ...
    async def sleep(self, seconds: float) -> None: ...


class _Link:
    """One connection: its protocol session and the calls waiting on it."""

    def __init__(self, sock: Any, send_lock: AbstractAsyncContextManager[Any]) -> None:
        self.sock = sock
        self.session = ClientSession()
        self.waiting: dict[int, Response | None] = {}
        self.subscribed: set[str] = set()
        #: Bumped by every ``vault.locked`` seen here: the daemon ended its watches then.
        self.lock_epoch = 0
        self.send_lock = send_lock
        self.reading = False
        self.sending = 0
        self.dead: TransportError | None = None
        self.closed = False


class _NotDelivered(ConnectionLost):
    """The request could not be written at all: it is safe to send again."""


class AsyncCore:
    """The shared state of one async client (see the module docstring)."""

    def __init__(  # noqa: PLR0917 - the client's settings, passed on by the drivers
        self,
        backend: Backend,
        socket_path: str,
        timeout: float,
        slow_timeout: float,
        cache: TokenCache | None,
        server_uid: int | None = None,
    ) -> None:
        self.backend = backend
        self.server_uid = server_uid
        self.socket_path = socket_path
        self.timeout = timeout
        self.slow_timeout = slow_timeout
        self.cache = cache
        self._link: _Link | None = None
        self._connect_lock = backend.lock()
        self._changed = backend.event()
        self._backoff = Backoff()
        self._retry_at = 0.0
        self._last_failure: str | None = None
        self._watchers: list[AsyncWatch] = []
        self._closed = False

    # -- calls -------------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the same per-call timeout as the sync client's
    ) -> Any:
        """Send one request and return its result; raises the daemon's error or a transport one."""
        limit = self.timeout if timeout is None else timeout
        try:
            async with self.backend.fail_after(limit):
                link, reused = await self._ensure_link()
                try:
                    return await self._exchange(link, method, params)
                except _NotDelivered:
                    if not reused:
                        raise
                except ConnectionLost:
                    if not (reused and method in RETRY_SAFE):
                        raise
                # The daemon restarted since this connection was made: once more on a new one.
                link, _ = await self._ensure_link()
                return await self._exchange(link, method, params)
        except self.backend.too_slow:
            raise Timeout(f"no answer to {method} within {limit:g} s") from None
        except _NotDelivered as exc:
            raise ConnectionLost(str(exc)) from None

    async def _ensure_link(self) -> tuple[_Link, bool]:
        link = self._link
        if link is not None and link.dead is None:
            return link, True
        async with self._connect_lock:
            link = self._link
            if link is not None and link.dead is None:
                return link, True
            if self._closed:
                raise ConnectionLost("the client is closed")
            if time.monotonic() < self._retry_at and self._last_failure is not None:
                raise DaemonUnavailable(self.socket_path, self._last_failure)  # backing off: at once
            try:
                sock = await self._connect()
            except DaemonUnavailable as exc:
                self._last_failure = f"{exc.reason} (will try again shortly)"
                self._retry_at = time.monotonic() + self._backoff.next_delay()
                raise
            if self._closed:  # aclose() ran while this connect waited
                self.backend.close(sock)
                raise ConnectionLost("the client is closed")
            self._backoff.reset()
            self._last_failure = None
            self._link = link = _Link(sock, self.backend.lock())
            self._wake()
            return link, False

    async def _connect(self) -> Any:
        """A connected socket whose listener runs as this user (waiting while the daemon is busy).

        Raises:
            DaemonUnavailable: nothing listens there. UntrustedSocket: another user listens there.
        """
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.setblocking(False)
        try:
            while not try_connect(raw, self.socket_path):
                await self.backend.sleep(BUSY_RETRY)  # a full accept queue: the call's timeout bounds this
            check_listener(raw, self.socket_path, self.server_uid)
        except OSError as exc:
            raw.close()
            raise unavailable(self.socket_path, exc) from None
        except BaseException:
            raw.close()
            raise
        return self.backend.wrap(raw)

    async def _exchange(self, link: _Link, method: str, params: dict[str, Any] | None) -> Any:
        msgid, data = link.session.request(method, params)
        link.waiting[msgid] = None
        try:
            await self._send(link, data)
            response = await self._wait_for(link, msgid)
        finally:
            link.waiting.pop(msgid, None)
        try:
            return ClientSession.result(response)
        except RemoteError as exc:
            if breaks_connection(exc):
                self._kill(link, ConnectionLost("the daemon closed the connection after an error"))
            raise

    async def _send(self, link: _Link, data: bytes) -> None:
        async with link.send_lock:
            if link.dead is not None:
                raise _NotDelivered(str(link.dead))
            link.sending += 1
            sent = 0
            try:
                with memoryview(data) as view:
                    while sent < len(view):
                        sent += await self.backend.send(link.sock, view[sent:])
            except OSError as exc:
                # Nothing, or part of a message, reached the daemon: it cannot have run it.
                self._kill(link, ConnectionLost(f"connection to vaultd lost: {exc.strerror or type(exc).__name__}"))
                raise _NotDelivered(str(link.dead)) from None
            except BaseException:
                if sent:  # cancelled part-way: half a message is on the wire, the stream is unusable
                    self._kill(link, ConnectionLost("a request was cut short; the connection was dropped"))
                raise
            finally:
                link.sending -= 1
                self._close_if_unused(link)

    async def _wait_for(self, link: _Link, msgid: int) -> Response:
        while True:
            response = link.waiting.get(msgid)
            if response is not None:
                return response
            if link.dead is not None:
                raise _fresh(link.dead)
            await self._read_or_wait(link)

    async def _read_or_wait(self, link: _Link) -> None:
        """Read once for everyone, or, when another task is reading, wait for it to hand over."""
        if link.reading:
            await self._changed.wait()
            return
        link.reading = True
        try:
            data = await self.backend.receive_some(link.sock)
        except OSError as exc:
            self._kill(link, ConnectionLost(f"connection to vaultd lost: {exc.strerror or type(exc).__name__}"))
            return
        finally:
            link.reading = False
            self._close_if_unused(link)
            self._wake()
        self._take(link, data)

    def _take(self, link: _Link, data: bytes) -> None:
        session = link.session
        try:
            session.receive_data(data)
            while (message := session.next_message()) is not None:
                if isinstance(message, Response):
                    if message.msgid in link.waiting:
                        link.waiting[message.msgid] = message
                    # else: the answer to a call that timed out; nobody waits for it
                else:
                    self._notified(link, message)
        except (ConnectionLost, MalformedResponse) as exc:
            self._kill(link, exc)
        self._wake()

    def _notified(self, link: _Link, message: Notification) -> None:
        event = watch_event(message)  # MalformedResponse: _take drops the connection
        if event is None:
            return
        if self.cache is not None:
            self.cache.apply(event)
        if event.kind == "locked":
            link.subscribed.clear()  # the daemon ended every watch on this connection
            link.lock_epoch += 1
        for watcher in self._watchers:
            if event.kind == "locked" or event.name in watcher.names:
                watcher.deliver(event)

    def _kill(self, link: _Link, why: TransportError) -> None:
        if link.dead is None:
            link.dead = why
            with contextlib.suppress(OSError):
                self.backend.shutdown(link.sock)  # wakes a task reading or writing it
            self._close_if_unused(link)
        if self._link is link:
            self._link = None
        self._wake()

    def _close_if_unused(self, link: _Link) -> None:
        # Closed only once no task waits on it: an event loop must not watch a closed descriptor
        # (whose number the next socket, perhaps an engine's own, may get).
        if link.dead is not None and not link.closed and not link.reading and not link.sending:
            link.closed = True
            self.backend.close(link.sock)

    def _wake(self) -> None:
        changed, self._changed = self._changed, self.backend.event()
        changed.set()

    async def aclose(self) -> None:
        self._closed = True
        for watcher in list(self._watchers):
            watcher.end()
        if self._link is not None:
            self._kill(self._link, ConnectionLost("the client is closed"))

    # -- watching ----------------------------------------------------------------------------

    def add_watcher(self, watcher: AsyncWatch) -> None:
        self._watchers.append(watcher)

    def remove_watcher(self, watcher: AsyncWatch) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    async def subscribe(self, names: Iterable[str]) -> None:
        """Make sure ``names`` are watched on the current connection (connecting if need be).

        Raises:
            Locked, UnknownCredential, ...: the daemon refused the watch.
            DaemonUnavailable, Timeout, ConnectionLost: transport errors.
        """
        link, _ = await self._ensure_link()
        missing = sorted(set(names) - link.subscribed)
        if not missing:
            return
        link.subscribed.update(missing)  # at once: a concurrent watch must not subscribe them twice
        epoch = link.lock_epoch
        try:
            await self.call(Method.TOKEN_WATCH, {"names": missing})
        except BaseException:
            link.subscribed.difference_update(missing)
            raise
        if link.lock_epoch != epoch:  # a lock landed before the answer: the daemon ended this watch
            link.subscribed.difference_update(missing)

    async def wait_for_events(self, watcher: AsyncWatch) -> None:
        """Read (or wait) until ``watcher`` may have something; resubscribe after a reconnect."""
        link = self._link
        if link is None or link.dead is not None or not watcher.names <= link.subscribed:
            try:
                await self.subscribe(watcher.names)
                watcher.backoff.reset()
            except _NOT_YET:
                if self._closed:
                    return
                await self.backend.sleep(watcher.backoff.next_delay())
            return
        if not watcher.pending():
            await self._read_or_wait(link)


class AsyncWatch:
    """``async for event in watch``: renewals of ``names`` as they happen, across reconnects.

    Use it as ``async with client.watch([...]) as watch``: entering subscribes, so a refusal
    (Locked, UnknownCredential) is raised there. The iteration ends after a ``locked`` event
    (the operator locked the vault) or when closed. If the daemon restarts, the watch
    subscribes again by itself, retrying with backoff until the vault is unlocked.
    """

    def __init__(self, core: AsyncCore, names: Iterable[str]) -> None:
        if isinstance(names, str):
            raise TypeError("watch takes a list of credential names, not one string")
        self.names = frozenset(names)
        if not self.names:
            raise ValueError("watch needs at least one credential name")
        self._core = core
        self._queue: deque[WatchEvent] = deque()
        self._ended = False
        self.backoff = Backoff(first=0.05, cap=1.0)
        core.add_watcher(self)

    def deliver(self, event: WatchEvent) -> None:
        if not self._ended:
            self._queue.append(event)

    def pending(self) -> bool:
        return bool(self._queue) or self._ended

    def end(self) -> None:
        self._ended = True
        self._queue.clear()
        self._core.remove_watcher(self)

    async def __aenter__(self) -> AsyncWatch:
        try:
            await self._core.subscribe(self.names)
        except BaseException:
            self.end()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.end()

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        while True:
            if self._queue:
                event = self._queue.popleft()
                if event.kind == "locked":
                    self.end()  # whatever came after it is dropped: the watch is over
                return event
            if self._ended:
                raise StopAsyncIteration
            await self._core.wait_for_events(self)

    def __repr__(self) -> str:
        return f"AsyncWatch(names={sorted(self.names)!r})"


class AsyncClientBase:
    """The methods of :class:`AsyncClient` and :class:`TrioClient`, the same as the sync ``Client``'s.

    ``socket_path`` defaults to ``$VAULTD_SOCKET``, else ``$XDG_RUNTIME_DIR/vaultd/vaultd.sock``;
    ``timeout`` bounds every call (``slow_timeout`` those that run the passphrase KDF);
    ``cache`` keeps tokens in process until ``cache_margin`` seconds before they expire;
    ``server_uid`` is the uid the daemon must run as (default: this process's own).
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
        token_cache = TokenCache(margin=cache_margin) if cache else None
        path = resolve_path(socket_path)
        self._core = AsyncCore(self._backend(), path, timeout, slow_timeout, token_cache, server_uid)

    @staticmethod
    def _backend() -> Backend:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def socket_path(self) -> str:
        return self._core.socket_path

    async def token(self, name: str, min_ttl: float = 0) -> Token:
        """A token for credential ``name`` valid for at least ``min_ttl`` more seconds.

        A fresh token from the in-process cache is answered without touching the socket.

        Raises:
            Locked, UnknownCredential, TokenExpired, ...: the daemon's errors.
            DaemonUnavailable, Timeout, ConnectionLost: transport errors.
        """
        cache = self._core.cache
        if cache is None:
            return Token.from_result(name, await self._core.call(Method.TOKEN_GET, token_params(name, min_ttl)))
        if min_ttl >= 0 and (cached := cache.get(name, min_ttl)) is not None:
            return cached
        generation = cache.generation
        token = Token.from_result(name, await self._core.call(Method.TOKEN_GET, token_params(name, min_ttl)))
        cache.put(token, generation)  # unless a lock, expiry or renewal was seen meanwhile
        return token

    async def sign(
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

        ``schemes``: sign only if the credential's scheme is one of these names, else InvalidParams
        (nothing signed, no nonce taken). See :meth:`vaultd_client.Client.sign`.
        """
        params = sign_params(name, method, url, body, timestamp, nonce, options, schemes)
        return Signed.from_result(await self._core.call(Method.TOKEN_SIGN, params))

    async def sign_many(self, requests: Iterable[Mapping[str, Any]]) -> list[Signed | RemoteError]:
        """Have the daemon sign many requests in one call (``token.sign_many``): an order burst.

        Each item of the answer is the request's :class:`Signed` or the error the daemon refused
        that request with, returned, not raised. See :meth:`vaultd_client.Client.sign_many`.
        """
        params = sign_many_params(requests)
        if not params["requests"]:
            return []
        return signed_many(await self._core.call(Method.TOKEN_SIGN_MANY, params), len(params["requests"]))

    async def status(self) -> dict[str, Any]:
        """The daemon's state and each credential's public description (never a secret)."""
        result: dict[str, Any] = await self._core.call(Method.STATUS)
        return result

    async def hello(self, client: str = "vaultd_client") -> dict[str, Any]:
        """Protocol and server version, vault state, and the identity the daemon saw."""
        result: dict[str, Any] = await self._core.call(Method.HELLO, hello_params(client))
        return result

    async def lock(self) -> dict[str, Any]:
        """Lock the vault now: every token method answers Locked until an unlock (this client's
        cache is emptied too)."""
        try:
            result: dict[str, Any] = await self._core.call(Method.VAULT_LOCK)
        finally:  # also when the answer was lost: the lock may have happened
            if self._core.cache is not None:
                self._core.cache.clear()
        return result

    async def unlock(self, passphrase: str, *, accept_rollback: bool = False) -> dict[str, Any]:
        """Unlock the vault. Raises BadPassphrase (after a growing delay) if it is wrong, and
        Rollback if the file is older than one written before, unless ``accept_rollback``."""
        core = self._core
        params: dict[str, Any] = {"passphrase": passphrase}
        if accept_rollback:
            params["accept_rollback"] = True
        result: dict[str, Any] = await core.call(Method.VAULT_UNLOCK, params, core.slow_timeout)
        return result

    def watch(self, names: Iterable[str]) -> AsyncWatch:
        """Follow renewals: ``async with client.watch(["a"]) as watch: async for event in watch``.

        Events also refresh this client's token cache.
        """
        return AsyncWatch(self._core, names)

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the same per-call timeout as the sync client's
    ) -> Any:
        """Send one request and return its result (any method, for tools)."""
        return await self._core.call(method, params, timeout)

    async def aclose(self) -> None:
        """Close the connection; watches end. The client may not be used afterwards."""
        await self._core.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(socket_path={self.socket_path!r})"


def _fresh(exc: TransportError) -> TransportError:
    """A new exception like ``exc``, for one more waiter: a shared one would carry every
    waiter's traceback (and the locals in it, a passphrase among them) to each of the others."""
    return type(exc)(str(exc))
