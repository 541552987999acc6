"""vaultd_client.ccxt with ccxt.pro: WebSocket logins signed by the daemon, checked by local
WebSocket servers written from the venues' docs (tests/integration/ccxt_venues.py).

Binance (userDataStream.subscribe.signature, binance-ws-logon), OKX (login, okx-ws-login), Bybit
(auth, bybit-ws-auth), and Kraken's WebSocket token from REST GetWebSocketsToken (kraken).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import ccxt.pro
import pytest

import vaultd_client.ccxt
from vaultd_client import AsyncClient

from ..daemon_process import DaemonProcess
from . import ccxt_venues as v

CREDENTIALS = {
    "binance": {"scheme": "binance-hmac", "api_key": v.API_KEY, "secret": v.HMAC_SECRET},
    "binance-ws": {"scheme": "binance-ws-logon", "api_key": v.API_KEY, "private_key": v.BINANCE_ED25519_PEM},
    "okx": {"scheme": "okx", "api_key": v.API_KEY, "secret": v.HMAC_SECRET, "passphrase": v.OKX_PASSPHRASE},
    "okx-ws": {"scheme": "okx-ws-login", "api_key": v.API_KEY, "secret": v.HMAC_SECRET, "passphrase": v.OKX_PASSPHRASE},
    "bybit": {"scheme": "bybit", "api_key": v.API_KEY, "secret": v.HMAC_SECRET},
    "bybit-ws": {"scheme": "bybit-ws-auth", "api_key": v.API_KEY, "secret": v.HMAC_SECRET},
    "kraken": {"scheme": "kraken", "api_key": v.API_KEY, "secret": v.KRAKEN_SECRET},
    "coinbase-ws": {"scheme": "coinbase-ws-jwt", "api_key": v.COINBASE_KEY_NAME, "private_key": v.COINBASE_PEM},
}
NAMES = {
    "binance-hmac",
    "binance-ws-logon",
    "okx-ws-login",
    "bybit-ws-auth",
    "coinbase-ws-jwt",
    v.API_KEY,
    v.COINBASE_KEY_NAME,
}


@pytest.fixture(scope="module")
def vaultd() -> Iterator[DaemonProcess]:
    root = Path(tempfile.mkdtemp(prefix="vd-", dir="/tmp"))
    daemon = DaemonProcess(root)
    try:
        daemon.start()
        daemon.ctl("init", "--kdf-profile", "min", *daemon.pw())
        daemon.ctl("unlock", *daemon.pw())
        for name, credential in CREDENTIALS.items():
            daemon.ctl("add", name, "--kind", "sign", *daemon.pw(), stdin=json.dumps(credential))
        daemon.secrets -= NAMES
        yield daemon
        assert daemon.stop() == 0, daemon.log
        assert daemon.leaked() == [], "a secret reached the daemon's log or audit log"
    finally:
        if daemon.proc is not None:
            daemon.stop(signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def _binance_reply(message: dict[str, Any]) -> dict[str, Any]:
    if v.binance_ws_login_ok(message):
        return {"id": message["id"], "status": 200, "result": {"subscriptionId": 0}}
    return {"id": message.get("id"), "status": 401, "error": {"code": -1022, "msg": "Signature is not valid."}}


def _okx_reply(message: dict[str, Any]) -> dict[str, Any]:
    if v.okx_ws_login_ok(message):
        return {"event": "login", "code": "0", "msg": "", "connId": "c1"}
    return {"event": "error", "code": "60009", "msg": "Login failed.", "connId": "c1"}


def _bybit_reply(message: dict[str, Any]) -> dict[str, Any]:
    ok = v.bybit_ws_auth_ok(message)
    return {"success": ok, "ret_msg": "" if ok else "error:USVC1111", "op": "auth", "conn_id": "c1"}


def _run(main: Any) -> Any:
    return asyncio.run(asyncio.wait_for(main, 20))


def _holds_no_secret(exchange: Any) -> None:
    assert not exchange.secret and not exchange.password and not exchange.privateKey
    kept = repr(vars(exchange))
    assert v.HMAC_SECRET not in kept and v.BINANCE_ED25519_PEM.splitlines()[1] not in kept


def test_binance_user_data_stream_login_is_signed_by_the_ws_logon_credential(vaultd: DaemonProcess) -> None:
    async def main() -> Any:
        async with v.ws_serve(v.WsVenue(_binance_reply)) as server, AsyncClient(vaultd.socket_path) as client:
            exchange = ccxt.pro.binance({"options": {"vaultdWsCredential": "binance-ws"}})
            vaultd_client.ccxt.wrap(exchange, "binance", client=client)
            exchange.urls["api"]["ws"]["ws-api"]["spot"] = server.url + "/ws-api/v3"
            try:
                await exchange.authenticate()
            finally:
                await exchange.close()
            return exchange, server.seen

    exchange, seen = _run(main())
    assert [m["method"] for m in seen] == ["userDataStream.subscribe.signature"]
    assert v.binance_ws_login_ok(seen[0]) and set(seen[0]["params"]) <= {
        "apiKey",
        "timestamp",
        "recvWindow",
        "signature",
    }
    _holds_no_secret(exchange)


def test_binance_websocket_api_orders_are_not_supported_and_never_sent(vaultd: DaemonProcess) -> None:
    """ccxt.pro signs each WebSocket API order's own params: no vaultd scheme does that."""

    async def main() -> Any:
        async with v.ws_serve(v.WsVenue(_binance_reply)) as server, AsyncClient(vaultd.socket_path) as client:
            exchange = vaultd_client.ccxt.wrap(ccxt.pro.binance(), "binance", client=client)
            exchange.urls["api"]["ws"]["ws-api"]["spot"] = server.url + "/ws-api/v3"
            market = {
                "id": "BTCUSDT", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT", "type": "spot", "spot": True,
                "active": True, "precision": {"amount": 0.0001, "price": 0.01}, "margin": False, "swap": False,
                "future": False, "option": False, "contract": False, "info": {"orderTypes": ["LIMIT"]},
            }  # fmt: skip
            exchange.set_markets([market])
            try:
                with pytest.raises(ccxt.NotSupported, match=r"order\.place"):
                    await exchange.create_order_ws("BTC/USDT", "limit", "buy", 0.01, 30000)
            finally:
                await exchange.close()
            return server.seen

    assert _run(main()) == []


