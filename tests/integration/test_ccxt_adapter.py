"""vaultd_client.ccxt end to end: real ccxt exchanges, a real daemon process, and per venue a local
server that checks each signature with the secret (tests/integration/ccxt_venues.py).

Per venue, sync and async_support: ccxt's own create_order and fetch_balance are accepted by the
verifying server; ccxt's withdraw is refused by the daemon's default allow-list and surfaces as
ccxt's PermissionDenied; the engine's exchange object holds no secret anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support
import pytest
from ccxt.async_support.base.exchange import Exchange as AsyncExchange
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import vaultd_client.ccxt
from vaultd_client import AsyncClient, Client

from ..daemon_process import DaemonProcess
from . import ccxt_venues as v

SECRETS = (v.HMAC_SECRET, v.KRAKEN_SECRET, v.COINBASE_PEM.splitlines()[1], v.RSA_PEM.splitlines()[1])


@dataclass(frozen=True)
class Case:
    exchange_id: str
    credential: dict[str, str]
    verify: v.Verifier
    market_id: str
    answers: dict[str, Any]
    withdraw_params: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    market_info: dict[str, Any] = field(default_factory=dict)
    #: "withdraw", or "transfer" for venues whose ccxt has no withdraw (Kraken Futures: to spot)
    money_out: str = "withdraw"


#: What the verifying servers answer ccxt, shared by a venue's HMAC and RSA cases.
BINANCE_ANSWERS: dict[str, Any] = {
    "/api/v3/order": {
        "symbol": "BTCUSDT", "orderId": 11, "clientOrderId": "c1", "transactTime": 1, "price": "30000",
        "origQty": "0.01", "executedQty": "0", "status": "NEW", "type": "LIMIT", "side": "BUY",
    },
    "/api/v3/account": {"balances": [{"asset": "BTC", "free": "1.5", "locked": "0"}]},
}  # fmt: skip
BYBIT_ANSWERS: dict[str, Any] = {
    "/v5/order/create": {"retCode": 0, "retMsg": "OK", "result": {"orderId": "11", "orderLinkId": "c1"}},
    "/v5/account/wallet-balance": {
        "retCode": 0,
        "retMsg": "OK",
        "result": {
            "list": [{"accountType": "UNIFIED", "coin": [{"coin": "BTC", "walletBalance": "1.5", "equity": "1.5",
                                                          "locked": "0"}]}]
        },
    },
}  # fmt: skip

CASES = {
    "binance": Case(
        "binance",
        {"scheme": "binance-hmac", "api_key": v.API_KEY, "secret": v.HMAC_SECRET},
        v.binance_ok,
        "BTCUSDT",
        BINANCE_ANSWERS,
        market_info={"orderTypes": ["LIMIT", "MARKET"]},
    ),
    "kraken": Case(
        "kraken",
        {"scheme": "kraken", "api_key": v.API_KEY, "secret": v.KRAKEN_SECRET},
        v.kraken_ok,
        "XXBTZUSD",
        {
            "/0/private/AddOrder": {
                "error": [], "result": {"descr": {"order": "buy 0.01 XBTUSD @ limit 30000"}, "txid": ["OQCLML-1"]}
            },
            "/0/private/BalanceEx": {"error": [], "result": {"XXBT": {"balance": "1.5", "hold_trade": "0"}}},
        },
        withdraw_params={"key": "fake-withdrawal-key"},
    ),
    "okx": Case(
        "okx",
        {"scheme": "okx", "api_key": v.API_KEY, "secret": v.HMAC_SECRET, "passphrase": v.OKX_PASSPHRASE},
        v.okx_ok,
        "BTC-USDT",
        {
            "/api/v5/trade/batch-orders": {"code": "0", "data": [{"ordId": "11", "clOrdId": "c1", "sCode": "0"}]},
            "/api/v5/trade/order": {"code": "0", "data": [{"ordId": "11", "clOrdId": "c1", "sCode": "0"}]},
            "/api/v5/account/balance": {
                "code": "0",
                "data": [{"uTime": "1", "details": [{"ccy": "BTC", "availBal": "1.5", "eq": "1.5", "cashBal": "1.5"}]}],
            },
        },
    ),
    "bybit": Case(
        "bybit",
        {"scheme": "bybit", "api_key": v.API_KEY, "secret": v.HMAC_SECRET},
        v.bybit_ok,
        "BTCUSDT",
        BYBIT_ANSWERS,
        options={"enableUnifiedMargin": False, "enableUnifiedAccount": True},
    ),
    "deribit": Case(
        "deribit",
        {"scheme": "deribit", "api_key": v.API_KEY, "secret": v.HMAC_SECRET},
        v.deribit_ok,
        "BTC-PERPETUAL",
        {
            "/api/v2/private/buy": {
                "jsonrpc": "2.0",
                "result": {
                    "order": {
                        "order_id": "11", "instrument_name": "BTC-PERPETUAL", "order_state": "open", "amount": 0.01,
                        "price": 30000, "direction": "buy", "order_type": "limit", "creation_timestamp": 1,
                        "last_update_timestamp": 1, "filled_amount": 0,
                    },
                    "trades": [],
                },
            },
            "/api/v2/private/get_account_summaries": {
                "jsonrpc": "2.0",
                "result": {"summaries": [{"currency": "BTC", "balance": 1.5, "available_funds": 1.5, "equity": 1.5}]},
            },
        },
    ),
    "coinbase": Case(
        "coinbase",
        {"scheme": "coinbase", "api_key": v.COINBASE_KEY_NAME, "private_key": v.COINBASE_PEM},
        v.coinbase_ok,
        "BTC-USDT",
        {
            "/api/v3/brokerage/orders": {
                "success": True,
                "success_response": {"order_id": "11", "product_id": "BTC-USDT", "client_order_id": "c1"},
            },
            "/v2/accounts": {
                "data": [
                    {
                        "id": "acc1", "currency": {"code": "BTC"}, "type": "wallet",
                        "balance": {"amount": "1.5", "currency": "BTC"},
                    }
                ],
                "pagination": {"next_uri": None},
            },
            "/api/v3/brokerage/accounts": {
                "accounts": [
                    {
                        "uuid": "acc1", "currency": "BTC", "type": "ACCOUNT_TYPE_CRYPTO", "name": "BTC Wallet",
                        "available_balance": {"value": "1.5", "currency": "BTC"},
                        "hold": {"value": "0", "currency": "BTC"},
                    }
                ],
                "has_next": False,
            },
        },
    ),
    "kucoin": Case(
        "kucoin",
        {"scheme": "kucoin", "api_key": v.API_KEY, "secret": v.HMAC_SECRET, "passphrase": v.OKX_PASSPHRASE},
        v.kucoin_ok,
        "BTC-USDT",
        {
            "/api/v1/orders": {"code": "200000", "data": {"orderId": "11", "clientOid": "c1"}},
            "/api/v1/accounts": {
                "code": "200000",
                "data": [
                    {"id": "a1", "currency": "BTC", "type": "trade", "balance": "1.5", "available": "1.5", "holds": "0"}
                ],
            },
        },
        options={"uta": False, "hf": False},
    ),
    "bitget": Case(
        "bitget",
        {"scheme": "bitget", "api_key": v.API_KEY, "secret": v.HMAC_SECRET, "passphrase": v.OKX_PASSPHRASE},
        v.bitget_ok,
        "BTCUSDT",
        {
            "/api/v2/spot/trade/place-order": {"code": "00000", "data": {"orderId": "11", "clientOid": "c1"}},
            "/api/v2/spot/account/assets": {
                "code": "00000", "data": [{"coin": "BTC", "available": "1.5", "frozen": "0", "locked": "0"}],
            },
        },
        withdraw_params={"network": "BTC"},
        options={"uta": False},
    ),
    "gate": Case(
        "gate",
        {"scheme": "gate", "api_key": v.API_KEY, "secret": v.HMAC_SECRET},
        v.gate_ok,
        "BTC_USDT",
        {
            "/api/v4/spot/orders": {
                "id": "11", "text": "c1", "currency_pair": "BTC_USDT", "status": "open", "type": "limit", "side": "buy",
                "amount": "0.01", "price": "30000", "create_time_ms": 1,
            },
            "/api/v4/spot/accounts": [{"currency": "BTC", "available": "1.5", "locked": "0"}],
        },
        options={"unifiedAccount": False},
    ),
    "krakenfutures": Case(
        "krakenfutures",
        {"scheme": "kraken-futures", "api_key": v.API_KEY, "secret": v.KRAKEN_SECRET},
        v.kraken_futures_ok,
        "PF_XBTUSD",
        {
            "/api/v3/sendorder": {
                "result": "success",
                "sendStatus": {"order_id": "11", "status": "placed", "receivedTime": "2026-01-01T00:00:00.000Z"},
            },
            "/api/v3/accounts": {
                "result": "success", "accounts": {"flex": {"type": "multiCollateralMarginAccount", "currencies": {}}},
            },
        },
        money_out="transfer",
    ),
    "binance-rsa": Case(
        "binance",
        {"scheme": "binance-rsa", "api_key": v.API_KEY, "private_key": v.RSA_PEM},
        v.binance_rsa_ok,
        "BTCUSDT",
        BINANCE_ANSWERS,
        market_info={"orderTypes": ["LIMIT", "MARKET"]},
    ),
    "bybit-rsa": Case(
        "bybit",
        {"scheme": "bybit-rsa", "api_key": v.API_KEY, "private_key": v.RSA_PEM},
        v.bybit_rsa_ok,
        "BTCUSDT",
        BYBIT_ANSWERS,
        options={"enableUnifiedMargin": False, "enableUnifiedAccount": True},
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def vaultd() -> Iterator[DaemonProcess]:
    """One daemon with a credential per venue, named after the venue."""
    root = Path(tempfile.mkdtemp(prefix="vd-", dir="/tmp"))
    daemon = DaemonProcess(root)
    try:
        daemon.start()
        daemon.ctl("init", "--kdf-profile", "min", *daemon.pw())
        daemon.ctl("unlock", *daemon.pw())
        for name, case in CASES.items():
            daemon.ctl("add", name, "--kind", "sign", *daemon.pw(), stdin=json.dumps(case.credential))
        names = {case.credential["scheme"] for case in CASES.values()} | {v.API_KEY, v.COINBASE_KEY_NAME}
        daemon.secrets -= names  # names, not secrets
        yield daemon
        assert daemon.stop() == 0, daemon.log
        assert daemon.leaked() == [], "a secret reached the daemon's log or audit log"
    finally:
        if daemon.proc is not None:
            daemon.stop(signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def _prepare(exchange: Any, case: Case, server: v.VenueServer) -> None:
    v.point_at(exchange, server.url)
    market = {
        "id": case.market_id, "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT", "baseId": "BTC",
        "quoteId": "USDT", "type": "spot", "spot": True, "active": True, "info": case.market_info,
        "margin": False, "swap": False, "future": False, "option": False, "contract": False, "linear": None,
        "inverse": None, "contractSize": None, "settle": None, "settleId": None,
        "precision": {"amount": 0.0001, "price": 0.01}, "limits": {"amount": {"min": 0.0001}},
    }  # fmt: skip
    currencies = {
        code: {"id": code, "code": code, "precision": 1e-8, "networks": {}, "info": {}} for code in ("BTC", "USD")
    }
    exchange.set_markets([market], currencies)


def _holds_no_secret(exchange: Any) -> None:
    """The engine's exchange object: no secret, password or private key, nor their bytes anywhere
    in what it keeps (the last request included)."""
    assert not exchange.secret and not exchange.password and not exchange.privateKey
    kept = repr(vars(exchange))
    request = repr((exchange.last_request_url, exchange.last_request_headers, exchange.last_request_body))
    for secret in SECRETS:
        assert secret not in kept and secret not in request


ADDRESS = "bc1qfakeaddress00000000000000000000000000"


def _move_money(exchange: Any, case: Case) -> Any:
    """ccxt's withdraw (or its transfer out, where it has no withdraw): the call, or its coroutine."""
    if case.money_out == "transfer":
        return exchange.transfer("USD", 1, "future", "spot")
    return exchange.withdraw("BTC", 0.1, ADDRESS, params=case.withdraw_params)


