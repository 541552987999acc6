"""Signed strings without separators: a request for an allowed path must not carry the bytes of
a withdrawal.

OKX, KuCoin and Bitget sign ``timestamp + METHOD + path + body`` and Kraken Futures
``postData + nonce + path``, with nothing between the parts. Found by an attacker's review: an
engine asked for ``POST /api/v5/asset/w`` with body ``ithdrawal{...}``, and the daemon signed the
very bytes of ``POST /api/v5/asset/withdrawal`` with body ``{...}``, which the allow-list refuses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest
import trio

from vaultd._credentials import from_config
from vaultd._errors import RpcError
from vaultd._signing import sign_request
from vaultd_protocol import ErrorCode

NOW = 1_800_000_000.0
KRAKEN_SECRET = base64.b64encode(b"fake-kraken-futures-secret-0123456789").decode()
WITHDRAWAL = b'{"ccy":"USDT","amt":"1000","dest":"4","toAddr":"0xATTACKER"}'
#: scheme -> (keys, host, the withdrawal path, an allowed path that is a prefix of it)
SHIFTED: dict[str, tuple[dict[str, Any], str, str]] = {
    "okx": ({"api_key": "k", "secret": "s", "passphrase": "p"}, "www.okx.com", "/api/v5/asset/withdrawal"),
    "kucoin": ({"api_key": "k", "secret": "s", "passphrase": "p"}, "api.kucoin.com", "/api/v1/withdrawals"),
    "bitget": ({"api_key": "k", "secret": "s", "passphrase": "p"}, "api.bitget.com", "/api/v2/spot/wallet/withdrawal"),
}


async def sign(scheme: str, keys: dict[str, Any], url: str, body: bytes = b"", nonce: int | None = None) -> Any:
    credential = from_config("c", "sign", {"scheme": scheme, **keys}, NOW)

    async def persist() -> None:
        pass

    request: dict[str, Any] = {"method": "POST", "url": url, "body": body}
    if nonce is not None:
        request["nonce"] = nonce
    return await sign_request(credential, request, lambda: NOW, trio.Lock(), persist)


@pytest.mark.parametrize("scheme", list(SHIFTED))
async def test_a_withdrawal_cut_between_path_and_body_is_not_signed(scheme: str) -> None:
    keys, host, withdrawal = SHIFTED[scheme]
    with pytest.raises(RpcError) as direct:
        await sign(scheme, keys, f"https://{host}{withdrawal}", WITHDRAWAL)
    assert direct.value.code is ErrorCode.FORBIDDEN
    cut = len(withdrawal) - 8  # "/api/v5/asset/with" + body "drawal{...}"
    with pytest.raises(RpcError) as shifted:
        await sign(scheme, keys, f"https://{host}{withdrawal[:cut]}", withdrawal[cut:].encode() + WITHDRAWAL)
    assert shifted.value.code is ErrorCode.INVALID_PARAMS
    assert "must be JSON, starting with '{' or '['" in shifted.value.args[0]


@pytest.mark.parametrize("scheme", list(SHIFTED))
async def test_json_bodies_still_sign(scheme: str) -> None:
    keys, host, _ = SHIFTED[scheme]
    for body in (b'{"instId":"BTC-USDT"}', b'[{"instId":"BTC-USDT"}]', b""):
        signed = await sign(scheme, keys, f"https://{host}/api/v2/order", body)
        assert signed["body"] == body


FUTURES = {"api_key": "k", "secret": KRAKEN_SECRET}
HOST = "https://futures.kraken.com"


def authent(message: bytes) -> str:
    """Kraken Futures' formula, written out: base64(HMAC-SHA512(secret, SHA256(message)))."""
    digest = hashlib.sha256(message).digest()
    return base64.b64encode(hmac.new(base64.b64decode(KRAKEN_SECRET), digest, hashlib.sha512).digest()).decode()


