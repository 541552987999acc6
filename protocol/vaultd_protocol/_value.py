"""Immutable value records, without ``dataclasses``.

``dataclasses`` imports ``inspect`` (with ``ast``, ``dis`` and ``tokenize``): about 7 ms of an
engine's start, for classes this small. A subclass of :class:`Value` lists its fields in
``__slots__ = __match_args__ = (...)``, in the order its ``__init__`` takes them, and sets
each once with :func:`assign`. It then compares, hashes, prints, copies, pickles and matches
(``case``) by those fields, as a ``@dataclass(frozen=True, slots=True)`` would, and refuses to
be changed afterwards (AttributeError). Unlike a dataclass, the ``dataclasses`` helpers
(``replace``, ``fields``, ``asdict``) do not apply to it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an engine ~7 ms of import: annotations only
    from typing import Any

__all__ = ["Value", "assign"]

#: Sets a field of a :class:`Value` in its ``__init__`` (plain assignment is refused).
assign = object.__setattr__


class Value:
    """Base of a slotted, read-only record compared by its fields (``__slots__``, in order)."""

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        """The field values, in ``__slots__`` order."""
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Value)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({shown})"

    def __reduce__(self) -> tuple[type[Value], tuple[Any, ...]]:
        # copy and pickle rebuild through __init__ (their default sets the slots one by one).
        return type(self), self._values()
