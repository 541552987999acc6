"""The peer's identity at accept: credentials, unit and executable, no trust in a recycled pid or an exec since."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vaultd import _exe
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


def test_a_socketpair_peer_is_this_process_and_no_descriptor_outlives_it() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        before = _fds()
        for _ in range(50):
            peer = peer_of(a)
            assert _fds() == before + 1  # its mark
            peer.close()
        assert _fds() == before
        assert peer.exe is not None and not peer.exe_holds()  # closed: nothing to vouch for it
        peer = peer_of(a)
        assert peer.exe_holds()
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

    def __init__(self, sock: socket.socket, dead_pidfd: int | None, pidfd_errno: int = 0) -> None:
        self.sock = sock  # one end of a socketpair: this process is the peer
        self.dead_pidfd = dead_pidfd
        self.pidfd_errno = pidfd_errno

    def fileno(self) -> int:
        return self.sock.fileno()

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
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        try:
            # The pid's /proc entries now describe this very process: a unit and an exe to read.
            assert peer_of(_Recycled(a, dead)) == Peer(os.getpid(), os.getuid(), os.getgid(), None, None)
        finally:
            os.close(dead)
        # Positive control: a kernel without SO_PEERPIDFD, and a live pid: pidfd_open, and both are read.
        peer = peer_of(_Recycled(a, None, errno.ENOPROTOOPT))
        assert peer.exe == os.readlink("/proc/self/exe")
        assert peer.unit == unit_of(Path("/proc/self/cgroup").read_text())
        # A kernel that knows SO_PEERPIDFD but has no process for it: no guess through the pid.
        assert peer_of(_Recycled(a, None, errno.ESRCH)).exe is None


# -- the executable at connect, not one exec'd since ----------------------------------------------

PYTHON = os.path.realpath(shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3")
WAIT = "import sys; sys.stdin.buffer.read()"

#: Connects to argv[1]; forks; the process that connected execs argv[3:] while the child keeps
#: the connection. argv[2] is a pipe's write end, closed by that exec: the test's sign that it
#: happened. With "--accepted-first" it waits for a line on stdin (the test has accepted) first.
FORK_AND_EXEC = r"""
import os, socket, sys
args = sys.argv[1:]
first = args[0] == "--accepted-first"
path, done, program = args[first], int(args[first + 1]), args[first + 2:]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(path)
if first:
    sys.stdin.buffer.readline()
if os.fork():
    os.set_inheritable(done, False)
    os.execv(program[0], program)
