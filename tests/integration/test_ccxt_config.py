"""vaultd_client.ccxt configured wrong, and pointed at a test server as the README says.

A credential of another venue (``exchange("binance", "okx")``) or one that does not exist signs
nothing: ccxt's AuthenticationError at the first private call, and the verifying venue server sees
no request at all (OKX's passphrase header never reaches the Binance host).
"""

# ruff: noqa: F811 - the tests take test_ccxt_adapter's module fixture ``vaultd``, imported by name

from __future__ import annotations

import asyncio
from typing import Any

import ccxt
import pytest

import vaultd_client.ccxt
from vaultd_client import AsyncClient, Client

from ..daemon_process import DaemonProcess
from . import ccxt_venues as v
from .test_ccxt_adapter import (
    CASES,
    Case,
    _prepare,
    vaultd,  # noqa: F401 - the module's daemon, one credential per venue
)

WRONG_VENUE = "credential 'okx' signs with scheme 'okx', not binance-hmac, binance-ed25519 or binance-rsa"


def test_a_credential_of_another_venue_is_refused_and_nothing_is_sent(vaultd: DaemonProcess) -> None:
    case = CASES["binance"]
    with v.serve(v.VenueServer(case.verify, case.answers)) as server, Client(vaultd.socket_path) as client:
        exchange = vaultd_client.ccxt.exchange("binance", "okx", client=client)  # built: the daemon is not asked
        _prepare(exchange, case, server)
        with pytest.raises(ccxt.AuthenticationError) as caught:
            exchange.create_order("BTC/USDT", "limit", "buy", 0.01, 30000)
    message = str(caught.value)
    assert "vaultd credential 'okx' does not fit this venue" in message and WRONG_VENUE in message
    assert server.seen == []
    assert v.OKX_PASSPHRASE not in repr((exchange.last_request_headers, vars(exchange)))


def test_an_async_exchange_with_another_venues_credential_sends_nothing(vaultd: DaemonProcess) -> None:
    case = CASES["okx"]

    async def main(server: v.VenueServer) -> str:
        async with AsyncClient(vaultd.socket_path) as client:
            exchange = vaultd_client.ccxt.exchange("okx", "bybit", client=client)
            try:
                _prepare(exchange, case, server)
                with pytest.raises(ccxt.AuthenticationError) as caught:
                    await exchange.fetch_balance()
            finally:
                await exchange.close()
            return str(caught.value)

    with v.serve(v.VenueServer(case.verify, case.answers)) as server:
        message = asyncio.run(main(server))
    assert "credential 'bybit' signs with scheme 'bybit', not okx: nothing signed" in message
    assert server.seen == []


def test_a_credential_that_does_not_exist_fails_at_the_first_private_call_and_sends_nothing(
    vaultd: DaemonProcess,
) -> None:
    case = CASES["binance"]
    with v.serve(v.VenueServer(case.verify, case.answers)) as server, Client(vaultd.socket_path) as client:
        exchange = vaultd_client.ccxt.exchange("binance", "binance-main", client=client)
        _prepare(exchange, case, server)
        with pytest.raises(ccxt.AuthenticationError, match="binance-main"):
            exchange.fetch_balance()
    assert server.seen == []


def _markets(exchange: Any, case: Case, server: v.VenueServer) -> None:
    """The test's markets and currencies (no load_markets round trips), URLs left as the caller set them."""
    urls, hostname = exchange.urls["api"], exchange.hostname
    _prepare(exchange, case, server)
    exchange.urls["api"], exchange.hostname = urls, hostname


def test_the_readme_way_to_point_ccxt_at_a_local_test_server(vaultd: DaemonProcess) -> None:
    """README, "ccxt": Binance's spot URLs by key, OKX's one ``rest`` URL (its ``{hostname}`` template
    would keep https); the daemon signs for a loopback http URL and the verifying servers accept."""
    for venue in ("binance", "okx"):
        case = CASES[venue]
        with v.serve(v.VenueServer(case.verify, case.answers)) as server, Client(vaultd.socket_path) as client:
            local = server.url  # http://127.0.0.1:PORT
            exchange = vaultd_client.ccxt.exchange(venue, venue, client=client)
            if venue == "binance":
                exchange.urls["api"].update(
                    {"public": local + "/api/v3", "private": local + "/api/v3", "sapi": local + "/sapi/v1"}
                )
            else:
                exchange.urls["api"]["rest"] = local
            _markets(exchange, case, server)
            assert exchange.fetch_balance()["info"]
            assert exchange.create_order("BTC/USDT", "limit", "buy", 0.01, 30000)["id"] == "11"
        assert server.rejected == [] and len(server.verified) == 2, venue
        assert all(seen.path.startswith(("/api/v3/", "/api/v5/")) for seen in server.verified)
