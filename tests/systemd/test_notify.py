"""systemd's protocols without systemd: a fake NOTIFY_SOCKET, a passed listening socket, credentials.

The "service manager" here is a datagram socket the test binds (as a path, and as an
@abstract name) and a listening socket it hands to a real ``vaultd`` at fd 3 with
``LISTEN_PID``/``LISTEN_FDS``: what systemd does, with nothing mocked on vaultd's side.
"""

from __future__ import annotations

import itertools
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from vaultd._fake_exchange import FakeExchange
from vaultd._listen import SocketSetupError
from vaultd._secret import Secret
from vaultd._systemd import ServiceLink, credential_passphrase, listen_socket, status_line
from vaultd._vault import Vault
from vaultd.ctl.systemd import SERVICE_TEMPLATE, SOCKET_TEMPLATE
from vaultd_protocol import KdfProfile

from ..daemon_process import BIN, PASS, DaemonProcess
from ..vaultd.renewal_tools import Wall, add, inline

REPO = Path(__file__).resolve().parents[2]


def test_the_units_in_the_repo_are_the_templates_vaultctl_installs() -> None:
    assert (REPO / "systemd" / "vaultd.service").read_text() == SERVICE_TEMPLATE
    assert (REPO / "systemd" / "vaultd.socket").read_text() == SOCKET_TEMPLATE


# -- NOTIFY_SOCKET ------------------------------------------------------------------------------


