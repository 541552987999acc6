"""What vaultd_client.ccxt knows of each venue: where ccxt puts its auth, and what to strip.

ccxt's ``sign()`` has built the request with :data:`MARK` where a signature would be (the
adapter's primitives return it). A venue's ``prepare`` recognises that request, takes out the
artifacts the daemon makes itself (the signature, the auth headers, Kraken's nonce, Binance's
``recvWindow``, which the credential decides) and returns what ``token.sign`` needs; for a
request without auth (a public endpoint) it returns None. A venue's ``ws_login`` does the same
for ccxt.pro's WebSocket login message.

Each entry is small on purpose: one request costs a few string operations here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

__all__ = ["MARK", "VENUES", "Unsigned", "Unsupported", "Venue", "WsLogin", "action_mark"]

#: What the adapter's hmac/rsa/eddsa/jwt return instead of a signature: unreserved characters
#: only, so it survives ccxt's URL and header encoding unchanged.
MARK = "VAULTD_UNSIGNED"
_SIGNATURE_SUFFIX = "&signature=" + MARK


class Unsupported(Exception):
    """ccxt built an authenticated request the daemon has no scheme for (the message says which)."""


class Unsigned(NamedTuple):
    """One request for ``token.sign``: ccxt's, without its auth artifacts."""

    method: str
    url: str
    body: str
    #: ccxt's headers that are not auth (Content-Type, Referer): sent along with the daemon's.
    headers: dict[str, str]
    #: ccxt's timestamp in ms where the scheme takes it from the request, else None (the daemon's).
    timestamp: int | None


class WsLogin(NamedTuple):
    """How ccxt.pro logs in on one venue's WebSocket: recognise the message, then fill it in."""

    #: The login message with MARK as signature: True; any other message: False. Raises
    #: Unsupported for a message signed with MARK that no vaultd scheme signs.
    matches: Callable[[Mapping[str, Any]], bool]
    #: The message with the daemon's params (the query of the URL ``token.sign`` returned).
    fill: Callable[[Mapping[str, Any], list[tuple[str, str]]], dict[str, Any]]
    #: What the WebSocket credential's scheme must be, for messages.
    scheme: str


class Venue(NamedTuple):
    #: The vaultd schemes that sign this venue's REST requests, passed as ``token.sign``'s
    #: ``schemes``: a credential of another venue signs nothing (its headers never leave).
    schemes: tuple[str, ...]
    prepare: Callable[[Mapping[str, Any]], Unsigned | None]
    ws_login: WsLogin | None = None
    #: ccxt methods that sign a venue's action before sign() (Hyperliquid's EIP-712): on the
    #: instance, they answer :data:`ACTION_MARK`'s signature, and ``prepare`` finds it in the body.
    action_signers: tuple[str, ...] = ()
    #: The ``options`` (scheme knobs) each ``token.sign`` of this venue passes, from the exchange
    #: instance as it is at that request (Hyperliquid's ``network``, from ccxt's sandbox mode).
    sign_options: Callable[[Any], dict[str, str]] | None = None


def _without(headers: Mapping[str, str] | None, auth: frozenset[str]) -> dict[str, str]:
    return {} if not headers else {name: value for name, value in headers.items() if name not in auth}


def _drop(text: str, name: str) -> str:
    """``text`` (a query or form body) without its ``name=...`` pair."""
    start = text.find(name + "=")
    while start > 0 and text[start - 1] not in "?&":
        start = text.find(name + "=", start + 1)
    if start < 0:
        return text
    end = text.find("&", start)
    if end >= 0:
        return text[:start] + text[end + 1 :]
    return text[: max(start - 1, 0)]


# -- Binance (binance-hmac, binance-ed25519; WebSocket: binance-ws-logon) ---------------------

_BINANCE_AUTH = frozenset({"X-MBX-APIKEY"})


def _binance(request: Mapping[str, Any]) -> Unsigned | None:
    url, body = request["url"], request["body"] or ""
    if body.endswith(_SIGNATURE_SUFFIX):
        body = _drop(body[: -len(_SIGNATURE_SUFFIX)], "recvWindow")
    elif url.endswith(_SIGNATURE_SUFFIX):
        url = _drop(url[: -len(_SIGNATURE_SUFFIX)], "recvWindow")
    else:
        return None
    # ccxt's timestamp stays in the query (the daemon signs it as it is): ccxt's time offset holds.
    return Unsigned(request["method"], url, body, _without(request["headers"], _BINANCE_AUTH), None)


