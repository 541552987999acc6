"""vaultctl passwd against a real daemon: engines keep getting tokens, and only the new passphrase opens."""

from __future__ import annotations

import threading

from vaultd_client import Client, VaultdError

from ..daemon_process import PASS, DaemonProcess

NEW = "fake new passphrase 2"


def test_passwd_while_engines_fetch_tokens(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready("fake-token-passwd")
    fetched, failures = [0], []
    stop = threading.Event()

    def engine() -> None:
        with Client(daemon.socket_path, cache=False) as client:
            while not stop.is_set():
                try:
                    assert client.token("ex").value == "fake-token-passwd"
                    fetched[0] += 1
                except (VaultdError, AssertionError) as exc:  # collected, asserted below
                    failures.append(exc)

    engines = [threading.Thread(target=engine) for _ in range(4)]
    for thread in engines:
        thread.start()
    new_file = daemon.root / "new-passphrase"
    new_file.write_text(NEW + "\n")
    new_file.chmod(0o600)
    try:
        before = fetched[0]
        changed = daemon.ctl("passwd", *daemon.pw(), "--new-passphrase-file", str(new_file))
        during = fetched[0] - before
    finally:
        stop.set()
        for thread in engines:
            thread.join()
    assert failures == [] and during > 0, (failures, during)
    assert "passphrase changed" in changed.stdout
    old = daemon.ctl("list", *daemon.pw(), check=False)
    assert (old.returncode == 1 and "BAD_PASSPHRASE" in old.stderr + old.stdout) or "passphrase" in old.stderr
    assert daemon.stop() == 0
    daemon.start()
    refused = daemon.ctl("unlock", *daemon.pw(), check=False)
    assert refused.returncode == 1, refused.stderr
    daemon.ctl("unlock", "--passphrase-file", str(new_file))
    assert daemon.client().token("ex").value == "fake-token-passwd"
    assert PASS not in daemon.log and NEW not in daemon.log


def test_passwd_refuses_a_short_or_unchanged_passphrase(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready()
    short = daemon.root / "short"
    short.write_text("short\n")
    short.chmod(0o600)
    result = daemon.ctl("passwd", *daemon.pw(), "--new-passphrase-file", str(short), check=False)
    assert result.returncode == 1 and "at least 8" in result.stderr
    same = daemon.ctl("passwd", *daemon.pw(), "--new-passphrase-file", str(daemon.passphrase_file), check=False)
    assert same.returncode == 2 and "same" in same.stderr
    daemon.ctl("list", *daemon.pw())  # the old passphrase still works
