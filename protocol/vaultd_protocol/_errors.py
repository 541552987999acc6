"""Error codes shared by daemon and clients, and the protocol-violation exceptions.

Two separate trees, as in h11:

* :class:`ErrorCode` and :class:`ErrorInfo` are *application* errors: the daemon answers
  them inside a MessagePack-RPC response, and clients rebuild one exception class per code.
* :class:`LocalProtocolError` (we misused this library) and :class:`RemoteProtocolError`
  (the peer sent something that is not valid protocol) are raised by the sans-IO connection.
"""

from __future__ import annotations

import enum

from ._value import Value, assign

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an engine ~7 ms of import: annotations only
    from typing import Any

__all__ = [
    "ErrorCode",
    "ErrorInfo",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
]


class ErrorCode(enum.IntEnum):
    """Stable integer error codes. Never renumber: clients in other languages key on them."""

    PROTOCOL_ERROR = 1
    TOO_LARGE = 2
    UNKNOWN_METHOD = 3
    INVALID_PARAMS = 4
    INTERNAL = 5
    UNSUPPORTED_PROTOCOL = 6
    BUSY = 7

    NOT_INITIALIZED = 10
    ALREADY_INITIALIZED = 11
    LOCKED = 12
    BAD_PASSPHRASE = 13
    FORBIDDEN = 14
    VAULT_DAMAGED = 15
    STORAGE_FAILED = 16
    ROLLBACK = 17

    UNKNOWN_CREDENTIAL = 20
    TOKEN_EXPIRED = 21
    RENEWAL_FAILED = 22
    NEEDS_REAUTH = 23
    ALREADY_EXISTS = 24
    PULLED = 25
    UPSTREAM_UNAVAILABLE = 26
    ON_HOLD = 27


class ErrorInfo(Value):
    """The ``error`` member of a response: ``{code, name, message}`` on the wire.

    ``code`` stays an ``int`` so that a client can carry a code it does not know yet.
    """

    __slots__ = __match_args__ = ("code", "name", "message")
    code: int
    name: str
    message: str

    def __init__(self, code: int, name: str, message: str) -> None:
        assign(self, "code", code)
        assign(self, "name", name)
        assign(self, "message", message)

    @classmethod
    def of(cls, code: ErrorCode, message: str) -> ErrorInfo:
        return cls(int(code), code.name, message)

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "message": self.message}

    @classmethod
    def from_wire(cls, obj: object) -> ErrorInfo:
        """Parse the wire form.

        Raises:
            RemoteProtocolError: ``obj`` is not a map with an integer ``code``.
        """
        if not isinstance(obj, dict) or not isinstance(obj.get("code"), int) or isinstance(obj.get("code"), bool):
            raise RemoteProtocolError("response error is not a map with an integer 'code'")
        code: int = obj["code"]
        name = obj.get("name")
        message = obj.get("message")
        if not isinstance(name, str):
            try:
                name = ErrorCode(code).name
            except ValueError:
                name = f"ERROR_{code}"
        return cls(code, name, message if isinstance(message, str) else "")


class ProtocolError(Exception):
    """Base of the two protocol-violation exceptions."""

    def __init__(
        self,
        message: str,
        code: ErrorCode = ErrorCode.PROTOCOL_ERROR,
        msgid: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        #: The request id the offending message carried, when it could be recovered, so
        #: that a server can answer before it closes the connection.
        self.msgid = msgid

    def to_error_info(self) -> ErrorInfo:
        return ErrorInfo.of(self.code, str(self))


class LocalProtocolError(ProtocolError):
    """This side tried to do something the protocol does not allow (a bug in the caller)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not a valid message. The connection is unusable after it."""
