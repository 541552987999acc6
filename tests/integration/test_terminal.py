"""vaultctl on a real terminal (a pseudo-terminal): passphrases and tokens typed, never echoed."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import signal
import subprocess
import termios
import time

from ..daemon_process import BIN, PASS, DaemonProcess


def _make_controlling_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # runs in the child, after setsid()


class Terminal:
    """vaultctl with a pty as its controlling terminal, stdin, stdout and stderr."""

    def __init__(self, daemon: DaemonProcess, *args: str) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [BIN / "vaultctl", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=daemon.env,
            start_new_session=True,
            preexec_fn=_make_controlling_terminal,  # noqa: PLW1509 - only ioctl, async-signal-safe enough
        )
        os.close(slave)
        self.screen = b""

    def expect(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.screen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"never saw {text!r}; screen: {self.screen!r}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    self.screen += os.read(self.master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
        assert text.encode() in self.screen, f"never saw {text!r}; screen: {self.screen!r}"

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def finish(self) -> int:
        code = self.proc.wait(timeout=30)
        try:
            while select.select([self.master], [], [], 0.1)[0]:
                self.screen += os.read(self.master, 4096)
        except OSError:
            pass
        os.close(self.master)
        return code


def test_passphrases_and_tokens_typed_on_a_terminal_are_not_echoed(daemon: DaemonProcess) -> None:
    daemon.start()
    term = Terminal(daemon, "init", "--kdf-profile", "min")
    term.expect("Passphrase: ")
    term.type(PASS)
    term.expect("Repeat passphrase: ")
    term.type(PASS)
    assert term.finish() == 0
    assert b"vault created" in term.screen

    term = Terminal(daemon, "unlock")
    term.expect("Passphrase: ")
    term.type(PASS)
    assert term.finish() == 0

    term = Terminal(daemon, "add", "ex", "--kind", "static")
    term.expect("Token (input hidden): ")
    term.type("fake-typed-token")
    term.expect("Passphrase: ")
    term.type(PASS)
    assert term.finish() == 0
    assert PASS.encode() not in term.screen and b"fake-typed-token" not in term.screen, "echoed"
    assert daemon.ctl("get", "ex").stdout.strip() == "fake-typed-token"


def test_mistyped_confirmation_creates_nothing(daemon: DaemonProcess) -> None:
    daemon.start()
    term = Terminal(daemon, "init", "--kdf-profile", "min")
    term.expect("Passphrase: ")
    term.type(PASS)
    term.expect("Repeat passphrase: ")
    term.type(PASS + "x")
    assert term.finish() == 2
    assert b"the two passphrases differ" in term.screen
    assert "UNINITIALIZED" in daemon.ctl("status").stdout


def test_a_key_derivation_that_takes_long_says_so_on_the_terminal(daemon: DaemonProcess) -> None:
    # The MIN profile derives in microseconds, so the daemon is held still (SIGSTOP) for the
    # seconds a 'sensitive' derivation takes; vaultctl cannot tell the two apart.
    daemon.start()
    assert daemon.proc is not None
    term = Terminal(daemon, "init", "--kdf-profile", "min")
    term.expect("Passphrase: ")
    term.type(PASS)
    term.expect("Repeat passphrase: ")
    daemon.proc.send_signal(signal.SIGSTOP)
    try:
        term.type(PASS)
        term.expect("deriving key (Argon2id, 8 KiB)...")
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    assert term.finish() == 0
    assert b"vault created" in term.screen

    term = Terminal(daemon, "unlock")
    term.expect("Passphrase: ")
    daemon.proc.send_signal(signal.SIGSTOP)
    try:
        term.type(PASS)
        term.expect("deriving key (Argon2id")  # the profile is asked of the daemon, which is stopped
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    assert term.finish() == 0
    assert term.screen.count(b"deriving key") == 1
    assert b"vault unlocked" in term.screen


def test_no_progress_note_for_scripts(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ctl("init", "--kdf-profile", "min", *daemon.pw())
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGSTOP)
    try:
        unlock = subprocess.Popen(
            [BIN / "vaultctl", "unlock", *daemon.pw()],
            env=daemon.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        with contextlib.suppress(subprocess.TimeoutExpired):  # the daemon is stopped: it cannot answer yet
            unlock.wait(timeout=1.5)
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    out, err = unlock.communicate(timeout=30)
    assert unlock.returncode == 0, err
    assert b"vault unlocked" in out
    assert err == b""
