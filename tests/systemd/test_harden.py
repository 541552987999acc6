"""The daemon hardens itself, with no systemd to help: no core, not ptrace-able, memory locked if allowed.

Each daemon here is started by the test directly (no LimitCORE=, no sandbox), so what is
observed is vaultd's own doing (``_harden``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ..daemon_process import BIN, DaemonProcess
from .conftest import UNPRIVILEGED, attack_as_same_uid, require_root


def _start(daemon: DaemonProcess, *prefix: str) -> int:
    with daemon.log_path.open("ab") as log:
        daemon.proc = subprocess.Popen([*prefix, BIN / "vaultd"], env=daemon.env, stdout=log, stderr=log)
    daemon.wait_ready()
    return daemon.proc.pid


def _vm_locked_kib(pid: int) -> int:
    match = re.search(r"^VmLck:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert match is not None
    return int(match.group(1))


def test_no_core_size_even_when_started_with_an_unlimited_one(daemon: DaemonProcess) -> None:
    pid = _start(daemon, "prlimit", "--core=unlimited:unlimited")
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert re.search(r"^Max core file size\s+0\s+0\s+bytes", limits, re.M), limits
    with daemon.client() as client:
        assert client.status()["dumpable"] is False


def test_status_says_whether_memory_is_locked_as_the_kernel_does(daemon: DaemonProcess) -> None:
    """Root (CAP_IPC_LOCK) locks; a user with a finite RLIMIT_MEMLOCK does not, and is told why."""
    pid = _start(daemon)
    with daemon.client() as client:
        locked = client.status()["memory_locked"]
    assert locked == (_vm_locked_kib(pid) > 0)
    shown = daemon.ctl("status").stdout
    assert ("memory:     locked" if locked else "memory:     not locked") in shown
    if not locked:
        assert "memory is not locked" in daemon.log and "RLIMIT_MEMLOCK" in daemon.log


def test_without_the_privilege_memory_stays_unlocked_and_the_log_says_why(daemon: DaemonProcess) -> None:
    require_root()
    pid = _start(daemon, *UNPRIVILEGED, "prlimit", "--memlock=8388608:8388608", "--")
    with daemon.client() as client:
        assert client.status()["memory_locked"] is False
    assert _vm_locked_kib(pid) == 0
    assert "memory is not locked (secrets could be swapped out): RLIMIT_MEMLOCK is 8388608 bytes" in daemon.log


def test_a_same_uid_process_without_privileges_cannot_attach(daemon: DaemonProcess) -> None:
    """root without capabilities: the daemon's uid, nothing more (as any user's own processes)."""
    require_root()
    pid = _start(daemon, *UNPRIVILEGED)
    assert attack_as_same_uid(pid, daemon.root) == ("refused", "refused")
