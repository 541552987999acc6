"""``binance-rsa`` and ``bybit-rsa``: Binance's and Bybit's HMAC payloads signed with an RSA key
(RSASSA-PKCS1-v1_5, SHA-256, base64), and the RSA key import of ``_schemes._keys``.

RSA_PEM is a throwaway 2048-bit key made for these tests (``openssl genpkey -algorithm RSA``);
PKCS#1 v1.5 signatures are deterministic, so every vector is exact. Vectors:
- Binance Spot API docs, "Request security", "SIGNED Endpoint Examples", RSA keys: their payload
  ``DOCS_PAYLOAD`` (the docs' own signature needs their private key, which they do not publish):
  signed here by the docs' own ``openssl dgst -sha256 -sign`` command with RSA_PEM.
- ccxt 4.5.90's own ``binance.sign`` and ``bybit.sign`` (``Exchange.rsa``) with RSA_PEM, run in
  a throwaway venv with a fixed clock; the project's tests do not need ccxt.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import quote, unquote

import pytest
import trio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from vaultd._credentials import ConfigError, from_config
from vaultd._errors import RpcError
from vaultd._schemes import SCHEMES, Keys, SignError, SignRequest
from vaultd._schemes._keys import load_rsa_key
from vaultd._signing import sign_request
from vaultd_protocol import ErrorCode

from .test_sign_transit import UPSTREAM, LocalTransit

RSA_PEM = """\
-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDgnbiW05yp93cf
S1dtYWr81LqfugWbQZ0wyP2trifnPubnjkEQKRujhNIcj1UNOIozhHNFfLwH7S9s
OpvA6EkhGYQEg0GO8XTwLP2JYMMRXHWzJ0rIXf7P0Ou4zvB+ETubefoPewv3qBsE
M/dSzCNK/ugsvSF4QxTFW8K16TtRIeRBhjJTuNkMKUyNe2sITttWbaN9BxqAfihe
oGcH4KGc4dP06XTVY2Ctw0PdCU1zb5QtK6X5cQyw8DWQ6A/aPv2NEJDWCgsm1nwq
XIR6GPzMfiO8TZr8s2AuX4QGys7Etxoku7ra2F7SdOsxjpwEawzWINtoC9hXP8f8
apVP3uN5AgMBAAECggEAXXYTOCMOFYUEWo+pbbhy4YgMrWika5E2PHXtZEbKkMSS
JLiC5xwLxZL/MGYNkEY97yjGJBw+SxgMuv56D583yp+I2K3a6gUbUNKPnomWMVOl
H+oSCmReIg++/bORywsVn+B1xdo/xQl8UFflKd0KNGrzpaX+1sEm0+YWE0Zcaamm
Xap4zmgtEUIekXDlSxwY0A7sH0qlHl2CC9Kf0WSH1gr3wX6x6duQlRg4s9lCG3oW
QGvCTTBRaTHGNMsHn4sntszafGoQGtJ5cqaeb4wfQRzAeHfulshyOZGjKrzRHh9h
Tc7Fles2Cdb/zZ9nijoUGbpqgC4qBUblgCjX4DNtBwKBgQD3hNcdQ2GVR8/mrd2t
qIdgC549p8afRm//XmFVWBX6JWxCO0TS9mgLdEe92fi8p9h7YkPiJmpjeIRbU0h6
I3t0KIMUQ4892MsAWBNAswwWOVBmjLW/DxNyCFXab0WmmSnrgk5Zdy3UiiUQ/jlZ
w+YbJehpr63FwQmsUJjrHlDW4wKBgQDoT/v/IWOlvj7SoV28gqpM6ROUW1ldUAHn
vlB8njWxA2jNwqawaFIJ+uHIISJWSwqjtBaWzkPqUxN+5G69sh5zQIuUBTUPW7x2
1wzDsGutRkAel2d27YQ1RS7YYblAROTRWKvmOrHzxItzBeO55xhNDB4GXYegLuPn
9nemWBuO8wKBgG5hVTT9mYTi83nhy1voLgbM55KDQXZCCSwOwMU4dQSKr86Rc83I
iPmir2Og0uX+y/GqDq/JheQ6GHxJlaayMBnK/zmIL1bbWRwcKunNbvRyNsKkuWAs
rvVJdk/lE2CKKUGXaK1JEq0XthPv6092pyUwMIcBCzOHNHMdtjQT3uUVAoGAEDFD
B010fKD+EABfYDxbUnEMhFK5r99bwqNpSMZeR7BNJcpjg/hBf6CVDDYDBrDEVRTA
XlKSOUsBGN8jOOWpaa8eC3sxb5idUks7AIjTeIhk/7zd4VQ82tmvojVtjCVBLbZY
hPuiW7NfZO0MKnEJKJWnohny0h9yk0CCpn2NrjECgYAuTZegf81FhfAr777Czuzi
GAS2Nj48EItsalnVLVKYqkcbPS6Ie2hE4aIRrjiqhA/L9zgOliV9EHqz2Q/mLvFL
YuRic+wC373Sa6iKnRUKA/HNxbD52Ngo5AtbjsZf7uhCQtWNxhDqt+s9bTSpCncD
dRCOU2RafpALrZCcpaSvPw==
-----END PRIVATE KEY-----
"""
#: The Binance docs' RSA example payload, signed with RSA_PEM by the docs' own command:
#: echo -n "$DOCS_PAYLOAD" | openssl dgst -sha256 -sign ./test-prv-key.pem | openssl enc -base64 -A
DOCS_SIGNATURE = (
    "NpAn8a2vVP76TrmH4T6lvRr8x6ZzbTlGRp+7rnFu+HnT14zk71ObvdswO7KgFilLBlZg9QqAe/es1N2vZ5REMl16Hny8iZI6mSG0"
    "3puqFZ+gkESxfVigVh/lfrtbLQTqaG8bxuYofhknrrGToYdqL6k+jyGeDXOU+XnbRN9kpSpNHUfy9tRfwFsEKLc8MOhISlwUseVG"
    "nzs8obJmO6V65Z5tHCAK/FTHHTk7x0zqn5BanZLpehKZzYNItKznxx0cTaNnlFyVI4Vn86eXp9Y5ZDk2ov00LYn7mChKtjqKfUYw"
    "2l4B2IsVZ/PyeAUbUpuPYvtEprHIGHhJ/mHaIYjKew=="
)
#: ccxt 4.5.90 binance.sign("order", ["private"], "POST", ...) with RSA_PEM, milliseconds() = 1668481559918
#: and recvWindow 5000: its form body (before "&signature=") and its signature (percent-encoded).
CCXT_BINANCE_BODY = (
    "timestamp=1668481559918&symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=1&price=0.2&new"
    "ClientOrderId=x-TKT5PX2F77b0a78859251088e75ae2&recvWindow=5000"
)
CCXT_BINANCE_SIGNATURE = (
    "KHqjJw58y0xJj8CfKCcOcvz8zptEA%2Fy9ZQdsuftjVyaJzPP4b4Caw0620dUse3GDshJTAjQdSp4DPeRcOPOp5Uv%2FdQji35cC"
    "NvCg46p8PzkUU6vPLEbvknkrF3PWwt3bCLu6y%2BACS1keB%2FLPm5xMfupoAhGmV2hzNM5bfqmaDwssvsjhirQdkQ76VWbemOYk"
    "ymfE0zSYB35Y0AVXHyQX0os6B8pfYE5EkAkHUAiQEYfVpIP8C7kAX8Q1%2FS7f4RQ5oHIVjU7TGFeiBzBCRxK4Wk0x7lXbjiR4PO"
    "YTcuwksELkpU9Im3rH1F5qMw4F4kM%2FkrbKEDRuHwwd4XI3w1m3DA%3D%3D"
)
#: ccxt 4.5.90 bybit.sign("v5/order/create", ["private"], "POST", ...) and ("v5/order/realtime", GET), apiKey
#: "XXXXXXXXXX", RSA_PEM, nonce() = 1668481559918, recvWindow 5000: its X-BAPI-SIGN.
CCXT_BYBIT_POST_BODY = (
    '{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"0.1","price":"20000"}'
)
CCXT_BYBIT_POST_SIGN = (
    "i2cy/wJIirB3THuHgHA+Ol1E95nXg+uL/StMPFe1Md3eoWycYhKTEw2Yb5wDTrajJHe04t0/QYk3Ygjcnl3/FOFdRAYyzgT9roXm"
    "+vcPKxCE1TFBjg3ydrXtiLM99YOqpkeMXpRyNggOiZigmIIFgjzN35C2bPa+hn4S/O+t71MTCdtpMYsJJVNCjNjecnVX+15fEDFi"
    "FW3GpsgsrfA0AOGTSsYDdogNVOKnsFlTq+cO4oTVVJgxyvxuM6ZdudvXs4dPuJ3vg2EqUWToVHfa3pzm4RwkNvYpazLp63eta2WS"
    "KUhlhDA2+2rEvVaIQnl32yJGzhsgg247/J6GXVOoyw=="
)
CCXT_BYBIT_GET_QUERY = "category=spot&symbol=BTCUSDT"
CCXT_BYBIT_GET_SIGN = (
    "HiN1DA22SKAwoGz1tItNdZaqZ6y1uuYWx0AQA10JT7+UQlvbbq0cfWFltHE/ytmFqYy0e6q8ahGHGL2uq3iAoqgTVh6N2twQV5sB"
    "L5SyKN42/RpfhMJM4u0lBzUAIF4VZDknMJfyK01pq+c7+8cuLmgCOYASffKeyi561MW67XVtRq2X2nULGD57h1ixlIZeI+geqb1g"
    "5HUAWL+FDU8ciDFSKLJ4ZSYc5gVI87SLIaPIsscNCBavBLj62hz8PddSKSQGeZh48iTvOxwPS3dm/Ji820s1I++exfqPRcatH0ti"
    "k9AONfesPEdILFmhHxio3herLqHEK3OJhS1dgE6pXA=="
)
DOCS_PAYLOAD = (
    "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=1&price=0.2&timestamp=1668481559918&recvWindow=5000"
)
DOCS_API_KEY = "CAvIjXy3F44yW6Pou5k8Dy1swsYDWJZLeoK2r8G4cFDnE9nosRppc2eKc1T8TRTQ"  # the docs' example API key
TS = 1668481559918
NOW = 1_800_000_000.0
PKCS1_PEM = (
    load_rsa_key(RSA_PEM)
    .private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    .decode()
)
BASE64_BODY = "".join(RSA_PEM.splitlines()[1:-1])  # the key's base64, which must never show


def pairs(query: str) -> tuple[tuple[str, str], ...]:
    return tuple((name, value) for name, _, value in (item.partition("=") for item in query.split("&")))


def rsa_keys(api_key: str = DOCS_API_KEY, pem: str = RSA_PEM) -> Keys:
    return Keys(api_key, signing_key=load_rsa_key(pem))


def verify(signature_b64: str, payload: bytes) -> None:
    load_rsa_key(RSA_PEM).public_key().verify(
        base64.b64decode(signature_b64), payload, padding.PKCS1v15(), hashes.SHA256()
    )


# -- binance-rsa ---------------------------------------------------------------------------------------------


def test_binance_docs_payload_signed_as_the_docs_sign_it() -> None:
    request = SignRequest("POST", "api.binance.com", "/api/v3/order", pairs(DOCS_PAYLOAD), b"", TS)
    signed = SCHEMES["binance-rsa"].sign(request, rsa_keys())
    assert signed.query[-1] == ("signature", DOCS_SIGNATURE), "the query's signature, decoded"
    # The docs: "the signature has to be URL encoded" (%2F, %2B, %3D) where it is sent.
    assert (
        signed.query_string
        == f"{DOCS_PAYLOAD}&signature={DOCS_SIGNATURE.replace('/', '%2F').replace('+', '%2B').replace('=', '%3D')}"
    )
    assert signed.headers == {"X-MBX-APIKEY": DOCS_API_KEY}, "no body: no Content-Type"
    assert signed.valid_until == (TS + 5000) / 1000
    verify(DOCS_SIGNATURE, DOCS_PAYLOAD.encode())


def test_binance_matches_ccxt_byte_for_byte() -> None:
    request = SignRequest("POST", "api.binance.com", "/api/v3/order", (), CCXT_BINANCE_BODY.encode(), TS)
    signed = SCHEMES["binance-rsa"].sign(request, rsa_keys())
    assert signed.body == f"{CCXT_BINANCE_BODY}&signature={CCXT_BINANCE_SIGNATURE}".encode()
    assert signed.headers == {"X-MBX-APIKEY": DOCS_API_KEY, "Content-Type": "application/x-www-form-urlencoded"}
    verify(unquote(CCXT_BINANCE_SIGNATURE), CCXT_BINANCE_BODY.encode())


def test_binance_adds_timestamp_and_recv_window_like_binance_hmac() -> None:
    query = pairs("symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=1&price=0.2")
    request = SignRequest("POST", "api.binance.com", "/api/v3/order", query, b"", TS, extra={"recvWindow": "5000"})
    signed = SCHEMES["binance-rsa"].sign(request, rsa_keys())
    assert [name for name, _ in signed.query[-3:]] == ["recvWindow", "timestamp", "signature"]
    verify(signed.query[-1][1], signed.query_string.rsplit("&signature=", 1)[0].encode())  # type: ignore[union-attr]


# -- bybit-rsa -----------------------------------------------------------------------------------------------


def test_bybit_post_matches_ccxt_byte_for_byte() -> None:
    request = SignRequest("POST", "api.bybit.com", "/v5/order/create", (), CCXT_BYBIT_POST_BODY.encode(), TS)
    signed = SCHEMES["bybit-rsa"].sign(request, rsa_keys("XXXXXXXXXX"))
    assert signed.headers == {
        "X-BAPI-API-KEY": "XXXXXXXXXX",
        "X-BAPI-TIMESTAMP": str(TS),
        "X-BAPI-RECV-WINDOW": "5000",
        "X-BAPI-SIGN": CCXT_BYBIT_POST_SIGN,
        "X-BAPI-SIGN-TYPE": "2",  # as Bybit's RSA sample and pybit send it
        "Content-Type": "application/json",
    }
    assert signed.body == CCXT_BYBIT_POST_BODY.encode() and signed.valid_until == (TS + 5000) / 1000
    # Bybit V5: timestamp + api key + recv_window + body, written out independently
    verify(CCXT_BYBIT_POST_SIGN, f"{TS}XXXXXXXXXX5000{CCXT_BYBIT_POST_BODY}".encode())


def test_bybit_get_signs_the_query_string_as_ccxt_does() -> None:
    request = SignRequest("GET", "api.bybit.com", "/v5/order/realtime", pairs(CCXT_BYBIT_GET_QUERY), b"", TS)
    signed = SCHEMES["bybit-rsa"].sign(request, rsa_keys("XXXXXXXXXX"))
    assert signed.headers["X-BAPI-SIGN"] == CCXT_BYBIT_GET_SIGN
    assert "Content-Type" not in signed.headers
    verify(CCXT_BYBIT_GET_SIGN, f"{TS}XXXXXXXXXX5000{CCXT_BYBIT_GET_QUERY}".encode())


def test_bybit_signs_and_sends_a_comma_raw_as_bybit_does() -> None:
    # As the HMAC scheme (and pybit): the URL must carry the very bytes signed, comma and all.
    request = SignRequest("GET", "api.bybit.com", "/v5/asset/coin/query-info", (("coin", "BTC,USDT"),), b"", TS)
    signed = SCHEMES["bybit-rsa"].sign(request, rsa_keys("XXXXXXXXXX"))
    assert signed.query_string == "coin=BTC,USDT"
    verify(signed.headers["X-BAPI-SIGN"], f"{TS}XXXXXXXXXX5000coin=BTC,USDT".encode())


def test_bybit_recv_window_knob() -> None:
    request = SignRequest("GET", "api.bybit.com", "/v5/order/realtime", (), b"", TS, extra={"recv_window": "9000"})
    signed = SCHEMES["bybit-rsa"].sign(request, rsa_keys("K"))
    assert signed.headers["X-BAPI-RECV-WINDOW"] == "9000" and signed.valid_until == (TS + 9000) / 1000
    with pytest.raises(SignError, match="'recv_window' must be whole milliseconds"):
        SCHEMES["bybit-rsa"].sign(
            SignRequest("GET", "api.bybit.com", "/v5/x", (), b"", TS, extra={"recv_window": "0"}), rsa_keys()
        )
    with pytest.raises(SignError, match="unknown option 'recvWindow'"):
        SCHEMES["bybit-rsa"].sign(
            SignRequest("GET", "api.bybit.com", "/v5/x", (), b"", TS, extra={"recvWindow": "1"}), rsa_keys()
        )


# -- keys ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["binance-rsa", "bybit-rsa"])
def test_pkcs1_pkcs8_and_escaped_newlines_are_the_same_key(scheme: str) -> None:
    request = SignRequest("GET", "api.example.com", "/v5/x", pairs("a=b"), b"", TS)
    expected = SCHEMES[scheme].sign(request, rsa_keys())
    assert PKCS1_PEM.startswith("-----BEGIN RSA PRIVATE KEY-----")
    for pem in (PKCS1_PEM, RSA_PEM.replace("\n", "\\n"), f"  {RSA_PEM}\n\n"):
        assert SCHEMES[scheme].sign(request, rsa_keys(pem=pem)) == expected


def _pem_of(key: Any, encryption: Any = None) -> str:
    return str(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            encryption or serialization.NoEncryption(),
        ).decode()
    )


def test_bad_rsa_keys_are_refused_naming_the_format() -> None:
    small = _pem_of(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(SignError, match=r"at least 2048 bits .*; this key has 1024 bits"):
        load_rsa_key(small)
    with pytest.raises(SignError, match="this PEM holds an EC secp256r1 key"):
        load_rsa_key(_pem_of(ec.generate_private_key(ec.SECP256R1())))
    encrypted = _pem_of(load_rsa_key(RSA_PEM), serialization.BestAvailableEncryption(b"pass"))
    with pytest.raises(SignError, match="'private_key' is encrypted: export it without a passphrase"):
        load_rsa_key(encrypted)
    for bad in (BASE64_BODY, RSA_PEM.replace("MII", "MIJ", 1), RSA_PEM[:200], "", "0x" + "11" * 32):
        with pytest.raises(
            SignError, match=re.escape("'private_key' must be a PEM RSA key of at least 2048 bits")
        ) as info:
            load_rsa_key(bad)
        assert BASE64_BODY[:40] not in str(info.value)


@pytest.mark.parametrize("scheme", ["binance-rsa", "bybit-rsa"])
def test_a_key_of_another_kind_is_refused(scheme: str) -> None:
    request = SignRequest("GET", "api.example.com", "/x", (), b"", TS)
    with pytest.raises(SignError, match=f"{scheme}: needs an RSA private key"):
        SCHEMES[scheme].sign(request, Keys("k", signing_key=ec.generate_private_key(ec.SECP256R1())))


# -- through the credential and token.sign -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "host", "path"),
    [("binance-rsa", "api.binance.com", "/api/v3/order"), ("bybit-rsa", "api.bybit.com", "/v5/order/create")],
)
async def test_a_credential_signs_and_never_shows_its_key(scheme: str, host: str, path: str) -> None:
    config = {"scheme": scheme, "api_key": "fake-key", "private_key": RSA_PEM, "recv_window": 7000}
    credential = from_config("c", "sign", config, NOW)

    async def persist() -> None:
        pass

    body = b"symbol=BTCUSDT" if scheme == "binance-rsa" else b'{"category":"spot"}'
    result = await sign_request(credential, {"method": "POST", "url": f"https://{host}{path}", "body": body},
                                lambda: NOW, trio.Lock(), persist)  # fmt: skip
    assert result["valid_until"] == NOW + 7, "the credential's recv_window"
    for shown in (repr(credential), repr(credential.provider), json.dumps(credential.provider.describe()), str(result)):
        assert BASE64_BODY[:40] not in shown and "PRIVATE KEY" not in shown
    warnings = " ".join(credential.provider.warnings(NOW))
    assert f"{scheme} signatures do not cover the request path" in warnings


@pytest.mark.parametrize("scheme", ["binance-rsa", "bybit-rsa"])
def test_config_errors_name_the_field(scheme: str) -> None:
    with pytest.raises(ConfigError, match="at least 2048 bits") as info:
        from_config("c", "sign", {"scheme": scheme, "api_key": "k", "private_key": BASE64_BODY}, NOW)
    assert BASE64_BODY[:40] not in str(info.value)
    with pytest.raises(ConfigError) as info:
        from_config("c", "sign", {"scheme": scheme, "api_key": "k", "secret": "s"}, NOW)
    assert str(info.value) == (
        f"scheme {scheme!r} signs with a 'private_key' (an unencrypted PEM RSA key, PKCS#8 or PKCS#1, at least "
        "2048 bits), not a 'secret'"
    )
    with pytest.raises(ConfigError, match=f"'private_key' is required: scheme '{scheme}' signs with a 'private_key'"):
        from_config("c", "sign", {"scheme": scheme, "api_key": "k"}, NOW)


# -- the key in OpenBao transit (the real server: test_bao_transit_rsa.py, tests/integration) ----------------


class RsaTransit(LocalTransit):
    """LocalTransit, with transit's ``signature_algorithm=pkcs1v15``, ``hash_algorithm=sha2-256``."""

    async def sign(self, upstream: str, key: str, data: bytes, *, algorithm: str) -> bytes:
        if algorithm != "rsa-pkcs1v15-sha256":
            return await super().sign(upstream, key, data, algorithm=algorithm)
        private = await self._key("sign", upstream, key, data, algorithm)
        if isinstance(private, ed25519.Ed25519PrivateKey):  # transit signs with the key it has, whatever asked
            return private.sign(data)
        assert isinstance(private, rsa.RSAPrivateKey)
        return private.sign(data, padding.PKCS1v15(), hashes.SHA256())


