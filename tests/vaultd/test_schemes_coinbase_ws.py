"""``coinbase-ws-jwt``: the Coinbase Advanced Trade WebSocket JWT, returned as ``jwt`` for the subscribe message.

Coinbase's docs ("Advanced Trade WebSocket Authentication"): "WebSocket JWTs (vs those for REST
API) are not built with a request method or request path": the REST JWT's header and claims
without ``uri``. ES256 signatures are randomised, so tests verify them with the public key;
EdDSA ones are deterministic and compared to an Ed25519 signature computed here independently.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from vaultd._credentials import from_config
from vaultd._schemes import SCHEMES, Keys, SignError, SignRequest
from vaultd._signing import sign_request

from .test_sign_transit import UPSTREAM, LocalTransit

KEY_NAME = "organizations/fake-org/apiKeys/fake-key"
NONCE = "0123456789abcdef0123456789abcdef"
NOW = 1_800_000_000.0
NOW_MS = int(NOW * 1000)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
EC_PEM = EC_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
).decode()

SCHEME = SCHEMES["coinbase-ws-jwt"]


def ws_request(**changes: Any) -> SignRequest:
    fields: dict[str, Any] = {
        "method": "GET",
        "host": "advanced-trade-ws-user.coinbase.com",
        "path": "/",
        "query": (),
        "body": b"",
        "timestamp_ms": NOW_MS,
        "extra": {"nonce": NONCE},
    }
    return SignRequest(**{**fields, **changes})


def b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    header, claims, signature = token.split(".")
    return json.loads(b64url(header)), json.loads(b64url(claims)), f"{header}.{claims}".encode(), b64url(signature)


def verify_es256(signing_input: bytes, signature: bytes) -> None:
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    EC_KEY.public_key().verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))


def test_an_es256_jwt_without_uri_in_the_query() -> None:
    signed = SCHEME.sign(ws_request(), Keys(KEY_NAME, signing_key=EC_KEY))
    assert signed.headers == {} and signed.body == b""
    assert [name for name, _ in signed.query] == ["jwt"]
    header, claims, signing_input, signature = parts(signed.query[0][1])
    assert header == {"alg": "ES256", "kid": KEY_NAME, "nonce": NONCE, "typ": "JWT"}
    now = NOW_MS // 1000
    assert claims == {"iss": "cdp", "sub": KEY_NAME, "nbf": now, "exp": now + 120}, "no uri: Coinbase's WS JWT"
    assert signed.valid_until == now + 120
    verify_es256(signing_input, signature)


def test_an_eddsa_key_signs_deterministically() -> None:
    signed = SCHEME.sign(ws_request(), Keys(KEY_NAME, signing_key=ED_KEY))
    header, claims, signing_input, signature = parts(signed.query[0][1])
    assert header["alg"] == "EdDSA" and "uri" not in claims
    assert signature == ED_KEY.sign(signing_input)


def test_the_same_claims_as_the_rest_jwt_but_uri() -> None:
    rest = SCHEMES["coinbase"].sign(ws_request(host="api.coinbase.com", path="/x"), Keys(KEY_NAME, signing_key=ED_KEY))
    ws = SCHEME.sign(ws_request(), Keys(KEY_NAME, signing_key=ED_KEY))
    rest_header, rest_claims, _, _ = parts(rest.headers["Authorization"].removeprefix("Bearer "))
    ws_header, ws_claims, _, _ = parts(ws.query[0][1])
    assert ws_header == rest_header
    assert {key: value for key, value in rest_claims.items() if key != "uri"} == ws_claims


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"query": (("a", "b"),)}, "signs no query or body"),
        ({"body": b"{}"}, "signs no query or body"),
        ({"extra": {}}, r"option 'nonce' \(required\) must be 16 to 64 lower-case hex digits"),
        ({"extra": {"nonce": "XYZ"}}, r"option 'nonce' \(required\) must be 16 to 64 lower-case hex digits"),
        ({"extra": {"nonce": NONCE, "uri": "x"}}, "unknown option 'uri'"),
    ],
)
def test_bad_requests_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SignError, match=message):
        SCHEME.sign(ws_request(**changes), Keys(KEY_NAME, signing_key=EC_KEY))


def test_a_bad_key_name_or_no_key_is_refused() -> None:
    with pytest.raises(SignError, match=r"'api_key' .* must be printable"):
        SCHEME.sign(ws_request(), Keys("", signing_key=EC_KEY))
    with pytest.raises(SignError, match="needs an Ed25519 private key"):
        SCHEME.sign(ws_request(), Keys(KEY_NAME))


async def persist() -> None:
    pass


async def test_token_sign_answers_the_jwt_with_a_fresh_nonce() -> None:
    credential = from_config(
        "cb", "sign", {"scheme": "coinbase-ws-jwt", "api_key": KEY_NAME, "private_key": EC_PEM}, NOW
    )
    request = {"method": "GET", "url": "wss://advanced-trade-ws-user.coinbase.com"}
    first = await sign_request(credential, dict(request), lambda: NOW, trio.Lock(), persist)
    second = await sign_request(credential, dict(request), lambda: NOW, trio.Lock(), persist)
    ((name, token),) = first["query"]
    assert name == "jwt" and first["url"] == f"wss://advanced-trade-ws-user.coinbase.com/?jwt={token}"
    assert first["headers"] == {} and first["body"] == b""
    header, _, signing_input, signature = parts(token)
    assert parts(second["query"][0][1])[0]["nonce"] != header["nonce"], "the daemon picks a new nonce each time"
    verify_es256(signing_input, signature)
    assert EC_PEM.splitlines()[1] not in repr(credential) + json.dumps(credential.provider.describe())


async def test_through_openbao_transit_one_es256_call() -> None:
    config = {"scheme": "coinbase-ws-jwt", "api_key": KEY_NAME, "backend": {"upstream": UPSTREAM, "transit_key": "ec"}}
    credential = from_config("cb", "sign", config, NOW)
    transit = LocalTransit({"ec": EC_KEY})
    request = {"method": "GET", "url": "wss://advanced-trade-ws-user.coinbase.com/", "options": {"nonce": NONCE}}
    result = await sign_request(credential, request, lambda: NOW, trio.Lock(), persist, transit=transit)
    header, claims, signing_input, signature = parts(result["query"][0][1])
    assert header["alg"] == "ES256" and "uri" not in claims
    verify_es256(signing_input, signature)
    assert [(op, up, key, data, alg) for op, up, key, data, alg in transit.calls] == [
        ("sign", UPSTREAM, "ec", signing_input, "es256")
    ]
