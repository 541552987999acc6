"""``vaultctl top`` on a real terminal: a detached tmux session of fixed size, read with ``capture-pane``.

A real daemon renews an oauth2 credential against the fake exchange every few seconds; the view
must show the credentials, the renewals as they happen, lock the vault on ``l`` then ``y``,
survive the daemon's death and return, and give the terminal back as it found it on ``q``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..daemon_process import BIN, DaemonProcess, FakeExchangeProcess
from ..polling import wait_for
from ..unavailable import unavailable

#: After top ends, the shell in the pane says how, and shows the terminal's modes (a Ctrl-C
#: reaches the shell too: its trap keeps it going; top still gets the default disposition).
_SCRIPT = 'trap : INT; "$0" top "$@"; echo "top exited $?"; stty -a; exec sleep 600'
_RENEWAL = re.compile(r"updated\s+live\s+renewed, expires in")


def _tmux_binary() -> str:
    found = shutil.which("tmux")
    if found is not None:
        return found
    unavailable("tmux is missing: vaultctl top is tested under tmux (.ci/run installs it with apt-get)")


class TmuxTop:
    """``vaultctl top`` in a detached tmux session (120x40 unless told), on a tmux server of its own."""

    def __init__(self, daemon: DaemonProcess, *args: str, size: tuple[int, int] = (120, 40)) -> None:
        self.binary = _tmux_binary()
        self.socket = daemon.root / "tmux.sock"
        self.env = {k: v for k, v in daemon.env.items() if k not in ("NO_COLOR", "COLUMNS", "LINES", "TMUX")}
        self.env["TERM"] = "xterm-256color"
        self.tmux(
            "new-session", "-d", "-s", "top", "-x", str(size[0]), "-y", str(size[1]),
            "sh", "-c", _SCRIPT, str(BIN / "vaultctl"), *args,
        )  # fmt: skip

    def tmux(self, *args: str) -> str:
        proc = subprocess.run(
            [self.binary, "-S", str(self.socket), *args], env=self.env, capture_output=True, text=True, timeout=10
        )
        assert proc.returncode == 0, f"tmux {args[0]} failed: {proc.stderr}"
        return proc.stdout

    def screen(self, *, colour: bool = False) -> str:
        return self.tmux("capture-pane", "-p", *(["-e"] if colour else []), "-t", "top")

    def expect(self, pattern: str | re.Pattern[str], what: str, timeout: float = 20.0) -> str:
        """Wait until the screen matches ``pattern``; the screen then."""

        def shown() -> str | None:
            screen = self.screen()
            return screen if re.search(pattern, screen) else None

        try:
            return str(wait_for(shown, what, timeout=timeout, interval=0.1))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the screen:\n{self.screen()}") from None

    def press(self, key: str) -> None:
        self.tmux("send-keys", "-t", "top", "-l", key)

    def alternate_screen(self) -> bool:
        return self.tmux("display-message", "-p", "-t", "top", "#{alternate_on}").strip() == "1"

    def close(self) -> None:
        subprocess.run(
            [self.binary, "-S", str(self.socket), "kill-server"], env=self.env, capture_output=True, timeout=10
        )


def _add_oauth(daemon: DaemonProcess, exchange: FakeExchangeProcess, name: str) -> None:
    config = {
        "token_url": exchange.url + "/oauth/token",
        "grant_type": "refresh_token",
        "client_id": "fake-client",
        "client_secret": "fake-secret",
        "refresh_token": exchange.control(new_refresh_token=True)["refresh_token"],
    }
    daemon.ctl("add", name, "--kind", "oauth2", *daemon.pw(), stdin=json.dumps(config))


@pytest.fixture
def renewing(daemon: DaemonProcess, fake_exchange: FakeExchangeProcess) -> DaemonProcess:
    """A daemon with a static credential 'ex' and an oauth2 'live' whose tokens last 3 s (renewed every ~2 s)."""
    fake_exchange.control(expires_in=3)
    daemon.start()
    daemon.ready()
    _add_oauth(daemon, fake_exchange, "live")
    return daemon


@pytest.fixture
def top(renewing: DaemonProcess) -> Iterator[TmuxTop]:
    view = TmuxTop(renewing)
    yield view
    view.close()


def test_top_shows_credentials_and_renewals_live_locks_on_l_y_and_gives_the_terminal_back_on_q(
    renewing: DaemonProcess, top: TmuxTop
) -> None:
    screen = top.expect(r"live\s+oauth2\s+\S+", "the oauth2 credential's row")
    assert re.search(r"ex\s+static\s+FRESH", screen), screen
    assert "vault UNLOCKED" in screen
    assert top.alternate_screen(), "full screen: the alternate screen is on"
    coloured = top.screen(colour=True)
    assert re.search(r"\x1b\[[0-9;]*32[0-9;]*m\s*FRESH", coloured), f"FRESH in green: {coloured!r}"

    top.expect(_RENEWAL, "a renewal in the events pane, pushed by token.watch")

    top.press("l")
    top.expect(r"Lock the vault now\?.*\[y/N\]", "the lock's question")
    top.press("n")
    top.expect(r"not locked", "the answer no")
    assert renewing.client().status()["state"] == "UNLOCKED", "no means no"

    top.press("l")
    top.expect(r"Lock the vault now\?", "the lock's question again")
    top.press("y")
    wait_for(lambda: renewing.client().status()["state"] == "LOCKED", "the daemon locked by top", timeout=10)
    top.expect(r"vault LOCKED", "the view saying the vault is locked")
    top.expect(r"locked\s+-\s+the vault was locked", "the watch's lock event in the events pane")
    top.expect(r"q quit\s+vault locked", "the footer saying what the key did")

    renewing.ctl("unlock", *renewing.pw())
    screen = top.expect(r"unlocked\s+-\s+the vault was unlocked", "the unlock in the events pane")
    assert "vault UNLOCKED" in screen and "vault locked" not in screen, f"the footer no longer says locked: {screen}"

    top.press("q")
    screen = top.expect(r"top exited \d+", "top's end")
    assert "top exited 0" in screen, screen
    assert not top.alternate_screen(), "the alternate screen is left"
    modes = " ".join(screen.split())
    assert re.search(r"(?<![-\w])icanon\b", modes) and re.search(r"(?<![-\w])echo\b", modes), (
        f"the terminal's modes are restored (canonical input, echo): {screen}"
    )
    assert "Traceback" not in screen


def test_top_shows_the_daemon_gone_and_follows_it_when_it_comes_back(renewing: DaemonProcess, top: TmuxTop) -> None:
    top.expect(_RENEWAL, "a renewal")
    assert renewing.stop(signal.SIGKILL) == -signal.SIGKILL
    screen = top.expect(r"daemon NOT REACHABLE", "the daemon shown gone", timeout=10)
    assert "daemon not reachable" in screen, "and said so in the events pane"
    assert "credentials (as last seen at" in screen, "the last rows kept, marked as old"
    header = screen.splitlines()[0]
    assert "trying again every 1 s" in header and "will try again shortly" not in screen, screen
    assert "requests/s -   engines -" in screen, f"no figures from a daemon that is gone: {screen}"
    assert re.search(r"live\s+oauth2\s+\S+\s+to \d\d:\d\d:\d\dZ", screen), f"old rows keep clock times: {screen}"

    renewing.start()
    renewing.ctl("unlock", *renewing.pw())
    top.expect(r"daemon reachable again", "the daemon back in the events pane")
    top.expect(r"vault UNLOCKED", "the view following the new daemon")
    before = len(_RENEWAL.findall(top.screen()))
    wait_for(lambda: len(_RENEWAL.findall(top.screen())) > before, "a renewal from the new daemon (watch again)")
    assert "top exited" not in top.screen(), "top lives on"

    top.tmux("send-keys", "-t", "top", "C-c")
    screen = top.expect(r"top exited \d+", "top's end on Ctrl-C")
    assert "top exited 0" in screen and "Traceback" not in screen, screen
    assert not top.alternate_screen(), "Ctrl-C leaves the alternate screen too"
    assert re.search(r"(?<![-\w])icanon\b", " ".join(screen.split())), f"and restores the modes: {screen}"


def test_a_credential_added_while_top_runs_gets_a_row_and_its_renewals_are_followed(
    renewing: DaemonProcess, fake_exchange: FakeExchangeProcess, top: TmuxTop
) -> None:
    top.expect(_RENEWAL, "a renewal of the first credential")
    _add_oauth(renewing, fake_exchange, "late")
    top.expect(r"late\s+oauth2\s+\S+", "the new credential's row")
    top.expect(r"updated\s+late\s+renewed", "its renewals, watched too")

    shell = int(top.tmux("display-message", "-p", "-t", "top", "#{pane_pid}"))
    children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
    assert len(children) == 1, children
    os.kill(int(children[0]), signal.SIGTERM)
    screen = top.expect(r"top exited \d+", "top's end on SIGTERM")
    assert f"top exited {128 + signal.SIGTERM}" in screen and "Traceback" not in screen, screen
    assert not top.alternate_screen(), "SIGTERM leaves the alternate screen too"
    assert re.search(r"(?<![-\w])icanon\b", " ".join(screen.split())), f"and restores the modes: {screen}"


def test_top_piped_prints_one_plain_snapshot_and_refuses_a_fast_interval(renewing: DaemonProcess) -> None:
    proc = renewing.ctl("top")
    assert "\x1b" not in proc.stdout, "no escape codes in a pipe"
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("vault UNLOCKED"), proc.stdout
    assert any(re.match(r"ex\s+static\s+FRESH\s+never", line) for line in lines), proc.stdout
    assert any(re.match(r"live\s+oauth2\s+[A-Z_]+\s", line) for line in lines), proc.stdout

    fast = renewing.ctl("top", "--interval", "0.2", check=False)
    assert fast.returncode == 2, fast
    assert "--interval must be between 1 and 3600 seconds" in fast.stderr

    renewing.stop()
    gone = renewing.ctl("top", check=False)
    assert gone.returncode == 3, gone
    assert "is the daemon running?" in gone.stderr
    assert "Traceback" not in gone.stderr


def test_top_needs_no_vault_and_shows_a_locked_one(tmp_path: Path, daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ctl("init", "--kdf-profile", "min", *daemon.pw())
    proc = daemon.ctl("top", "--once")
    assert proc.stdout.startswith("vault LOCKED"), proc.stdout
    assert "(vault LOCKED: no credentials shown)" in proc.stdout


def test_top_fits_80_by_24_and_counts_neither_its_own_connection_nor_its_own_calls(
    renewing: DaemonProcess, fake_exchange: FakeExchangeProcess
) -> None:
    view = TmuxTop(renewing, size=(80, 24))
    try:
        screen = view.expect(r"live\s+oauth2\s+\S+", "the oauth2 credential's row")
        lines = screen.splitlines()
        assert any(line.split() == ["NAME", "KIND", "STATE", "TTL", "LEFT", "RENEWAL", "REFRESH", "LAST", "ERROR"]
                   for line in lines), f"every column header whole, on one line: {screen}"  # fmt: skip
        assert (
            "l lock the vault   q quit" in lines[-1] or "l lock the vault   q quit" in screen.rstrip().splitlines()[-1]
        )
        assert "renewals and events" in screen, screen
        # nothing but top is connected, and the renewals top watches are not requests
        view.expect(r"requests/s 0\.0   engines 0\b", "top leaving its own connection and calls out", timeout=15)

        fake_exchange.control(fault="invalid_grant")  # the provider refuses: NEEDS_REAUTH, with a long last error
        screen = view.expect(r"state\s+live\s+\S+ -> NEEDS_REAUTH: \S", "the state change in the events pane")
        lines = screen.splitlines()
        header = ["NAME", "KIND", "STATE", "TTL", "LEFT", "RENEWAL", "REFRESH", "LAST", "ERROR"]
        assert any(line.split() == header for line in lines), f"headers whole with an error shown: {screen}"
        row = next(line for line in lines if re.match(r"live\s+oauth2\s+NEEDS_REAUTH", line))
        assert "the token endpoint" in row and row.rstrip().endswith("…"), f"the error on one line, cut short: {screen}"
        assert not any(re.match(r"\s+\S{1,4}$", line) for line in lines[5:8]), f"nothing folded: {screen}"
        assert "l lock the vault   q quit" in screen.rstrip().splitlines()[-1], f"the key help shown: {screen}"
        assert "Traceback" not in view.screen()
    finally:
        view.close()
