"""token.sign_many through a real socket: order, per-request refusals, Kraken nonces, the cap, audit."""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

import pytest

from vaultd._batch import HOT_MAX, Batch, answer_now
from vaultd._errors import RpcError
from vaultd._rpc import Dispatcher
from vaultd._vault import Vault
from vaultd_client._session import RESPONSE_LIMITS
from vaultd_protocol import SIGN_MANY_MAX, Connection, ErrorCode, Role

from .conftest import PASS, RawClient, Served, StartServer

NOW = 1_800_000_000.0
NOW_MS = int(NOW * 1000)
BINANCE = {"scheme": "binance-hmac", "api_key": "fake-key", "secret": "fake-secret-sign-many"}
KRAKEN = {
    "scheme": "kraken",
    "api_key": "fake-kraken",
    "secret": "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==",
}
ACCOUNT = "https://api.binance.com/api/v3/account"
ORDER = "https://api.binance.com/api/v3/order?symbol=BTCUSDT&side=BUY&type=MARKET&quantity=1"
WITHDRAW = "https://api.binance.com/sapi/v1/capital/withdraw/apply?coin=BTC&amount=1"


class Recorder:
    """Stands in for the audit log: keeps every line the dispatcher writes."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def record(self, **line: Any) -> None:
        self.lines.append(line)

    def of(self, method: str) -> list[tuple[str | None, str]]:
        return [(line["credential"], line["outcome"]) for line in self.lines if line["method"] == method]


async def ready(served: Served, **credentials: dict[str, str]) -> RawClient:
    client = await served.connect()
    await client.ok("vault.init", passphrase=PASS, kdf_profile="min")
    await client.ok("vault.unlock", passphrase=PASS)
    for name, config in credentials.items():
        await client.ok("credential.put", passphrase=PASS, name=name, kind="sign", config=config)
    return client


def req(name: str, method: str, url: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "method": method, "url": url, "timestamp": NOW_MS, **more}


def error_name(item: dict[str, Any]) -> str | None:
    return item["error"]["name"] if "error" in item else None


async def test_results_keep_the_order_and_one_refusal_sinks_nothing(start_server: StartServer) -> None:
    audit = Recorder()
    client = await ready(await start_server(clock=lambda: NOW, audit=audit), binance=BINANCE)
    requests = [
        req("binance", "GET", ACCOUNT),
        req("binance", "POST", WITHDRAW),  # the allow-list's withdrawal guard
        req("nope", "GET", ACCOUNT),  # no such credential
        req("binance", "POST", ORDER),
        {"name": "binance", "method": "GET"},  # no url: this request's INVALID_PARAMS only
        req("binance", "POST", "https://api.binance.com/api/v3/order", body=b"symbol=BTCUSDT&side=SELL"),
    ]
    results = (await client.ok("token.sign_many", requests=requests))["results"]
    assert [error_name(item) for item in results] == [
        None,
        "FORBIDDEN",
        "UNKNOWN_CREDENTIAL",
        None,
        "INVALID_PARAMS",
        None,
    ]
    assert (
        results[1]["error"]["code"] == int(ErrorCode.FORBIDDEN) and "moves money out" in results[1]["error"]["message"]
    )
    assert "'url'" in results[4]["error"]["message"]
    # Each good answer is exactly what token.sign answers for the same request.
    for index in (0, 3, 5):
        assert results[index] == await client.ok("token.sign", **requests[index])
    assert results[5]["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    # One audit line per request, under token.sign_many, named by its credential.
    assert sorted(audit.of("token.sign_many"), key=str) == sorted(
        [
            ("binance", "ok"),
            ("binance", "FORBIDDEN"),
            ("nope", "UNKNOWN_CREDENTIAL"),
            ("binance", "ok"),
            (None, "INVALID_PARAMS"),  # malformed: no policy judged it, so it names no credential
            ("binance", "ok"),
        ],
        key=str,
    )


async def test_a_batch_answered_from_memory_takes_the_hot_path(start_server: StartServer) -> None:
    served = await start_server(clock=lambda: NOW)
    await ready(served, binance=BINANCE, kraken=KRAKEN)
    audited: list[tuple[str | None, str, str]] = []

    def allow(name: str) -> str:
        return "allowed"

    batch = Batch(served.vault, allow, lambda *line: audited.append(line))
    in_memory = {"requests": [req("binance", "GET", ACCOUNT), req("binance", "POST", WITHDRAW), {"name": 5}]}
    answered = answer_now(batch, in_memory)
    assert answered is not None
    assert [error_name(item) for item in answered["results"]] == [None, "FORBIDDEN", "INVALID_PARAMS"]
    assert [line[:2] for line in audited] == [("binance", "ok"), ("binance", "FORBIDDEN"), (None, "INVALID_PARAMS")]
    # A Kraken nonce (a vault write) or an unknown credential: the slow path, nothing done yet.
    audited.clear()
    for other in (req("kraken", "POST", "https://api.kraken.com/0/private/Balance"), req("nope", "GET", ACCOUNT)):
        assert answer_now(batch, {"requests": [req("binance", "GET", ACCOUNT), other]}) is None
    assert audited == []


async def test_kraken_requests_in_a_batch_get_strictly_increasing_nonces(start_server: StartServer) -> None:
    client = await ready(await start_server(clock=lambda: NOW), kraken=KRAKEN, binance=BINANCE)
    batch = json.dumps(
        {"orders": [{"ordertype": "limit", "type": "buy", "volume": "1", "price": "1"}], "pair": "XBTUSD"}
    )
    requests: list[dict[str, Any]] = []
    for index in range(12):
        if index % 4 == 3:
            requests.append(req("binance", "GET", ACCOUNT))
        elif index % 4 == 2:
            requests.append(req("kraken", "POST", "https://api.kraken.com/0/private/AddOrderBatch", body=batch))
        else:
            requests.append(req("kraken", "POST", "https://api.kraken.com/0/private/OpenOrders", body=b"trades=true"))
    results = (await client.ok("token.sign_many", requests=requests))["results"]
    assert all("error" not in item for item in results)
    nonces = [item["nonce"] for item, request in zip(results, requests, strict=True) if request["name"] == "kraken"]
    assert len(nonces) == 9 and all(a < b for a, b in itertools.pairwise(nonces))
    for item, request in zip(results, requests, strict=True):
        if request["url"].endswith("AddOrderBatch"):
            assert json.loads(item["body"])["nonce"] == str(item["nonce"])
            assert item["headers"]["Content-Type"] == "application/json"
        elif request["name"] == "kraken":
            assert item["body"] == f"nonce={item['nonce']}&trades=true".encode()
    # The next lone token.sign goes on above the batch's nonces.
    after = await client.ok("token.sign", **req("kraken", "POST", "https://api.kraken.com/0/private/Balance"))
    assert after["nonce"] > nonces[-1]


async def test_kraken_futures_nonces_in_a_batch_rise_too(start_server: StartServer) -> None:
    # Kraken Futures' nonce is the daemon's as well: a batch of its requests takes the slow path.
    futures = {**KRAKEN, "scheme": "kraken-futures"}
    client = await ready(await start_server(clock=lambda: NOW), futures=futures)
    url = "https://futures.kraken.com/derivatives/api/v3/accounts"
    results = (await client.ok("token.sign_many", requests=[req("futures", "GET", url) for _ in range(5)]))["results"]
    nonces = [item["nonce"] for item in results]
    assert all(a < b for a, b in itertools.pairwise(nonces))
    assert [item["headers"]["Nonce"] for item in results] == [str(nonce) for nonce in nonces]


async def test_the_cap_refuses_the_whole_call(start_server: StartServer) -> None:
    audit = Recorder()
    client = await ready(await start_server(clock=lambda: NOW, audit=audit), binance=BINANCE)
    client.conn = Connection(Role.CLIENT, RESPONSE_LIMITS)  # 256 answers outgrow 64 KiB: vaultd_client reads them
    one = {"name": "binance", "method": "GET", "url": ACCOUNT}
    full = await client.ok("token.sign_many", requests=[one] * SIGN_MANY_MAX)
    assert len(full["results"]) == SIGN_MANY_MAX and all("error" not in item for item in full["results"])
    assert len(audit.of("token.sign_many")) == SIGN_MANY_MAX
    for too_many in ([one] * (SIGN_MANY_MAX + 1), []):
        refused = await client.call("token.sign_many", requests=too_many)
        assert refused.error is not None and refused.error.name == "INVALID_PARAMS"
        assert f"1 to {SIGN_MANY_MAX} requests" in refused.error.message
    assert len(audit.of("token.sign_many")) == SIGN_MANY_MAX  # nothing judged, nothing written


async def test_the_policy_judges_each_request_by_its_credential(start_server: StartServer) -> None:
    audit = Recorder()
    served = await start_server(clock=lambda: NOW, audit=audit)
    client = await ready(served, binance=BINANCE, kraken=KRAKEN)
    rule = {"uid": os.getuid(), "credentials": ["binance"], "methods": ["sign"]}
    await client.ok("policy.set", passphrase=PASS, policy={"rules": [rule]})
    engine = await served.connect()  # a connection judged under the new policy
    requests = [
        req("binance", "GET", ACCOUNT),
        req("kraken", "POST", "https://api.kraken.com/0/private/Balance"),
        req("binance", "POST", ORDER),
    ]
    results = (await engine.ok("token.sign_many", requests=requests))["results"]
    assert [error_name(item) for item in results] == [None, "FORBIDDEN", None]
    assert "token.sign_many of 'kraken' is not allowed for this process" in results[1]["error"]["message"]
    assert sorted(audit.of("token.sign_many")) == [("binance", "ok"), ("binance", "ok"), ("kraken", "FORBIDDEN")]


async def test_a_locked_vault_refuses_each_request(start_server: StartServer) -> None:
    served = await start_server(clock=lambda: NOW)
    client = await ready(served, binance=BINANCE)
    await client.ok("vault.lock")
    results = (await client.ok("token.sign_many", requests=[req("binance", "GET", ACCOUNT)] * 2))["results"]
    assert [error_name(item) for item in results] == ["LOCKED", "LOCKED"]


def test_rpc_errors_become_items_of_the_wire_form() -> None:
    from vaultd._batch import _error

    assert _error(RpcError(ErrorCode.FORBIDDEN, "no")) == {"error": {"code": 14, "name": "FORBIDDEN", "message": "no"}}


async def test_the_server_answers_an_in_memory_batch_without_a_task(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await ready(await start_server(clock=lambda: NOW), binance=BINANCE, kraken=KRAKEN)

    async def no_task(self: Dispatcher, params: dict[str, Any], session: Any) -> Any:
        raise RpcError(ErrorCode.INTERNAL, "the slow path was taken")

    monkeypatch.setattr(Dispatcher, "_token_sign_many", no_task)
    fast = await client.ok("token.sign_many", requests=[req("binance", "GET", ACCOUNT)] * 3)
    assert [error_name(item) for item in fast["results"]] == [None, None, None]
    kraken = req("kraken", "POST", "https://api.kraken.com/0/private/Balance")
    slow = await client.call("token.sign_many", requests=[req("binance", "GET", ACCOUNT), kraken])
    assert slow.error is not None and slow.error.message == "the slow path was taken"
    # More than HOT_MAX requests would hold the event loop (and every other engine) too long.
    many = await client.call("token.sign_many", requests=[req("binance", "GET", ACCOUNT)] * (HOT_MAX + 1))
    assert many.error is not None and many.error.message == "the slow path was taken"


async def test_a_request_that_fails_unforeseen_is_its_own_internal_error(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    audit = Recorder()
    client = await ready(await start_server(clock=lambda: NOW, audit=audit), binance=BINANCE, kraken=KRAKEN)
    deep = b'{"a":' + b"[" * 20_000 + b"]" * 20_000 + b"}"  # deeper than Python's JSON parser goes, under 64 KiB
    kraken = req("kraken", "POST", "https://api.kraken.com/0/private/AddOrderBatch", body=deep)
    results = (await client.ok("token.sign_many", requests=[kraken, req("binance", "GET", ACCOUNT)]))["results"]
    assert [error_name(item) for item in results] == ["INVALID_PARAMS", None]
    assert "nested too deeply" in results[0]["error"]["message"]
    # Whatever a check did not foresee fails its own request only, on both paths, signed once.
    real_now, real = Vault.sign_now, Vault.sign

    def flaky_now(self: Vault, name: str, request: dict[str, Any]) -> Any:
        if request["url"] == ORDER:
            raise ValueError("a bug, with a text that may hold anything")
        return real_now(self, name, request)

    async def flaky(self: Vault, name: str, request: dict[str, Any]) -> Any:
        if request["url"] == ORDER:
            raise ValueError("a bug, with a text that may hold anything")
        return await real(self, name, request)

    monkeypatch.setattr(Vault, "sign_now", flaky_now)
    monkeypatch.setattr(Vault, "sign", flaky)
    audit.lines.clear()
    for size in (2, HOT_MAX + 2):  # the hot path, then the slow one
        requests = [req("binance", "POST", ORDER)] + [req("binance", "GET", ACCOUNT)] * (size - 1)
        results = (await client.ok("token.sign_many", requests=requests))["results"]
        assert [error_name(item) for item in results] == ["INTERNAL"] + [None] * (size - 1)
        assert "a bug" not in results[0]["error"]["message"]
    assert len(audit.of("token.sign_many")) == 2 + HOT_MAX + 2  # each request audited once
    assert "a bug" not in caplog.text and "ValueError" in caplog.text