class FakeManager:
    """The receiving end of NOTIFY_SOCKET: every datagram, WATCHDOG=1 counted apart."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.watchdog = 0
        self._heard: queue.Queue[str] | None = None

    def drain(self) -> None:
        """From now on, read every datagram as it comes (a thread), as systemd does.

        A datagram socket queues only ``net.unix.max_dgram_qlen`` (10) messages: with a ping
        every 50 ms, a command that runs half a second on a loaded machine would fill it, and
        the daemon's next STATUS would be dropped (EAGAIN) before the test reads it.
        """
        self._heard = heard = queue.Queue()
        self.sock.settimeout(0.2)

        def pump() -> None:
            while self.sock.fileno() != -1:
                try:
                    message = self.sock.recv(4096).decode()
                except TimeoutError:
                    continue
                except OSError:
                    return
                if message == "WATCHDOG=1":
                    self.watchdog += 1
                else:
                    heard.put(message)

        threading.Thread(target=pump, daemon=True).start()

    def next(self, timeout: float = 20.0) -> str:
        """The next message other than a watchdog ping."""
        if self._heard is not None:
            try:
                return self._heard.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no notification within {timeout} s") from None
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                raise AssertionError(f"no notification within {timeout} s") from None
            if message == "WATCHDOG=1":
                self.watchdog += 1
            else:
                return message


@pytest.fixture(params=["path", "abstract"])
def notify(request: pytest.FixtureRequest, short_tmp: Path) -> Iterator[tuple[str, FakeManager]]:
    if request.param == "path":
        address = str(short_tmp / "notify")
        env_value = address
    else:
        name = f"vaultd-test-{uuid.uuid4().hex}"
        address, env_value = "\0" + name, "@" + name
    manager = FakeManager(address)
    yield env_value, manager
    manager.sock.close()


def test_the_manager_hears_ready_status_reload_and_stopping_in_order(
    short_tmp: Path, notify: tuple[str, FakeManager]
) -> None:
    address, manager = notify
    config = short_tmp / "config"
    daemon = DaemonProcess(short_tmp, NOTIFY_SOCKET=address, WATCHDOG_USEC="100000", XDG_CONFIG_HOME=str(config))
    heard = []
    manager.drain()
    daemon.start()
    try:
        heard.append(manager.next())
        daemon.ctl("init", "--kdf-profile", "min", *daemon.pw())
        heard.append(manager.next())
        daemon.ctl("unlock", *daemon.pw())
        heard.append(manager.next())
        daemon.ctl("add", "ex", "--kind", "static", *daemon.pw(), stdin="fake-token-notify\n")
        heard.append(manager.next())
        daemon.ctl("lock")
        heard.append(manager.next())

        assert "hello from" not in daemon.log  # info level: no debug lines yet
        (config / "vaultd").mkdir(parents=True)
        (config / "vaultd" / "vaultd.toml").write_text('log_level = "debug"\n')
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        heard.append(re.sub(r"MONOTONIC_USEC=\d+", "MONOTONIC_USEC=N", manager.next()))
        heard.append(manager.next())
        with daemon.client() as client:
            client.hello("pytest")
        assert "hello from" in daemon.log, "SIGHUP applied the settings file's log level"
    finally:
        code = daemon.stop()
    heard.append(manager.next())
    assert code == 0
    assert heard == [
        "READY=1\nSTATUS=No vault yet: run 'vaultctl init'",
        "STATUS=Locked: run 'vaultctl unlock'",
        "STATUS=Unlocked: 0 credentials, 0 degraded",
        "STATUS=Unlocked: 1 credential, 0 degraded",
        "STATUS=Locked: run 'vaultctl unlock'",
        "RELOADING=1\nMONOTONIC_USEC=N\nSTATUS=Reloading settings",
        "READY=1\nSTATUS=Locked: run 'vaultctl unlock'",
        "STOPPING=1\nSTATUS=Stopping: locking the vault",
    ]
    assert manager.watchdog >= 3, "WATCHDOG=1 every 50 ms (half of WATCHDOG_USEC)"
    assert "fake-token-notify" not in daemon.log and PASS not in daemon.log


async def test_watchdog_pings_come_from_the_event_loop_and_stop_while_it_hangs(short_tmp: Path) -> None:
    """WATCHDOG=1 is sent by a trio task: a loop that hangs sends none, and systemd restarts it.

    The loop is hung on purpose with a blocking time.sleep (the thing under test), and a
    thread stamps each datagram's arrival.
    """
    address = str(short_tmp / "notify")
    manager = FakeManager(address)
    manager.sock.settimeout(0.05)
    arrivals: list[float] = []
    done = threading.Event()

    def receive() -> None:
        while not done.is_set():
            try:
                if manager.sock.recv(64) == b"WATCHDOG=1":
                    arrivals.append(time.monotonic())
            except TimeoutError:
                continue

    thread = threading.Thread(target=receive)
    thread.start()
    link = ServiceLink(address, watchdog_usec=40_000)  # a ping every 20 ms
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.watchdog)
            await trio.sleep(0.3)
            time.sleep(0.6)  # noqa: ASYNC251 - hang the event loop: that is the test
            await trio.sleep(0.3)
            nursery.cancel_scope.cancel()
    finally:
        done.set()
        thread.join(timeout=5)
        link.close()
        manager.sock.close()
    gaps = sorted(b - a for a, b in itertools.pairwise(arrivals))
    assert len(gaps) >= 10, arrivals
    assert gaps[-1] >= 0.55, "no ping while the loop hung"
    assert gaps[len(gaps) // 2] < 0.1, "pings every 20 ms otherwise"


@pytest.fixture
async def exchange(nursery: trio.Nursery) -> FakeExchange:
    fx = FakeExchange()
    await nursery.start(fx.serve)
    return fx


async def test_status_counts_degraded_and_expired_credentials_as_renewals_fail(
    nursery: trio.Nursery, tmp_path: Path, short_tmp: Path, exchange: FakeExchange, autojump_clock: Any
) -> None:
    manager = FakeManager(str(short_tmp / "notify"))
    manager.sock.setblocking(False)
    link = ServiceLink(str(short_tmp / "notify"))
    wall = Wall()
    vault = Vault(
        tmp_path, nursery=nursery, clock=wall, renewer_options={"rng": random.Random(7)}, blocking=inline,
        on_change=link.changed,
    )  # fmt: skip
    nursery.start_soon(link.follow_status, lambda: status_line(vault))

    def heard() -> list[str]:
        messages = []
        while True:
            try:
                messages.append(manager.sock.recv(4096).decode())
            except BlockingIOError:
                return messages

    await vault.init(Secret(PASS), KdfProfile.MIN)
    await trio.sleep(1)
    assert heard() == ["STATUS=Locked: run 'vaultctl unlock'"]
    await vault.unlock(Secret(PASS))
    exchange.behaviour.expires_in = 60
    config = {
        "token_url": exchange.url + "/oauth/token", "grant_type": "refresh_token", "client_id": "fake-client",
        "client_secret": "fake-secret", "refresh_token": exchange.new_refresh_token(),
    }  # fmt: skip
    await add(vault, "ex", config)
    await vault.get("ex", 0)
    await trio.sleep(1)
    assert heard()[-1] == "STATUS=Unlocked: 1 credential, 0 degraded"
    exchange.behaviour.fault = "down"
    await trio.sleep(45)  # past the renewal point (40 s): failing, the old token still valid
    assert heard() == ["STATUS=Unlocked: 1 credential, 1 degraded"]
    await trio.sleep(20)  # past expiry
    assert heard() == ["STATUS=Unlocked: 1 credential, 0 degraded, 1 expired"]
    vault.lock()
    await trio.sleep(1)
    assert heard() == ["STATUS=Locked: run 'vaultctl unlock'"]
    await trio.sleep(600)
    assert heard() == [], "nothing new to say, nothing sent"
    link.close()
    manager.sock.close()


# -- LISTEN_FDS ---------------------------------------------------------------------------------

# What systemd does between fork and exec: the socket at fd 3, then the variables naming
# this very process (the pid survives the exec).
_ACTIVATE = r"""
import os, sys
os.dup2(int(sys.argv[1]), 3)
env = dict(os.environ, LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="vaultd.socket")
os.execve(sys.argv[2], sys.argv[2:], env)
"""


def _activated(daemon: DaemonProcess, sock: socket.socket) -> subprocess.Popen[bytes]:
    with daemon.log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", _ACTIVATE, str(sock.fileno()), BIN / "vaultd"],
            pass_fds=(sock.fileno(),), env=daemon.env, stdout=log, stderr=log,
        )  # fmt: skip


def test_a_socket_passed_by_systemd_is_served_and_left_in_place(daemon: DaemonProcess, short_tmp: Path) -> None:
    folder = short_tmp / "activation"
    folder.mkdir(mode=0o700)
    path = folder / "vaultd.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    try:
        daemon.proc = _activated(daemon, listener)
        daemon.socket_path = path
        daemon.wait_ready()
        with daemon.client() as client:
            assert client.status()["socket"] == str(path)
        assert not (short_tmp / "run" / "vaultd" / "vaultd.sock").exists(), "bound no socket of its own"
        assert daemon.stop() == 0
        assert path.exists(), "the socket is systemd's: vaultd does not remove it"
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(path))  # systemd's socket still listens, ready for the next start
        probe.close()
    finally:
        listener.close()


@pytest.mark.parametrize("kind", ["udp", "unlistened"])
def test_a_passed_socket_of_the_wrong_kind_stops_the_start(daemon: DaemonProcess, kind: str) -> None:
    if kind == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(daemon.root / "not-listening.sock"))
    try:
        proc = _activated(daemon, sock)
        assert proc.wait(timeout=30) == 1
    finally:
        sock.close()
    assert re.search(r"vaultd: fd 3 from systemd \(vaultd\.socket\) is .*not a listening AF_UNIX stream", daemon.log)


def test_listen_variables_count_for_this_pid_only_and_are_always_removed() -> None:
    other = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "vaultd.socket", "KEEP": "1"}
    assert listen_socket(other) is None
    assert other == {"KEEP": "1"}
    none = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0"}
    assert listen_socket(none) is None and none == {}
    two = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
    with pytest.raises(SocketSetupError, match="systemd passed 2 sockets"):
        listen_socket(two)
    assert two == {}


def test_notify_and_watchdog_variables_are_taken_out_of_the_environment() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid()), "KEEP": "1"}
    link = ServiceLink.from_environ(env)
    assert env == {"KEEP": "1"} and link.enabled and link.watchdog_interval == 15.0
    link.close()
    for_another = ServiceLink.from_environ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert for_another.watchdog_interval is None and not for_another.enabled
    assert not ServiceLink.from_environ({"NOTIFY_SOCKET": "vsock:2:1"}).enabled  # not a form vaultd speaks


# -- the passphrase credential ------------------------------------------------------------------


def test_the_passphrase_credential_is_its_first_line(tmp_path: Path) -> None:
    (tmp_path / "vaultd-passphrase").write_bytes(b"fake passphrase 1\r\nsecond line\n")
    secret = credential_passphrase({"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert secret is not None and secret.reveal() == b"fake passphrase 1"
    assert "fake" not in repr(secret)
    assert credential_passphrase({}) is None
    assert credential_passphrase({"CREDENTIALS_DIRECTORY": str(tmp_path / "none")}) is None
    (tmp_path / "vaultd-passphrase").write_bytes(b"\n")
    assert credential_passphrase({"CREDENTIALS_DIRECTORY": str(tmp_path)}) is None


def test_a_daemon_with_a_passphrase_credential_unlocks_itself(daemon: DaemonProcess, short_tmp: Path) -> None:
    """No systemd needed for the daemon's side: $CREDENTIALS_DIRECTORY is all it reads."""
    daemon.start()
    daemon.ready()
    daemon.stop()
    credentials = short_tmp / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "vaultd-passphrase").write_text("fake-wrong-credential-pass\n")
    daemon.env["CREDENTIALS_DIRECTORY"] = str(credentials)
    daemon.start()
    with daemon.client() as client:
        assert client.status()["state"] == "LOCKED"
    assert "unattended unlock from the 'vaultd-passphrase' credential failed: BAD_PASSPHRASE" in daemon.log
    daemon.stop()
    (credentials / "vaultd-passphrase").write_text(PASS + "\n")
    daemon.start()
    with daemon.client() as client:
        assert client.status()["state"] == "UNLOCKED"
        assert client.token("ex").value == "fake-token-e2e-1"
    assert PASS not in daemon.log and "fake-wrong-credential-pass" not in daemon.log


# -- vaultctl install, without a user manager ---------------------------------------------------


def test_install_creates_private_folders_and_says_when_systemctl_fails(short_tmp: Path) -> None:
    config = short_tmp / "config"
    env = {"PATH": str(short_tmp / "nothing"), "HOME": str(short_tmp), "XDG_CONFIG_HOME": str(config)}
    run = subprocess.run(
        [BIN / "vaultctl", "install"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert run.returncode == 1
    assert "units written, but 'systemctl --user daemon-reload' failed: systemctl: command not found" in run.stderr
    for folder in (config, config / "systemd", config / "systemd" / "user"):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    for name in ("vaultd.service", "vaultd.socket"):
        assert (config / "systemd" / "user" / name).stat().st_mode & 0o777 == 0o644
    assert f"ExecStart={BIN / 'vaultd'}\n" in (config / "systemd" / "user" / "vaultd.service").read_text()
    again = subprocess.run(
        [BIN / "vaultctl", "install"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert "vaultd.service: unchanged" in again.stdout