os.close(done)
sys.stdin.buffer.read()
"""


@pytest.fixture
def engine(tmp_path: Path) -> str:
    """An "allowed" program of its own path: the system python3, linked (or copied) under tmp_path."""
    path = tmp_path / "engine"
    try:
        os.link(PYTHON, path)
    except OSError:
        shutil.copy2(PYTHON, path)
    return str(path)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A listening socket nobody accepts on until the test does: a daemon held back at will."""
    path = str(tmp_path / "held.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)
        sock.listen(8)
        yield sock, path


def _fork_and_exec(
    path: str, program: list[str], *, accepted_first: bool = False
) -> tuple[subprocess.Popen[bytes], int]:
    read_end, write_end = os.pipe()
    flag = ["--accepted-first"] if accepted_first else []
    proc = subprocess.Popen(
        [PYTHON, "-c", FORK_AND_EXEC, *flag, path, str(write_end), *program],
        stdin=subprocess.PIPE,
        pass_fds=(write_end,),
    )
    os.close(write_end)
    return proc, read_end


def _wait_for_exec(read_end: int) -> None:
    """Returns once the process that connected has exec'd (its copy of the pipe closed with it)."""
    try:
        while os.read(read_end, 64):
            pass
    finally:
        os.close(read_end)


def _end(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()  # the exec'd program and the child both read stdin to its end
    assert proc.wait(timeout=30) == 0


def test_an_exec_between_connect_and_accept_does_not_lend_its_exe(
    engine: str, listener: tuple[socket.socket, str]
) -> None:
    """The reported attack, made deterministic: connect as python3, fork, exec the allowed program
    before the daemon accepts; the child holds the connection. Today's code reported ``engine``."""
    sock, path = listener
    proc, done = _fork_and_exec(path, [engine, "-c", WAIT])
    try:
        _wait_for_exec(done)
        assert os.readlink(f"/proc/{proc.pid}/exe") == engine  # what a naive read finds now
        accepted, _ = sock.accept()
        with accepted:
            peer = peer_of(accepted)
            assert (peer.pid, peer.uid) == (proc.pid, os.getuid())  # SO_PEERCRED: the process that connected
            assert peer.exe is None and not peer.exe_holds()
            assert peer.unit == unit_of(Path(f"/proc/{proc.pid}/cgroup").read_text())  # an exec keeps the cgroup
    finally:
        _end(proc)
    # Positive control: the allowed program itself connects, and its exe is read and holds.
    control = subprocess.Popen(
        [engine, "-c", f"import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect({path!r}); {WAIT}"],
        stdin=subprocess.PIPE,
    )
    try:
        accepted, _ = sock.accept()
        with accepted:
            peer = peer_of(accepted)
            assert (peer.pid, peer.exe) == (control.pid, engine) and peer.exe_holds()
            peer.close()
            assert not peer.exe_holds()
    finally:
        _end(control)


def test_the_mark_stops_holding_when_the_process_execs_or_exits_and_keeps_one_descriptor(
    engine: str, listener: tuple[socket.socket, str]
) -> None:
    sock, path = listener
    proc, done = _fork_and_exec(path, [PYTHON, "-c", WAIT], accepted_first=True)
    try:
        accepted, _ = sock.accept()
        with accepted:
            peer = peer_of(accepted)
            assert peer.exe == PYTHON and peer.exe_holds()  # read before any exec
            opened = _fds()
            assert proc.stdin is not None
            proc.stdin.write(b"accepted\n")
            proc.stdin.flush()
            _wait_for_exec(done)
            assert not peer.exe_holds()  # the same pid, another program: the exe no longer holds
            assert peer.exe == PYTHON  # the identity itself stays what it was at connect
            assert _fds() == opened - 1  # the pipe's read end is closed; the mark is kept
            peer.close()
            assert _fds() == opened - 2
    finally:
        _end(proc)
    # Exit: a process that ends takes its mark with it.
    exits = subprocess.Popen(
        [engine, "-c", f"import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect({path!r}); {WAIT}"],
        stdin=subprocess.PIPE,
    )
    accepted, _ = sock.accept()
    with accepted:
        peer = peer_of(accepted)
        assert peer.exe == engine and peer.exe_holds()
        _end(exits)
        assert not peer.exe_holds()
        peer.close()


def test_a_peer_end_beyond_the_scanned_descriptors_leaves_the_exe_unknown(
    engine: str, listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan of the peer's descriptors is bounded (the cost of one accept): past the bound, no exe."""
    sock, path = listener
    proc = subprocess.Popen(
        [engine, "-c", f"import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect({path!r}); {WAIT}"],
        stdin=subprocess.PIPE,
    )
    try:
        accepted, _ = sock.accept()
        with accepted:
            held = sorted(int(name) for name in os.listdir(f"/proc/{proc.pid}/fd"))
            assert len(held) > 3  # stdin, stdout, stderr, and the socket after them
            monkeypatch.setattr(_exe, "MAX_FDS_SCANNED", 3)
            assert peer_of(accepted).exe is None
            monkeypatch.setattr(_exe, "MAX_FDS_SCANNED", len(held))  # control: within the bound
            assert peer_of(accepted).exe == engine
    finally:
        _end(proc)


def test_without_sock_diag_no_exe_is_vouched_for_and_the_log_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """As under a sandbox without AF_NETLINK: the exe is unknown (no exe rule matches), not guessed."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    real = socket.socket

    def no_netlink(family: int = -1, *args: Any, **kwargs: Any) -> socket.socket:
        if family == socket.AF_NETLINK:
            raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))
        return real(family, *args, **kwargs)

    with a, b:
        assert peer_of(a).exe == os.readlink("/proc/self/exe")  # control: with sock_diag
        monkeypatch.setattr(_exe, "_warned", set())
        monkeypatch.setattr(socket, "socket", no_netlink)
        assert peer_of(a).exe is None and peer_of(a).exe is None
    warnings = [r.getMessage() for r in caplog.records if r.name == "vaultd.peer"]
    assert warnings == [
        "cannot ask the kernel for a peer socket (sock_diag: Address family not supported by protocol)"
        ": no connection can match an 'exe' rule"
    ]
