"""The KuCoin, Bitget and Gate signing schemes: ccxt's signatures reproduced byte for byte, each
formula written out independently, the refusals, and one ``token.sign`` each through a vault.

No example of the three venues' docs that we found gives a secret with its signature, so none
could be reproduced. The vectors marked "ccxt 4.5.90" were computed by ccxt's own ``sign()``
(``ccxt/kucoin.py``, ``ccxt/bitget.py``, ``ccxt/gate.py``) in a throwaway virtualenv, with the
fake credentials of scheme_tools and its clock patched to ``CCXT_TS_MS``; ccxt is not needed
here. The Bitget string-to-sign is the example of Bitget's docs (read in a copy of the page).
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
from vaultd._schemes import bitget as bitget_module
from vaultd._schemes import gate as gate_module
from vaultd._schemes import kucoin as kucoin_module
from vaultd_protocol import ErrorCode

NOW = CCXT_TS_MS / 1000
KUCOIN, BITGET, GATE = SCHEMES["kucoin"], SCHEMES["bitget"], SCHEMES["gate"]

# -- KuCoin ---------------------------------------------------------------------------------------

# ccxt 4.5.90, kucoin.sign("accounts", ["private"], "GET", {"currency": "BTC", "type": "trade"}) and
# kucoin.sign("orders", ["private"], "POST", KUCOIN_ORDER params): KC-API-SIGN, and the signed
# passphrase (ccxt sends KC-API-KEY-VERSION 2).
KUCOIN_GET_SIGN = "+xqDER7CBFJ5Oc/5U696Pnz6+A+d6ZQyCZHfjvsz/cQ="
KUCOIN_POST_SIGN = "6IZ84xCNKeQ0aMt+w0TPAfb92sPm4w0uFST+3KR2M8o="
KUCOIN_PASSPHRASE = "+37zHy9A3EXdnWkZYuDborf53O1GGo8Kc5a90S3hyfI="
KUCOIN_ORDER = b'{"clientOid":"c1","side":"buy","symbol":"BTC-USDT","type":"limit","price":"10000","size":"0.01"}'


def b64_hmac256(message: bytes, key: str = SECRET) -> str:
    return base64.b64encode(hmac.new(key.encode(), message, hashlib.sha256).digest()).decode()


def test_kucoin_get_reproduces_ccxt() -> None:
    query = (("currency", "BTC"), ("type", "trade"))
    signed = KUCOIN.sign(req("GET", "/api/v1/accounts", query), keys())
    assert signed.headers == {
        "KC-API-KEY": API_KEY,
        "KC-API-SIGN": KUCOIN_GET_SIGN,
        "KC-API-TIMESTAMP": str(CCXT_TS_MS),
        "KC-API-PASSPHRASE": KUCOIN_PASSPHRASE,
        "KC-API-KEY-VERSION": "2",
    }
    assert signed.query == query and signed.query_string == "currency=BTC&type=trade" and signed.body == b""
    assert signed.valid_until == CCXT_TS_MS / 1000 + 5
    # The formula, written out: timestamp + METHOD + endpoint (path?query) + body.
    assert b64_hmac256(b"1765000000123GET/api/v1/accounts?currency=BTC&type=trade") == KUCOIN_GET_SIGN
    assert b64_hmac256(PASSPHRASE.encode()) == KUCOIN_PASSPHRASE


def test_kucoin_post_reproduces_ccxt_and_names_the_body_type() -> None:
    signed = KUCOIN.sign(req("POST", "/api/v1/orders", body=KUCOIN_ORDER), keys())
    assert signed.headers["KC-API-SIGN"] == KUCOIN_POST_SIGN
    assert signed.headers["Content-Type"] == "application/json"
    assert signed.body == KUCOIN_ORDER and signed.query == ()
    assert b64_hmac256(b"1765000000123POST/api/v1/orders" + KUCOIN_ORDER) == KUCOIN_POST_SIGN


def test_kucoin_key_version_3_signs_alike_and_says_so() -> None:
    v2 = KUCOIN.sign(req("GET", "/api/v1/accounts"), keys())
    v3 = KUCOIN.sign(req("GET", "/api/v1/accounts", key_version="3"), keys())
    assert v3.headers["KC-API-KEY-VERSION"] == "3"
    assert {k: v for k, v in v3.headers.items() if k != "KC-API-KEY-VERSION"} == {
        k: v for k, v in v2.headers.items() if k != "KC-API-KEY-VERSION"
    }


def test_kucoin_signs_the_query_as_sent() -> None:
    signed = KUCOIN.sign(req("GET", "/api/v1/orders", (("symbol", "BTC-USDT"), ("note", "a b"))), keys())
    assert signed.query_string == "symbol=BTC-USDT&note=a%20b"
    assert signed.headers["KC-API-SIGN"] == b64_hmac256(b"1765000000123GET/api/v1/orders?symbol=BTC-USDT&note=a%20b")
    assert kucoin_module.prehash(req("GET", "/x"), "") == b"1765000000123GET/x"


@pytest.mark.parametrize(
    ("request_", "passphrase", "message"),
    [
        (req("GET", "/api/v1/accounts", key_version="1"), PASSPHRASE, "'key_version' must be 2 or 3"),
        (req("GET", "/api/v1/accounts", key_version="4"), PASSPHRASE, "'key_version' must be 2 or 3"),
        (req("GET", "/api/v1/accounts", recv_window="5000"), PASSPHRASE, "unknown option 'recv_window'"),
        (req("GET", "/api/v1/accounts"), None, "kucoin: needs the API key's passphrase"),
        (req("get", "/api/v1/accounts"), PASSPHRASE, "'method' must be an upper-case HTTP method"),
    ],
)
def test_kucoin_refusals(request_: SignRequest, passphrase: str | None, message: str) -> None:
    with pytest.raises(SignError, match=message) as info:
        KUCOIN.sign(request_, keys(passphrase=passphrase))
    assert SECRET not in str(info.value) and PASSPHRASE not in str(info.value)


def test_kucoin_key_version_is_a_credential_field() -> None:
    base = {"scheme": "kucoin", "api_key": API_KEY, "secret": SECRET, "passphrase": PASSPHRASE}
    provider = SignProvider.from_config({**base, "key_version": 3})
    assert provider.key_version == 3 and provider.options() == {"key_version": "3"}
    assert provider.to_record()["key_version"] == 3
    assert SignProvider.from_record(provider.to_record()).key_version == 3
    assert SignProvider.from_config(base).options() == {}
    assert "key_version" not in SignProvider.from_config(base).to_record()
    for bad in (1, 4, "2", True, 2.5):
        with pytest.raises(ConfigError, match="'key_version' must be 2 or 3"):
            SignProvider.from_config({**base, "key_version": bad})
    with pytest.raises(ConfigError, match="'key_version' is for the kucoin scheme only"):
        SignProvider.from_config(
            {"scheme": "okx", **{k: v for k, v in base.items() if k != "scheme"}, "key_version": 2}
        )


async def test_kucoin_credential_key_version_reaches_the_header() -> None:
    config = {"scheme": "kucoin", "api_key": API_KEY, "secret": SECRET, "passphrase": PASSPHRASE, "key_version": 3}
    result = await sign_with(config, {"method": "GET", "url": "https://api.kucoin.com/api/v1/accounts"}, NOW)
    assert result["headers"]["KC-API-KEY-VERSION"] == "3"


# -- Bitget ---------------------------------------------------------------------------------------

# ccxt 4.5.90, bitget.sign("v2/spot/account/assets", ["private", "spot"], "GET",
# {"coin": "USDT", "assetType": "hold_only"}) (ccxt sorts the query: assetType first) and
# bitget.sign("v2/spot/trade/place-order", ["private", "spot"], "POST", BITGET_ORDER params).
BITGET_GET_SIGN = "MwJaOOGK5i/GBnS/mgkw7AtYgI4zdZ/g5GRUCgy3utE="
BITGET_POST_SIGN = "4glWoS2tAxS3Tayn1sVIzlvzRoZ67sXJhhjmsq5Osp0="
BITGET_ORDER = b'{"symbol":"BTCUSDT","side":"buy","orderType":"limit","force":"gtc","price":"10000","size":"0.01"}'


def test_bitget_prehash_is_the_published_example() -> None:
    # Bitget API docs, "Signature", the GET example: Timestamp = 16273667805456, requestPath =
    # "/api/mix/v2/market/depth", queryString "limit=20&symbol=BTCUSDT", and the string to sign
    # "16273667805456GET/api/mix/v2/market/depth?limit=20&symbol=BTCUSDT". Read here in a copy
    # of that page (aijiebot.com/wenzhang/404, in Chinese), not on bitget.com itself.
    example = req(
        "GET", "/api/mix/v2/market/depth", (("limit", "20"), ("symbol", "BTCUSDT")), timestamp_ms=16273667805456
    )
    assert bitget_module.prehash(example) == b"16273667805456GET/api/mix/v2/market/depth?limit=20&symbol=BTCUSDT"


def test_bitget_get_reproduces_ccxt() -> None:
    query = (("assetType", "hold_only"), ("coin", "USDT"))
    signed = BITGET.sign(req("GET", "/api/v2/spot/account/assets", query), keys())
    assert signed.headers == {
        "ACCESS-KEY": API_KEY,
        "ACCESS-SIGN": BITGET_GET_SIGN,
        "ACCESS-TIMESTAMP": str(CCXT_TS_MS),
        "ACCESS-PASSPHRASE": PASSPHRASE,
    }
    assert signed.query == query and signed.valid_until == CCXT_TS_MS / 1000 + 30
    assert b64_hmac256(b"1765000000123GET/api/v2/spot/account/assets?assetType=hold_only&coin=USDT") == BITGET_GET_SIGN


def test_bitget_post_reproduces_ccxt_with_locale() -> None:
    signed = BITGET.sign(req("POST", "/api/v2/spot/trade/place-order", body=BITGET_ORDER, locale="en-US"), keys())
    assert signed.headers["ACCESS-SIGN"] == BITGET_POST_SIGN
    assert signed.headers["Content-Type"] == "application/json" and signed.headers["locale"] == "en-US"
    assert b64_hmac256(b"1765000000123POST/api/v2/spot/trade/place-order" + BITGET_ORDER) == BITGET_POST_SIGN


def test_bitget_signs_the_query_decoded_and_sends_it_encoded() -> None:
    query = (("symbol", "BTCUSDT"), ("note", "a b"))
    signed = BITGET.sign(req("GET", "/api/v2/spot/trade/orderInfo", query), keys())
    assert signed.headers["ACCESS-SIGN"] == b64_hmac256(
        b"1765000000123GET/api/v2/spot/trade/orderInfo?symbol=BTCUSDT&note=a b"
    )
    assert signed.query == query and signed.query_string is None  # the URL: encode_query, "a%20b"


@pytest.mark.parametrize(
    ("request_", "passphrase", "message"),
    [
        (req("GET", "/api/v2/spot/account/assets"), None, "bitget: needs the API key's passphrase"),
        (req("GET", "/api/v2/spot/account/assets", locale="en US\r\nX: y"), PASSPHRASE, "'locale' must be a language"),
        (req("GET", "/api/v2/spot/account/assets", key_version="2"), PASSPHRASE, "unknown option"),
    ],
)
def test_bitget_refusals(request_: SignRequest, passphrase: str | None, message: str) -> None:
    with pytest.raises(SignError, match=message) as info:
        BITGET.sign(request_, keys(passphrase=passphrase))
    assert SECRET not in str(info.value) and PASSPHRASE not in str(info.value)


# -- Gate -----------------------------------------------------------------------------------------

# ccxt 4.5.90, gate.sign("accounts", ["private", "spot"], "GET", {"currency": "BTC"}) and
# gate.sign("orders", ["private", "spot"], "POST", GATE_ORDER params): SIGN, timestamp in seconds.
GATE_GET_SIGN = (
    "ea148d72f618d51c56ee6fd81bb544143d8bf27328560403cae2ed40011cb9df"
    "e8d15c5f59b7b5feae5d031b0f308163c9721d6fa3e5c6b1f64ee59eade3fe5d"
)
GATE_POST_SIGN = (
    "d4256bdf5c0a2e5a49528d4c7e128abf4efc06ff1912c731b70715a812bb8e58"
    "82e468683df21e41035d3daba68d7bd379a9ff8fb9bdaba50c34737eb2d9651d"
)
GATE_ORDER = b'{"currency_pair":"BTC_USDT","side":"buy","amount":"0.01","price":"10000"}'


def hex_hmac512(message: bytes) -> str:
    return hmac.new(SECRET.encode(), message, hashlib.sha512).hexdigest()


def test_gate_get_reproduces_ccxt() -> None:
    signed = GATE.sign(req("GET", "/api/v4/spot/accounts", (("currency", "BTC"),)), keys(passphrase=None))
    assert signed.headers == {"KEY": API_KEY, "Timestamp": "1765000000", "SIGN": GATE_GET_SIGN}
    assert signed.valid_until == 1765000000 + 60
    empty_body_hash = hashlib.sha512(b"").hexdigest()
    assert (
        hex_hmac512(f"GET\n/api/v4/spot/accounts\ncurrency=BTC\n{empty_body_hash}\n1765000000".encode())
        == GATE_GET_SIGN
    )


def test_gate_post_reproduces_ccxt() -> None:
    signed = GATE.sign(req("POST", "/api/v4/spot/orders", body=GATE_ORDER), keys(passphrase=None))
    assert signed.headers["SIGN"] == GATE_POST_SIGN and signed.headers["Content-Type"] == "application/json"
    body_hash = hashlib.sha512(GATE_ORDER).hexdigest()
    assert hex_hmac512(f"POST\n/api/v4/spot/orders\n\n{body_hash}\n1765000000".encode()) == GATE_POST_SIGN
    assert gate_module.string_to_sign(req("DELETE", "/api/v4/spot/orders/1", (("a", "b c"),))).startswith(
        b"DELETE\n/api/v4/spot/orders/1\na=b c\n"
    )


def test_gate_refuses_unknown_knobs() -> None:
    with pytest.raises(SignError, match="gate: unknown option 'recv_window'"):
        GATE.sign(req("GET", "/api/v4/spot/accounts", recv_window="5"), keys())


# -- credentials, repr, transit, a vault ----------------------------------------------------------


@pytest.mark.parametrize("scheme", ["kucoin", "bitget"])
def test_a_passphrase_is_required_at_put(scheme: str) -> None:
    with pytest.raises(ConfigError, match="'passphrase' is required"):
        SignProvider.from_config({"scheme": scheme, "api_key": API_KEY, "secret": SECRET})


def passphrase(scheme: str) -> dict[str, str]:
    """KuCoin's and Bitget's keys come with a passphrase; Gate's do not (``credential.put`` refuses one)."""
    return {} if scheme == "gate" else {"passphrase": PASSPHRASE}