@pytest.mark.parametrize("venue", sorted(CASES))
def test_sync_exchange_orders_and_balances_pass_the_venues_check_and_withdrawals_are_refused(
    vaultd: DaemonProcess, venue: str
) -> None:
    case = CASES[venue]
    with v.serve(v.VenueServer(case.verify, case.answers)) as server, Client(vaultd.socket_path) as client:
        exchange = vaultd_client.ccxt.exchange(case.exchange_id, venue, {"options": case.options}, client=client)
        assert isinstance(exchange, getattr(ccxt, case.exchange_id)) and not isinstance(exchange, AsyncExchange)
        _prepare(exchange, case, server)
        order = exchange.create_order("BTC/USDT", "limit", "buy", 0.01, 30000)
        assert order["id"] == "11" or order["id"] == "OQCLML-1"
        balance = exchange.fetch_balance()
        assert balance["info"]
        with pytest.raises(ccxt.PermissionDenied, match="moves money out"):
            _move_money(exchange, case)
    assert server.rejected == [] and len(server.verified) >= 2
    if case.exchange_id == "krakenfutures":  # optional for Kraken Futures: the daemon's nonce is always there
        assert all(seen.headers.get("Nonce", "").isdigit() for seen in server.verified)
    assert not any(
        word in seen.path.lower() for seen, _ in server.seen for word in ("withdraw", "transactions", "transfer")
    )
    _holds_no_secret(exchange)


