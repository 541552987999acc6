"""``vaultctl sign`` against a real daemon: options, timestamp and nonce, JSON with the query, and
WebSocket logins printed as the plain URL and the message to send (never the args in the URL).

Signatures are checked against each scheme's formula written out here (SPEC.md 6.6), with fake
keys generated per run; the message shapes are SPEC 6.6's rows for each login scheme.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils

from vaultd.ctl import main
from vaultd.ctl.sign import websocket_login
from vaultd_client import Signed

from ..daemon_process import DaemonProcess
from .test_audit_e2e import lines

SECRET = "fake-ctl-sign-secret"
OKX_PASS = "fake-okx-pass-7d1e"
KRAKEN_SECRET = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
ORDER = "https://api.binance.com/api/v3/order?symbol=BTCUSDT&side=BUY&type=MARKET&quantity=1"
OKX_WS = "wss://ws.okx.com:8443/ws/v5/private"
BYBIT_WS = "wss://stream.bybit.com/v5/private"
BINANCE_WS = "wss://ws-api.binance.com:443/ws-api/v3"
COINBASE_WS = "wss://advanced-trade-ws-user.coinbase.com/"


def pem(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def add(daemon: DaemonProcess, name: str, config: dict[str, object]) -> None:
    daemon.ctl("add", name, "--kind", "sign", *daemon.pw(), stdin=json.dumps(config))


def now_ms() -> int:
    return int(time.time() * 1000)


def test_rest_requests_take_options_timestamp_and_nonce_and_json_carries_the_query(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready()
    add(daemon, "binance", {"scheme": "binance-hmac", "api_key": "fake-key", "secret": SECRET, "recv_window": 7000})
    add(daemon, "kraken", {"scheme": "kraken", "api_key": "fake-key", "secret": KRAKEN_SECRET})
    stamp = now_ms() - 2000
    # --option overrides the credential's own recv_window for this request; --timestamp is signed.
    shown = daemon.ctl("sign", "binance", "POST", ORDER, "--timestamp", str(stamp), "--option", "recvWindow=9000")
    first, *headers = shown.stdout.splitlines()
    method, url = first.split(" ", 1)
    payload, _, signature = urlsplit(url).query.rpartition("&signature=")
    assert method == "POST" and payload == f"{urlsplit(ORDER).query}&recvWindow=9000&timestamp={stamp}"
    assert signature == hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()
    assert headers == ["X-MBX-APIKEY: fake-key"]
    assert "a real signature, valid until" in shown.stderr

    as_json = json.loads(daemon.ctl("sign", "binance", "POST", ORDER, "--json").stdout)
    assert as_json["query"] == [list(pair) for pair in parse_qsl(urlsplit(as_json["url"]).query)]
    assert [name for name, _ in as_json["query"]][-3:] == ["recvWindow", "timestamp", "signature"]
    assert ["recvWindow", "7000"] in as_json["query"]  # the credential's own, without --option

    proposed = now_ms() + 5000
    nonce = json.loads(daemon.ctl("sign", "kraken", "POST", "https://api.kraken.com/0/private/Balance",
                                  "--nonce", str(proposed), "--json").stdout)  # fmt: skip
    assert nonce["nonce"] == proposed and nonce["body"] == f"nonce={proposed}"
    again = daemon.ctl("sign", "kraken", "POST", "https://api.kraken.com/0/private/Balance",
                       "--nonce", str(proposed), check=False)  # fmt: skip
    assert again.returncode == 1 and "INVALID_PARAMS" in again.stderr

    late = daemon.ctl("sign", "binance", "GET", ORDER, "--timestamp", str(now_ms() - 600_000), check=False)
    assert late.returncode == 1 and "five minutes behind the daemon's clock" in late.stderr


def test_websocket_logins_print_the_plain_url_and_the_message_to_send(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready()
    add(daemon, "okx", {"scheme": "okx-ws-login", "api_key": "fake-okx-key", "secret": SECRET, "passphrase": OKX_PASS})
    add(daemon, "bybit", {"scheme": "bybit-ws-auth", "api_key": "fake-bybit-key", "secret": SECRET})
    ed_key = ed25519.Ed25519PrivateKey.generate()
    add(daemon, "bnws", {"scheme": "binance-ws-logon", "api_key": "fake-bn-key", "private_key": pem(ed_key)})
    ec_key = ec.generate_private_key(ec.SECP256R1())
    cdp = "organizations/fake/apiKeys/fake"
    add(daemon, "cbws", {"scheme": "coinbase-ws-jwt", "api_key": cdp, "private_key": pem(ec_key)})

    # OKX: {"op": "login", "args": [{apiKey, passphrase, timestamp (s), sign}]}, sign =
    # base64(HMAC-SHA256(secret, timestamp + "GET" + "/users/self/verify")).
    shown = daemon.ctl("sign", "okx", "GET", OKX_WS)
    url, message = shown.stdout.splitlines()
    assert url == OKX_WS, "the plain URL, not one carrying the login args"
    login = json.loads(message)
    assert login["op"] == "login" and len(login["args"]) == 1
    args = login["args"][0]
    assert list(args) == ["apiKey", "passphrase", "timestamp", "sign"]
    assert args["apiKey"] == "fake-okx-key" and args["passphrase"] == OKX_PASS
    prehash = f"{args['timestamp']}GET/users/self/verify".encode()
    assert args["sign"] == base64.b64encode(hmac.new(SECRET.encode(), prehash, hashlib.sha256).digest()).decode()
    assert shown.stdout.count(OKX_PASS) == 1 and OKX_PASS not in shown.stderr  # in the message, nowhere else
    assert "okx-ws-login: connect to the first line's URL (no query)" in shown.stderr and "passphrase" in shown.stderr
    assert "a real signature" in shown.stderr

    # Bybit: {"op": "auth", "args": [apiKey, expires (a number), signature]}, signature =
    # hex(HMAC-SHA256(secret, "GET/realtime" + expires)); --option expires_in reaches the scheme.
    stamp = now_ms() - 1000
    shown = daemon.ctl("sign", "bybit", "GET", BYBIT_WS, "--timestamp", str(stamp), "--option", "expires_in=30000")
    url, message = shown.stdout.splitlines()
    auth = json.loads(message)
    assert url == BYBIT_WS and auth["op"] == "auth"
    key, expires, signature = auth["args"]
    assert key == "fake-bybit-key" and type(expires) is int and expires == stamp + 30000
    assert signature == hmac.new(SECRET.encode(), f"GET/realtime{expires}".encode(), hashlib.sha256).hexdigest()

    # Binance: a session.logon request whose params are apiKey, recvWindow?, timestamp (numbers)
    # and signature = base64 Ed25519 over the other params sorted, name=value joined by "&".
    shown = daemon.ctl("sign", "bnws", "GET", BINANCE_WS, "--option", "recvWindow=6000")
    url, message = shown.stdout.splitlines()
    logon = json.loads(message)
    assert url == BINANCE_WS and logon["method"] == "session.logon" and "id" in logon
    params = logon["params"]
    assert list(params) == ["apiKey", "recvWindow", "timestamp", "signature"]
    assert params["recvWindow"] == 6000 and type(params["timestamp"]) is int
    signed_text = f"apiKey=fake-bn-key&recvWindow=6000&timestamp={params['timestamp']}"
    ed_key.public_key().verify(base64.b64decode(params["signature"]), signed_text.encode())

    # Coinbase: the JWT for the subscribe message's "jwt" field; ES256 over header.claims, no uri.
    shown = daemon.ctl("sign", "cbws", "GET", COINBASE_WS)
    url, jwt = shown.stdout.splitlines()
    assert url == COINBASE_WS and '"jwt" field of a subscribe message' in shown.stderr
    header, claims, raw_signature = jwt.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(claims + "=="))
    assert decoded["sub"] == cdp and "uri" not in decoded
    der_r_s = base64.urlsafe_b64decode(raw_signature + "==")
    der = utils.encode_dss_signature(int.from_bytes(der_r_s[:32], "big"), int.from_bytes(der_r_s[32:], "big"))
    ec_key.public_key().verify(der, f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))

    # JSON keeps what the daemon answered, query included (the scripts' form).
    as_json = json.loads(daemon.ctl("sign", "okx", "GET", OKX_WS, "--json").stdout)
    assert [name for name, _ in as_json["query"]] == ["apiKey", "passphrase", "timestamp", "sign"]

    # Real signatures: each one is in the audit log, as an engine's would be.
    def signed(entries: list[dict[str, Any]]) -> bool:
        ok = {e["credential"] for e in entries if e["method"] == "token.sign" and e["outcome"] == "ok"}
        return {"okx", "bybit", "bnws", "cbws"} <= ok

    audited = lines(daemon, signed)
    assert OKX_PASS not in json.dumps(audited)


def test_a_token_credential_is_pointed_at_vaultctl_get_and_bad_options_are_usage(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready("fake-token-ctl-sign")
    refused = daemon.ctl("sign", "ex", "GET", "https://api.binance.com/api/v3/account", check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "'ex' is a static credential" in refused.stderr and "use 'vaultctl get ex'" in refused.stderr
    assert "token.get" not in refused.stderr and "(INVALID_PARAMS)" in refused.stderr
    unknown = daemon.ctl("sign", "nope", "GET", "https://api.binance.com/api/v3/account", check=False)
    assert unknown.returncode == 1 and "UNKNOWN_CREDENTIAL" in unknown.stderr
    for bad, says in ((["--option", "recvWindow"], "--option takes K=V"),
                      (["--option", "=1"], "--option takes K=V"),
                      (["--option", "a=1", "--option", "a=2"], "--option a is given twice")):  # fmt: skip
        usage = daemon.ctl("sign", "ex", "GET", ORDER, *bad, check=False)
        assert usage.returncode == 2 and says in usage.stderr, usage.stderr


def test_vaultctl_get_of_a_sign_credential_points_at_signing(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready()
    add(daemon, "binance", {"scheme": "binance-hmac", "api_key": "fake-key", "secret": SECRET})
    refused = daemon.ctl("get", "binance", check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "'binance' is a 'sign' credential" in refused.stderr and "Client.sign" in refused.stderr
    assert "vaultctl sign binance METHOD URL" in refused.stderr and "(INVALID_PARAMS)" in refused.stderr
    bad_name = daemon.ctl("add", "bad name", "--kind", "sign", *daemon.pw(), stdin="{}", check=False)
    assert bad_name.returncode != 0 and "ASCII" in bad_name.stderr


def test_help_says_the_signature_is_real_and_audited(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["sign", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "not a dry run" in text and "audit log" in text
    for option in ("--option K=V", "--timestamp MS", "--nonce N", "--json"):
        assert option in text
    for scheme in ("okx-ws-login", "bybit-ws-auth", "binance-ws-logon", "coinbase-ws-jwt"):
        assert scheme in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "(a usable, audited signature: not a dry run)" in " ".join(capsys.readouterr().out.split())


def test_only_an_answer_without_headers_and_body_is_read_as_a_login() -> None:
    rest = Signed(
        {"X-MBX-APIKEY": "k"}, "https://h/p?a=1&signature=s", b"", 1.0, query=[("a", "1"), ("signature", "s")]
    )
    assert websocket_login(rest) is None
    assert websocket_login(Signed({}, "https://h/p", b"", 1.0)) is None  # nothing to send
    form = Signed({}, "https://h/p", b"a=1", 1.0)
    assert websocket_login(form) is None
    # A login layout this vaultctl does not know: its args as a JSON object, never the URL's query.
    other = websocket_login(Signed({}, "wss://h/ws?token=t", b"", 1.0, query=[("token", "t")]))
    assert other is not None and other[2] == '{"token": "t"}'
    odd = Signed({}, "wss://h/ws", b"", 1.0, query=[("apiKey", "k"), ("expires", "soon"), ("signature", "s")])
    assert websocket_login(odd) == (
        "websocket login",
        "send the second line's login args as SPEC.md 6.6 says for the scheme",
        '{"apiKey": "k", "expires": "soon", "signature": "s"}',
    )
