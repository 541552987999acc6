"""token.sign through a real socket: published exchange examples, the allow-list, Kraken nonces."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import trio

from .conftest import PASS, RawClient, Served, StartServer

BINANCE_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
BINANCE_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
BINANCE = {"scheme": "binance-hmac", "api_key": BINANCE_KEY, "secret": BINANCE_SECRET}
KRAKEN_SECRET = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
KRAKEN = {"scheme": "kraken", "api_key": "fake-key", "secret": KRAKEN_SECRET}


async def signing(served: Served, name: str, config: dict[str, Any]) -> RawClient:
    client = await served.connect()
    await client.ok("vault.init", passphrase=PASS, kdf_profile="min")
    await client.ok("vault.unlock", passphrase=PASS)
    await client.ok("credential.put", passphrase=PASS, name=name, kind="sign", config=config)
    return client


async def test_binance_hmac_reproduces_the_published_example(start_server: StartServer) -> None:
    # Source: Binance Spot API docs, "SIGNED (TRADE, USER_DATA) endpoint security", HMAC example.
    # The daemon's clock at the example's time: the timestamp in its query is held to it.
    client = await signing(
        await start_server(clock=lambda: 1499827319.559),
        "binance",
        {"scheme": "binance-hmac", "api_key": BINANCE_KEY, "secret": BINANCE_SECRET},
    )
    query = (
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
    )
    result = await client.ok(
        "token.sign", name="binance", method="POST", url=f"https://api.binance.com/api/v3/order?{query}"
    )
    assert result["url"] == (
        f"https://api.binance.com/api/v3/order?{query}"
        "&signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    )
    assert result["headers"] == {"X-MBX-APIKEY": BINANCE_KEY}


async def test_kraken_reproduces_the_published_example(start_server: StartServer) -> None:
    # Source: Kraken Spot REST API docs, "Authentication", the API-Sign example.
    client = await signing(
        await start_server(), "kraken", {"scheme": "kraken", "api_key": "fake-key", "secret": KRAKEN_SECRET}
    )
    result = await client.ok(
        "token.sign",
        name="kraken",
        method="POST",
        url="https://api.kraken.com/0/private/AddOrder",
        body="ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25",
        nonce=1616492376594,
    )
    assert result["headers"]["API-Sign"] == (
        "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="
    )
    assert result["body"] == b"nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"
    assert result["nonce"] == 1616492376594


async def test_bybit_and_okx_match_an_independent_hmac(start_server: StartServer) -> None:
    # No published secret and signature exist for these: checked against the documented formula,
    # over the strings the exchanges publish. The daemon's clock is set to their examples' time.
    served = await start_server(clock=lambda: 1658384314.791)
    client = await signing(served, "bybit", {"scheme": "bybit", "api_key": "XXXXXXXXXX", "secret": "fake-secret"})
    okx_config = {"scheme": "okx", "api_key": "k", "secret": "fake-secret", "passphrase": "fake-pp"}
    await client.ok("credential.put", passphrase=PASS, name="okx", kind="sign", config=okx_config)
    bybit = await client.ok(
        "token.sign", name="bybit", method="GET", timestamp=1658384314791,
        url="https://api.bybit.com/v5/order/realtime?category=option&symbol=BTC-29JUL22-25000-C",
    )  # fmt: skip
    payload = b"1658384314791XXXXXXXXXX5000category=option&symbol=BTC-29JUL22-25000-C"
    assert bybit["headers"]["X-BAPI-SIGN"] == hmac.new(b"fake-secret", payload, hashlib.sha256).hexdigest()
    okx = await client.ok(
        "token.sign", name="okx", method="GET", timestamp=1658384314791,
        url="https://www.okx.com/api/v5/account/balance?ccy=BTC",
    )  # fmt: skip
    prehash = b"2022-07-21T06:18:34.791ZGET/api/v5/account/balance?ccy=BTC"
    expected = base64.b64encode(hmac.new(b"fake-secret", prehash, hashlib.sha256).digest()).decode()
    assert okx["headers"]["OK-ACCESS-SIGN"] == expected
    assert okx["headers"]["OK-ACCESS-PASSPHRASE"] == "fake-pp"


async def test_withdrawals_are_refused_unless_allowed_by_name(start_server: StartServer) -> None:
    served = await start_server()
    client = await signing(
        served, "binance", {"scheme": "binance-hmac", "api_key": BINANCE_KEY, "secret": BINANCE_SECRET}
    )
    url = "https://api.binance.com/sapi/v1/capital/withdraw/apply?coin=BTC&amount=1"
    refused = await client.call("token.sign", name="binance", method="POST", url=url)
    assert (
        refused.error is not None and refused.error.name == "FORBIDDEN" and "moves money out" in refused.error.message
    )
    await client.ok(
        "credential.put", passphrase=PASS, name="payout", kind="sign", config={
            "scheme": "binance-hmac", "api_key": BINANCE_KEY, "secret": BINANCE_SECRET,
            "allow": ["GET /api/*", {"method": "POST", "path": "/sapi/v1/capital/withdraw/apply"}],
        },
    )  # fmt: skip
    assert "signature=" in (await client.ok("token.sign", name="payout", method="POST", url=url))["url"]
    outside = await client.call(
        "token.sign", name="payout", method="DELETE", url="https://api.binance.com/api/v3/order"
    )
    assert outside.error is not None and outside.error.name == "FORBIDDEN"


async def test_bad_sign_requests_are_invalid_params(start_server: StartServer) -> None:
    served = await start_server()
    client = await signing(served, "kraken", KRAKEN)
    cases = [
        {"method": "POST", "url": "ftp://api.kraken.com/0/private/Balance"},
        {"method": "POST", "url": "http://api.kraken.com/0/private/Balance"},
        {"method": "PO ST", "url": "https://api.kraken.com/0/private/Balance"},
        {"method": "POST", "url": "https://api.kraken.com/0/private/Balance", "nonce": -5},
        {"method": "POST", "url": "https://api.kraken.com/0/private/Balance", "body": b"x" * 61_500},
        {"method": "POST", "url": "https://api.kraken.com/0/private/Balance", "body": b"pair=\xff\xfe"},
    ]
    for params in cases:
        response = await client.call("token.sign", name="kraken", **params)
        assert response.error is not None and response.error.name == "INVALID_PARAMS", params
    token = await client.call("token.get", name="kraken")
    assert token.error is not None and "ask for a signature (token.sign" in token.error.message
    oversized = await served.connect()  # over the 64 KiB message limit: answered, then closed
    response = await oversized.call(
        "token.sign", name="kraken", method="POST", url="https://api.kraken.com/0/private/Balance", body=b"x" * 70_000
    )
    assert response.error is not None and response.error.name == "TOO_LARGE"


async def test_twenty_concurrent_kraken_signers_get_strictly_increasing_nonces(start_server: StartServer) -> None:
    served = await start_server()
    setup = await signing(served, "kraken", KRAKEN)
    nonces: list[int] = []

    async def signer() -> None:
        client = await served.connect()
        for _ in range(10):
            result = await client.ok("token.sign", name="kraken", method="POST",
                                     url="https://api.kraken.com/0/private/Balance")  # fmt: skip
            nonces.append(result["nonce"])

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(signer)
    assert len(nonces) == 200 and len(set(nonces)) == 200
    assert sorted(nonces) == sorted(set(nonces))
    proposed = await setup.call("token.sign", name="kraken", method="POST",
                                url="https://api.kraken.com/0/private/Balance", nonce=min(nonces))  # fmt: skip
    assert proposed.error is not None and "above the last" in proposed.error.message


async def test_a_key_in_the_wrong_format_is_refused_naming_the_format(start_server: StartServer) -> None:
    served = await start_server()
    client = await signing(served, "ok", KRAKEN)
    bad = [
        ({"scheme": "kraken", "api_key": "k", "secret": "not base64!!"}, "base64"),
        ({"scheme": "binance-ed25519", "api_key": "k", "private_key": "not a key"}, "PEM"),
        ({"scheme": "binance-hmac", "api_key": "k", "private_key": "x"}, "HMAC 'secret'"),
        ({"scheme": "okx", "api_key": "k", "secret": "s"}, "passphrase"),
        ({"scheme": "nope", "api_key": "k", "secret": "s"}, "unknown signing 'scheme'"),
    ]
    for config, words in bad:
        response = await client.call("credential.put", passphrase=PASS, name="bad", kind="sign", config=config)
        assert response.error is not None and response.error.name == "INVALID_PARAMS", config
        assert words in response.error.message, (config, response.error.message)
        assert "not a key" not in response.error.message


async def test_paths_that_could_mean_another_endpoint_are_refused(start_server: StartServer) -> None:
    served = await start_server()
    client = await signing(served, "binance", BINANCE)
    tricks = [
        "/api/v3/../../sapi/v1/capital/withdraw/apply",
        "/sapi/v1/capital/withdraw%2Fapply",
        "/api/v3//order",
        "/api/v3/./order",
        "/api/v3/order/",
    ]
    for path in tricks:
        response = await client.call("token.sign", name="binance", method="POST", url=f"https://api.binance.com{path}")
        assert response.error is not None and response.error.name == "INVALID_PARAMS", path
    money = [
        "/SAPI/v1/capital/withdraw/apply",
        "/sapi/v1/sub-account/universalTransfer",
        "/0/private/withdraw",
        "/0/private/AccountTransfer",
        "/v2/accounts/abc/withdrawals",
        "/api/v5/asset/withdrawal",
    ]
    for path in money:
        response = await client.call("token.sign", name="binance", method="POST", url=f"https://api.binance.com{path}")
        assert response.error is not None and response.error.name == "FORBIDDEN", path


async def test_timestamps_far_from_the_daemons_clock_are_refused(start_server: StartServer) -> None:
    served = await start_server(clock=lambda: 1_800_000_000.0)
    client = await signing(served, "binance", BINANCE)
    url = "https://api.binance.com/api/v3/account"
    now_ms = 1_800_000_000_000
    # The window the message states: a minute ahead, five minutes behind.
    for ts in (now_ms + 3_600_000, now_ms - 3_600_000, now_ms + 90_000, now_ms - 330_000):
        response = await client.call("token.sign", name="binance", method="GET", url=url, timestamp=ts)
        assert response.error is not None, ts
        assert "at most a minute ahead of and five minutes behind the daemon's clock" in response.error.message
    for ts in (now_ms + 30_000, now_ms - 240_000):
        assert await client.ok("token.sign", name="binance", method="GET", url=url, timestamp=ts)


async def test_kraken_nonces_survive_a_replace_and_refuse_absurd_proposals(start_server: StartServer) -> None:
    served = await start_server()
    client = await signing(served, "kraken", KRAKEN)
    url = "https://api.kraken.com/0/private/Balance"
    issued = (await client.ok("token.sign", name="kraken", method="POST", url=url))["nonce"]
    absurd = await client.call("token.sign", name="kraken", method="POST", url=url, nonce=2**63 - 1)
    assert absurd.error is not None and "ahead of the clock" in absurd.error.message
    await client.ok("credential.put", passphrase=PASS, name="kraken", kind="sign",
                    config={**KRAKEN, "allow": ["POST /0/private/*"]}, replace=True)  # fmt: skip
    after = (await client.ok("token.sign", name="kraken", method="POST", url=url))["nonce"]
    assert after > issued, "a replaced credential keeps its nonces above the old one's"


async def test_path_unbound_schemes_warn_in_status(start_server: StartServer) -> None:
    served = await start_server()
    client = await signing(served, "binance", BINANCE)
    status = await client.ok("status")
    (binance,) = [c for c in status["credentials"] if c["name"] == "binance"]
    assert "do not cover the request path" in binance["warnings"][0]
    assert binance["state"] == "FRESH"


async def test_ed25519_coinbase_and_deribit_through_the_socket(start_server: StartServer) -> None:
    """No exchange publishes a key for these with a reproducible signature: each is verified
    here with the public key, or recomputed from the documented formula."""
    import json as json_module

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    served = await start_server()
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_pem = ed_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    client = await signing(served, "bed", {"scheme": "binance-ed25519", "api_key": "k", "private_key": ed_pem})
    signed = await client.ok("token.sign", name="bed", method="GET", url="https://api.binance.com/api/v3/account")
    query = signed["url"].split("?", 1)[1]
    payload, _, signature = query.rpartition("&signature=")
    from urllib.parse import unquote

    ed_key.public_key().verify(base64.b64decode(unquote(signature)), payload.encode())

    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_pem = ec_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    cdp = {"scheme": "coinbase", "api_key": "organizations/o/apiKeys/k", "private_key": ec_pem}
    await client.ok("credential.put", passphrase=PASS, name="cb", kind="sign", config=cdp)
    accounts = "https://api.coinbase.com/api/v3/brokerage/accounts"
    jwt = (await client.ok("token.sign", name="cb", method="GET", url=accounts))["headers"]["Authorization"]
    claims = json_module.loads(base64.urlsafe_b64decode(jwt.split(".")[1] + "=="))
    assert claims["uri"] == "GET api.coinbase.com/api/v3/brokerage/accounts" and claims["sub"].endswith("/k")

    await client.ok("credential.put", passphrase=PASS, name="der", kind="sign",
                    config={"scheme": "deribit", "api_key": "fake-id", "secret": "fake-secret"})  # fmt: skip
    header = (await client.ok("token.sign", name="der", method="GET", timestamp=None,
                              url="https://www.deribit.com/api/v2/private/get_account_summary?currency=BTC"))[
        "headers"]["Authorization"]  # fmt: skip
    fields = dict(part.split("=", 1) for part in header.removeprefix("deri-hmac-sha256 ").split(","))
    data = f"{fields['ts']}\n{fields['nonce']}\nGET\n/api/v2/private/get_account_summary?currency=BTC\n\n"
    assert fields["sig"] == hmac.new(b"fake-secret", data.encode(), hashlib.sha256).hexdigest()


async def test_kraken_wallet_transfer_spellings_are_not_signed(start_server: StartServer) -> None:
    """Issue 14 item 8: with Kraken's default allow-list these three were signed."""
    served = await start_server()
    client = await signing(served, "kraken", KRAKEN)
    assert await client.ok("token.sign", name="kraken", method="POST", url="https://api.kraken.com/0/private/Balance")
    for path in ("/0/private/WalletTransfer;x", "/0/private/WalletTransfer;", "/0/private/WalletTransfer."):
        response = await client.call("token.sign", name="kraken", method="POST", url=f"https://api.kraken.com{path}")
        assert response.error is not None and response.error.name == "INVALID_PARAMS", path
        assert "plain path" in response.error.message and KRAKEN_SECRET not in response.error.message


