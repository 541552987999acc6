"""Alerts from a real daemon: a [[notify]] command that appends what it is given to a file, and a
webhook to a real HTTP server on 127.0.0.1; the fake exchange turns a credential NEEDS_REAUTH.

Real time (several processes); every wait polls a condition with a deadline.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from vaultd_client.errors import InvalidParams

from ..daemon_process import PASS, DaemonProcess, FakeExchangeProcess
from ..polling import wait_for

#: Something only the daemon's own environment holds: no command it runs may see it.
DAEMON_ONLY = "fake-daemon-environment-secret-7f3a"
STATIC_TOKEN = "fake-static-token-never-in-a-notice-91c2"
#: What a notified command's environment may hold: ours, and what /bin/sh adds itself.
CHILD_VARIABLES = {"PATH", "HOME", "LANG", "PWD", "SHLVL", "_", "OLDPWD"} | {
    f"VAULTD_{name}" for name in ("EVENT", "CREDENTIAL", "STATE", "REASON", "AT")
}


class Webhook:
    """A real HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({"path": self.path, "type": self.headers["Content-Type"], **json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/fake-webhook-path-secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[tuple[str, str | None]]:
        return [(n["event"], n.get("credential")) for n in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Hook:
    """A [[notify]] command: a shell script that appends stdin to one file and its env to another."""

    def __init__(self, folder: Path) -> None:
        self.notices, self.envs, self.path = folder / "notices.jsonl", folder / "envs.txt", folder / "hook"
        self.path.write_text(f"#!/bin/sh\ncat >> {self.notices}\n{{ env; echo --; }} >> {self.envs}\n")
        self.path.chmod(0o700)

    def received(self) -> list[dict[str, Any]]:
        text = self.notices.read_text() if self.notices.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    def events(self) -> list[tuple[str, str | None]]:
        return [(n["event"], n["credential"]) for n in self.received()]

    def environments(self) -> list[dict[str, str]]:
        blocks = self.envs.read_text().split("--\n")[:-1]
        return [dict(line.split("=", 1) for line in block.splitlines() if "=" in line) for block in blocks]


def configure(daemon: DaemonProcess, text: str) -> Path:
    settings = Path(daemon.env["XDG_CONFIG_HOME"]) / "vaultd" / "vaultd.toml"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(text)
    return settings


@pytest.fixture
def alerted(short_tmp: Path) -> Iterator[DaemonProcess]:
    """A real daemon with its own settings folder and a secret in its environment."""
    proc = DaemonProcess(short_tmp, XDG_CONFIG_HOME=str(short_tmp / "config"), FAKE_DAEMON_ONLY=DAEMON_ONLY)
    proc.secrets.add(DAEMON_ONLY)
    yield proc
    if proc.proc is not None:
        assert proc.stop() == 0, proc.log
    assert proc.leaked() == [], "a secret reached the daemon's log or audit log"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    yield server
    server.close()


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_notices_reach_a_command_and_a_webhook_once_and_never_carry_a_secret(
    alerted: DaemonProcess, fake_exchange: FakeExchangeProcess, webhook: Webhook, short_tmp: Path
) -> None:
    daemon, hook = alerted, Hook(short_tmp)
    configure(
        daemon,
        f'log_level = "info"\n[[notify]]\ncommand = ["{hook.path}"]\n'
        f'[[notify]]\nwebhook = "{webhook.url}"\nevents = ["needs_reauth", "locked"]\n',
    )
    daemon.start()
    daemon.ctl("init", "--kdf-profile", "min", *daemon.pw())
    daemon.ctl("unlock", *daemon.pw())

    # A static token whose not_after is 36 hours away: inside the 2-day warning, not yet the 1-day one.
    static = json.dumps({"token": STATIC_TOKEN, "not_after": iso(timedelta(hours=36))})
    daemon.ctl("add", "desk-static", "--kind", "static", *daemon.pw(), stdin=static)
    wait_for(lambda: ("expiring", "desk-static") in hook.events(), "the expiring notice")
    expiring = hook.received()[0]
    assert expiring["expiring"] == "not_after" and "replace it" in expiring["reason"]
    assert expiring["state"] == "FRESH" and expiring["at"].endswith("Z") and expiring["test"] is False

    refresh = fake_exchange.control(new_refresh_token=True)["refresh_token"]
    config = {
        "token_url": fake_exchange.url + "/oauth/token",
        "grant_type": "refresh_token",
        "client_id": "fake-client",
        "client_secret": "fake-secret",
        "refresh_token": refresh,
    }
    daemon.ctl("add", "live", "--kind", "oauth2", *daemon.pw(), stdin=json.dumps(config))
    with daemon.client() as client:
        secrets = {
            STATIC_TOKEN,
            refresh,
            "fake-secret",
            PASS,
            DAEMON_ONLY,
            client.call("token.get", {"name": "live"})["token"],
        }
    secrets.add(fake_exchange.control(current_of=refresh)["current"])  # the refresh token it rotated to
    fake_exchange.control(fault="invalid_grant")
    renewed = daemon.ctl("renew", "live", *daemon.pw(), check=False)
    assert "NEEDS_REAUTH" in renewed.stderr, renewed
    wait_for(lambda: ("needs_reauth", "live") in webhook.events(), "the webhook's needs_reauth notice")
    wait_for(lambda: ("needs_reauth", "live") in hook.events(), "the command's needs_reauth notice")
    notice = next(n for n in webhook.received if n["event"] == "needs_reauth")
    assert notice["state"] == "NEEDS_REAUTH" and "invalid_grant" in notice["reason"]
    assert notice["path"] == "/hooks/fake-webhook-path-secret" and notice["type"] == "application/json"
    assert ("expiring", "desk-static") not in webhook.events(), "the webhook asked for two events only"

    for _ in range(3):  # the condition holds: renewals and status changes say nothing new
        daemon.ctl("renew", "live", *daemon.pw(), check=False)
    daemon.ctl("lock")
    wait_for(lambda: ("locked", None) in webhook.events(), "the locked notice")
    wait_for(lambda: ("locked", None) in hook.events(), "the command's locked notice")
    daemon.ctl("unlock", *daemon.pw())
    tested = daemon.ctl("notify", "test", "--event", "expired", "--json", *daemon.pw())
    outcome = json.loads(tested.stdout)
    assert outcome["event"] == "expired"
    assert outcome["sinks"] == [
        {"sink": f"#1 command {hook.path}", "ok": True, "error": None},
        {"sink": f"#2 webhook {webhook.url.split('/hooks')[0]}", "ok": True, "error": None},
    ], "the webhook's path is never shown"
    sample = wait_for(lambda: [n for n in webhook.received if n.get("test")], "the sample at the webhook")[0]
    assert sample["event"] == "expired" and sample["credential"] == "example" and sample["state"] == "TEST"
    time.sleep(1.0)  # let a repeated notice, were one coming, arrive
    assert sorted(hook.events()) == sorted(
        [("expiring", "desk-static"), ("needs_reauth", "live"), ("locked", None), ("expired", "example")]
    ), "one notice per condition"
    assert [e for e in webhook.events() if e != ("expired", "example")] == [("needs_reauth", "live"), ("locked", None)]
    everything = hook.notices.read_text() + json.dumps(webhook.received) + hook.envs.read_text()
    assert [secret for secret in secrets if secret in everything] == [], "a secret reached a notice"

    for env in hook.environments():
        assert set(env) <= CHILD_VARIABLES, f"the command inherited {sorted(set(env) - CHILD_VARIABLES)}"
    assert {e["VAULTD_EVENT"] for e in hook.environments()} == {"expiring", "needs_reauth", "locked", "expired"}
    reauth = next(e for e in hook.environments() if e["VAULTD_EVENT"] == "needs_reauth")
    assert reauth["VAULTD_CREDENTIAL"] == "live" and reauth["VAULTD_STATE"] == "NEEDS_REAUTH"
    assert "fake-webhook-path-secret" not in daemon.log


def test_a_refused_rollback_is_notified(alerted: DaemonProcess, short_tmp: Path) -> None:
    daemon, hook = alerted, Hook(short_tmp)
    configure(daemon, f'[[notify]]\ncommand = ["{hook.path}"]\nevents = ["rollback"]\n')
    daemon.start()
    daemon.ready()
    assert daemon.stop() == 0
    (daemon.data_dir / "vault").write_bytes((daemon.data_dir / "vault.bak").read_bytes())
    daemon.start()
    assert daemon.ctl("unlock", *daemon.pw(), check=False).returncode == 1
    daemon.ctl("unlock", *daemon.pw(), check=False)  # refused again: the same condition
    notice = wait_for(hook.received, "the rollback notice")[0]
    assert notice["event"] == "rollback" and notice["state"] == "LOCKED" and notice["credential"] is None
    assert "generation 2" in notice["reason"]
    time.sleep(1.0)  # a second notice, were one coming, would arrive within the notifier's settle time
    assert len(hook.received()) == 1


def test_a_hanging_command_and_a_silent_webhook_never_hold_up_token_get(
    alerted: DaemonProcess, short_tmp: Path
) -> None:
    daemon, started = alerted, short_tmp / "started"
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        configure(
            daemon,
            f'[[notify]]\ncommand = ["/bin/sh", "-c", "touch {started}; exec sleep 60"]\ntimeout = 4\n'
            f'[[notify]]\nwebhook = "http://127.0.0.1:{silent.getsockname()[1]}/x"\ntimeout = 4\n',
        )
        daemon.start()
        daemon.ready()
        with daemon.client() as client:
            client.lock()  # a locked notice goes to both sinks, which hang
            wait_for(started.exists, "the command to start")
            client.unlock(PASS)
            latencies = []
            until = time.monotonic() + 1.5
            while time.monotonic() < until:
                begin = time.perf_counter()
                assert client.call("token.get", {"name": "ex"})["token"] == "fake-token-e2e-1"
                latencies.append(time.perf_counter() - begin)
                time.sleep(0.01)
        print(f"token.get while a notice hangs: {len(latencies)} calls, worst {max(latencies) * 1000:.1f} ms")
        # Waiting for a notice would take its 4 s timeout; half of it is no figure of speed.
        assert max(latencies) < 2.0, f"token.get waited for a notice: worst {max(latencies):.3f} s"
        wait_for(lambda: "no answer within 4 s (killed)" in daemon.log, "the hanging command to be killed", 15)
        port = silent.getsockname()[1]
        said = f"webhook http://127.0.0.1:{port}: locked notice for the vault not delivered: no answer within 4 s"
        wait_for(lambda: said in daemon.log, "the silent webhook to be given up", 15)

        begin = time.monotonic()
        tested = daemon.ctl("notify", "test", *daemon.pw(), check=False)
        assert 3.5 < time.monotonic() - begin < 15
        assert tested.returncode == 1
        lines = tested.stdout.splitlines()
        assert lines[0].endswith("FAILED: no answer within 4 s (killed)"), lines
        assert "webhook http://127.0.0.1:" in lines[1] and "FAILED: " in lines[1], lines
    finally:
        silent.close()


def test_a_bad_notify_table_stops_the_start_and_sighup_reloads(alerted: DaemonProcess, short_tmp: Path) -> None:
    daemon, hook = alerted, Hook(short_tmp)
    settings = configure(daemon, '[[notify]]\nwebhook = "http://hooks.example/x"\n')
    daemon.start(wait=False)
    assert daemon.proc is not None and daemon.proc.wait(timeout=20) == 1
    daemon.proc = None
    assert "[[notify]] #1: webhook must use https://" in daemon.log and str(settings) in daemon.log
    # A typo in a table's name would switch the alerts off without a word: refused as well.
    settings.write_text('log_level = "info"\n[[notfy]]\ncommand = ["/bin/true"]\n')
    daemon.start("--log-level", "debug", wait=False)
    assert daemon.proc is not None and daemon.proc.wait(timeout=20) == 1
    daemon.proc = None
    assert f"{settings}: unknown setting 'notfy' (known: alerts, log_level, metrics" in daemon.log

    settings.write_text("")
    daemon.start()
    daemon.ready()
    empty = daemon.ctl("notify", "test", *daemon.pw(), check=False)
    assert (empty.returncode, empty.stdout) == (1, "")
    assert empty.stderr.startswith("vaultctl: the running daemon has no [[notify]] sink") and "SIGHUP" in empty.stderr
    settings.write_text(f'[[notify]]\ncommand = ["{hook.path}"]\n')
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP: alerts: 1 notify sink(s)" in daemon.log, "the reload")
    assert daemon.ctl("notify", "test", *daemon.pw()).stdout == f"#1 command {hook.path}  ok\n"
    assert hook.received()[0]["test"] is True
    # An engine (a process of the same user without the passphrase) cannot ring the operator's pager.
    wrong = daemon.ctl("notify", "test", "--passphrase-fd", "0", stdin="not the passphrase\n", check=False)
    assert wrong.returncode == 1 and "BAD_PASSPHRASE" in wrong.stderr
    with daemon.client() as engine, pytest.raises(InvalidParams, match="passphrase"):
        engine.call("notify.test", {})
    assert len(hook.received()) == 1, "no sink ran"

    settings.write_text('[[notify]]\ncommand = ["/nonexistent/pager"]\n')  # a bad reload keeps what works
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "alerts not reloaded" in daemon.log, "the refused reload")
    assert daemon.ctl("notify", "test", *daemon.pw()).stdout == f"#1 command {hook.path}  ok\n"
