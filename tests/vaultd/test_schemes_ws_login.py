"""The OKX WebSocket login and Bybit WebSocket auth schemes: ccxt's args reproduced byte for byte,
the formulas written out, the refusals, and ``token.sign`` through a vault.

Neither venue's login example that we found gives a secret, so no published signature could be
reproduced. The "ccxt 4.5.90" vectors were computed by ``ccxt/pro/okx.py`` and
``ccxt/pro/bybit.py`` ``authenticate()`` in a throwaway virtualenv, with the fake credentials of
scheme_tools, the clock patched to ``CCXT_TS_MS`` and ``watch`` patched to capture the message
instead of sending it; ccxt is not needed here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest
import trio

from tests.vaultd.scheme_tools import (
    API_KEY,
    CCXT_TS_MS,
    PASSPHRASE,
    SECRET,
    TRANSIT_SECRET,
    keys,
    req,
    sign_with,
    vault_with,
)
from tests.vaultd.test_sign_transit import LocalTransit
from vaultd._credentials import ConfigError
from vaultd._errors import RpcError
from vaultd._providers.sign import SignProvider
from vaultd._schemes import SCHEMES, SignError, SignRequest
from vaultd._schemes.bybit_ws import auth_payload
from vaultd._schemes.okx_ws import login_prehash
from vaultd_protocol import ErrorCode

NOW = CCXT_TS_MS / 1000
OKX, BYBIT = SCHEMES["okx-ws-login"], SCHEMES["bybit-ws-auth"]

# ccxt 4.5.90, ccxt.pro.okx().authenticate(): {"op": "login", "args": [{"apiKey": ..., "passphrase":
# ..., "timestamp": "1765000000", "sign": OKX_SIGN}]}.
OKX_SIGN = "SOWiYNkPfhtAKqeKhdpjHukEvDw+pgHm4+95J+rZBng="
# ccxt 4.5.90, ccxt.pro.bybit().authenticate(url): {"op": "auth", "args": [api key, "1765000010123",
# BYBIT_SIGNATURE]} (ccxt's expiry: now + 10000 ms).
BYBIT_EXPIRES = "1765000010123"
BYBIT_SIGNATURE = "4edd6f3dfe00acabceb3c6702976cf920aaed13fc9506783a5cb9f197bc92739"


def test_okx_login_reproduces_ccxt() -> None:
    signed = OKX.sign(req("GET", "/ws/v5/private", host="ws.okx.com:8443"), keys())
    assert signed.query == (
        ("apiKey", API_KEY),
        ("passphrase", PASSPHRASE),
        ("timestamp", "1765000000"),
        ("sign", OKX_SIGN),
    )
    assert signed.headers == {} and signed.body == b"" and signed.valid_until == 1765000000 + 30
    # OKX's formula written out: timestamp in seconds + "GET" + "/users/self/verify".
    mac = hmac.new(SECRET.encode(), b"1765000000GET/users/self/verify", hashlib.sha256).digest()
    assert base64.b64encode(mac).decode() == OKX_SIGN
    assert login_prehash(1538054050) == b"1538054050GET/users/self/verify"


def test_bybit_auth_reproduces_ccxt() -> None:
    signed = BYBIT.sign(req("GET", "/v5/private", host="stream.bybit.com"), keys(passphrase=None))
    assert signed.query == (("apiKey", API_KEY), ("expires", BYBIT_EXPIRES), ("signature", BYBIT_SIGNATURE))
    assert signed.headers == {} and signed.body == b"" and signed.valid_until == int(BYBIT_EXPIRES) / 1000
    # Bybit's formula written out: hex HMAC-SHA256 of "GET/realtime" + expires.
    assert hmac.new(SECRET.encode(), b"GET/realtime" + BYBIT_EXPIRES.encode(), hashlib.sha256).hexdigest() == (
        BYBIT_SIGNATURE
    )
    assert auth_payload(1662350400000) == b"GET/realtime1662350400000"


def test_bybit_expires_in_sets_the_window() -> None:
    signed = BYBIT.sign(req("GET", "/v5/private", expires_in="60000"), keys())
    expires = CCXT_TS_MS + 60000
    assert dict(signed.query)["expires"] == str(expires) and signed.valid_until == expires / 1000
    mac = hmac.new(SECRET.encode(), f"GET/realtime{expires}".encode(), hashlib.sha256).hexdigest()
    assert dict(signed.query)["signature"] == mac


@pytest.mark.parametrize(
    ("scheme", "request_", "message"),
    [
        ("okx-ws-login", req("GET", "/ws/v5/private", (("a", "b"),)), "takes no parameters"),
        ("okx-ws-login", req("GET", "/ws/v5/private", body=b"{}"), "takes no parameters"),
        ("okx-ws-login", req("GET", "/ws/v5/private", expires_in="5"), "unknown option"),
        ("bybit-ws-auth", req("GET", "/v5/private", (("a", "b"),)), "takes no parameters"),
        ("bybit-ws-auth", req("GET", "/v5/private", body=b"{}"), "takes no parameters"),
        ("bybit-ws-auth", req("GET", "/v5/private", expires_in="0"), "'expires_in' must be whole milliseconds"),
        ("bybit-ws-auth", req("GET", "/v5/private", expires_in="60001"), "'expires_in' must be whole milliseconds"),
        ("bybit-ws-auth", req("GET", "/v5/private", expires_in="1e4"), "'expires_in' must be whole milliseconds"),
        ("bybit-ws-auth", req("GET", "/v5/private", expires_in="010"), "'expires_in' must be whole milliseconds"),
        ("bybit-ws-auth", req("GET", "/v5/private", recv_window="5000"), "unknown option"),
    ],
)
def test_refusals(scheme: str, request_: SignRequest, message: str) -> None:
    with pytest.raises(SignError, match=message) as info:
        SCHEMES[scheme].sign(request_, keys())
    assert SECRET not in str(info.value) and PASSPHRASE not in str(info.value)


def test_okx_login_needs_a_passphrase() -> None:
    with pytest.raises(SignError, match="okx-ws-login: needs the API key's passphrase") as info:
        OKX.sign(req("GET", "/ws/v5/private"), keys(passphrase=None))
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError, match="'passphrase' is required"):
        SignProvider.from_config({"scheme": "okx-ws-login", "api_key": API_KEY, "secret": SECRET})
    assert SignProvider.from_config({"scheme": "bybit-ws-auth", "api_key": API_KEY, "secret": SECRET})


def test_the_passphrase_is_in_no_repr() -> None:
    provider = SignProvider.from_config(
        {"scheme": "okx-ws-login", "api_key": API_KEY, "secret": SECRET, "passphrase": PASSPHRASE}
    )
    signed = provider.sign(req("GET", "/ws/v5/private"))
    assert dict(signed.query)["passphrase"] == PASSPHRASE, "the login args carry it, as OKX asks"
    shown = f"{signed!r} {provider!r} {provider.describe()!r} {OKX!r}"
    assert PASSPHRASE not in shown and SECRET not in shown


def passphrase(scheme: str) -> dict[str, str]:
    """OKX keys come with a passphrase; Bybit's do not (``credential.put`` refuses one)."""
    return {"passphrase": PASSPHRASE} if scheme.startswith("okx") else {}