@pytest.mark.parametrize("scheme", ["kucoin", "bitget", "gate"])
def test_no_secret_or_passphrase_in_reprs(scheme: str) -> None:
    provider = SignProvider.from_config({"scheme": scheme, "api_key": API_KEY, "secret": SECRET, **passphrase(scheme)})
    signed = provider.sign(req("POST", "/api/v4/x", body=b"{}"))
    shown = f"{signed!r} {provider!r} {provider.describe()!r} {SCHEMES[scheme]!r} {provider.warnings(NOW)!r}"
    assert SECRET not in shown and PASSPHRASE not in shown and signed.headers


TRANSIT_CASES = {
    "kucoin": ("https://api.kucoin.com/api/v1/orders", 2),
    "bitget": ("https://api.bitget.com/api/v2/spot/trade/place-order", 1),
    "gate": ("https://api.gateio.ws/api/v4/spot/orders", 1),
}


@pytest.mark.parametrize("scheme", sorted(TRANSIT_CASES))
async def test_signing_through_transit_gives_the_same_answer(scheme: str) -> None:
    url, calls = TRANSIT_CASES[scheme]
    local = {"scheme": scheme, "api_key": API_KEY, "secret": TRANSIT_SECRET, **passphrase(scheme)}
    remote = {k: v for k, v in local.items() if k != "secret"} | {"backend": {"upstream": "bao", "transit_key": "k"}}
    request = {"method": "POST", "url": url, "body": b'{"a":1}', "timestamp": CCXT_TS_MS}
    transit = LocalTransit({"k": TRANSIT_SECRET.encode()})
    here = await sign_with(local, request, NOW)

    async def persist() -> None:
        pass

    from tests.vaultd.scheme_tools import credential
    from vaultd._signing import sign_request

    there = await sign_request(
        credential(remote, NOW), dict(request), lambda: NOW, trio.Lock(), persist, transit=transit
    )
    assert there == here
    algorithm = "sha2-512" if scheme == "gate" else "sha2-256"
    assert [(op, alg) for op, _, _, _, alg in transit.calls] == [("hmac", algorithm)] * calls


