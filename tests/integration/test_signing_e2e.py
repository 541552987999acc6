"""Signing end to end: a real daemon process, Kraken nonces across a SIGKILL, the HTTP adapters."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx
import pytest
import requests

from vaultd_client import Client
from vaultd_client.errors import RedirectRefused
from vaultd_client.httpx_auth import VaultdAuth as HttpxAuth
from vaultd_client.requests_auth import VaultdAuth as RequestsAuth

from ..daemon_process import DaemonProcess

KRAKEN_SECRET = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
SECRET = "fake-binance-secret"


class VerifyingExchange(BaseHTTPRequestHandler):
    """Checks Binance's HMAC the way Binance does (query, then body, without the signature)."""

    def _check(self) -> None:
        parts = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        if self.headers.get("Authorization") == "Bearer fake-static-token":
            ok = True
        else:
            query, _, signature = parts.query.rpartition("&signature=")
            if not query:
                body, _, signature = body.rpartition("&signature=")
            expected = hmac.new(SECRET.encode(), (query + body).encode(), hashlib.sha256).hexdigest()
            ok = self.headers.get("X-MBX-APIKEY") == "fake-key" and hmac.compare_digest(signature, expected)
        self.send_response(200 if ok else 401)
        self.end_headers()
        self.wfile.write(json.dumps({"ok": ok}).encode())

    def _route(self) -> None:
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.2:9/elsewhere")
            self.end_headers()
            return
        self._check()

    do_GET = do_POST = _route

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def verifying_exchange() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), VerifyingExchange)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_both_adapters_sign_real_requests_that_the_server_verifies(
    daemon: DaemonProcess, verifying_exchange: str
) -> None:
    daemon.start()
    daemon.ready("fake-static-token")
    config = {"scheme": "binance-hmac", "api_key": "fake-key", "secret": SECRET}
    daemon.ctl("add", "binance", "--kind", "sign", *daemon.pw(), stdin=json.dumps(config))
    with Client(daemon.socket_path) as client:
        signed_get = httpx.get(
            verifying_exchange + "/api/v3/account?omitZeroBalances=true", auth=HttpxAuth("binance", client)
        )
        assert signed_get.status_code == 200, signed_get.text
        signed_post = requests.post(
            verifying_exchange + "/api/v3/order",
            data={"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01"},
            auth=RequestsAuth("binance", client),
            timeout=10,
        )
        assert signed_post.status_code == 200, signed_post.text
        bearer = requests.get(verifying_exchange + "/anything", auth=RequestsAuth("ex", client), timeout=10)
        assert bearer.status_code == 200
        unsigned = requests.get(verifying_exchange + "/api/v3/account", timeout=10)
        assert unsigned.status_code == 401, "the server really checks"
        with pytest.raises(RedirectRefused):  # requests follows by default: not with signed headers
            requests.get(verifying_exchange + "/redirect", auth=RequestsAuth("binance", client), timeout=10)
        held = httpx.get(verifying_exchange + "/redirect", auth=HttpxAuth("binance", client))
        assert held.status_code == 302, "httpx follows no redirect unless asked"
    shown = daemon.ctl("sign", "binance", "GET", verifying_exchange + "/api/v3/account")
    assert "X-MBX-APIKEY: fake-key" in shown.stdout and "signature=" in shown.stdout
    assert SECRET not in daemon.log and SECRET not in shown.stdout + shown.stderr


def test_kraken_nonces_stay_above_every_one_issued_across_a_sigkill(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready()
    config = {"scheme": "kraken", "api_key": "fake-key", "secret": KRAKEN_SECRET}
    daemon.ctl("add", "kraken", "--kind", "sign", *daemon.pw(), stdin=json.dumps(config))
    url = "https://api.kraken.com/0/private/Balance"
    ahead = int(time.time() * 1000) + 10_000_000  # an engine proposed a nonce far ahead of the clock
    with Client(daemon.socket_path) as client:
        issued = [client.sign("kraken", "POST", url, nonce=ahead).nonce]
        issued += [client.sign("kraken", "POST", url).nonce for _ in range(20)]
    assert issued == sorted(issued) and len(set(issued)) == len(issued)
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    daemon.start()
    daemon.ctl("unlock", *daemon.pw())
    with Client(daemon.socket_path) as client:
        after = client.sign("kraken", "POST", url).nonce
    assert after is not None and after > max(i for i in issued if i is not None)
