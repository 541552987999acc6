"""The size and nesting limits the decoder enforces on untrusted bytes."""

from __future__ import annotations

from ._value import Value, assign

__all__ = ["DEFAULT_LIMITS", "Limits"]


class Limits(Value):
    """Bounds on one decoded message.

    ``max_message_size`` bounds the encoded size of one whole message, so every string,
    binary, array and map inside it is bounded by it too. ``max_depth`` counts nested
    arrays and maps, the message array itself included; the deepest message the schema
    needs today is 4 deep (message, params array, params map, a map value).
    """

    __slots__ = __match_args__ = ("max_message_size", "max_depth")
    max_message_size: int
    max_depth: int

    def __init__(self, max_message_size: int = 64 * 1024, max_depth: int = 16) -> None:
        if max_message_size < 64:
            raise ValueError("max_message_size must be at least 64 bytes")
        if not 2 <= max_depth <= 512:
            raise ValueError("max_depth must be between 2 and 512")
        assign(self, "max_message_size", max_message_size)
        assign(self, "max_depth", max_depth)


DEFAULT_LIMITS = Limits()
