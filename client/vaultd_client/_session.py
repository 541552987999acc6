"""The client's sans-IO session: request ids, answers, errors, and what every driver shares.

Drivers (sync, asyncio, trio) own the socket and the waiting; everything else lives here so
that they number requests, match answers, raise errors, build params, read watch events and
back off between reconnects the same way.
"""

from __future__ import annotations

import itertools
import random

from vaultd_protocol import (
    MAX_MSGID,
    NEED_DATA,
    PROTOCOL_VERSION,
    Connection,
    ConnectionClosed,
    ErrorInfo,
    Limits,
    Method,
    Notification,
    Notify,
    RemoteProtocolError,
    Request,
    Response,
    Role,
)

from ._types import Signed, Token, WatchEvent
from .errors import ConnectionLost, MalformedResponse, ProtocolError, RemoteError, TooLarge, error_from_info

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an engine ~7 ms of import: annotations only
    from collections.abc import Iterable, Mapping
    from typing import Any

__all__ = [
    "RESPONSE_LIMITS",
    "RETRY_SAFE",
    "Backoff",
    "ClientSession",
    "breaks_connection",
    "hello_params",
    "sign_many_params",
    "sign_params",
    "signed_many",
    "token_params",
    "watch_event",
]


#: Answers can be far larger than requests (``status`` with thousands of credentials), and
#: come from the daemon, not from a stranger: a generous but finite bound.
RESPONSE_LIMITS = Limits(max_message_size=64 * 1024 * 1024, max_depth=32)

#: Calls that may be sent again on a fresh connection when the old one turned out dead.
RETRY_SAFE = frozenset({Method.HELLO, Method.STATUS, Method.TOKEN_GET, Method.VAULT_LOCK})

_WATCH_KINDS = {Notify.TOKEN_UPDATED: "updated", Notify.TOKEN_EXPIRED: "expired", Notify.VAULT_LOCKED: "locked"}


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
            MalformedResponse: the daemon sent something that is not valid protocol (garbage,
                or an answer to a request this connection never sent).
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


def breaks_connection(exc: BaseException) -> bool:
    """Whether the daemon closes the connection after answering with this error."""
    return isinstance(exc, (TooLarge, ProtocolError))


def token_params(name: str, min_ttl: float) -> dict[str, Any]:
    return {"name": name, "min_ttl": min_ttl}


def hello_params(client: str) -> dict[str, Any]:
    return {"protocol": PROTOCOL_VERSION, "client": client}


def sign_params(  # noqa: PLR0917 - the fields of one token.sign request
    name: str,
    method: str,
    url: str,
    body: bytes | str,
    timestamp: int | None,
    nonce: int | None,
    options: dict[str, str] | None,
    schemes: Iterable[str] | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "method": method, "url": url, "body": body}
    if timestamp is not None:
        params["timestamp"] = timestamp
    if nonce is not None:
        params["nonce"] = nonce
    if options:
        params["options"] = options
    if schemes is not None:
        if isinstance(schemes, str):
            raise TypeError("schemes must be a list of scheme names (one name: [name])")
        params["schemes"] = list(schemes)
    return params


#: The keys one request of ``sign_many`` may have: ``sign``'s arguments.
_SIGN_KEYS = frozenset({"name", "method", "url", "body", "timestamp", "nonce", "options", "schemes"})


def sign_many_params(requests: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``token.sign_many``'s params from dicts with ``sign``'s argument names.

    Raises:
        TypeError: a request that is not a mapping, lacks ``name``, ``method`` or ``url``, or
            has a key ``sign`` does not take.
    """
    if isinstance(requests, (str, bytes)) or hasattr(requests, "keys"):
        raise TypeError("sign_many takes a list of requests (dicts with sign's argument names), not one request")
    built = []
    for position, request in enumerate(requests):
        if not hasattr(request, "keys"):
            raise TypeError(f"sign_many: request {position} is not a dict")
        unknown = sorted(set(request) - _SIGN_KEYS)
        if unknown or not {"name", "method", "url"} <= set(request):
            raise TypeError(
                f"sign_many: request {position} must have name, method and url, and may have body, timestamp, "
                f"nonce, options and schemes" + (f" (not {unknown[0]!r})" if unknown else "")
            )
        built.append(
            sign_params(
                request["name"],
                request["method"],
                request["url"],
                request.get("body", b""),
                request.get("timestamp"),
                request.get("nonce"),
                request.get("options"),
                request.get("schemes"),
            )
        )
    return {"requests": built}


def signed_many(result: Any, count: int) -> list[Signed | RemoteError]:
    """Each request's answer, in order: its :class:`Signed`, or the error instance it got.

    Raises:
        MalformedResponse: not ``count`` answers, or one that is neither kind.
    """
    results = result.get("results") if isinstance(result, dict) else None
    if not isinstance(results, list) or len(results) != count:
        raise MalformedResponse(f"the daemon answered sign_many without one result per request ({count})")
    answers: list[Signed | RemoteError] = []
    for item in results:
        if isinstance(item, dict) and "error" in item:
            try:
                answers.append(error_from_info(ErrorInfo.from_wire(item["error"])))
            except RemoteProtocolError:
                raise MalformedResponse("the daemon answered sign_many with a malformed error") from None
        else:
            answers.append(Signed.from_result(item))
    return answers


def watch_event(message: Notification) -> WatchEvent | None:
    """The watch event a notification carries, or None for one this client does not know."""
    try:
        kind = _WATCH_KINDS[Notify(message.method)]
    except ValueError:
        return None
    params: dict[str, Any] = message.params[0] if message.params and isinstance(message.params[0], dict) else {}
    name = params.get("name")
    # A signing credential's update (a new version from its upstream) carries no token.
    carries_token = kind == "updated" and "token" in params
    token = Token.from_result(name, params) if carries_token and isinstance(name, str) else None
    return WatchEvent(kind, name if isinstance(name, str) else None, token)


class Backoff:
    """Delays between reconnect attempts: from ``first`` doubling to ``cap``, with jitter."""

    def __init__(self, first: float = 0.05, cap: float = 2.0) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay * random.uniform(0.75, 1.0)  # noqa: S311 - jitter, not a secret

    def reset(self) -> None:
        self._next = self.first