async def test_bybit_url_holds_exactly_the_query_signed(start_server: StartServer) -> None:
    # ccxt and pybit sign and send "coin=BTC,USDT" with its raw comma: so does the daemon, whether
    # the engine wrote the comma raw or percent-encoded; the URL's query is the signed bytes.
    served = await start_server(clock=lambda: 1658384314.791)
    client = await signing(served, "bybit", {"scheme": "bybit", "api_key": "K", "secret": "fake-secret"})
    for spelled in ("BTC,USDT", "BTC%2CUSDT"):
        signed = await client.ok(
            "token.sign", name="bybit", method="GET", timestamp=1658384314791,
            url=f"https://api.bybit.com/v5/account/wallet-balance?accountType=UNIFIED&coin={spelled}",
        )  # fmt: skip
        assert signed["url"].endswith("/v5/account/wallet-balance?accountType=UNIFIED&coin=BTC,USDT")
        payload = b"1658384314791K5000accountType=UNIFIED&coin=BTC,USDT"
        assert signed["headers"]["X-BAPI-SIGN"] == hmac.new(b"fake-secret", payload, hashlib.sha256).hexdigest()
    refused = await client.call(
        "token.sign", name="bybit", method="GET", url="https://api.bybit.com/v5/asset/coin/query-info?coin=BTC%20USDT"
    )
    assert refused.error is not None and refused.error.name == "INVALID_PARAMS"
    assert "unencoded, as pybit sends them" in refused.error.message


