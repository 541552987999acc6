"""Renewal end to end: a real daemon process against the fake exchange in another process.

These run on real time (two processes cannot share trio's virtual clock), so the tokens
live 1.5 to 3 seconds; each wait polls a condition with a deadline, never a bare sleep.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from vaultd._secret import Secret
from vaultd._vaultfile import decode
from vaultd_client import Client

from ..daemon_process import PASS, DaemonProcess, FakeExchangeProcess


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # another process does the work: poll


def add_oauth(daemon: DaemonProcess, fx: FakeExchangeProcess, name: str = "live") -> str:
    refresh = fx.control(new_refresh_token=True)["refresh_token"]
    config = {
        "token_url": fx.url + "/oauth/token",
        "grant_type": "refresh_token",
        "client_id": "fake-client",
        "client_secret": "fake-secret",
        "refresh_token": refresh,
    }
    daemon.ctl("add", name, "--kind", "oauth2", *daemon.pw(), stdin=json.dumps(config))
    return str(refresh)


def described(daemon: DaemonProcess, name: str) -> dict[str, Any]:
    status = daemon.client().status()
    return next(c for c in status["credentials"] if c["name"] == name)


def stored_refresh_token(daemon: DaemonProcess, name: str) -> str:
    _, _, body = decode((daemon.data_dir / "vault").read_bytes(), Secret(PASS))
    return str(body["credentials"][name]["config"]["refresh_token"])


def test_a_watcher_follows_renewals_live_and_hears_the_lock(
    daemon: DaemonProcess, fake_exchange: FakeExchangeProcess
) -> None:
    fake_exchange.control(expires_in=1.5)
    daemon.start()
    daemon.ready()
    add_oauth(daemon, fake_exchange)
    with Client(daemon.socket_path) as client, client.watch(["live"], timeout=15) as events:
        updates = []
        for event in events:
            assert event.kind == "updated" and event.name == "live" and event.token is not None
            updates.append(event.token)
            if len(updates) == 3:
                break
        assert len({t.value for t in updates}) == 3, "three different tokens, pushed without polling"
        assert [t.expires_at for t in updates] == sorted(t.expires_at for t in updates if t.expires_at)
        daemon.ctl("lock")
        kinds = [e.kind for e in events]
    assert kinds[-1] == "locked"
    assert "fake-at-" not in daemon.log, "no token in the daemon's log"


def test_vaultctl_watch_prints_events_but_never_the_token(
    daemon: DaemonProcess, fake_exchange: FakeExchangeProcess
) -> None:
    fake_exchange.control(expires_in=1.5)
    daemon.start()
    daemon.ready()
    add_oauth(daemon, fake_exchange)
    result = daemon.ctl("watch", "live", "--json", "--count", "2")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["event"], line["name"]) for line in lines] == [("updated", "live")] * 2
    assert "fake-at-" not in result.stdout


def test_needs_reauth_shows_in_status_and_renew_recovers_it(
    daemon: DaemonProcess, fake_exchange: FakeExchangeProcess
) -> None:
    fake_exchange.control(fault="invalid_grant")
    daemon.start()
    daemon.ready()
    add_oauth(daemon, fake_exchange)
    wait_for(lambda: described(daemon, "live")["state"] == "NEEDS_REAUTH", what="NEEDS_REAUTH")
    assert "invalid_grant" in described(daemon, "live")["last_error"]
    status_text = daemon.ctl("status").stdout
    assert "NEEDS_REAUTH" in status_text and "invalid_grant" in status_text
    get = daemon.ctl("get", "live", check=False)
    assert get.returncode == 1 and "NEEDS_REAUTH" in get.stderr
    assert daemon.ctl("renew", "live", *daemon.pw(), check=False).returncode == 1
    fake_exchange.control(fault="")
    renewed = daemon.ctl("renew", "live", *daemon.pw(), check=False)
    assert renewed.returncode == 0 and "FRESH" in renewed.stdout
    assert daemon.ctl("get", "live").stdout.startswith("fake-at-")


@pytest.mark.parametrize("grace", [60.0, 0.0], ids=["reuse-grace", "strict-reuse-detection"])
def test_sigkill_right_after_the_endpoint_rotated(
    daemon: DaemonProcess, fake_exchange: FakeExchangeProcess, grace: float
) -> None:
    """The endpoint rotated the refresh token, and the daemon died before it heard the answer."""
    fake_exchange.control(expires_in=3, reuse_grace=grace)
    daemon.start()
    daemon.ready()
    first = add_oauth(daemon, fake_exchange)
    wait_for(lambda: described(daemon, "live")["state"] == "FRESH", what="the first token")
    fake_exchange.control(fault="late", delay=30, times=1)  # rotate, then answer 30 s later
    wait_for(lambda: fake_exchange.control()["behaviour"]["fault"] == "", what="the renewal to reach the endpoint")
    generation = daemon.client().status()["generation"]
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    rotated_upstream = fake_exchange.control(current_of=first)["current"]
    assert rotated_upstream != stored_refresh_token(daemon, "live"), "the daemon died before it saved it"

    daemon.start()
    after_restart = fake_exchange.calls()
    daemon.ctl("unlock", *daemon.pw())
    assert daemon.client().status()["generation"] >= generation, "the generation never goes back"
    if grace:
        wait_for(lambda: described(daemon, "live")["state"] == "FRESH", what="recovery within the grace period")
        assert fake_exchange.control(current_of=first)["current"] is not None, "the family was not revoked"
        wait_for(lambda: stored_refresh_token(daemon, "live") == fake_exchange.control(current_of=first)["current"],
                 what="the newest refresh token on disk")  # fmt: skip
    else:
        wait_for(lambda: described(daemon, "live")["state"] == "NEEDS_REAUTH", what="NEEDS_REAUTH")
        time.sleep(3)  # long enough for a loop to show itself (a token lives 3 s here)
        assert fake_exchange.calls() - after_restart == 1, "exactly one more attempt, no loop"


def test_a_listen_key_in_a_url_never_reaches_the_log(daemon: DaemonProcess, fake_exchange: FakeExchangeProcess) -> None:
    daemon.start()
    daemon.ready()
    config = {"style": "binance-listenkey", "base_url": fake_exchange.url, "api_key": "fake-client"}
    daemon.ctl("add", "stream", "--kind", "keepalive", *daemon.pw(), stdin=json.dumps(config))
    key = daemon.ctl("get", "stream").stdout.strip()
    assert key.startswith("fake-lk-")
    renewed = daemon.ctl("renew", "stream", *daemon.pw())  # a PUT with ?listenKey=... in its URL
    assert "FRESH" in renewed.stdout
    assert fake_exchange.calls("/api/v3/userDataStream") >= 2
    assert key not in daemon.log and "fake-lk-" not in daemon.log