WS_URLS = {"okx-ws-login": "wss://ws.okx.com:8443/ws/v5/private", "bybit-ws-auth": "wss://stream.bybit.com/v5/private"}


@pytest.mark.parametrize("scheme", sorted(WS_URLS))
async def test_signing_through_transit_gives_the_same_answer(scheme: str) -> None:
    local = {"scheme": scheme, "api_key": API_KEY, "secret": TRANSIT_SECRET, **passphrase(scheme)}
    remote = {k: v for k, v in local.items() if k != "secret"} | {"backend": {"upstream": "bao", "transit_key": "k"}}
    request = {"method": "GET", "url": WS_URLS[scheme], "timestamp": CCXT_TS_MS}
    transit = LocalTransit({"k": TRANSIT_SECRET.encode()})
    assert await sign_with(remote, request, NOW, transit=transit) == await sign_with(local, request, NOW)
    assert [(op, alg) for op, _, _, _, alg in transit.calls] == [("hmac", "sha2-256")]


@pytest.mark.parametrize("scheme", sorted(WS_URLS))
async def test_token_sign_through_a_vault(scheme: str, nursery: trio.Nursery, tmp_path: Path) -> None:
    config = {"scheme": scheme, "api_key": API_KEY, "secret": SECRET, **passphrase(scheme)}
    vault = await vault_with(tmp_path, nursery, "ws", config, NOW)
    request = {"name": "ws", "method": "GET", "url": WS_URLS[scheme]}
    answer = vault.sign_now("ws", request)
    assert answer is not None, "no nonce, no round trip: answered at once"
    expected = OKX_SIGN if scheme == "okx-ws-login" else BYBIT_SIGNATURE
    assert answer["query"][-1] == ["sign" if scheme == "okx-ws-login" else "signature", expected]
    assert answer["headers"] == {} and answer["body"] == b""
    with pytest.raises(RpcError) as refused:
        await vault.sign("ws", {**request, "url": WS_URLS[scheme] + "?x=1"})
    assert refused.value.code is ErrorCode.INVALID_PARAMS


@pytest.mark.parametrize("scheme", sorted(WS_URLS))
def test_status_warns_that_the_session_is_beyond_the_allow_list(scheme: str) -> None:
    provider = SignProvider.from_config({"scheme": scheme, "api_key": API_KEY, "secret": SECRET, **passphrase(scheme)})
    warning = next(warning for warning in provider.warnings(NOW) if "logs a WebSocket session in" in warning)
    assert warning.startswith(f"{'an' if scheme == 'okx-ws-login' else 'a'} {scheme} signature"), warning
    assert not SignProvider.from_config(
        {"scheme": "okx", "api_key": API_KEY, "secret": SECRET, "passphrase": "p"}
    ).warnings(NOW)


@pytest.mark.parametrize("scheme", ["binance-ws-logon", "coinbase-ws-jwt"])
def test_status_warns_for_the_key_based_logins_too(scheme: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    key = (
        ed25519.Ed25519PrivateKey.generate()
        if scheme == "binance-ws-logon"
        else ec.generate_private_key(ec.SECP256R1())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    provider = SignProvider.from_config({"scheme": scheme, "api_key": API_KEY, "private_key": pem.decode()})
    assert any(f"{scheme} signature logs a WebSocket session in" in warning for warning in provider.warnings(NOW))
