"""Process hardening at start: no core dumps, not ptrace-able, memory locked where allowed.

Runs once, before the event loop and before any secret exists. Nothing here needs a
privilege: ``PR_SET_DUMPABLE`` and ``RLIMIT_CORE`` only ever lower what the process may do,
and ``mlockall`` is attempted only when ``RLIMIT_MEMLOCK`` is unlimited (or the process
holds CAP_IPC_LOCK). With a finite limit it is not: ``MCL_FUTURE`` checks every later
mapping against that limit, and a Python process's address space (malloc arenas, thread
stacks, Argon2id's hundreds of MiB) grows past any small one, so a finite limit would turn
into MemoryErrors at unlock rather than into locked memory. What Python still cannot
guarantee is in the README's security section.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import resource
from dataclasses import dataclass

__all__ = ["Hardening", "harden", "is_dumpable"]

log = logging.getLogger("vaultd.harden")

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4
_CAP_IPC_LOCK = 14


@dataclass(frozen=True)
class Hardening:
    """What :func:`harden` achieved; ``status`` reports it."""

    dumpable: bool
    core_limit: int
    memory_locked: bool
    #: Why memory is not locked (None when it is).
    memory_note: str | None = None


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def is_dumpable() -> bool:
    """Whether this process may dump core or be ptrace-attached by its own user (prctl)."""
    return bool(_libc().prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


def _set_not_dumpable(libc: ctypes.CDLL) -> None:
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        log.error("prctl(PR_SET_DUMPABLE, 0) failed: %s", os.strerror(ctypes.get_errno()))


def _no_core_dumps() -> int:
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError) as exc:
        log.error("could not set RLIMIT_CORE to 0: %s", exc)
    return resource.getrlimit(resource.RLIMIT_CORE)[0]


def _has_cap_ipc_lock() -> bool:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_IPC_LOCK & 1)
    except (OSError, ValueError):
        pass
    return False


def _lock_memory(libc: ctypes.CDLL) -> str | None:
    """mlockall where the limit allows it; return why not, or None once memory is locked."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft != hard:  # an unprivileged process may raise its soft limit to the hard one
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and not _has_cap_ipc_lock():
        return (
            f"RLIMIT_MEMLOCK is {soft} bytes, too small to lock a Python process; raise it to "
            "'infinity' (LimitMEMLOCK= in the user manager's unit, or limits.conf) to lock memory"
        )
    # MCL_ONFAULT locks each page when first touched instead of pre-faulting every thread
    # stack and arena: the same guarantee for every page that ever holds data.
    # (MCL_ONFAULT needs Linux 4.4: without it, EINVAL, and the plain flags are tried.)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) == 0 or libc.mlockall(MCL_CURRENT | MCL_FUTURE) == 0:
        return None
    return f"mlockall failed: {os.strerror(ctypes.get_errno())}"


def harden() -> Hardening:
    """Make this process non-dumpable, forbid core files, and lock its memory if allowed.

    Never raises: each step that fails is logged and reported, and the daemon carries on.
    """
    libc = _libc()
    _set_not_dumpable(libc)
    core_limit = _no_core_dumps()
    note = _lock_memory(libc)
    if note is not None:
        log.warning("memory is not locked (secrets could be swapped out): %s", note)
    return Hardening(dumpable=is_dumpable(), core_limit=core_limit, memory_locked=note is None, memory_note=note)
