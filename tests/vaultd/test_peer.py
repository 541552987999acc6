"""The peer's identity at accept: credentials, unit and executable, and no trust in a recycled pid."""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from vaultd._peer import SO_PEERPIDFD, Peer, peer_of, unit_of

HYBRID = """\
12:pids:/user.slice/user-1000.slice/user@1000.service/app.slice/engine-b.service
1:name=systemd:/user.slice/user-1000.slice/user@1000.service/app.slice/engine-b.service
0::/user.slice/user-1000.slice/user@1000.service/app.slice/engine-a.service/worker
"""


@pytest.mark.parametrize(
    ("cgroup", "unit"),
    [
        (HYBRID, "engine-a.service"),  # unified first, and the last unit component above a sub-cgroup
        ("1:name=systemd:/system.slice/cron.service\n0::/\n", "cron.service"),  # unified says nothing
        ("0::/user.slice/user-1000.slice/session-2.scope\n", "session-2.scope"),
        ("0::/user.slice/user-1000.slice\n", None),
        ("4:memory:/x.service\n", None),  # a controller's hierarchy is not systemd's
        ("garbage\n", None),
        (None, None),
    ],
)
def test_the_unit_is_read_from_the_cgroup(cgroup: str | None, unit: str | None) -> None:
    assert unit_of(cgroup) == unit


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_socketpair_peer_is_this_process_and_no_descriptor_is_kept() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        before = _fds()
        for _ in range(50):
            peer = peer_of(a)
        assert _fds() == before
    assert peer == Peer(
        os.getpid(),
        os.getuid(),
        os.getgid(),
        unit_of(Path("/proc/self/cgroup").read_text()),
        os.readlink("/proc/self/exe"),
    )
    assert peer.to_wire()["exe"] == os.readlink("/proc/self/exe")
    assert f"uid={os.getuid()}" in str(peer)


class _Recycled:
    """SO_PEERCRED names a live pid (ours), but the kernel's pidfd is of the peer, which has exited."""

    def __init__(self, dead_pidfd: int | None, pidfd_errno: int = 0) -> None:
        self.dead_pidfd = dead_pidfd
        self.pidfd_errno = pidfd_errno

    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes:
        if optname == socket.SO_PEERCRED:
            return struct.pack("3i", os.getpid(), os.getuid(), os.getgid())
        assert optname == SO_PEERPIDFD
        if self.pidfd_errno:
            raise OSError(self.pidfd_errno, os.strerror(self.pidfd_errno))
        assert self.dead_pidfd is not None
        return struct.pack("i", os.dup(self.dead_pidfd))


def test_what_proc_says_about_a_recycled_pid_is_not_taken() -> None:
    child = subprocess.Popen(["/bin/true"])
    dead = os.pidfd_open(child.pid)
    child.wait()
    try:
        # The pid's /proc entries now describe this very process: a unit and an exe to read.
        assert peer_of(_Recycled(dead)) == Peer(os.getpid(), os.getuid(), os.getgid(), None, None)
    finally:
        os.close(dead)
    # Positive control: a kernel without SO_PEERPIDFD, and a live pid: pidfd_open, and both are read.
    peer = peer_of(_Recycled(None, errno.ENOPROTOOPT))
    assert peer.exe == os.readlink("/proc/self/exe") and peer.unit == unit_of(Path("/proc/self/cgroup").read_text())
    # A kernel that knows SO_PEERPIDFD but has no process for it: no guess through the pid.
    assert peer_of(_Recycled(None, errno.ESRCH)).exe is None
