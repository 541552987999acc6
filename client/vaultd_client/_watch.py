"""Following renewals from the sync client: a blocking iterator over one dedicated connection.

If the connection breaks (the daemon restarted), the watch connects and subscribes again by
itself, backing off while the daemon is down or still locked, so the caller simply keeps
iterating.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections import deque
from collections.abc import Iterator

from vaultd_protocol import Method, Notification, Response

from ._cache import TokenCache
from ._session import Backoff, ClientSession, watch_event
from ._types import WatchEvent
from ._unix import RECEIVE_SIZE, connect_unix
from .errors import ConnectionLost, Locked, MalformedResponse, NotInitialized, Timeout, TransportError

__all__ = ["Watch", "WatchEvent"]

#: While resubscribing, these mean "not yet": the daemon is down, restarting, or still locked.
_NOT_YET = (TransportError, Locked, NotInitialized)


class Watch:
    """Iterate for events; the iteration ends after ``locked`` or when closed.

    ``timeout`` (seconds without an event) raises :class:`Timeout` from the iteration;
    None waits for ever.
    """

    def __init__(
        self,
        socket_path: str,
        names: list[str],
        *,
        connect_timeout: float,
        timeout: float | None,
        cache: TokenCache | None = None,
        server_uid: int | None = None,
    ) -> None:
        if not names:
            raise ValueError("watch needs at least one credential name")
        self.names = names
        self._socket_path = socket_path
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._cache = cache
        self._server_uid = server_uid
        self._backoff = Backoff(first=0.05, cap=1.0)
        self._ended = False
        self._sock: socket.socket | None = None
        self._session = ClientSession()
        #: Events that arrived before the answer to ``token.watch`` (a lock can overtake it).
        self._early: deque[WatchEvent] = deque()
        self._subscribe()  # a refusal (Locked, UnknownCredential, no daemon) is raised here

    def __iter__(self) -> Iterator[WatchEvent]:
        return self

    def __next__(self) -> WatchEvent:
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while not self._ended:
            if self._early:
                return self._deliver(self._early.popleft())
            if self._sock is None:
                self._resubscribe(deadline)
                continue
            try:
                message = self._next_message(deadline)
                event = watch_event(message) if isinstance(message, Notification) else None
            except (ConnectionLost, MalformedResponse):
                self._drop()  # the daemon went away (or spoke nonsense): subscribe again next turn
                continue
            if event is not None and not self._ended:
                return self._deliver(event)
        raise StopIteration

    def _deliver(self, event: WatchEvent) -> WatchEvent:
        if self._cache is not None:
            self._cache.apply(event)
        if event.kind == "locked":
            self.close()
        return event

    def _subscribe(self) -> None:
        sock = connect_unix(self._socket_path, self._connect_timeout, self._server_uid)
        session = ClientSession()
        msgid, data = session.request(Method.TOKEN_WATCH, {"names": self.names})
        self._sock, self._session = sock, session
        try:
            sock.sendall(data)
            while True:
                message = self._next_message(time.monotonic() + self._connect_timeout)
                if isinstance(message, Response) and message.msgid == msgid:
                    ClientSession.result(message)  # raises Locked, UnknownCredential, ...
                    return
                if isinstance(message, Notification) and (event := watch_event(message)) is not None:
                    self._early.append(event)
        except BaseException:
            self._drop()
            raise

    def _resubscribe(self, deadline: float | None) -> None:
        try:
            self._subscribe()
            self._backoff.reset()
        except _NOT_YET:
            delay = self._backoff.next_delay()
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise Timeout(f"no watch event within {self._timeout} s (vaultd unreachable or locked)") from None
            time.sleep(delay)

    def _next_message(self, deadline: float | None) -> Response | Notification:
        while True:
            message = self._session.next_message()
            if message is not None:
                return message
            sock = self._sock
            if sock is None:
                raise ConnectionLost("the watch is closed")
            sock.settimeout(None if deadline is None else max(deadline - time.monotonic(), 0.001))
            try:
                data = sock.recv(RECEIVE_SIZE)
            except TimeoutError:
                raise Timeout(f"no watch event within {self._timeout} s") from None
            except OSError as exc:
                raise ConnectionLost(f"connection to vaultd lost: {exc.strerror}") from None
            self._session.receive_data(data)

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked reading it
            sock.close()

    def close(self) -> None:
        """End the watch; safe to call from another thread (the iterating one then stops)."""
        self._ended = True
        self._early.clear()
        self._drop()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Watch(names={self.names!r})"
