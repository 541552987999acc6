"""Following renewals from the sync client: a blocking iterator over one dedicated connection."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from vaultd_protocol import Method, Notification, Notify, Response

from ._session import ClientSession
from ._types import Token
from .errors import ConnectionLost, Timeout

__all__ = ["Watch", "WatchEvent"]

_KINDS = {Notify.TOKEN_UPDATED: "updated", Notify.TOKEN_EXPIRED: "expired", Notify.VAULT_LOCKED: "locked"}


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """``kind`` is ``updated`` (``token`` holds the new token), ``expired`` or ``locked``
    (the vault was locked: the watch ends after this event)."""

    kind: str
    name: str | None = None
    token: Token | None = None


class Watch:
    """Iterate for events; the iteration ends after ``locked`` or when closed."""

    def __init__(self, socket_path: str, names: list[str], *, connect_timeout: float, timeout: float | None) -> None:
        from ._sync import connect_unix  # noqa: PLC0415 - the two modules refer to each other

        self.names = names
        self._timeout = timeout
        self._session = ClientSession()
        self._sock: socket.socket | None = connect_unix(socket_path, connect_timeout)
        self._ended = False
        msgid, data = self._session.request(Method.TOKEN_WATCH, {"names": names})
        try:
            self._sock.sendall(data)
            while True:
                message = self._next_message()
                if isinstance(message, Response) and message.msgid == msgid:
                    ClientSession.result(message)  # raises Locked, UnknownCredential, ...
                    break
        except BaseException:
            self.close()
            raise
        self._sock.settimeout(timeout)

    def __iter__(self) -> Iterator[WatchEvent]:
        return self

    def __next__(self) -> WatchEvent:
        if self._ended or self._sock is None:
            raise StopIteration
        while True:
            message = self._next_message()
            if isinstance(message, Notification) and message.method in _KINDS:
                event = _event(message)
                if event.kind == "locked":
                    self.close()
                return event

    def _next_message(self) -> Response | Notification:
        assert self._sock is not None
        while True:
            message = self._session.next_message()
            if message is not None:
                return message
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                raise Timeout(f"no watch event within {self._timeout} s") from None
            except OSError as exc:
                raise ConnectionLost(f"connection to vaultd lost: {exc.strerror}") from None
            self._session.receive_data(data)

    def close(self) -> None:
        self._ended = True
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _event(message: Notification) -> WatchEvent:
    params: dict[str, Any] = message.params[0] if message.params and isinstance(message.params[0], dict) else {}
    kind = _KINDS[Notify(message.method)]
    name = params.get("name")
    token = Token.from_result(name, params) if kind == "updated" and isinstance(name, str) else None
    return WatchEvent(kind, name if isinstance(name, str) else None, token)
