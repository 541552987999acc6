"""The sans-IO MessagePack-RPC connection: bytes in, typed events out, events in, bytes out.

One :class:`Connection` per transport connection, in the role of client or server. It
knows the wire tuples; nothing else in vaultd does. It tracks which request ids await an
answer, so that a response to a request nobody made is caught on either side.
"""

from __future__ import annotations

import enum

import msgpack

from ._errors import ErrorCode, ErrorInfo, LocalProtocolError, RemoteProtocolError
from ._events import (
    NEED_DATA,
    ConnectionClosed,
    Event,
    MessageType,
    NeedData,
    Notification,
    Request,
    Response,
)
from ._framing import FrameScanner, decode_whole, peek_msgid
from ._limits import DEFAULT_LIMITS, Limits

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an engine ~7 ms of import: annotations only
    from typing import Any

__all__ = ["MAX_MSGID", "Connection", "Role", "encode", "error_response"]

MAX_MSGID = 2**32 - 1
_PEEK_BYTES = 16


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


def encode(event: Request | Response | Notification) -> bytes:
    """Encode one event to its wire bytes (no state checks: see :meth:`Connection.send`)."""
    return msgpack.packb(_wire(event), use_bin_type=True)  # type: ignore[no-any-return]


def _wire(event: Request | Response | Notification) -> list[Any]:
    if isinstance(event, Request):
        return [MessageType.REQUEST, event.msgid, event.method, event.params]
    if isinstance(event, Response):
        error = None if event.error is None else event.error.to_wire()
        return [MessageType.RESPONSE, event.msgid, error, event.result]
    return [MessageType.NOTIFICATION, event.method, event.params]


