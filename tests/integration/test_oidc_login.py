"""``vaultctl login`` end to end: a real vaultd, a real vaultctl, and a real OpenID provider.

panva's oidc-provider (tests/oidc_provider.py) on 127.0.0.1, with httpx as the operator's
browser. The refresh token must reach the vault and never vaultctl's output; discovery,
private_key_jwt, the device flow, a resource indicator, a NEEDS_REAUTH credential brought
back by a login, a vaultctl killed while it waits, and the expiry margin against a provider
that rounds its issue time down to whole seconds.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_process import BIN, PASS, DaemonProcess
from tests.oidc_provider import Browser, OidcProvider
from tests.polling import wait_for
from vaultd._secret import Secret
from vaultd._vaultfile import decode
from vaultd_client.errors import BadPassphrase, InvalidParams


@pytest.fixture(scope="module")
def op() -> Iterator[OidcProvider]:
    with OidcProvider(access_token_ttl=30) as provider:
        yield provider


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path).start()
    d.ctl("init", "--kdf-profile", "min", *d.pw())
    d.ctl("unlock", *d.pw())
    yield d
    if d.proc is not None:
        d.stop()
    assert not d.leaked()


def config(op: OidcProvider, client: str = "vaultd-basic", **more: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "issuer": op.issuer,
        "grant_type": "authorization_code",
        "client_id": client,
        "scope": "openid offline_access",
    }
    if client in op.secrets:
        settings["client_secret"] = op.secrets[client]
    return {**settings, **more}


class Login:
    """A ``vaultctl login --json --no-browser`` running in the background."""

    def __init__(
        self, daemon: DaemonProcess, name: str, *args: str, stdin: str = "", browser: dict[str, str] | None = None
    ) -> None:
        """``browser``: no --no-browser, and these variables (DISPLAY, BROWSER) in vaultctl's environment."""
        no_browser = [] if browser is not None else ["--no-browser"]
        self.proc = subprocess.Popen(
            [BIN / "vaultctl", "login", name, "--json", *no_browser, *args, *daemon.pw()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**daemon.env, **(browser or {})},
            start_new_session=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(stdin)
        self.proc.stdin.close()
        self.proc.stdin = None  # closed: communicate() must not flush it
        line = self.proc.stdout.readline()
        assert line, f"vaultctl login printed nothing: {self.proc.stderr.read() if self.proc.stderr else ''}"
        self.started: dict[str, Any] = json.loads(line)

    def finish(self) -> tuple[int, dict[str, Any], str, str]:
        rest, err = self.proc.communicate(timeout=60)
        outcome = json.loads(rest.strip().splitlines()[-1]) if rest.strip() else {}
        return self.proc.returncode, outcome, json.dumps(self.started) + rest, err


def described(daemon: DaemonProcess, name: str) -> dict[str, Any]:
    with daemon.client() as client:
        return next(c for c in client.status()["credentials"] if c["name"] == name)


def refresh_token_in_vault(daemon: DaemonProcess, name: str) -> str:
    _, _, body = decode((daemon.data_dir / "vault").read_bytes(), Secret(PASS))
    token: str = body["credentials"][name]["config"]["refresh_token"]
    return token


def test_browser_login_end_to_end_keeps_the_refresh_token_out_of_vaultctl(
    op: OidcProvider, daemon: DaemonProcess
) -> None:
    login = Login(daemon, "broker", "--kind", "oauth2", stdin=json.dumps(config(op)))
    url = httpx.URL(login.started["authorization_url"])
    assert url.params["code_challenge_method"] == "S256" and url.params["prompt"] == "consent"
    with Browser() as browser:
        page = browser.authorize(login.started["url"])
    assert page.status_code == 200 and "logged in" in page.text and "close this tab" in page.text
    assert "code=" not in page.text
    status, outcome, out, err = login.finish()
    assert status == 0 and outcome["outcome"] == "ok", (outcome, err)
    refresh = refresh_token_in_vault(daemon, "broker")
    assert refresh and refresh not in out and refresh not in err
    with daemon.client() as client:
        token = client.token("broker").value
    assert token not in out and token not in err
    assert op.introspect(token)["active"] is True
    assert described(daemon, "broker")["state"] == "FRESH"
    daemon.secrets.add(refresh)
    # The listener is gone once the login ended.
    with pytest.raises(httpx.ConnectError):
        httpx.get(login.started["redirect_uri"])
    # A restart and an unlock renew with the refresh token the login stored.
    daemon.stop()
    daemon.start()
    daemon.ctl("unlock", *daemon.pw())
    with daemon.client() as client:
        renewed = client.token("broker").value
    assert renewed != token and op.introspect(renewed)["active"] is True
    assert refresh_token_in_vault(daemon, "broker") != refresh, "rotated at the renewal"


def test_a_credential_awaiting_login_then_logged_in_with_private_key_jwt_and_a_resource(
    op: OidcProvider, daemon: DaemonProcess
) -> None:
    settings = config(op, "vaultd-jwt", private_key=op.private_key_pem, resource="https://api.example/")
    settings["scope"] = "openid offline_access api:read"
    daemon.ctl("add", "desk", "--kind", "oauth2", *daemon.pw(), stdin=json.dumps(settings))
    waiting = described(daemon, "desk")
    assert waiting["state"] == "NEEDS_REAUTH" and "awaiting login" in waiting["last_error"]
    assert waiting["settings"]["client_auth"] == "private_key_jwt"
    login = Login(daemon, "desk")
    with Browser() as browser:
        browser.authorize(login.started["url"])
    status, outcome, _, err = login.finish()
    assert status == 0 and outcome["credential"]["state"] == "FRESH", (outcome, err)
    assert outcome["credential"]["settings"]["discovered"]["token_url"] == op.metadata()["token_endpoint"]
    with daemon.client() as client:
        token = client.token("desk").value
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert payload["aud"] == "https://api.example/" and payload["client_id"] == "vaultd-jwt"


def test_device_login_brings_a_refused_credential_back_without_a_restart(
    op: OidcProvider, daemon: DaemonProcess
) -> None:
    settings = config(op, "vaultd-post", grant_type="device_code", refresh_token="fake-revoked-refresh-token")
    daemon.ctl("add", "dev", "--kind", "oauth2", *daemon.pw(), stdin=json.dumps(settings))
    deadline = time.monotonic() + 20
    while described(daemon, "dev")["state"] != "NEEDS_REAUTH" and time.monotonic() < deadline:
        time.sleep(0.1)
    refused = described(daemon, "dev")
    assert refused["state"] == "NEEDS_REAUTH" and "invalid_grant" in refused["last_error"]
    assert ": " in refused["last_error"].split("invalid_grant", 1)[1], "error_description kept"
    pid = daemon.proc.pid if daemon.proc else None
    login = Login(daemon, "dev", "--device")
    assert login.started["user_code"] and login.started["verification_uri"].startswith(op.issuer)
    with Browser() as browser:
        page = browser.enter_user_code(login.started["verification_uri"], login.started["user_code"])
    assert page.status_code == 200
    status, outcome, _, err = login.finish()
    assert status == 0 and outcome["credential"]["state"] == "FRESH", (outcome, err)
    assert daemon.proc is not None and daemon.proc.pid == pid
    with daemon.client() as client:
        assert op.introspect(client.token("dev").value)["active"] is True


def test_a_vaultctl_killed_while_waiting_leaves_the_login_and_the_daemon_working(
    op: OidcProvider, daemon: DaemonProcess
) -> None:
    daemon.ctl("add", "gone", "--kind", "oauth2", *daemon.pw(), stdin=json.dumps(config(op)))
    login = Login(daemon, "gone")
    os.killpg(login.proc.pid, signal.SIGKILL)
    login.proc.wait(timeout=10)
    with Browser() as browser:
        page = browser.authorize(login.started["url"])
    assert "logged in" in page.text
    assert described(daemon, "gone")["state"] == "FRESH"
    daemon.ctl("status")


def test_a_denied_login_and_a_wrong_state(op: OidcProvider, daemon: DaemonProcess) -> None:
    daemon.ctl("add", "no", "--kind", "oauth2", *daemon.pw(), stdin=json.dumps(config(op)))
    login = Login(daemon, "no")
    wrong = httpx.get(login.started["redirect_uri"], params={"code": "fake-code-x", "state": "forged"})
    assert wrong.status_code == 400 and "fake-code-x" not in wrong.text
    with Browser() as browser:
        page = browser.authorize(login.started["url"], deny=True)
    assert "failed" in page.text
    status, outcome, _, _ = login.finish()
    assert status == 1 and outcome["outcome"] == "failed" and "access_denied" in outcome["error"]
    assert described(daemon, "no")["state"] == "NEEDS_REAUTH"


def test_vaultd_never_serves_a_token_the_provider_already_expired(op: OidcProvider, daemon: DaemonProcess) -> None:
    """oidc-provider sets exp = floor(now) + ttl: up to 1 s before vaultd's start + expires_in.
    With the default 1 s margin vaultd's expiry is never after the provider's; with 0 it is."""
    daemon.ctl("add", "m1", "--kind", "oauth2", *daemon.pw(), stdin=json.dumps(config(op)))
    daemon.ctl("add", "m0", "--kind", "oauth2", *daemon.pw(), stdin=json.dumps(config(op, expiry_margin=0)))
    late = []
    for name in ("m1", "m0"):
        login = Login(daemon, name)
        with Browser() as browser:
            browser.authorize(login.started["url"])
        assert login.finish()[0] == 0
        for _ in range(5):
            with daemon.client() as client:
                client.call("credential.renew", {"passphrase": PASS, "name": name})
                served = client.call("token.get", {"name": name})
            exp = op.introspect(served["token"])["exp"]
            late.append((name, served["expires_at"] - exp))
    assert all(over <= 0 for name, over in late if name == "m1"), late
    assert any(over > 0 for name, over in late if name == "m0"), f"the provider does not round? {late}"


def test_the_human_output_of_a_device_login(op: OidcProvider, daemon: DaemonProcess) -> None:
    settings = config(op, grant_type="device_code")
    proc = subprocess.Popen(
        [BIN / "vaultctl", "login", "people", "--device", "--kind", "oauth2", *daemon.pw()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=daemon.env,
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(settings))
    proc.stdin.close()
    proc.stdin = None
    first = proc.stdout.readline()
    assert first.startswith("Go to http://127.0.0.1:") and " and enter the code " in first
    uri, code = first.split()[2], first.split()[-1]
    with Browser() as browser:
        browser.enter_user_code(uri, code)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "credential 'people' is logged in: FRESH" in out
    assert "credential 'people' added" in err and "Waiting up to" in err


def test_login_calls_are_audited_and_need_the_passphrase(op: OidcProvider, daemon: DaemonProcess) -> None:
    daemon.ctl("add", "aud", "--kind", "oauth2", *daemon.pw(), stdin=json.dumps(config(op)))
    with daemon.client() as client:
        with pytest.raises(InvalidParams, match="passphrase"):
            client.call("credential.login", {"name": "aud"})  # an engine without the passphrase
        with pytest.raises(BadPassphrase):
            client.call("credential.login", {"name": "aud", "passphrase": "not the passphrase"}, timeout=30)
        with pytest.raises(InvalidParams, match="'timeout' must be between 1 and 900"):
            client.call("credential.login", {"name": "aud", "passphrase": PASS, "timeout": 901})
        started = client.call("credential.login", {"name": "aud", "passphrase": PASS}, timeout=30)
        pending = client.call("credential.login_wait", {"passphrase": PASS, "login_id": started["login_id"], "wait": 0})
        assert pending["outcome"] == "pending" and pending["credential"]["state"] == "NEEDS_REAUTH"
    deadline = time.monotonic() + 10
    while True:
        text = daemon.audit_log.read_text() if daemon.audit_log.exists() else ""
        entries = [json.loads(line) for line in text.splitlines()]
        outcomes = {(e["method"], e["outcome"]) for e in entries if e["method"].startswith("credential.login")}
        if ("credential.login_wait", "ok") in outcomes:
            break
        assert time.monotonic() < deadline, f"not audited: {outcomes}"
        time.sleep(0.05)  # the daemon's audit writer flushes every second
    assert {("credential.login", "ok"), ("credential.login", "BAD_PASSPHRASE")} <= outcomes
    assert not any(started["url"] in line or started["login_id"] in line for line in text.splitlines())


def test_the_browser_vaultctl_opens_gets_a_one_time_link_without_state_or_challenge(
    op: OidcProvider, daemon: DaemonProcess, tmp_path: Path
) -> None:
    """What vaultctl hands a browser is on that program's command line (/proc/PID/cmdline), readable
    by every local user: only the daemon's one-time loopback link, never the state or the PKCE
    challenge. The browser (a script recording its argv, named in $BROWSER) then logs in with it."""
    record = tmp_path / "browser-argv"
    recorder = tmp_path / "browser"
    recorder.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    recorder.chmod(0o700)
    login = Login(
        daemon, "broker", "--kind", "oauth2", stdin=json.dumps(config(op)),
        browser={"DISPLAY": ":99", "BROWSER": str(recorder)},
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    argv = record.read_text().split()
    assert argv == [login.started["url"]]
    assert "state" not in argv[0] and "code_challenge" not in argv[0], argv
    full = httpx.URL(login.started["authorization_url"])
    assert full.params["state"] not in argv[0]
    assert full.params["code_challenge"] not in argv[0]
    with Browser() as browser:
        page = browser.authorize(argv[0])
    assert page.status_code == 200 and "logged in" in page.text
    status, outcome, _, err = login.finish()
    assert status == 0 and outcome["outcome"] == "ok", (outcome, err)


_FLOOD = """
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    try:
        conn = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
        conn.send(b"GET /callback?state=")
        held.append(conn)
    except OSError:
        break
print(len(held), flush=True)
time.sleep(float(sys.argv[3]))
"""


def test_a_flood_of_connections_to_the_login_listener_neither_kills_the_daemon_nor_the_login(
    op: OidcProvider, tmp_path: Path
) -> None:
    """300 connections held open against a daemon allowed 40 files: the listener serves a few at once
    and closes the rest (a task and a file each would exhaust the files, and an accept error used to
    end the daemon); the daemon keeps serving, and once the flood leaves the login completes."""
    daemon = DaemonProcess(tmp_path).start(nofile=40)
    try:
        daemon.ctl("init", "--kdf-profile", "min", *daemon.pw())
        daemon.ctl("unlock", *daemon.pw())
        daemon.ctl("add", "static-one", "--kind", "static", *daemon.pw(), stdin="fake-static-token-1\n")
        login = Login(daemon, "broker", "--kind", "oauth2", stdin=json.dumps(config(op)))
        port = httpx.URL(login.started["redirect_uri"]).port
        flood = subprocess.Popen(
            [sys.executable, "-c", _FLOOD, str(port), "300", "3"], stdout=subprocess.PIPE, text=True
        )
        assert flood.stdout is not None and int(flood.stdout.readline()) > 100
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log
        with daemon.client() as client:
            assert client.token("static-one").value == "fake-static-token-1"
        flood.wait(timeout=30)
        with Browser() as browser:
            page = browser.authorize(login.started["url"])
        assert page.status_code == 200 and "logged in" in page.text, page.text
        status, outcome, _, err = login.finish()
        assert status == 0 and outcome["outcome"] == "ok", (outcome, err)
        assert daemon.proc.poll() is None
        said = [line for line in daemon.log.splitlines() if "connections beyond 8 at once" in line]
        assert 1 <= len(said) <= 9, "the flood is counted, logged at powers of two, not line by line"
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()


def test_a_login_that_cannot_start_leaves_no_half_made_credential(daemon: DaemonProcess) -> None:
    """'login --kind oauth2' whose issuer cannot be read: the credential it made is not kept, so the
    same command runs again once the settings are fixed (no ALREADY_EXISTS, nothing renewing)."""
    config = {"issuer": "http://127.0.0.1:9", "grant_type": "authorization_code", "client_id": "desk"}
    login = daemon.ctl(
        "login", "broker", "--kind", "oauth2", "--no-browser", *daemon.pw(), stdin=json.dumps(config), check=False
    )
    assert login.returncode == 1, login
    assert "the credential 'broker' was not kept" in login.stderr and "UPSTREAM_UNAVAILABLE" in login.stderr
    names = [c["name"] for c in json.loads(daemon.ctl("status", "--json").stdout)["credentials"]]
    assert "broker" not in names


def test_the_clean_up_of_a_failed_login_spares_a_credential_replaced_meanwhile(daemon: DaemonProcess) -> None:
    """'login --kind' removes what it made when the login cannot begin, but not a credential someone
    put in its place while the issuer was slow to answer: that is another operator's, not half-made."""
    answered = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answered.wait(20)  # the metadata comes only once the other credential is in place
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = {"issuer": f"http://127.0.0.1:{server.server_address[1]}", "grant_type": "authorization_code",
                  "client_id": "desk"}  # fmt: skip
        login = subprocess.Popen(
            [BIN / "vaultctl", "login", "broker", "--kind", "oauth2", "--no-browser", *daemon.pw()],
            env=daemon.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert login.stdin is not None
        login.stdin.write(json.dumps(config))
        login.stdin.close()
        wait_for(lambda: "broker" in daemon.ctl("status").stdout, "the login's credential")
        daemon.ctl("add", "broker", "--kind", "static", "--replace", *daemon.pw(), stdin="fake-replacement-token\n")
        answered.set()
        assert login.stderr is not None
        err = login.stderr.read()
        assert login.wait(timeout=60) == 1 and "was not kept" not in err, err
        assert daemon.ctl("get", "broker").stdout.strip() == "fake-replacement-token"
    finally:
        answered.set()
        server.shutdown()
        server.server_close()