@pytest.mark.parametrize("venue", sorted(CASES))
def test_async_exchange_orders_and_balances_pass_the_venues_check_and_withdrawals_are_refused(
    vaultd: DaemonProcess, venue: str
) -> None:
    case = CASES[venue]

    async def main(server: v.VenueServer) -> Any:
        async with AsyncClient(vaultd.socket_path) as client:
            exchange = vaultd_client.ccxt.exchange(case.exchange_id, venue, {"options": case.options}, client=client)
            try:
                assert isinstance(exchange, getattr(ccxt.async_support, case.exchange_id))
                _prepare(exchange, case, server)
                order = await exchange.create_order("BTC/USDT", "limit", "buy", 0.01, 30000)
                assert order["id"] in ("11", "OQCLML-1")
                assert (await exchange.fetch_balance())["info"]
                with pytest.raises(ccxt.PermissionDenied, match="moves money out"):
                    await _move_money(exchange, case)
            finally:
                await exchange.close()
            return exchange

    with v.serve(v.VenueServer(case.verify, case.answers)) as server:
        exchange = asyncio.run(main(server))
    assert server.rejected == [] and len(server.verified) >= 2
    _holds_no_secret(exchange)


_PEM_PKCS8 = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _in_process_config(case: Case, secret_ok: bool) -> dict[str, Any]:
    """ccxt's usual config with the secret in the process: only to show what the servers check."""
    wrong = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    secret = case.credential.get("secret") or case.credential["private_key"]
    if not secret_ok and "private_key" in case.credential:
        other = rsa.generate_private_key(65537, 2048) if "rsa" in case.credential["scheme"] else None
        secret = wrong.decode() if other is None else other.private_bytes(*_PEM_PKCS8).decode()
    elif not secret_ok:
        secret = base64.b64encode(b"wrong" * 12).decode()
    config: dict[str, Any] = {"apiKey": case.credential["api_key"], "secret": secret, "options": case.options}
    if "passphrase" in case.credential:
        config["password"] = case.credential["passphrase"]
    return config