def test_okx_login_is_signed_by_the_ws_login_credential(vaultd: DaemonProcess) -> None:
    async def main() -> Any:
        async with v.ws_serve(v.WsVenue(_okx_reply)) as server, AsyncClient(vaultd.socket_path) as client:
            exchange = ccxt.pro.okx({"options": {"vaultdWsCredential": "okx-ws"}})
            vaultd_client.ccxt.wrap(exchange, "okx", client=client)
            exchange.urls["api"]["ws"] = server.url + "/ws/v5"
            try:
                await exchange.authenticate()
            finally:
                await exchange.close()
            return exchange, server.seen

    exchange, seen = _run(main())
    assert [m["op"] for m in seen] == ["login"] and v.okx_ws_login_ok(seen[0])
    _holds_no_secret(exchange)


def test_bybit_auth_is_signed_by_the_ws_auth_credential(vaultd: DaemonProcess) -> None:
    async def main() -> Any:
        async with v.ws_serve(v.WsVenue(_bybit_reply)) as server, AsyncClient(vaultd.socket_path) as client:
            exchange = ccxt.pro.bybit({"options": {"vaultdWsCredential": "bybit-ws"}})
            vaultd_client.ccxt.wrap(exchange, "bybit", client=client)
            try:
                await exchange.authenticate(server.url + "/v5/private")
            finally:
                await exchange.close()
            return exchange, server.seen

    exchange, seen = _run(main())
    assert [m["op"] for m in seen] == ["auth"] and v.bybit_ws_auth_ok(seen[0])
    _holds_no_secret(exchange)


#: Per venue: the WebSocket login's scheme, its reply, and how ccxt.pro is pointed at the local server.
_LOGINS: dict[str, tuple[str, Any, str]] = {
    "okx": ("okx-ws-login", _okx_reply, "/ws/v5"),
    "bybit": ("bybit-ws-auth", _bybit_reply, "/v5/private"),
    "binance": ("binance-ws-logon", _binance_reply, "/ws-api/v3"),
}


async def _login(exchange: Any, venue: str, url: str) -> None:
    if venue == "bybit":
        await exchange.authenticate(url)
        return
    if venue == "binance":
        exchange.urls["api"]["ws"]["ws-api"]["spot"] = url
    else:
        exchange.urls["api"]["ws"] = url
    await exchange.authenticate()


