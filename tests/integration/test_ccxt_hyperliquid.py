"""vaultd_client.ccxt on Hyperliquid: ccxt signs an action (EIP-712) inside create_order, before
sign(); the adapter leaves a placeholder there and the daemon's hyperliquid scheme signs the body.

The daemon signs only for Hyperliquid's own hosts (the host picks mainnet or testnet), so nothing
is sent: ccxt's HTTP call is replaced by one that records the request and answers what ccxt parses.
The signature is checked against ccxt's own in-process signing of the same action and nonce with
the same key (a ccxt-derived check: RFC 6979 signatures are deterministic, so they must be equal).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import ccxt
import pytest

import vaultd_client.ccxt
from vaultd_client import AsyncClient, Client

from ..daemon_process import DaemonProcess

#: A fake secp256k1 key and address (the address is public and not part of the signature).
PRIVATE_KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
ADDRESS = "0x" + "2c7536e3605d9c16a7a3d7b1898e529396a65c23"
ORDER_ANSWER = {"status": "ok", "response": {"type": "order", "data": {"statuses": [{"resting": {"oid": 11}}]}}}


def _ready(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ctl("init", "--kdf-profile", "min", *daemon.pw())
    daemon.ctl("unlock", *daemon.pw())
    config = {"scheme": "hyperliquid", "api_key": ADDRESS, "private_key": PRIVATE_KEY}
    daemon.ctl("add", "hyperliquid", "--kind", "sign", *daemon.pw(), stdin=json.dumps(config))
    daemon.secrets -= {ADDRESS, "hyperliquid"}


def _markets(exchange: Any) -> None:
    market = {
        "id": "BTC", "symbol": "BTC/USDC:USDC", "base": "BTC", "quote": "USDC", "settle": "USDC", "baseId": 0,
        "quoteId": "USDC", "settleId": "USDC", "type": "swap", "spot": False, "swap": True, "future": False,
        "option": False, "margin": False, "contract": True, "linear": True, "inverse": False, "contractSize": 1,
        "active": True, "precision": {"amount": 0.00001, "price": 1}, "limits": {"amount": {"min": 0.00001}},
        "info": {"szDecimals": "5", "maxLeverage": "50"},
    }  # fmt: skip
    currencies = {"USDC": {"id": "USDC", "code": "USDC", "precision": 1e-6, "networks": {}, "info": {}}}
    exchange.set_markets([market], currencies)


def _same_as_ccxts_own(body: dict[str, Any]) -> bool:
    """ccxt's in-process signature of the same action and nonce, with the key in process."""
    reference = ccxt.hyperliquid({"privateKey": PRIVATE_KEY, "walletAddress": ADDRESS})
    expected = reference.sign_l1_action(body["action"], body["nonce"], body.get("vaultAddress"))
    return bool(body["signature"] == expected)


def _check_actions(sent: list[tuple[str, str, Any, Any]]) -> None:
    """ccxt's own first actions (its referral code, its builder-fee approval), then the order: each
    L1 action signed by the daemon as ccxt itself signs it; the approval, a user-signed action the
    daemon never signs, is not sent (ccxt goes on without it); nor is the withdrawal."""
    actions = [(url, headers, json.loads(body)) for url, _, headers, body in sent if body and '"action"' in body]
    assert [body["action"]["type"] for _, _, body in actions] == ["setReferrer", "order"]
    for url, headers, body in actions:
        assert url == "https://api.hyperliquid.xyz/exchange" and headers["Content-Type"] == "application/json"
        assert _same_as_ccxts_own(body)


def _holds_no_key(exchange: Any, sent: list[tuple[str, str, Any, Any]]) -> None:
    assert not exchange.secret and not exchange.privateKey
    assert PRIVATE_KEY[2:] not in repr(vars(exchange)) + repr(sent)


def test_a_sync_order_is_signed_by_the_daemon_and_a_withdrawal_refused(daemon: DaemonProcess) -> None:
    _ready(daemon)
    sent: list[tuple[str, str, Any, Any]] = []

    def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        sent.append((url, method, headers, body))
        return ORDER_ANSWER

    with Client(daemon.socket_path) as client:
        exchange = vaultd_client.ccxt.exchange("hyperliquid", "hyperliquid", {"walletAddress": ADDRESS}, client=client)
        exchange.fetch = fetch
        _markets(exchange)
        order = exchange.create_order("BTC/USDC:USDC", "limit", "buy", 0.001, 30000)
        with pytest.raises(ccxt.PermissionDenied, match="moves money out"):
            exchange.withdraw("USDC", 10, ADDRESS)
    assert order["id"] == "11"
    _check_actions(sent)
    _holds_no_key(exchange, sent)


def test_an_async_order_is_signed_by_the_daemon_and_a_withdrawal_refused(daemon: DaemonProcess) -> None:
    _ready(daemon)
    sent: list[tuple[str, str, Any, Any]] = []

    async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        sent.append((url, method, headers, body))
        return ORDER_ANSWER

    async def main() -> Any:
        async with AsyncClient(daemon.socket_path) as client:
            exchange = vaultd_client.ccxt.exchange(
                "hyperliquid", "hyperliquid", {"walletAddress": ADDRESS}, client=client
            )
            exchange._vaultd_signer.ccxt_fetch = fetch  # ccxt's own HTTP call, after the adapter's
            _markets(exchange)
            try:
                order = await exchange.create_order("BTC/USDC:USDC", "limit", "buy", 0.001, 30000)
                with pytest.raises(ccxt.PermissionDenied, match="moves money out"):
                    await exchange.withdraw("USDC", 10, ADDRESS)
            finally:
                await exchange.close()
            return exchange, order

    exchange, order = asyncio.run(main())
    assert order["id"] == "11"
    _check_actions(sent)
    _holds_no_key(exchange, sent)