@pytest.mark.parametrize("venue", sorted(CASES))
def test_the_verifying_servers_accept_ccxts_own_signature_and_refuse_a_wrong_secret(venue: str) -> None:
    """The control: each server agrees with ccxt's in-process signing (the two were written apart)
    and really checks (a wrong secret is refused), so the adapter's passes above mean something."""
    case = CASES[venue]
    with v.serve(v.VenueServer(case.verify, case.answers)) as server:
        # ccxt's own Coinbase JWT has the legacy iss "coinbase-cloud", and a uri made by removing
        # "https://" (over this plain-http server it keeps "http://"): the server checks CDP's docs.
        if venue != "coinbase":
            right = getattr(ccxt, case.exchange_id)(_in_process_config(case, secret_ok=True))
            _prepare(right, case, server)
            assert right.fetch_balance()["info"]
            assert server.rejected == [] and server.verified
        wrong = getattr(ccxt, case.exchange_id)(_in_process_config(case, secret_ok=False))
        _prepare(wrong, case, server)
        with pytest.raises(ccxt.BaseError):
            wrong.fetch_balance()
        assert server.rejected


def test_an_unknown_credential_is_ccxts_authentication_error_naming_it(vaultd: DaemonProcess) -> None:
    with Client(vaultd.socket_path) as client:
        exchange = vaultd_client.ccxt.exchange("binance", "no-such-credential", client=client)
        with pytest.raises(ccxt.AuthenticationError, match="no-such-credential"):
            exchange.fetch_balance()


