"""Finds where one MessagePack object ends in a byte stream, enforcing limits as it goes.

MessagePack has no length prefix, and msgpack's streaming ``Unpacker`` only notices an
announced 4 GiB string once 64 KiB have actually arrived. This scanner reads the type
headers alone, resumably, so that an oversized announcement or a too-deep nesting is
refused as soon as its header arrives, before any payload is buffered or decoded. The
bytes of a complete frame are then decoded by msgpack's C unpacker in one call.
"""

from __future__ import annotations

import msgpack

from ._errors import ErrorCode, RemoteProtocolError
from ._limits import Limits

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an engine ~7 ms of import: annotations only
    from typing import Any

__all__ = ["FrameScanner", "decode_whole", "peek_msgid"]

# For every first byte: (header length, bytes of length field, fixed payload, container
# multiplier). A length field, when present, starts at offset 1 and is big-endian; the
# container multiplier is 1 for arrays, 2 for maps (keys and values), 0 otherwise.
_Spec = tuple[int, int, int, int]


def _build_table() -> list[_Spec | None]:
    table: list[_Spec | None] = [None] * 256
    for b in range(0x00, 0x80):
        table[b] = (1, 0, 0, 0)  # positive fixint
    for b in range(0x80, 0x90):
        table[b] = (1, 0, 0, 2)  # fixmap: count in the low nibble
    for b in range(0x90, 0xA0):
        table[b] = (1, 0, 0, 1)  # fixarray
    for b in range(0xA0, 0xC0):
        table[b] = (1, 0, b & 0x1F, 0)  # fixstr
    for b in range(0xE0, 0x100):
        table[b] = (1, 0, 0, 0)  # negative fixint
    table[0xC0] = table[0xC2] = table[0xC3] = (1, 0, 0, 0)  # nil, false, true
    table[0xC4], table[0xC5], table[0xC6] = (2, 1, 0, 0), (3, 2, 0, 0), (5, 4, 0, 0)  # bin
    table[0xC7], table[0xC8], table[0xC9] = (3, 1, 0, 0), (4, 2, 0, 0), (6, 4, 0, 0)  # ext
    table[0xCA], table[0xCB] = (5, 0, 0, 0), (9, 0, 0, 0)  # float 32, 64
    table[0xCC], table[0xCD], table[0xCE], table[0xCF] = (
        (2, 0, 0, 0),
        (3, 0, 0, 0),
        (5, 0, 0, 0),
        (9, 0, 0, 0),
    )
    table[0xD0], table[0xD1], table[0xD2], table[0xD3] = (
        (2, 0, 0, 0),
        (3, 0, 0, 0),
        (5, 0, 0, 0),
        (9, 0, 0, 0),
    )
    for b, size in ((0xD4, 1), (0xD5, 2), (0xD6, 4), (0xD7, 8), (0xD8, 16)):
        table[b] = (2, 0, size, 0)  # fixext: type byte, then data
    table[0xD9], table[0xDA], table[0xDB] = (2, 1, 0, 0), (3, 2, 0, 0), (5, 4, 0, 0)  # str
    table[0xDC], table[0xDD] = (3, 2, 0, 1), (5, 4, 0, 1)  # array 16, 32
    table[0xDE], table[0xDF] = (3, 2, 0, 2), (5, 4, 0, 2)  # map 16, 32
    return table  # 0xC1 stays None: "never used" in the MessagePack spec


_TABLE = _build_table()


class FrameScanner:
    """Resumable scan of one MessagePack object at a time.

    Call :meth:`scan` with the buffer and the offset where the current object starts; it
    returns the object's length once all of it is in the buffer, or ``None`` when more
    bytes are needed (it remembers how far it got). Call :meth:`reset` after consuming a
    frame.
    """

    __slots__ = ("_limits", "_pos", "_stack")

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._pos = 0
        self._stack = [1]

    def reset(self) -> None:
        self._pos = 0
        self._stack = [1]

    @property
    def started(self) -> bool:
        """Whether part of an object has been seen (a close now would cut a message)."""
        return self._pos > 0

    def scan(self, buf: bytes | bytearray, start: int) -> int | None:
        """Return the length of the object at ``buf[start:]``, or ``None`` if incomplete.

        Raises:
            RemoteProtocolError: the object is, or announces that it will be, larger than
                ``max_message_size`` or deeper than ``max_depth``, or uses byte 0xC1.
        """
        limit = self._limits.max_message_size
        max_depth = self._limits.max_depth
        avail = len(buf) - start
        pos = self._pos
        stack = self._stack
        table = _TABLE
        while stack:
            if stack[-1] == 0:
                stack.pop()
                continue
            if pos >= avail:
                self._pos = pos
                return None
            first = buf[start + pos]
            spec = table[first]
            if spec is None:
                raise RemoteProtocolError("invalid MessagePack type byte 0xc1")
            header, len_bytes, payload, mult = spec
            if pos + header > avail:
                self._pos = pos
                return None
            count = 0
            if len_bytes:
                n = int.from_bytes(buf[start + pos + 1 : start + pos + 1 + len_bytes], "big")
                if mult:
                    count = n * mult
                else:
                    payload = n
            elif mult:
                count = (first & 0x0F) * mult
            # Every element takes at least one byte, so a container's count bounds it too.
            if pos + header + payload + count > limit:
                raise RemoteProtocolError(f"message exceeds the {limit}-byte limit", ErrorCode.TOO_LARGE)
            stack[-1] -= 1
            pos += header + payload
            if count:
                stack.append(count)
                if len(stack) - 1 > max_depth:
                    raise RemoteProtocolError(f"message nests deeper than {max_depth} levels", ErrorCode.TOO_LARGE)
        if pos > avail:
            self._pos = pos
            self._stack = stack
            # The last payload is still arriving; keep the stack empty and wait.
            return None
        return pos


