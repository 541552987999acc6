"""Typed events of the MessagePack-RPC connection: what the codec yields and accepts."""

from __future__ import annotations

import enum

from ._errors import ErrorInfo
from ._value import Value, assign

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an engine ~7 ms of import: annotations only
    from typing import Any, Final

__all__ = [
    "NEED_DATA",
    "ConnectionClosed",
    "Event",
    "MessageType",
    "NeedData",
    "Notification",
    "Request",
    "Response",
]


class MessageType(enum.IntEnum):
    """The first element of every MessagePack-RPC message."""

    REQUEST = 0
    RESPONSE = 1
    NOTIFICATION = 2


class Request(Value):
    """``[0, msgid, method, params]``. ``params`` is the raw array; see ``parse_params``."""

    __slots__ = __match_args__ = ("msgid", "method", "params")
    msgid: int
    method: str
    params: list[Any]

    def __init__(self, msgid: int, method: str, params: list[Any]) -> None:
        assign(self, "msgid", msgid)
        assign(self, "method", method)
        assign(self, "params", params)

    def __repr__(self) -> str:
        # Admin params carry a passphrase: never print them.
        return f"Request(msgid={self.msgid}, method={self.method!r}, params=<{len(self.params)}>)"


class Response(Value):
    """``[1, msgid, error, result]``: exactly one of ``error`` and ``result`` is meaningful."""

    __slots__ = __match_args__ = ("msgid", "error", "result")
    msgid: int
    error: ErrorInfo | None
    result: Any

    def __init__(self, msgid: int, error: ErrorInfo | None, result: Any) -> None:
        assign(self, "msgid", msgid)
        assign(self, "error", error)
        assign(self, "result", result)

    def __repr__(self) -> str:
        # A result may hold a token: never print it.
        return f"Response(msgid={self.msgid}, error={self.error!r}, result=<...>)"


class Notification(Value):
    """``[2, method, params]``: never answered."""

    __slots__ = __match_args__ = ("method", "params")
    method: str
    params: list[Any]

    def __init__(self, method: str, params: list[Any]) -> None:
        assign(self, "method", method)
        assign(self, "params", params)

    def __repr__(self) -> str:
        return f"Notification(method={self.method!r}, params=<{len(self.params)}>)"


class ConnectionClosed(Value):
    """The peer closed its side cleanly, between messages."""

    __slots__ = ()


class NeedData:
    """Sentinel type: feed more bytes with ``receive_data`` before asking again."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()

Event = Request | Response | Notification | ConnectionClosed