@pytest.mark.parametrize("ws_credential", [None, "kraken"])
@pytest.mark.parametrize("venue", sorted(_LOGINS))
def test_a_login_without_a_credential_of_the_login_scheme_says_how_to_add_one(
    vaultd: DaemonProcess, venue: str, ws_credential: str | None
) -> None:
    """No vaultdWsCredential (the REST credential can never sign a login), or one of another scheme:
    ccxt's AuthenticationError saying which scheme to add the key with and the option to pass; nothing
    is sent to the venue."""
    scheme, reply, path = _LOGINS[venue]

    async def main() -> Any:
        async with v.ws_serve(v.WsVenue(reply)) as server, AsyncClient(vaultd.socket_path) as client:
            config = {"options": {"vaultdWsCredential": ws_credential}} if ws_credential else {}
            exchange = vaultd_client.ccxt.wrap(getattr(ccxt.pro, venue)(config), venue, client=client)
            try:
                with pytest.raises(ccxt.AuthenticationError) as caught:
                    await _login(exchange, venue, server.url + path)
            finally:
                await exchange.close()
            return str(caught.value), server.seen

    message, seen = _run(main())
    assert seen == []
    assert f"add the same API key a second time as a credential with scheme '{scheme}'" in message
    assert f"options={{'vaultdWsCredential': '{venue}-ws'}}" in message
    if ws_credential:  # the daemon refused it, naming its scheme
        assert f"credential 'kraken' signs with scheme 'kraken', not {scheme}: nothing signed" in message
    else:
        assert f"the REST credential '{venue}' cannot sign it" in message


def test_kraken_websocket_token_comes_from_rest_signed_by_the_kraken_credential(vaultd: DaemonProcess) -> None:
    answers = {"/0/private/GetWebSocketsToken": {"error": [], "result": {"token": "fake-ws-token", "expires": 900}}}

    async def main(server: v.VenueServer) -> Any:
        async with AsyncClient(vaultd.socket_path) as client:
            exchange = vaultd_client.ccxt.wrap(ccxt.pro.kraken(), "kraken", client=client)
            v.point_at(exchange, server.url)
            try:
                return await exchange.authenticate()
            finally:
                await exchange.close()

    with v.serve(v.VenueServer(v.kraken_ok, answers)) as server:
        token = _run(main(server))
    assert token == "fake-ws-token"
    assert [seen.path for seen in server.verified] == ["/0/private/GetWebSocketsToken"] and not server.rejected


def test_a_websocket_login_no_vaultd_scheme_signs_is_not_supported_and_never_sent(vaultd: DaemonProcess) -> None:
    """Deribit's WebSocket public/auth (client_signature): ccxt.pro signs it itself, vaultd has no scheme."""

    async def main() -> Any:
        async with v.ws_serve(v.WsVenue(lambda message: None)) as server, AsyncClient(vaultd.socket_path) as client:
            exchange = vaultd_client.ccxt.wrap(ccxt.pro.deribit(), "deribit", client=client)
            exchange.urls["api"]["ws"] = server.url + "/ws/api/v2"
            try:
                with pytest.raises(ccxt.NotSupported, match="WebSocket message"):
                    await exchange.authenticate()
            finally:
                await exchange.close()
            return server.seen

    assert _run(main()) == []


def test_coinbase_private_subscribe_carries_a_jwt_from_the_ws_jwt_credential(vaultd: DaemonProcess) -> None:
    async def main() -> Any:
        async with v.ws_serve(v.WsVenue(lambda message: None)) as server, AsyncClient(vaultd.socket_path) as client:
            config = {"apiKey": v.COINBASE_KEY_NAME, "options": {"vaultdWsCredential": "coinbase-ws"}}
            exchange = vaultd_client.ccxt.wrap(ccxt.pro.coinbase(config), "coinbase", client=client)
            exchange.urls["api"]["ws"] = server.url + "/"
            market = {
                "id": "BTC-USDT", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT", "type": "spot", "spot": True,
                "active": True, "precision": {"amount": 0.0001, "price": 0.01}, "info": {},
            }  # fmt: skip
            exchange.set_markets([market])
            watching = asyncio.ensure_future(exchange.watch_orders("BTC/USDT"))
            try:
                await asyncio.wait_for(server.arrived.wait(), 10)
            finally:
                watching.cancel()
                await exchange.close()
            return exchange, server.seen

    exchange, seen = _run(main())
    assert [(m["type"], m["channel"]) for m in seen] == [("subscribe", "user")]
    assert v.coinbase_ws_ok(seen[0]) and seen[0]["product_ids"] == ["BTC-USDT"]
    assert not exchange.secret and v.COINBASE_PEM.splitlines()[1] not in repr(vars(exchange))