async def test_kraken_futures_refuses_a_path_whose_tail_is_another_endpoint() -> None:
    # Signed: body + nonce + "/y<N>/api/v3/withdrawal"; the same bytes as a withdrawal whose
    # body ends "x=<nonce>/y" and whose Nonce header is N. The guard, anchored at the start, missed it.
    with pytest.raises(RpcError) as refused:
        await sign("kraken-futures", FUTURES, f"{HOST}/derivatives/y1/api/v3/withdrawal", b"amount=1&x=", nonce=7)
    assert refused.value.code is ErrorCode.INVALID_PARAMS and "'/api/' nowhere else" in refused.value.args[0]
    with pytest.raises(RpcError) as outside:
        await sign("kraken-futures", FUTURES, f"{HOST}/derivatives/other/v3/accounts", nonce=8)
    assert outside.value.code is ErrorCode.INVALID_PARAMS


async def test_kraken_futures_refuses_parameters_that_hold_an_endpoint() -> None:
    # Signed: "a=/api/v3/withdrawal" + nonce + "/api/v3/accounts": with a nonce-less request whose
    # parameters end before "/api/", Kraken would read the tail as the endpoint.
    for body in (b"a=/api/v3/withdrawal", b"a=/API/v3/withdrawal"):
        with pytest.raises(RpcError) as refused:
            await sign("kraken-futures", FUTURES, f"{HOST}/derivatives/api/v3/accounts", body, nonce=9)
        assert refused.value.code is ErrorCode.INVALID_PARAMS and "must not hold '/api/'" in refused.value.args[0]


async def test_kraken_futures_still_signs_batch_orders_and_history() -> None:
    body = b'json={"batchOrder":[{"order":"send","order_tag":"a/b","symbol":"PF_XBTUSD"}]}'
    signed = await sign("kraken-futures", FUTURES, f"{HOST}/derivatives/api/v3/batchorder", body, nonce=10)
    assert signed["headers"]["Authent"] == authent(body + b"10/api/v3/batchorder")
    history = await sign("kraken-futures", FUTURES, f"{HOST}/api/history/v2/executions?sort=asc", nonce=11)
    assert history["headers"]["Authent"] == authent(b"sort=asc11/api/history/v2/executions")


async def test_a_deribit_body_too_deep_to_read_is_refused() -> None:
    # Which endpoint a JSON-RPC body names must be known: one too deep to parse is not let through.
    deep = b'{"method":"private/withdraw","params":' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    keys = {"api_key": "client-id", "secret": "s"}
    with pytest.raises(RpcError) as refused:
        await sign("deribit", keys, "https://www.deribit.com/api/v2/private/buy", deep)
    assert refused.value.code is ErrorCode.INVALID_PARAMS and "nested too deeply" in refused.value.args[0]


BYBIT = {"api_key": "k", "secret": "s"}


async def test_bybit_lends_no_digits_to_the_receive_window() -> None:
    # Bybit signs ts + key + recv_window + payload: a payload starting with digits could pass for
    # the window's ("5" + "0000000{...}" verifies as window 50000000 and body "{...}").
    order = "https://api.bybit.com/v5/order/create"
    with pytest.raises(RpcError, match="must be JSON, starting with"):
        await sign("bybit", BYBIT, order, b'0000000{"category":"spot"}')
    credential = from_config("c", "sign", {"scheme": "bybit", **BYBIT}, NOW)

    async def persist() -> None:
        pass

    get = {"method": "GET", "url": "https://api.bybit.com/v5/order/realtime?0000000category=linear"}
    with pytest.raises(RpcError, match="must not start with a digit"):
        await sign_request(credential, get, lambda: NOW, trio.Lock(), persist)
    long_window = {"method": "POST", "url": order, "body": b"{}", "options": {"recv_window": "3600000"}}
    with pytest.raises(RpcError, match="at most 60000"):
        await sign_request(credential, long_window, lambda: NOW, trio.Lock(), persist)
    assert (await sign("bybit", BYBIT, order, b'{"category":"spot"}'))["body"] == b'{"category":"spot"}'


def test_rsa_signatures_never_take_the_hot_path() -> None:
    # An RSA-4096 signature costs milliseconds: pipelined on the hot path they held every engine.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from vaultd._signing import answers_now

    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    for scheme in ("binance-rsa", "bybit-rsa"):
        assert not answers_now(from_config("c", "sign", {"scheme": scheme, "api_key": "k", "private_key": pem}, NOW))
    assert answers_now(from_config("c", "sign", {"scheme": "bybit", **BYBIT}, NOW))