VAULT_CASES = {
    "kucoin": ("https://api.kucoin.com/api/v1/orders", "KC-API-SIGN"),
    "bitget": ("https://api.bitget.com/api/v2/spot/trade/place-order", "ACCESS-SIGN"),
    "gate": ("https://api.gateio.ws/api/v4/spot/orders", "SIGN"),
}


@pytest.mark.parametrize("scheme", sorted(VAULT_CASES))
async def test_token_sign_through_a_vault(scheme: str, nursery: trio.Nursery, tmp_path: Path) -> None:
    url, header = VAULT_CASES[scheme]
    config = {"scheme": scheme, "api_key": API_KEY, "secret": SECRET, **passphrase(scheme)}
    vault = await vault_with(tmp_path, nursery, "ex", config, NOW)
    body = {"KC-API-SIGN": KUCOIN_ORDER, "ACCESS-SIGN": BITGET_ORDER, "SIGN": GATE_ORDER}[header]
    request = {"name": "ex", "method": "POST", "url": url, "body": body}
    answer = await vault.sign("ex", request)
    expected = {"KC-API-SIGN": KUCOIN_POST_SIGN, "ACCESS-SIGN": BITGET_POST_SIGN, "SIGN": GATE_POST_SIGN}[header]
    assert answer["headers"][header] == expected, "the daemon's clock is ccxt's: the same signature"
    assert answer["headers"]["Content-Type"] == "application/json" and answer["body"] == body
    with pytest.raises(RpcError) as refused:
        await vault.sign("ex", {**request, "url": url.rsplit("/api/", 1)[0] + "/api/v4/withdrawals"})
    assert refused.value.code is ErrorCode.FORBIDDEN
