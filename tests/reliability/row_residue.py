"""Row: how many copies of a token stay in the daemon's memory after a lock (measured, not judged).

A real ``vaultd`` stores a ``static`` credential whose token is a unique canary
(``fake-canary-`` and 32 random hex digits), a client fetches it many times over several
connections (so that copies pass through every buffer on the way: the decoder, the
response encoder, the audit fingerprint cache), an admin call and an unlock write and read
the sealed vault, then the vault is locked. The row then reads the daemon's whole memory
as root (``/proc/PID/maps`` and ``/proc/PID/mem``: the daemon is not dumpable, which root
may still read) and counts the canary's bytes: as text (UTF-8, which is also how msgpack
carries it) and base64-encoded (at the three offsets base64 can take).

Counts go into the figures, with the same count taken while unlocked for reference. At 500
fetches: 13 copies while unlocked; after the lock, 11 before the mitigation
(``vaultd._secret.scrub_freed_memory``, run by every lock) and 1 with it: the plaintext
vault body in a buffer that PyNaCl's cffi allocated in a worker thread's malloc arena. The
row never fails on residue: Python cannot promise to wipe every copy (docs/ARCHITECTURE.md section 2).
It fails only when the measurement cannot run (not root, or ``/proc/PID/mem`` unreadable).
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

from vaultd_client import Client

from ..daemon_process import PASS, DaemonProcess
from .rows import Mode, Row

__all__ = ["count_in_memory", "run"]

FETCHES: dict[Mode, int] = {"short": 500, "full": 5000, "soak": 50000}
CONNECTIONS = 10


def _base64_forms(canary: bytes) -> list[bytes]:
    """The canary's base64 at each of the three alignments, minus the edge characters that
    depend on the neighbouring bytes: whatever encoded it, these appear."""
    forms = []
    for shift in range(3):
        forms.append(base64.b64encode(b"\0" * shift + canary)[4:-4])
    return forms


def count_in_memory(pid: int, needles: list[bytes]) -> tuple[list[int], int]:
    """Occurrences of each needle in process ``pid``'s readable memory, and the bytes read.

    Raises:
        PermissionError: ``/proc/PID/mem`` cannot be read (not root).
    """
    counts = [0] * len(needles)
    scanned = 0
    pattern = re.compile(rb"^([0-9a-f]+)-([0-9a-f]+) (\S+)")
    with open(f"/proc/{pid}/maps", "rb") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            match = pattern.match(line)
            if match is None or not match.group(3).startswith(b"r") or b"[vvar" in line or b"[vsyscall]" in line:
                continue
            start, end = int(match.group(1), 16), int(match.group(2), 16)
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except OSError:
                continue  # a guard page or a mapping gone meanwhile
            scanned += len(data)
            for i, needle in enumerate(needles):
                counts[i] += data.count(needle)
    return counts, scanned


def run(mode: Mode) -> Row:
    row = Row("residue: canary copies after lock")
    if os.geteuid() != 0:
        row.errors += 1
        row.figures["not measured"] = "reading another process's /proc/PID/mem needs root here"
        return row
    canary = ("fake-canary-" + secrets.token_hex(16)).encode()
    needles = [canary, *_base64_forms(canary)]
    root = Path(tempfile.mkdtemp(prefix="vd-", dir="/tmp"))
    daemon = DaemonProcess(root)
    daemon.secrets.add(canary.decode())
    try:
        daemon.start()
        assert daemon.proc is not None
        pid = daemon.proc.pid
        with Client(daemon.socket_path, timeout=30, cache=False) as admin:
            admin.call("vault.init", {"passphrase": PASS, "kdf_profile": "min"}, timeout=30)
            admin.unlock(PASS)
            params = {"passphrase": PASS, "name": "canary", "kind": "static", "config": {"token": canary.decode()}}
            admin.call("credential.put", {**params, "replace": False}, timeout=30)
            admin.lock()
            admin.unlock(PASS)  # the sealed body decoded once more, as after a restart
            clients = [Client(daemon.socket_path, timeout=30, cache=False) for _ in range(CONNECTIONS)]
            for i in range(FETCHES[mode]):
                if clients[i % CONNECTIONS].token("canary").value.encode() != canary:
                    row.errors += 1
                row.served += 1
            for client in clients:
                client.close()
            row.connections = CONNECTIONS + 1
            unlocked, _ = count_in_memory(pid, needles)
            admin.lock()
            locked, scanned = count_in_memory(pid, needles)
        daemon.stop()
        if daemon.leaked():
            row.errors += 1
    except PermissionError as exc:
        row.errors += 1
        row.figures["not measured"] = f"cannot read the daemon's memory: {exc}"
        return row
    finally:
        if daemon.proc is not None:
            daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
    row.inputs = row.served
    row.figures.update(
        {
            "canary copies while unlocked": f"{unlocked[0]} as text, {sum(unlocked[1:])} base64",
            "canary copies after lock": f"{locked[0]} as text, {sum(locked[1:])} base64 (not gated)",
            "memory scanned": f"{scanned / 2**20:.0f} MiB of pid {pid}'s readable mappings",
        }
    )
    return row
