"""vaultd_client.ccxt on Hyperliquid: ccxt signs an action (EIP-712) inside create_order, before
sign(); the adapter leaves a placeholder there and the daemon's hyperliquid scheme signs the body.

End to end against a local verifying server (tests/integration/ccxt_venues.py: it recovers the
signer's address from each signature, by Hyperliquid's documented formula written out there, and
accepts only the test key's wallet): on a loopback host the daemon signs for the network the
adapter names from ccxt's sandbox mode. On Hyperliquid's own hosts nothing is sent: ccxt's HTTP
call is replaced, and the signature compared with ccxt's own in-process signing of the same
action and nonce with the same key (a ccxt-derived check: RFC 6979 signatures are deterministic).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import ccxt
import ccxt.async_support
import pytest

import vaultd_client.ccxt
from vaultd_client import AsyncClient, Client

from ..daemon_process import DaemonProcess
from . import ccxt_venues as v

PRIVATE_KEY, ADDRESS = v.HYPERLIQUID_KEY, v.HYPERLIQUID_ADDRESS
#: Another fake key (never funded): its signatures recover another address.
OTHER_KEY = "0x" + "11" * 32
ANSWERS = {"/exchange": v.hyperliquid_exchange, "/info": v.hyperliquid_info}


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


def _prepare(exchange: Any, server: v.VenueServer, network: str) -> None:
    exchange.set_sandbox_mode(network == "testnet")  # ccxt's testnet URLs, and source "b" in its signing
    v.point_at(exchange, server.url)
    _markets(exchange)


def _same_as_ccxts_own(body: dict[str, Any], testnet: bool) -> bool:
    """ccxt's in-process signature of the same action and nonce, with the key in process."""
    reference = ccxt.hyperliquid({"privateKey": PRIVATE_KEY, "walletAddress": ADDRESS})
    reference.options["sandboxMode"] = testnet
    expected = reference.sign_l1_action(body["action"], body["nonce"], body.get("vaultAddress"))
    return bool(body["signature"] == expected)


def _exchange_bodies(server: v.VenueServer) -> list[dict[str, Any]]:
    return [json.loads(seen.body) for seen, _ in server.seen if seen.path == "/exchange"]


def _check(server: v.VenueServer, network: str) -> None:
    """ccxt's own first action (its referral code), then the order, each accepted by the server and
    signed as ccxt itself signs it; the builder-fee approval, a user-signed action the daemon never
    signs, is not sent (ccxt goes on without it); nor is the withdrawal; the balance was read."""
    assert server.rejected == []
    bodies = _exchange_bodies(server)
    assert [body["action"]["type"] for body in bodies] == ["setReferrer", "order"]
    assert all(_same_as_ccxts_own(body, network == "testnet") for body in bodies)
    infos = [json.loads(seen.body)["type"] for seen, _ in server.seen if seen.path == "/info"]
    assert "clearinghouseState" in infos


def _holds_no_key(exchange: Any, server: v.VenueServer) -> None:
    assert not exchange.secret and not exchange.privateKey
    assert PRIVATE_KEY[2:] not in repr(vars(exchange)) + repr(server.seen)


@pytest.mark.parametrize("network", ["mainnet", "testnet"])
def test_a_sync_order_and_balance_pass_the_local_venues_check_and_a_withdrawal_is_refused(
    daemon: DaemonProcess, network: str
) -> None:
    _ready(daemon)
    with v.serve(v.VenueServer(v.hyperliquid_verifier(network), ANSWERS)) as server, Client(daemon.socket_path) as c:
        exchange = vaultd_client.ccxt.exchange("hyperliquid", "hyperliquid", {"walletAddress": ADDRESS}, client=c)
        _prepare(exchange, server, network)
        order = exchange.create_order("BTC/USDC:USDC", "limit", "buy", 0.001, 30000)
        balance = exchange.fetch_balance()
        with pytest.raises(ccxt.PermissionDenied, match=r"not signed: .*withdraw3.* moves money out"):
            exchange.withdraw("USDC", 10, ADDRESS)
    assert order["id"] == "11" and balance["USDC"]["total"] == 1.5
    _check(server, network)
    _holds_no_key(exchange, server)