class Connection:
    """State of one side of one connection.

    Feed received bytes with :meth:`receive_data` (``b""`` once the peer closed), then call
    :meth:`next_event` until it returns :data:`NEED_DATA`. Turn events into bytes with
    :meth:`send`. After :meth:`next_event` has raised :class:`RemoteProtocolError` the
    connection is broken: it raises the same error again, and only the answer to the
    offending request (its ``msgid`` is on the exception) may still be sent.
    """

    def __init__(self, role: Role, limits: Limits = DEFAULT_LIMITS) -> None:
        self.role = role
        self.limits = limits
        self._buf = bytearray()
        self._start = 0
        self._scanner = FrameScanner(limits)
        #: Whether the current message was found incomplete once: scan it, do not retry decoding.
        self._scanning = False
        self._eof = False
        self._error: RemoteProtocolError | None = None
        # One packer per connection (a connection is used by one task or thread at a time):
        # msgpack.packb would build a Packer for every message.
        self._pack = msgpack.Packer(use_bin_type=True).pack
        # Server: requests received and not answered yet. Client: requests sent.
        self._in_flight: set[int] = set()

    @property
    def in_flight(self) -> frozenset[int]:
        """Request ids that await a response (received ones on a server, sent on a client)."""
        return frozenset(self._in_flight)

    @property
    def broken(self) -> bool:
        return self._error is not None

    @property
    def mid_message(self) -> bool:
        """Whether part of a message has arrived and the rest has not (for frame timeouts)."""
        return self._start < len(self._buf)

    def receive_data(self, data: bytes | bytearray) -> None:
        """Add bytes that arrived; ``b""`` means the peer closed its side.

        Raises:
            LocalProtocolError: bytes arrived after end of stream.
        """
        if self._eof:
            raise LocalProtocolError("receive_data after end of stream")
        if not data:
            self._eof = True
            return
        if self._start and self._start == len(self._buf):
            self._buf.clear()
            self._start = 0
        self._buf += data

    def next_event(self) -> Event | NeedData:
        """Return the next whole event, or :data:`NEED_DATA`.

        Raises:
            RemoteProtocolError: the peer sent an invalid or over-limit message, or closed
                in the middle of one.
        """
        if self._error is not None:
            raise self._error
        if not self._scanning and self._start < len(self._buf):
            whole = decode_whole(self._buf, self._start, self.limits)
            if whole is not None:
                obj, size = whole
                self._consumed(size)
                return self._to_event_from(obj)
            self._scanning = True  # incomplete (or refused): the scanner takes this message
        try:
            length = self._scanner.scan(self._buf, self._start)
        except RemoteProtocolError as exc:
            raise self._fail(exc, peek_msgid(self._head())) from None
        if length is None:
            if self._eof:
                if self._start < len(self._buf):
                    raise self._fail(RemoteProtocolError("connection closed in the middle of a message"))
                return ConnectionClosed()
            return NEED_DATA
        frame = bytes(self._buf[self._start : self._start + length])
        self._consumed(length)
        return self._to_event(frame)

    def send(self, event: Request | Response | Notification) -> bytes:
        """Return the bytes for ``event`` after checking it is allowed now.

        Raises:
            LocalProtocolError: a request from a server, a response to an id that is not
                awaiting one, a duplicate request id, or an id out of range.
        """
        if isinstance(event, Response):
            self._answering(event.msgid)
        elif isinstance(event, Request):
            if self.role is not Role.CLIENT:
                raise LocalProtocolError("only a client sends requests")
            if not 0 <= event.msgid <= MAX_MSGID:
                raise LocalProtocolError("msgid out of the 32-bit range")
            if event.msgid in self._in_flight:
                raise LocalProtocolError(f"msgid {event.msgid} is already in flight")
            self._in_flight.add(event.msgid)
        elif self._error is not None:
            raise LocalProtocolError("connection is broken")
        return self._pack(_wire(event))  # type: ignore[no-any-return]

    def send_result(self, msgid: int, result: Any) -> bytes:
        """``send(Response(msgid, None, result))`` without building the Response: a server's
        hot path, for an answer that is not an error. The same checks apply.

        Raises:
            LocalProtocolError: not a server, or no request ``msgid`` awaits a response.
        """
        self._answering(msgid)
        return self._pack([MessageType.RESPONSE, msgid, None, result])  # type: ignore[no-any-return]

    def _answering(self, msgid: int) -> None:
        """Check that a response to ``msgid`` may go now, and mark the request answered."""
        if self.role is not Role.SERVER:
            raise LocalProtocolError("only a server sends responses")
        if msgid not in self._in_flight:
            if self._error is None or msgid != self._error.msgid:
                raise LocalProtocolError(f"no request {msgid} awaits a response")
        else:
            self._in_flight.remove(msgid)

    # -- internals ---------------------------------------------------------------------

    def _head(self) -> bytes:
        return bytes(self._buf[self._start : self._start + _PEEK_BYTES])

    def _fail(self, exc: RemoteProtocolError, msgid: int | None = None) -> RemoteProtocolError:
        if msgid is not None and self.role is Role.SERVER and msgid not in self._in_flight:
            exc.msgid = msgid
        self._error = exc
        return exc

    def _consumed(self, length: int) -> None:
        self._start += length
        self._scanner.reset()
        self._scanning = False
        if self._start > 4096 and self._start * 2 > len(self._buf):
            del self._buf[: self._start]
            self._start = 0

    def _to_event(self, frame: bytes) -> Event:
        try:
            obj = msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True)
        except (msgpack.UnpackException, ValueError) as exc:
            raise self._fail(
                RemoteProtocolError(f"undecodable MessagePack: {type(exc).__name__}"),
                peek_msgid(frame[:_PEEK_BYTES]),
            ) from None
        return self._to_event_from(obj)

    def _to_event_from(self, obj: Any) -> Event:
        # Exact type tests: msgpack builds exact lists and ints (and a bool is not a type).
        kind = obj[0] if type(obj) is list and obj else None
        if type(kind) is not int:
            raise self._fail(RemoteProtocolError("a message must be an array starting with its type"))
        if kind == MessageType.REQUEST:
            return self._request(obj)
        if kind == MessageType.RESPONSE:
            return self._response(obj)
        if kind == MessageType.NOTIFICATION:
            return self._notification(obj)
        raise self._fail(RemoteProtocolError(f"unknown message type {kind}"))

    def _request(self, obj: list[Any]) -> Request:
        msgid = obj[1] if len(obj) > 1 else None
        if type(msgid) is not int or not 0 <= msgid <= MAX_MSGID:
            raise self._fail(RemoteProtocolError("request msgid must be an unsigned 32-bit integer"))
        if self.role is not Role.SERVER:
            raise self._fail(RemoteProtocolError("a server sent a request"))
        if len(obj) != 4:
            # No answer (SPEC.md 3.1): only a 4-element array starting [0, msgid] is answered.
            raise self._fail(RemoteProtocolError("a request has 4 elements"))
        method = obj[2]
        if not isinstance(method, str):
            method = self._bin_method(method, "request method must be a string", msgid)
        if not isinstance(obj[3], list):
            raise self._fail(RemoteProtocolError("request params must be an array"), msgid)
        if msgid in self._in_flight:
            # Answering would be ambiguous: the first request with this id is still pending.
            raise self._fail(RemoteProtocolError(f"msgid {msgid} is already in flight"))
        self._in_flight.add(msgid)
        return Request(msgid, method, obj[3])

    def _response(self, obj: list[Any]) -> Response:
        if self.role is not Role.CLIENT:
            raise self._fail(RemoteProtocolError("a client sent a response"))
        if len(obj) != 4 or not _is_msgid(obj[1]):
            raise self._fail(RemoteProtocolError("a response is [1, msgid, error, result]"))
        msgid: int = obj[1]
        if msgid not in self._in_flight:
            raise self._fail(RemoteProtocolError(f"response to unknown msgid {msgid}"))
        try:
            error = None if obj[2] is None else ErrorInfo.from_wire(obj[2])
        except RemoteProtocolError as exc:
            raise self._fail(exc) from None
        self._in_flight.discard(msgid)
        return Response(msgid, error, obj[3])

    def _notification(self, obj: list[Any]) -> Notification:
        if len(obj) != 3 or not isinstance(obj[2], list):
            raise self._fail(RemoteProtocolError("a notification is [2, method, params]"))
        method = obj[1]
        if not isinstance(method, str):
            method = self._bin_method(method, "a notification is [2, method, params]")
        return Notification(method, obj[2])

    def _bin_method(self, value: Any, message: str, msgid: int | None = None) -> str:
        """A method name sent as bin, as MessagePack-RPC clients from before msgpack's str/bin
        split do (neovim's among them): its text, if it is UTF-8. Off the str path on purpose.

        Raises:
            RemoteProtocolError: ``value`` is not bin, or not UTF-8 (``message`` or a UTF-8 one).
        """
        if type(value) is not bytes:
            raise self._fail(RemoteProtocolError(message), msgid)
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise self._fail(RemoteProtocolError("method name is bin but not valid UTF-8"), msgid) from None


def _is_msgid(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_MSGID


def error_response(msgid: int, code: ErrorCode, message: str) -> Response:
    """Build the response that answers request ``msgid`` with an error."""
    return Response(msgid, ErrorInfo.of(code, message), None)
