"""The audit log of a real daemon: a line per decision, fingerprints not tokens, a chain that verifies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vaultd_client import Client
from vaultd_client.errors import Forbidden

from ..daemon_process import DaemonProcess

TOKEN = "fake-token-audit-9c1f-not-real"
HMAC = {"scheme": "binance-hmac", "api_key": "fake-key", "secret": "fake-audit-secret-5e2b"}


def lines(daemon: DaemonProcess, until: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    """The audit log's entries, once ``until`` holds for them (it is flushed every second)."""
    deadline = time.monotonic() + 10
    while True:
        if daemon.audit_log.exists():
            entries = [json.loads(line) for line in daemon.audit_log.read_text().splitlines()]
            if until(entries):
                return entries
        assert time.monotonic() < deadline, "the audit log was not flushed within 10 s"
        time.sleep(0.05)  # the daemon's writer, another process: poll


def has(method: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda entries: any(e["method"] == method for e in entries)


def test_every_decision_leaves_a_line_and_the_chain_verifies(daemon: DaemonProcess, short_tmp: Path) -> None:
    daemon.start()
    daemon.ready(TOKEN)
    daemon.ctl("add", "hmac", "--kind", "sign", *daemon.pw(), stdin=json.dumps(HMAC))
    policy = short_tmp / "policy.toml"
    policy.write_text(f'[[rule]]\nuid = {os.getuid()}\ncredentials = ["ex"]\nmethods = ["get", "status"]\n')
    daemon.ctl("policy", "set", str(policy), *daemon.pw())
    with Client(daemon.socket_path, cache=False) as engine:
        assert engine.token("ex").value == TOKEN
        with pytest.raises(Forbidden) as refused:
            engine.sign("hmac", "GET", "https://api.binance.com/api/v3/account")
        assert "fake-audit-secret" not in str(refused.value)
        assert engine.token("ex").value == TOKEN  # may fold into the first token.get's line (same second)
        engine.status()  # so that the refusal is not the last line
    entries = lines(daemon, lambda e: sum(x["count"] for x in e if x["method"] == "token.get") == 2)
    got = [e for e in entries if e["method"] == "token.get" and e["credential"] == "ex" and e["outcome"] == "ok"]
    assert sum(e["count"] for e in got) == 2 and got[0]["fingerprint"] and got[0]["identity"]["pid"] == os.getpid()
    # the same token, the same fingerprint (two lines, or one with count 2 when they fell in one second)
    assert {e["fingerprint"] for e in got} == {got[0]["fingerprint"]}
    assert got[0]["identity"]["uid"] == os.getuid()
    denied = [e for e in entries if e["method"] == "token.sign"]
    assert [(e["credential"], e["outcome"]) for e in denied] == [("hmac", "FORBIDDEN")]
    assert any(e["method"] == "policy.set" and e["outcome"] == "ok" for e in entries)
    text = daemon.audit_log.read_text()
    assert TOKEN not in text and "fake-audit-secret" not in text

    verified = daemon.ctl("audit", "verify", "--path", str(daemon.audit_log))
    assert "intact" in verified.stdout
    shown = daemon.ctl("audit", "--path", str(daemon.audit_log))
    assert "token.sign" in shown.stdout and "FORBIDDEN" in shown.stdout and TOKEN not in shown.stdout

    # An edited line (a FORBIDDEN turned into an ok) is found and named.
    edited = text.replace('"outcome":"FORBIDDEN"', '"outcome":"ok"', 1)
    assert edited != text
    assert daemon.stop() == 0  # nothing more is appended while we tamper
    daemon.audit_log.write_text(edited)
    tampered = daemon.ctl("audit", "verify", "--path", str(daemon.audit_log), check=False)
    assert tampered.returncode == 1 and "audit.log line" in tampered.stderr


def test_lines_survive_a_lock_and_a_stop(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready(TOKEN)
    with Client(daemon.socket_path, cache=False) as engine:
        engine.token("ex")
    daemon.ctl("lock")
    assert daemon.stop() == 0
    entries = lines(daemon, has("vault.lock"))
    assert [e["outcome"] for e in entries if e["method"] == "token.get"] == ["ok"]
    assert any(e["method"] == "vault.lock" for e in entries)
    assert "intact" in daemon.ctl("audit", "verify", "--path", str(daemon.audit_log)).stdout


# Connects in a loop, as one process, and waits each time for the daemon to close on it.
REFUSED_LOOP = r"""
import socket, sys
closed = 0
for _ in range(int(sys.argv[2])):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        sock.connect(sys.argv[1])
        closed += sock.recv(1) == b""
    except OSError:
        pass
    finally:
        sock.close()
print(closed)
"""


def test_another_uid_reconnecting_in_a_loop_leaves_a_few_lines_that_count_every_attempt(daemon: DaemonProcess) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch uid with setpriv")
    daemon.start()
    daemon.ready(TOKEN)
    script = daemon.root / "loop.py"
    script.write_text(REFUSED_LOOP)
    script.chmod(0o644)
    for folder in (daemon.root, daemon.root / "run", daemon.socket_path.parent):
        folder.chmod(0o755)
    daemon.socket_path.parent.chmod(0o777)
    daemon.socket_path.chmod(0o777)
    python = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"
    attempts = 500
    loop = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, str(script),
         str(daemon.socket_path), str(attempts)],
        capture_output=True, text=True, timeout=120, check=False, cwd="/",
    )  # fmt: skip
    assert loop.returncode == 0 and loop.stdout.strip() == str(attempts), loop.stderr  # each one closed on it

    def refused(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in entries if e["identity"].get("uid") == 65534]

    entries = lines(daemon, lambda e: sum(x["count"] for x in refused(e)) >= attempts)
    theirs = refused(entries)
    assert {(e["method"], e["outcome"]) for e in theirs} == {("accept", "refused")}
    assert sum(e["count"] for e in theirs) == attempts and len(theirs) <= 20, [e["count"] for e in theirs]
    assert "intact" in daemon.ctl("audit", "verify", "--path", str(daemon.audit_log)).stdout