async def transit_sign(
    scheme: str, transit: LocalTransit, request: dict[str, Any], key: str = "rsa", now: float = NOW
) -> dict[str, Any]:
    config = {"scheme": scheme, "api_key": DOCS_API_KEY, "backend": {"upstream": UPSTREAM, "transit_key": key}}
    credential = from_config("c", "sign", config, NOW)

    async def persist() -> None:
        pass

    return await sign_request(credential, request, lambda: now, trio.Lock(), persist, transit=transit)


async def test_binance_through_transit_gives_the_docs_payloads_signature() -> None:
    transit = RsaTransit({"rsa": load_rsa_key(RSA_PEM)})
    url = f"https://api.binance.com/api/v3/order?{DOCS_PAYLOAD}"
    # Signed at the docs' own time: their timestamp is in the payload.
    result = await transit_sign("binance-rsa", transit, {"method": "POST", "url": url, "timestamp": TS}, now=TS / 1000)
    assert result["url"] == f"{url}&signature={quote(DOCS_SIGNATURE, safe='')}"
    assert transit.calls == [("sign", UPSTREAM, "rsa", DOCS_PAYLOAD.encode(), "rsa-pkcs1v15-sha256")], (
        "one round trip, over the payload Binance documents"
    )


async def test_bybit_through_transit_with_a_3072_bit_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    transit = RsaTransit({"rsa3072": key})
    request = {"method": "POST", "url": "https://api.bybit.com/v5/order/create", "body": b'{"category":"spot"}',
               "timestamp": int(NOW * 1000)}  # fmt: skip
    result = await transit_sign("bybit-rsa", transit, request, "rsa3072")
    signature = base64.b64decode(result["headers"]["X-BAPI-SIGN"])
    assert len(signature) == 384
    message = f"{int(NOW * 1000)}{DOCS_API_KEY}5000".encode() + b'{"category":"spot"}'
    key.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


async def test_a_transit_key_of_another_type_signs_nothing() -> None:
    transit = RsaTransit({"ed": ed25519.Ed25519PrivateKey.generate()})
    with pytest.raises(RpcError) as info:
        await transit_sign(
            "binance-rsa", transit, {"method": "GET", "url": "https://api.binance.com/api/v3/account"}, "ed"
        )
    assert info.value.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert "binance-rsa needs an rsa-2048, rsa-3072 or rsa-4096 key" in str(info.value)