#: Binance WebSocket API requests whose params are only the login's: the same signed payload
#: as ``session.logon`` (apiKey, timestamp, recvWindow), so the binance-ws-logon scheme signs them.
_BINANCE_WS_LOGINS = frozenset({"session.logon", "userDataStream.subscribe.signature"})
_BINANCE_WS_PARAMS = frozenset({"apiKey", "timestamp", "recvWindow", "signature"})


def _binance_ws_matches(message: Mapping[str, Any]) -> bool:
    params = message.get("params")
    if not isinstance(params, dict) or params.get("signature") != MARK:
        return False
    if message.get("method") in _BINANCE_WS_LOGINS and params.keys() <= _BINANCE_WS_PARAMS:
        return True
    raise Unsupported(
        f"binance: WebSocket API request {message.get('method')!r} needs a signature over its own params; "
        "vaultd signs only the login (session.logon, userDataStream.subscribe.signature): use the REST method"
    )


def _binance_ws_fill(message: Mapping[str, Any], params: list[tuple[str, str]]) -> dict[str, Any]:
    signed: dict[str, Any] = {k: int(v) if k in ("timestamp", "recvWindow") else v for k, v in params}
    if not {"apiKey", "timestamp", "signature"} <= signed.keys():
        raise Unsupported("binance: the WebSocket credential did not answer a login's params (binance-ws-logon)")
    return {**message, "params": signed}


# -- Kraken spot (kraken): the daemon owns the nonce ----------------------------------------

_KRAKEN_AUTH = frozenset({"API-Key", "API-Sign"})
#: How ccxt's compact JSON starts a Kraken JSON body: the daemon puts its own nonce there instead.
_KRAKEN_JSON_NONCE = '{"nonce":"'


def _kraken(request: Mapping[str, Any]) -> Unsigned | None:
    headers = request["headers"]
    if not headers or headers.get("API-Sign") != MARK:
        return None
    body: str = request["body"] or ""
    if body.startswith(_KRAKEN_JSON_NONCE):  # batch orders, % triggers: ccxt puts "nonce" first
        end = body.index('"', len(_KRAKEN_JSON_NONCE)) + 1
        body = "{" + body[end + 1 :] if body[end] == "," else "{}"
    elif body.startswith("nonce="):
        end = body.find("&")
        body = "" if end < 0 else body[end + 1 :]
    else:
        body = _drop(body, "nonce")
    return Unsigned(request["method"], request["url"], body, _without(headers, _KRAKEN_AUTH), None)


# -- OKX (okx; WebSocket: okx-ws-login) -----------------------------------------------------

_OKX_AUTH = frozenset({"OK-ACCESS-KEY", "OK-ACCESS-SIGN", "OK-ACCESS-TIMESTAMP", "OK-ACCESS-PASSPHRASE"})


def _okx(request: Mapping[str, Any]) -> Unsigned | None:
    headers = request["headers"]
    if not headers or headers.get("OK-ACCESS-SIGN") != MARK:
        return None
    stamp = datetime.fromisoformat(headers["OK-ACCESS-TIMESTAMP"])  # ccxt's, with its time offset
    timestamp = round(stamp.timestamp() * 1000)
    return Unsigned(request["method"], request["url"], request["body"] or "", _without(headers, _OKX_AUTH), timestamp)


def _okx_ws_matches(message: Mapping[str, Any]) -> bool:
    args = message.get("args")
    return message.get("op") == "login" and isinstance(args, list) and len(args) == 1 and args[0].get("sign") == MARK


def _okx_ws_fill(message: Mapping[str, Any], params: list[tuple[str, str]]) -> dict[str, Any]:
    signed = dict(params)
    if not {"apiKey", "passphrase", "timestamp", "sign"} <= signed.keys():
        raise Unsupported("okx: the WebSocket credential did not answer a login's args (okx-ws-login)")
    return {**message, "args": [signed]}


# -- Bybit V5 (bybit; WebSocket: bybit-ws-auth) ---------------------------------------------

_BYBIT_AUTH = frozenset({"X-BAPI-API-KEY", "X-BAPI-TIMESTAMP", "X-BAPI-RECV-WINDOW", "X-BAPI-SIGN", "X-BAPI-SIGN-TYPE"})


