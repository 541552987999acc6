"""vaultd_client.ccxt without a daemon: what it refuses, what it never sends to the daemon, and
that ccxt stays optional (the end-to-end tests are tests/integration/test_ccxt_adapter.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ccxt
import ccxt.async_support
import pytest

import vaultd_client.ccxt
from vaultd_client import AsyncClient, Client

FAKE = "fake-secret-value-123"
#: A socket nothing listens on: any call to the daemon would fail with ExchangeNotAvailable.
NOWHERE = "/tmp/vaultd-ccxt-test-nowhere.sock"


@pytest.mark.parametrize("field", ["secret", "password", "privateKey"])
def test_a_config_holding_a_secret_is_refused_naming_the_key_never_its_value(field: str) -> None:
    with pytest.raises(ValueError, match=field) as caught:
        vaultd_client.ccxt.exchange("binance", "binance", {"apiKey": "k", field: FAKE}, client=Client(NOWHERE))
    assert FAKE not in str(caught.value)


@pytest.mark.parametrize("field", ["secret", "password", "privateKey"])
def test_wrap_refuses_an_exchange_that_already_holds_a_secret(field: str) -> None:
    with pytest.raises(ValueError, match=field) as caught:
        vaultd_client.ccxt.wrap(ccxt.okx({field: FAKE}), "okx", client=Client(NOWHERE))
    assert FAKE not in str(caught.value)


def test_unknown_venues_and_clients_of_the_wrong_kind_are_refused() -> None:
    with pytest.raises(ValueError, match="not for 'bitmex'"):
        vaultd_client.ccxt.exchange("bitmex", "b", client=Client(NOWHERE))
    with pytest.raises(TypeError, match="AsyncClient"):
        vaultd_client.ccxt.wrap(ccxt.async_support.okx(), "okx", client=Client(NOWHERE))
    with pytest.raises(TypeError, match="not an async client"):
        vaultd_client.ccxt.wrap(ccxt.okx(), "okx", client=AsyncClient(NOWHERE))
    exchange = vaultd_client.ccxt.wrap(ccxt.okx(), "okx", client=Client(NOWHERE))
    with pytest.raises(ValueError, match="already wrapped"):
        vaultd_client.ccxt.wrap(exchange, "okx", client=Client(NOWHERE))


@pytest.mark.parametrize("thing", [object(), "binance", ccxt.okx, {"id": "okx"}])
def test_wrap_takes_only_a_ccxt_exchange_instance(thing: object) -> None:
    with pytest.raises(TypeError, match=r"wrap\(\) takes a ccxt exchange instance"):
        vaultd_client.ccxt.wrap(thing, "x", client=Client(NOWHERE))


def test_each_venue_names_the_schemes_its_rest_requests_are_signed_with() -> None:
    """What the adapter passes as token.sign's ``schemes``: the daemon's own scheme names, and none of
    a WebSocket login's (the REST credential never signs a login)."""
    from vaultd._schemes import SCHEMES
    from vaultd_client.ccxt._venues import VENUES

    for exchange_id, venue in VENUES.items():
        assert venue.schemes and set(venue.schemes) <= set(SCHEMES), exchange_id
        if venue.ws_login is not None:
            assert venue.ws_login.scheme in SCHEMES and venue.ws_login.scheme not in venue.schemes, exchange_id
    assert VENUES["binance"].schemes == ("binance-hmac", "binance-ed25519", "binance-rsa")
    assert VENUES["okx"].schemes == ("okx",) and VENUES["krakenfutures"].schemes == ("kraken-futures",)


def test_public_requests_go_out_as_ccxt_builds_them_without_asking_the_daemon() -> None:
    exchange = vaultd_client.ccxt.exchange("binance", "binance", client=Client(NOWHERE))
    request = exchange.sign("ticker/price", ["public"], "GET", {"symbol": "BTCUSDT"})
    assert request["url"] == "https://api.binance.com/api/v3/ticker/price?symbol=BTCUSDT"
    assert not request["headers"]


def test_private_requests_that_cannot_reach_the_daemon_are_ccxt_network_errors() -> None:
    exchange = vaultd_client.ccxt.exchange("binance", "binance", client=Client(NOWHERE))
    with pytest.raises(ccxt.ExchangeNotAvailable, match="vaultd is not reachable"):
        exchange.sign("account", ["private"], "GET", {})


def test_requests_no_vaultd_scheme_covers_are_refused_before_the_daemon_is_asked() -> None:
    bybit = vaultd_client.ccxt.exchange("bybit", "bybit", client=Client(NOWHERE))
    bybit.urls["api"]["private"] = "https://api.bybit.com/spot"  # a pre-V5 path: `sign` in the params
    with pytest.raises(ccxt.NotSupported, match="no vaultd scheme covers"):
        bybit.sign("v1/order", ["private"], "POST", {"symbol": "BTCUSDT"})


def test_api_key_only_requests_without_an_api_key_are_refused_saying_to_give_it() -> None:
    """Binance's listen-key and historicalTrades endpoints send the API key alone (no signature, so the
    daemon is not asked): without an apiKey in the config they would carry the adapter's stand-in."""
    exchange = vaultd_client.ccxt.exchange("binance", "binance", client=Client(NOWHERE))
    for path, api, method in (("userDataStream", "private", "POST"), ("historicalTrades", "public", "GET")):
        with pytest.raises(ccxt.AuthenticationError, match=r"carries the API key alone .* config 'apiKey'"):
            exchange.sign(path, [api], method, {"symbol": "BTCUSDT"})
    keyed = vaultd_client.ccxt.exchange("binance", "binance", {"apiKey": "public-key-1"}, client=Client(NOWHERE))
    request = keyed.sign("userDataStream", ["private"], "POST", {})
    assert request["headers"]["X-MBX-APIKEY"] == "public-key-1"


def _python(code: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=60)


def test_importing_vaultd_client_and_its_ccxt_module_does_not_import_ccxt() -> None:
    result = _python("import sys, vaultd_client, vaultd_client.ccxt; print('ccxt' in sys.modules)")
    assert result.stdout.strip() == "False", result.stderr


def test_without_ccxt_the_error_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['ccxt'] = None\n"
        "import vaultd_client.ccxt\n"
        "try:\n    vaultd_client.ccxt.exchange('binance', 'binance')\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    result = _python(code)
    assert "pip install 'vaultd-agent[ccxt]'" in result.stdout, result.stderr


def test_kraken_json_bodies_go_to_the_daemon_without_ccxts_nonce() -> None:
    """Batch orders are JSON: ccxt puts its nonce first, the daemon puts its own there instead."""
    kraken = vaultd_client.ccxt.exchange("kraken", "kraken", client=Client(NOWHERE))
    request, unsigned = kraken._vaultd_signer.unsigned(
        "AddOrderBatch", ["private"], "POST", {"pair": "XBTUSD", "orders": [{"type": "buy"}]}, None, None
    )
    assert request["body"].startswith('{"nonce":"')
    assert unsigned is not None and unsigned.body == '{"pair":"XBTUSD","orders":[{"type":"buy"}]}'
    assert unsigned.headers == {"Content-Type": "application/json"}