def decode_whole(buf: bytearray, start: int, limits: Limits) -> tuple[Any, int] | None:
    """Decode the object at ``buf[start:]`` in one C call when all of it is there: (object, length).

    The fast path for the common case, a whole message already buffered. Returns None when it
    cannot decide (the object is incomplete, over a limit, or not decodable): the caller then
    scans the headers as usual, which finds the same object or raises the precise error. Cost
    is bounded: msgpack sees at most ``max_message_size`` bytes and allocates no more than it
    was given, and the nesting is checked after decoding, on the decoded containers only.
    """
    if start == 0 and len(buf) <= limits.max_message_size:  # the usual case: no view to make
        decoded = _unpack(buf)
    else:
        with memoryview(buf) as whole, whole[start : start + limits.max_message_size] as view:
            decoded = _unpack(view)
    if decoded is None:
        return None
    obj, length = decoded
    if isinstance(obj, (list, dict)) and not _shallow(obj, limits.max_depth) and _too_deep(obj, limits.max_depth):
        return None
    return obj, length


def _unpack(data: bytearray | memoryview) -> tuple[Any, int] | None:
    """The first object in ``data`` and its length, or None (incomplete, or not decodable)."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True), len(data)
    except msgpack.ExtraData as extra:
        return extra.unpacked, len(data) - len(extra.extra)
    except (msgpack.UnpackException, ValueError):
        return None


#: The container types msgpack decodes to (``use_list=True``).
_NESTING = frozenset((list, dict))


def _shallow(obj: Any, max_depth: int) -> bool:
    """Whether ``obj`` (a list or dict) nests at most 4 deep (3 where ``max_depth`` is 3), found
    in one pass (``_too_deep`` walks the rest).

    Nearly every request and answer is that shallow: the message; its params array or result
    map; a param map or a map or list in the result (``headers``, ``query``); a map in a param
    (``options``) or a pair in ``query`` (a ``token.sign`` answer). On the hot path of every
    message, both ways: plain loops and exact type tests (msgpack builds exact lists and dicts),
    no recursion and no generator expressions.
    """
    if max_depth < 3:
        return False
    fourth_allowed = max_depth >= 4
    for second in obj.values() if type(obj) is dict else obj:
        kind = type(second)
        if kind is list or kind is dict:
            for third in second.values() if kind is dict else second:
                kind = type(third)
                if kind is list or kind is dict:
                    for fourth in third.values() if kind is dict else third:
                        kind = type(fourth)
                        if kind is list or kind is dict:
                            if not fourth_allowed:
                                return False
                            for fifth in fourth.values() if kind is dict else fourth:
                                if type(fifth) in _NESTING:
                                    return False
    return True


def _too_deep(container: list[Any] | dict[str, Any], budget: int) -> bool:
    """Whether ``container`` (itself one level) nests more than ``budget`` levels."""
    if budget <= 0:
        return True
    for value in container.values() if isinstance(container, dict) else container:
        if isinstance(value, (list, dict)) and _too_deep(value, budget - 1):
            return True
    return False


def peek_msgid(head: bytes) -> int | None:
    """Recover the request id from the first bytes of a message, if it is a request.

    Used to answer a request that cannot be decoded (too large, malformed) before
    closing, as the protocol asks. Returns ``None`` when no id can be read.
    """
    unpacker = msgpack.Unpacker(max_buffer_size=len(head) or 1)
    try:
        unpacker.feed(head)
        if unpacker.read_array_header() != 4:
            return None
        if unpacker.unpack() != 0:
            return None
        msgid = unpacker.unpack()
    except (msgpack.UnpackException, ValueError):
        return None
    if isinstance(msgid, int) and not isinstance(msgid, bool) and 0 <= msgid < 2**32:
        return msgid
    return None