@pytest.mark.parametrize("network", ["mainnet", "testnet"])
def test_an_async_order_and_balance_pass_the_local_venues_check_and_a_withdrawal_is_refused(
    daemon: DaemonProcess, network: str
) -> None:
    _ready(daemon)

    async def main(server: v.VenueServer) -> Any:
        async with AsyncClient(daemon.socket_path) as client:
            exchange = vaultd_client.ccxt.exchange(
                "hyperliquid", "hyperliquid", {"walletAddress": ADDRESS}, client=client
            )
            assert isinstance(exchange, ccxt.async_support.hyperliquid)
            try:
                _prepare(exchange, server, network)
                order = await exchange.create_order("BTC/USDC:USDC", "limit", "buy", 0.001, 30000)
                balance = await exchange.fetch_balance()
                with pytest.raises(ccxt.PermissionDenied, match=r"not signed: .*withdraw3.* moves money out"):
                    await exchange.withdraw("USDC", 10, ADDRESS)
            finally:
                await exchange.close()
            return exchange, order, balance

    with v.serve(v.VenueServer(v.hyperliquid_verifier(network), ANSWERS)) as server:
        exchange, order, balance = asyncio.run(main(server))
    assert order["id"] == "11" and balance["USDC"]["total"] == 1.5
    _check(server, network)
    _holds_no_key(exchange, server)


def test_the_verifying_server_accepts_ccxts_own_signature_and_refuses_another_key_or_network() -> None:
    """The control: the server agrees with ccxt's in-process signing (the two were written apart)
    and really checks: another key's signature, or one for the other network, is refused."""
    for key, network, accepted in ((PRIVATE_KEY, "mainnet", True), (OTHER_KEY, "mainnet", False)):
        with v.serve(v.VenueServer(v.hyperliquid_verifier(network), ANSWERS)) as server:
            exchange = ccxt.hyperliquid({"privateKey": key, "walletAddress": ADDRESS})
            _prepare(exchange, server, network)
            if accepted:
                assert exchange.create_order("BTC/USDC:USDC", "limit", "buy", 0.001, 30000)["id"] == "11"
                orders = [seen for seen in server.verified if b'"type":"order"' in seen.body]
                assert len(orders) == 1
            else:
                with pytest.raises(ccxt.BaseError):
                    exchange.create_order("BTC/USDC:USDC", "limit", "buy", 0.001, 30000)
                assert not [seen for seen in server.verified if seen.path == "/exchange"]
    with v.serve(v.VenueServer(v.hyperliquid_verifier("testnet"), ANSWERS)) as server:
        exchange = ccxt.hyperliquid({"privateKey": PRIVATE_KEY, "walletAddress": ADDRESS})
        _prepare(exchange, server, "mainnet")  # ccxt signs for mainnet; the server is testnet
        with pytest.raises(ccxt.BaseError):
            exchange.create_order("BTC/USDC:USDC", "limit", "buy", 0.001, 30000)
        assert server.rejected and not [seen for seen in server.verified if seen.path == "/exchange"]


def test_on_hyperliquids_own_testnet_host_the_adapters_network_agrees_and_the_signature_is_ccxts(
    daemon: DaemonProcess,
) -> None:
    """On api.hyperliquid-testnet.xyz (ccxt's sandbox URLs, not sent anywhere: ccxt's HTTP call is
    replaced) the daemon checks the adapter's network against the host and signs for testnet."""
    _ready(daemon)
    sent: list[tuple[str, Any]] = []

    def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        sent.append((url, body))
        return v.HYPERLIQUID_ORDER

    with Client(daemon.socket_path) as client:
        exchange = vaultd_client.ccxt.exchange("hyperliquid", "hyperliquid", {"walletAddress": ADDRESS}, client=client)
        exchange.set_sandbox_mode(True)
        exchange.fetch = fetch
        exchange.options["enableUnifiedMargin"] = False  # no /info query to answer
        _markets(exchange)
        assert exchange.create_order("BTC/USDC:USDC", "limit", "buy", 0.001, 30000)["id"] == "11"
        with pytest.raises(ccxt.PermissionDenied, match="moves money out"):
            exchange.withdraw("USDC", 10, ADDRESS)
    actions = [(url, json.loads(body)) for url, body in sent if body and '"action"' in body]
    assert [body["action"]["type"] for _, body in actions] == ["setReferrer", "order"]
    assert all(url == "https://api.hyperliquid-testnet.xyz/exchange" for url, _ in actions)
    assert all(_same_as_ccxts_own(body, testnet=True) for _, body in actions)
    assert not any(_same_as_ccxts_own(body, testnet=False) for _, body in actions)