def _bybit(request: Mapping[str, Any]) -> Unsigned | None:
    headers = request["headers"]
    if not headers or headers.get("X-BAPI-SIGN") != MARK:
        return None
    timestamp = int(headers["X-BAPI-TIMESTAMP"])  # ccxt's, with its time offset
    return Unsigned(request["method"], request["url"], request["body"] or "", _without(headers, _BYBIT_AUTH), timestamp)


def _bybit_ws_matches(message: Mapping[str, Any]) -> bool:
    args = message.get("args")
    return message.get("op") == "auth" and isinstance(args, list) and len(args) == 3 and args[2] == MARK


def _bybit_ws_fill(message: Mapping[str, Any], params: list[tuple[str, str]]) -> dict[str, Any]:
    signed = dict(params)
    key = signed.get("api_key", signed.get("apiKey"))
    if key is None or "expires" not in signed or "signature" not in signed:
        raise Unsupported("bybit: the WebSocket credential did not answer an auth's args (bybit-ws-auth)")
    return {**message, "args": [key, int(signed["expires"]), signed["signature"]]}


# -- Deribit (deribit) ----------------------------------------------------------------------

_DERIBIT_AUTH = frozenset({"Authorization"})


def _deribit(request: Mapping[str, Any]) -> Unsigned | None:
    headers = request["headers"]
    if not headers or f"sig={MARK}," not in headers.get("Authorization", ""):
        return None
    return Unsigned(request["method"], request["url"], request["body"] or "", _without(headers, _DERIBIT_AUTH), None)


# -- Coinbase Advanced Trade / CDP (coinbase) -----------------------------------------------

_COINBASE_AUTH = frozenset({"Authorization", "CB-ACCESS-KEY", "CB-ACCESS-SIGN", "CB-ACCESS-TIMESTAMP"})
_BEARER_MARK = "Bearer " + MARK


def _coinbase(request: Mapping[str, Any]) -> Unsigned | None:
    headers = request["headers"]
    if not headers or (headers.get("Authorization") != _BEARER_MARK and headers.get("CB-ACCESS-SIGN") != MARK):
        return None
    body = request["body"] or ""
    return Unsigned(request["method"], request["url"], body, _without(headers, _COINBASE_AUTH), None)


_COINBASE_WS_LEGACY = ("api_key", "timestamp", "signature")


def _coinbase_ws_matches(message: Mapping[str, Any]) -> bool:
    # ccxt.pro puts a JWT (CDP key names) or a legacy HMAC signature in private subscribes.
    return message.get("type") in ("subscribe", "unsubscribe") and MARK in (
        message.get("jwt"),
        message.get("signature"),
    )


def _coinbase_ws_fill(message: Mapping[str, Any], params: list[tuple[str, str]]) -> dict[str, Any]:
    token = dict(params).get("jwt")
    if token is None:
        raise Unsupported("coinbase: the WebSocket credential did not answer a JWT (coinbase-ws-jwt)")
    return {**{k: v for k, v in message.items() if k not in _COINBASE_WS_LEGACY}, "jwt": token}


# -- KuCoin (kucoin): the credential's key_version decides the passphrase header --------------

#: With ccxt's broker attribution (KC-API-PARTNER*), signed with ccxt's own partner key: not sent.
_KUCOIN_AUTH = frozenset(
    {
        "KC-API-KEY", "KC-API-SIGN", "KC-API-TIMESTAMP", "KC-API-PASSPHRASE", "KC-API-KEY-VERSION",
        "KC-API-PARTNER", "KC-API-PARTNER-SIGN", "KC-API-PARTNER-VERIFY",
    }
)  # fmt: skip


def _kucoin(request: Mapping[str, Any]) -> Unsigned | None:
    headers = request["headers"]
    if not headers or headers.get("KC-API-SIGN") != MARK:
        return None
    timestamp = int(headers["KC-API-TIMESTAMP"])  # ccxt's, with its time offset
    return Unsigned(
        request["method"], request["url"], request["body"] or "", _without(headers, _KUCOIN_AUTH), timestamp
    )


# -- Bitget v2 (bitget) -----------------------------------------------------------------------

_BITGET_AUTH = frozenset({"ACCESS-KEY", "ACCESS-SIGN", "ACCESS-TIMESTAMP", "ACCESS-PASSPHRASE"})


