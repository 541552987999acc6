"""``scrub_freed_memory``: a freed copy of a secret is overwritten (the residue row's mitigation)."""

from __future__ import annotations

import secrets
import sys

from vaultd._secret import scrub_freed_memory


def _read_own_memory(address: int, size: int) -> bytes:
    with open("/proc/self/mem", "rb", buffering=0) as mem:  # EIO, not a crash, if unmapped
        mem.seek(address)
        return mem.read(size)


def test_a_freed_copy_of_a_token_is_overwritten() -> None:
    canary = "fake-canary-" + secrets.token_hex(16)  # built at run time: not interned, freed on del
    address, size = id(canary), sys.getsizeof(canary)
    assert canary.encode() in _read_own_memory(address, size)  # the probe sees a live copy
    del canary
    assert b"fake-canary-" in _read_own_memory(address, size), "freed memory keeps the secret: the residue"
    scrub_freed_memory()
    assert b"fake-canary-" not in _read_own_memory(address, size)
