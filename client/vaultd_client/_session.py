"""The client's sans-IO session: request ids, pending calls, and turning answers into results.

Drivers (sync today; asyncio and trio next) own the socket and call this for everything
else, so they all number requests, match answers and raise errors the same way.
"""

from __future__ import annotations

import itertools
from typing import Any

from vaultd_protocol import (
    MAX_MSGID,
    NEED_DATA,
    Connection,
    ConnectionClosed,
    Limits,
    Notification,
    RemoteProtocolError,
    Request,
    Response,
    Role,
)

from .errors import ConnectionLost, MalformedResponse, error_from_info

__all__ = ["RESPONSE_LIMITS", "ClientSession"]


#: Answers can be far larger than requests (``status`` with thousands of credentials), and
#: come from the daemon, not from a stranger: a generous but finite bound.
RESPONSE_LIMITS = Limits(max_message_size=64 * 1024 * 1024, max_depth=32)


class ClientSession:
    """One connection's worth of protocol state, without the connection."""

    def __init__(self, limits: Limits | None = None) -> None:
        self._conn = Connection(Role.CLIENT, limits or RESPONSE_LIMITS)
        self._ids = itertools.count()

    def request(self, method: str, params: dict[str, Any] | None = None) -> tuple[int, bytes]:
        """Return a fresh request id and the bytes to send for this call."""
        msgid = next(self._ids) % (MAX_MSGID + 1)
        data = self._conn.send(Request(msgid, method, [params or {}]))
        return msgid, data

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the socket (``b""`` when it closed)."""
        self._conn.receive_data(data)

    def next_message(self) -> Response | Notification | None:
        """The next response or notification, or None when more bytes are needed.

        Raises:
            ConnectionLost: the daemon closed the connection.
            MalformedResponse: the daemon sent something that is not valid protocol.
        """
        try:
            event = self._conn.next_event()
        except RemoteProtocolError as exc:
            raise MalformedResponse(f"the daemon sent an invalid message: {exc}") from None
        if event is NEED_DATA:
            return None
        if isinstance(event, ConnectionClosed):
            raise ConnectionLost("the daemon closed the connection")
        if isinstance(event, (Response, Notification)):
            return event
        raise MalformedResponse("the daemon sent a request")  # pragma: no cover - Connection refuses it

    @staticmethod
    def result(response: Response) -> Any:
        """The call's result.

        Raises:
            RemoteError: the subclass for the daemon's error code.
        """
        if response.error is not None:
            raise error_from_info(response.error)
        return response.result