def _bitget(request: Mapping[str, Any]) -> Unsigned | None:
    headers = request["headers"]
    if not headers or headers.get("ACCESS-SIGN") != MARK:
        return None
    timestamp = int(headers["ACCESS-TIMESTAMP"])
    return Unsigned(
        request["method"], request["url"], request["body"] or "", _without(headers, _BITGET_AUTH), timestamp
    )


# -- Gate v4 (gate) -----------------------------------------------------------------------------

_GATE_AUTH = frozenset({"KEY", "SIGN", "Timestamp"})


def _gate(request: Mapping[str, Any]) -> Unsigned | None:
    headers = request["headers"]
    if not headers or headers.get("SIGN") != MARK:
        return None
    timestamp = int(headers["Timestamp"]) * 1000  # ccxt's seconds, with its time offset
    return Unsigned(request["method"], request["url"], request["body"] or "", _without(headers, _GATE_AUTH), timestamp)


# -- Kraken Futures (kraken-futures): the daemon owns the nonce --------------------------------

_KRAKEN_FUTURES_AUTH = frozenset({"APIKey", "Authent", "Nonce"})


def _kraken_futures(request: Mapping[str, Any]) -> Unsigned | None:
    headers = request["headers"]
    if not headers or headers.get("Authent") != MARK:
        return None
    body = request["body"] or ""
    return Unsigned(request["method"], request["url"], body, _without(headers, _KRAKEN_FUTURES_AUTH), None)


# -- Hyperliquid (hyperliquid): ccxt signs the action inside create_order, not in sign() --------


def action_mark() -> dict[str, Any]:
    """What the instance's ``sign_l1_action`` answers: an EIP-712 signature's shape, no signature."""
    return {"r": MARK, "s": MARK, "v": 0}


#: How ccxt's compact JSON (json or orjson) writes :func:`action_mark` in a body.
_ACTION_MARK = '"signature":{"r":"' + MARK + '","s":"' + MARK + '","v":0}'


def _hyperliquid(request: Mapping[str, Any]) -> Unsigned | None:
    body: str = request["body"] or ""
    start = body.find(_ACTION_MARK)
    if start < 0:
        return None
    end = start + len(_ACTION_MARK)
    # The body without its "signature" member (and one comma): the daemon signs the action and adds it.
    body = body[: start - 1] + body[end:] if body[start - 1] == "," else body[:start] + body[end + 1 :]
    return Unsigned(request["method"], request["url"], body, dict(request["headers"] or {}), None)


def _hyperliquid_network(exchange: Any) -> dict[str, str]:
    """The network ccxt's own ``sign_l1_action`` would sign for: testnet in sandbox mode."""
    return {"network": "testnet" if exchange.options.get("sandboxMode") else "mainnet"}


_BINANCE = Venue(
    ("binance-hmac", "binance-ed25519", "binance-rsa"),
    _binance,
    WsLogin(_binance_ws_matches, _binance_ws_fill, "binance-ws-logon"),
)
_OKX = Venue(("okx",), _okx, WsLogin(_okx_ws_matches, _okx_ws_fill, "okx-ws-login"))
_BYBIT = Venue(("bybit", "bybit-rsa"), _bybit, WsLogin(_bybit_ws_matches, _bybit_ws_fill, "bybit-ws-auth"))
_COINBASE = Venue(("coinbase",), _coinbase, WsLogin(_coinbase_ws_matches, _coinbase_ws_fill, "coinbase-ws-jwt"))

#: By ccxt's exchange id. Kraken's WebSocket token comes from REST (GetWebSocketsToken), signed
#: by the kraken scheme like any private call.
VENUES: dict[str, Venue] = {
    "binance": _BINANCE,
    "binanceusdm": _BINANCE,
    "binancecoinm": _BINANCE,
    "kraken": Venue(("kraken",), _kraken),
    "okx": _OKX,
    "bybit": _BYBIT,
    "deribit": Venue(("deribit",), _deribit),
    "coinbase": _COINBASE,
    "coinbaseadvanced": _COINBASE,
    "kucoin": Venue(("kucoin",), _kucoin),
    "kucoinfutures": Venue(("kucoin",), _kucoin),
    "bitget": Venue(("bitget",), _bitget),
    "gate": Venue(("gate",), _gate),
    "krakenfutures": Venue(("kraken-futures",), _kraken_futures),
    "hyperliquid": Venue(
        ("hyperliquid",),
        _hyperliquid,
        action_signers=("sign_l1_action", "sign_user_signed_action"),
        sign_options=_hyperliquid_network,
    ),
}
