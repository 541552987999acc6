"""``token.sign``'s ``schemes``: a credential of another venue's scheme signs nothing, takes no nonce."""

from __future__ import annotations

from typing import Any

from vaultd_protocol import ErrorCode

from .conftest import StartServer
from .test_sign_many import BINANCE, KRAKEN, NOW, ORDER, Recorder, error_name, ready, req

OKX = {"scheme": "okx", "api_key": "fake-okx-key", "secret": "fake-okx-secret", "passphrase": "fake-okx-pass"}
BINANCE_SCHEMES = ["binance-hmac", "binance-ed25519", "binance-rsa"]
KRAKEN_BALANCE = "https://api.kraken.com/0/private/Balance"


async def test_a_credential_of_another_scheme_is_refused_naming_both(start_server: StartServer) -> None:
    audit = Recorder()
    client = await ready(await start_server(clock=lambda: NOW, audit=audit), okx=OKX, binance=BINANCE)
    response = await client.call("token.sign", **req("okx", "POST", ORDER, schemes=BINANCE_SCHEMES))
    assert response.error is not None and response.error.code == ErrorCode.INVALID_PARAMS
    assert response.error.message == (
        "credential 'okx' signs with scheme 'okx', not binance-hmac, binance-ed25519 or binance-rsa: nothing signed"
    )
    assert ("okx", "INVALID_PARAMS") in audit.of("token.sign")
    # The credential's own scheme among them: signed as without the param.
    signed = await client.ok("token.sign", **req("binance", "POST", ORDER, schemes=BINANCE_SCHEMES))
    assert signed == await client.ok("token.sign", **req("binance", "POST", ORDER))
    one = await client.call("token.sign", **req("binance", "POST", ORDER, schemes=["okx"]))
    assert one.error is not None and "not okx: nothing signed" in one.error.message


async def test_schemes_must_be_1_to_16_names(start_server: StartServer) -> None:
    client = await ready(await start_server(clock=lambda: NOW), binance=BINANCE)
    for bad in ([], ["x"] * 17, "binance-hmac", [""], [5]):
        response = await client.call("token.sign", **req("binance", "GET", ORDER, schemes=bad))
        assert response.error is not None and response.error.code == ErrorCode.INVALID_PARAMS, bad
        assert "'schemes'" in response.error.message


async def test_a_refusal_takes_no_kraken_nonce(start_server: StartServer) -> None:
    client = await ready(await start_server(clock=lambda: NOW), kraken=KRAKEN)
    first = await client.ok("token.sign", **req("kraken", "POST", KRAKEN_BALANCE, schemes=["kraken"]))
    refused = await client.call("token.sign", **req("kraken", "POST", KRAKEN_BALANCE, schemes=["kraken-futures"]))
    assert refused.error is not None and refused.error.code == ErrorCode.INVALID_PARAMS
    assert "credential 'kraken' signs with scheme 'kraken', not kraken-futures" in refused.error.message
    after = await client.ok("token.sign", **req("kraken", "POST", KRAKEN_BALANCE))
    # The clock stands still, so the daemon hands out last + 1: the refusal used none.
    assert after["nonce"] == first["nonce"] + 1


async def test_each_sign_many_item_is_checked_on_its_own(start_server: StartServer) -> None:
    audit = Recorder()
    client = await ready(await start_server(clock=lambda: NOW, audit=audit), kraken=KRAKEN, okx=OKX, binance=BINANCE)
    requests: list[dict[str, Any]] = [
        req("kraken", "POST", KRAKEN_BALANCE, schemes=["kraken"]),
        req("kraken", "POST", KRAKEN_BALANCE, schemes=["okx"]),
        req("okx", "POST", ORDER, schemes=BINANCE_SCHEMES),
        req("binance", "POST", ORDER, schemes=BINANCE_SCHEMES),
        req("kraken", "POST", KRAKEN_BALANCE),
        req("binance", "POST", ORDER, schemes=[]),
    ]
    results = (await client.ok("token.sign_many", requests=requests))["results"]
    assert [error_name(item) for item in results] == [
        None,
        "INVALID_PARAMS",
        "INVALID_PARAMS",
        None,
        None,
        "INVALID_PARAMS",
    ]
    assert "signs with scheme 'kraken', not okx" in results[1]["error"]["message"]
    assert "signs with scheme 'okx', not binance-hmac" in results[2]["error"]["message"]
    assert "'schemes'" in results[5]["error"]["message"]
    assert results[4]["nonce"] == results[0]["nonce"] + 1, "the refused Kraken item took no nonce"
    assert ("okx", "INVALID_PARAMS") in audit.of("token.sign_many")
    # Hot path too: a batch answered from memory checks each item the same.
    hot = (await client.ok("token.sign_many", requests=requests[2:4]))["results"]
    assert [error_name(item) for item in hot] == ["INVALID_PARAMS", None]
