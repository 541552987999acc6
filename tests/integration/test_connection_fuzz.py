"""Whole connections fuzzed against a real vaultd process: what peers send, when, and how they leave.

Hypothesis draws a script (``tests/connection_script.py``): up to four raw connections, each
with a way of leaving (polite, close with answers unread, SO_LINGER 0, half-close, garbage
mid-frame, stalled reader), and a sequence of steps interleaved across them (send valid or
invalid messages, pipelined bursts, read what is there, pause, leave now). A control
connection asks for a token before and after. Afterwards: the daemon is the same process and
alive, a fresh client still gets a token and a signature, the control connection and every
polite connection that sent only whole requests got exactly their answers. The atheris
version, for long runs by hand, is ``tests/fuzz/fuzz_connections.py``.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.connection_script import (
    PAYLOADS,
    Action,
    Exit,
    ScriptedConnection,
    Step,
    check_daemon,
    run_script,
    setup_vault,
)
from tests.daemon_process import PASS, DaemonProcess

#: Payloads a script sends; "admin" only on connections that do not wait for their answers
#: (its answer comes after the daemon-wide wrong-passphrase delay, which grows with every guess).
SENDABLE = sorted(set(PAYLOADS) - {"watch-renewing"})


class _LiveDaemon:
    """One daemon for the whole module, started again when an example killed it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vcf-", dir="/tmp"))
        self.daemon = DaemonProcess(self.root)
        self.daemon.start()
        setup_vault(self.daemon.socket_path, PASS)

    @property
    def path(self) -> Path:
        return self.daemon.socket_path

    def pid(self) -> int:
        """The daemon's pid; starts (and unlocks) it again if an earlier example killed it."""
        proc = self.daemon.proc
        assert proc is not None
        if proc.poll() is not None:
            self.daemon.proc = None
            self.daemon.start()
            self.daemon.ctl("unlock", *self.daemon.pw())
            proc = self.daemon.proc
            assert proc is not None
        return proc.pid

    def close(self) -> None:
        if self.daemon.proc is not None:
            self.daemon.stop(signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def live() -> Iterator[_LiveDaemon]:
    daemon = _LiveDaemon()
    try:
        yield daemon
    finally:
        daemon.close()


@st.composite
def _script(draw: st.DrawFn) -> tuple[list[Exit], list[Step]]:
    exits = draw(st.lists(st.sampled_from(Exit), min_size=1, max_size=4))
    action = st.one_of(
        st.builds(Action, kind=st.just("send"), payload=st.sampled_from(SENDABLE), count=st.integers(1, 40)),
        st.builds(Action, kind=st.just("read")),
        st.builds(Action, kind=st.just("pause"), seconds=st.floats(0.0, 0.02)),
        st.builds(Action, kind=st.just("leave")),
    )
    steps = draw(st.lists(st.builds(Step, conn=st.integers(0, len(exits) - 1), action=action), max_size=14))
    polite = {i for i, how in enumerate(exits) if how is Exit.POLITE}
    steps = [
        Step(s.conn, Action("send", "status", s.action.count))
        if s.conn in polite and s.action.payload == "admin"
        else s
        for s in steps
    ]
    return exits, steps


@settings(
    max_examples=100,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(script=_script())
def test_no_connection_s_fate_reaches_the_daemon_or_another_connection(
    live: _LiveDaemon, script: tuple[list[Exit], list[Step]]
) -> None:
    exits, steps = script
    pid = live.pid()
    problems = run_script(live.path, exits, steps)
    proc = live.daemon.proc
    assert proc is not None
    fresh = check_daemon(live.path)
    if fresh is not None:  # a daemon on its way out: let it finish dying, to say so
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
    assert proc.poll() is None, f"vaultd died (exit {proc.returncode}); its log ends:\n{live.daemon.log[-2000:]}"
    assert proc.pid == pid
    assert fresh is None
    assert problems == []


def test_the_script_runner_sees_a_connection_that_lost_its_answers(live: _LiveDaemon) -> None:
    """The judge can fail: a polite connection whose answers were not all read is reported."""
    live.pid()
    conn = ScriptedConnection(live.path)
    assert conn.open()
    conn.send("get", 3)
    conn.sent[999] = "get"  # a request the daemon never saw: its answer cannot come
    conn.leave(Exit.POLITE, polite_timeout=5.0)
    assert conn.problems() == ["get (msgid 999) was never answered"]
