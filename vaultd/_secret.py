"""A holder for one secret value that never prints it and can be wiped.

Python cannot promise that no other copy of a secret survives in memory (the decoder,
the interpreter and the kernel make their own); this class keeps the copy vaultd owns in
one mutable buffer, overwrites it on :meth:`Secret.wipe`, and keeps it out of ``repr``,
``str``, logs and pickles.
"""

from __future__ import annotations

import ctypes
import gc
import hmac
from typing import NoReturn

__all__ = ["Secret", "scrub_freed_memory"]

#: Zero-filled objects made per small-object size class by :func:`scrub_freed_memory`.
_SCRUB_PER_CLASS = 512


class Secret:
    """One secret byte string. ``repr`` shows its length only; there is no ``__str__``."""

    __slots__ = ("_buf",)

    def __init__(self, value: bytes | bytearray | str) -> None:
        self._buf = bytearray(value.encode("utf-8") if isinstance(value, str) else value)

    def reveal(self) -> bytes:
        """Return a copy of the secret bytes. Keep the copy's life short."""
        return bytes(self._buf)

    def reveal_str(self) -> str:
        """Return the secret as text (it was stored from text)."""
        return self._buf.decode("utf-8")

    def wipe(self) -> None:
        """Overwrite the buffer with zeros and empty it."""
        for i in range(len(self._buf)):
            self._buf[i] = 0
        self._buf.clear()

    @property
    def wiped(self) -> bool:
        return not self._buf

    def __len__(self) -> int:
        return len(self._buf)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._buf, other._buf)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Secret: {len(self._buf)} bytes>"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")


def scrub_freed_memory() -> None:
    """Overwrite what it can of the copies of secrets that Python freed without zeroing.

    Called after a lock (best effort, a few milliseconds). ``reveal``, the msgpack codec
    and the sealing library make transient copies (a token's text for each answer, the
    plaintext vault body), and freeing memory does not clear it. Three steps: collect
    reference cycles (a traceback can hold frames that hold secrets); allocate zero-filled
    objects in every small-object size class, which Python's allocator serves first from
    the blocks freed last, overwriting them; and ask glibc to hand its free pages back to
    the kernel (``malloc_trim``), which gives them back zeroed if they are ever used again.
    """
    gc.collect()
    filler = [bytes(size) for size in range(0, 480, 8) for _ in range(_SCRUB_PER_CLASS)]
    del filler
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the C library already loaded
    if trim is not None:  # glibc; others have no such call
        trim(0)