def _binance_daemon(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ctl("init", "--kdf-profile", "min", *daemon.pw())
    daemon.ctl("unlock", *daemon.pw())
    daemon.ctl("add", "binance", "--kind", "sign", *daemon.pw(), stdin=json.dumps(CASES["binance"].credential))


def _freeze_then_kill(daemon: DaemonProcess) -> None:
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGSTOP)  # the next call waits on a daemon that answers nothing


def test_a_daemon_killed_during_a_sync_call_is_ccxts_exchange_not_available_at_once(daemon: DaemonProcess) -> None:
    _binance_daemon(daemon)
    case = CASES["binance"]
    caught: list[BaseException] = []
    with v.serve(v.VenueServer(case.verify, case.answers)) as server, Client(daemon.socket_path) as client:
        exchange = vaultd_client.ccxt.exchange("binance", "binance", client=client)
        _prepare(exchange, case, server)
        exchange.fetch_balance()  # connected, and signing

        def call() -> None:
            try:
                exchange.fetch_balance()
            except BaseException as exc:
                caught.append(exc)

        _freeze_then_kill(daemon)
        thread = threading.Thread(target=call)
        started = time.monotonic()
        thread.start()
        thread.join(0.3)  # the call is waiting for the frozen daemon's answer (or has not sent yet)
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
        thread.join(10)
        assert not thread.is_alive() and time.monotonic() - started < 5
    assert len(caught) == 1 and isinstance(caught[0], ccxt.ExchangeNotAvailable), caught
    assert "vaultd did not sign" in str(caught[0]) and len(server.verified) == 1


def test_a_daemon_killed_during_an_async_call_is_ccxts_exchange_not_available_at_once(daemon: DaemonProcess) -> None:
    _binance_daemon(daemon)
    case = CASES["binance"]

    async def main(server: v.VenueServer) -> BaseException | None:
        async with AsyncClient(daemon.socket_path) as client:
            exchange = vaultd_client.ccxt.exchange("binance", "binance", client=client)
            try:
                _prepare(exchange, case, server)
                await exchange.fetch_balance()
                _freeze_then_kill(daemon)
                task = asyncio.ensure_future(exchange.fetch_balance())
                await asyncio.wait([task], timeout=0.3)  # waiting on the frozen daemon
                assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
                done, _ = await asyncio.wait([task], timeout=5)
                assert done, "the call hung after the daemon died"
                return task.exception()
            finally:
                await exchange.close()

    with v.serve(v.VenueServer(case.verify, case.answers)) as server:
        error = asyncio.run(main(server))
    assert isinstance(error, ccxt.ExchangeNotAvailable) and "vaultd did not sign" in str(error), error
    assert len(server.verified) == 1