async def test_a_requests_options_override_the_credentials_own_settings(start_server: StartServer) -> None:
    # SPEC 6.6 "Per-request options": the credential's key_version / recv_window are defaults only.
    served = await start_server()
    kucoin = {"scheme": "kucoin", "api_key": "k", "secret": "fake-secret", "passphrase": "fake-pp", "key_version": 3}
    client = await signing(served, "kucoin", kucoin)
    bybit = {"scheme": "bybit", "api_key": "K", "secret": "fake-secret", "recv_window": 7000}
    await client.ok("credential.put", passphrase=PASS, name="bybit", kind="sign", config=bybit)
    accounts = "https://api.kucoin.com/api/v1/accounts"
    own = await client.ok("token.sign", name="kucoin", method="GET", url=accounts)
    overridden = await client.ok("token.sign", name="kucoin", method="GET", url=accounts, options={"key_version": "2"})
    assert own["headers"]["KC-API-KEY-VERSION"] == "3" and overridden["headers"]["KC-API-KEY-VERSION"] == "2"
    wallet = "https://api.bybit.com/v5/account/wallet-balance?accountType=UNIFIED"
    own = await client.ok("token.sign", name="bybit", method="GET", url=wallet)
    overridden = await client.ok("token.sign", name="bybit", method="GET", url=wallet, options={"recv_window": "9000"})
    assert own["headers"]["X-BAPI-RECV-WINDOW"] == "7000" and overridden["headers"]["X-BAPI-RECV-WINDOW"] == "9000"
    assert overridden["valid_until"] - own["valid_until"] >= 1.9  # the window signed is the one used