KRAKEN_BATCH = {
    "/0/private/AddOrderBatch": {
        "error": [],
        "result": {
            "orders": [
                {"txid": "OQCLML-1", "descr": {"order": "buy 0.01 XBTUSD @ limit 30000"}},
                {"txid": "OQCLML-2", "descr": {"order": "buy 0.02 XBTUSD @ limit 29000"}},
            ]
        },
    }
}
BATCH = [
    {"symbol": "BTC/USDT", "type": "limit", "side": "buy", "amount": 0.01, "price": 30000},
    {"symbol": "BTC/USDT", "type": "limit", "side": "buy", "amount": 0.02, "price": 29000},
]


def _batch_sent(server: v.VenueServer) -> dict[str, Any]:
    """The one AddOrderBatch the server accepted: a JSON body with a nonce string and both orders."""
    (seen,) = [seen for seen in server.verified if seen.path == "/0/private/AddOrderBatch"]
    assert seen.headers["Content-Type"] == "application/json" and seen.body.startswith(b'{"nonce":"')
    body: dict[str, Any] = json.loads(seen.body)
    assert [order["volume"] for order in body["orders"]] == ["0.01", "0.02"]
    return body


def test_kraken_batch_orders_json_bodies_pass_the_venues_check(vaultd: DaemonProcess) -> None:
    """ccxt's create_orders posts AddOrderBatch as JSON: the daemon puts its nonce in the JSON object
    and signs; the server reads the nonce from the JSON and checks API-Sign (sync, then async)."""
    case = CASES["kraken"]
    with v.serve(v.VenueServer(case.verify, KRAKEN_BATCH)) as server, Client(vaultd.socket_path) as client:
        exchange = vaultd_client.ccxt.exchange("kraken", "kraken", client=client)
        _prepare(exchange, case, server)
        orders = exchange.create_orders(BATCH)
    assert [order["id"] for order in orders] == ["OQCLML-1", "OQCLML-2"]
    assert server.rejected == []
    first = int(_batch_sent(server)["nonce"])

    async def main(server: v.VenueServer) -> Any:
        async with AsyncClient(vaultd.socket_path) as client:
            exchange = vaultd_client.ccxt.exchange("kraken", "kraken", client=client)
            try:
                _prepare(exchange, case, server)
                return await exchange.create_orders(BATCH)
            finally:
                await exchange.close()

    with v.serve(v.VenueServer(case.verify, KRAKEN_BATCH)) as server:
        orders = asyncio.run(main(server))
    assert [order["id"] for order in orders] == ["OQCLML-1", "OQCLML-2"]
    assert server.rejected == [] and int(_batch_sent(server)["nonce"]) > first, "the daemon's nonce, increasing"
    _holds_no_secret(exchange)


def test_the_kraken_server_checks_json_bodies_as_ccxt_signs_them() -> None:
    """The control for the JSON path: ccxt's in-process create_orders (its own nonce and API-Sign)
    is accepted, and refused with a wrong secret."""
    case = CASES["kraken"]
    for secret_ok in (True, False):
        with v.serve(v.VenueServer(case.verify, KRAKEN_BATCH)) as server:
            exchange = ccxt.kraken(_in_process_config(case, secret_ok=secret_ok))
            _prepare(exchange, case, server)
            if secret_ok:
                assert len(exchange.create_orders(BATCH)) == 2
                _batch_sent(server)
                assert server.rejected == []
            else:
                with pytest.raises(ccxt.BaseError):
                    exchange.create_orders(BATCH)
                assert server.rejected and not server.verified
