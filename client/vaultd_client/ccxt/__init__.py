"""ccxt exchanges whose requests vaultd signs: the engine's process never holds the secret.

    import vaultd_client.ccxt
    exchange = vaultd_client.ccxt.exchange("binance", "binance-main")  # ccxt's id, vaultd's credential
    exchange.create_order("BTC/USDT", "limit", "buy", 0.01, 30000)

    # asyncio (ccxt.async_support), or ccxt.pro for WebSocket logins:
    exchange = vaultd_client.ccxt.exchange("okx", "okx", client=vaultd_client.AsyncClient())
    exchange = vaultd_client.ccxt.wrap(ccxt.pro.binance(), "binance", client=vaultd_client.AsyncClient())

**How.** ccxt's per-venue ``sign(path, api, method, params)`` builds the whole request (URL,
query, body, headers) and calls ``self.hmac`` (or ``rsa``, ``eddsa``, ``jwt``) for the
signature. On a wrapped instance those primitives return a placeholder, so ccxt builds the exact
request it would send, with no hash of any secret made; the venue's entry in ``_venues`` then
takes out what the daemon makes itself (the signature, the auth headers, Kraken's nonce, the
signature's validity window) and ``token.sign`` returns the URL, body and headers to send;
ccxt's other headers (``Content-Type``) stay. ``check_required_credentials`` is satisfied (the
daemon holds them); ``secret`` and ``password`` stay empty. Sync exchanges sign inside
``sign()``; async ones (``ccxt.async_support``, ``ccxt.pro``) have ``sign()`` prepare the request
and their ``fetch`` await the daemon before sending. A ccxt.pro WebSocket login message is
signed the same way as it is sent, by the credential named by the option ``vaultdWsCredential``
(a WebSocket login has its own scheme, so the REST credential never signs it: without the option,
or with a credential of another scheme, the login is ``AuthenticationError`` saying which scheme
to add the key with, and nothing is sent).

Each request passes ``token.sign``'s ``schemes``: the schemes that venue's REST requests (or its
WebSocket login) are signed with. The daemon signs nothing with a credential of another scheme
(``exchange("binance", "okx")``): the first private call is ccxt's ``AuthenticationError`` naming
the credential's scheme and those expected, and no request leaves (an OKX credential's passphrase
never reaches Binance). The credential is not checked at construction: an async exchange cannot
ask the daemon there, and the daemon may be down or locked then; a wrong or missing credential
shows at the first private call.

**Venues.** Binance spot and futures (``binance-hmac``, ``binance-ed25519``; the WebSocket
``userDataStream.subscribe.signature`` / ``session.logon`` with ``binance-ws-logon``), Kraken spot
(``kraken``; its WebSocket token comes from REST ``GetWebSocketsToken``), OKX (``okx``; the
WebSocket login with ``okx-ws-login``), Bybit V5 (``bybit``; WebSocket ``bybit-ws-auth``), Deribit
(``deribit``), Coinbase Advanced Trade (``coinbase``, a CDP key), KuCoin spot and futures
(``kucoin``; ccxt's broker attribution headers are left out), Bitget v2 (``bitget``), Gate v4
(``gate``), Kraken Futures (``kraken-futures``; the daemon's nonce) and Hyperliquid
(``hyperliquid``). Binance and Bybit RSA keys (``binance-rsa``, ``bybit-rsa``) use the same entries:
the credential's scheme decides the signature. Coinbase's private WebSocket subscribes get their
JWT from a ``coinbase-ws-jwt`` credential.

Hyperliquid signs an action (EIP-712) inside ``create_order``, before ``sign()``: the instance's
``sign_l1_action`` and ``sign_user_signed_action`` answer a placeholder signature, which the
Hyperliquid entry takes out of the JSON body; the daemon signs the action and adds the signature.
User-signed actions (withdrawals, transfers, approvals) are never signed by vaultd: ccxt's
builder-fee approval is refused (ccxt goes on without it), a withdrawal is ``PermissionDenied``.
Each Hyperliquid request passes the scheme option ``network``: "testnet" when ccxt is in sandbox
mode (``exchange.set_sandbox_mode(True)``, as ccxt's own signing decides), else "mainnet". On
Hyperliquid's hosts the daemon checks it agrees with the host; on a loopback URL (a local test
server or proxy: ``exchange.urls["api"]`` pointed at ``http://127.0.0.1:...``) it decides the
network signed for. ccxt's ``walletAddress`` (public: the account's address) must be in the config.

**Limits.** A request the daemon refuses surfaces as ccxt's own error: the allow-list (a withdrawal,
by default) as ``PermissionDenied``, a daemon that is down or went away as ``ExchangeNotAvailable``
(``RequestTimeout`` past the client's timeout), a locked vault, an unknown credential or one of
another venue's scheme as ``AuthenticationError``, a request the scheme cannot sign as
``BadRequest``. A request ccxt sends with the API key alone, unsigned (Binance's listen keys,
``historicalTrades``), needs the credential's public API key as config ``apiKey``: without it the
adapter's stand-in key would go out, so it is refused (``AuthenticationError``) instead. As the
adapter tells ccxt its credentials are set, ccxt's ``load_markets`` calls some venues' private
endpoints too (Binance's ``capital/config/getall`` when ``options["fetchCurrencies"]``; OKX's and
Bybit's currencies, KuCoin, Gate, Coinbase, Kraken Futures, Hyperliquid), each signed by the daemon
and judged by the credential's allow-list like any other request. The validity window (Binance's
``recvWindow``, Bybit's ``recv_window``) is the credential's, not ccxt's option. A request or
WebSocket message ccxt signs in a way no vaultd scheme covers (Binance WebSocket API orders, which
sign each request's params; Deribit's WebSocket ``public/auth``) raises ``NotSupported`` and is
never sent. Kraken's JSON bodies (``create_orders``' AddOrderBatch) go to the daemon without ccxt's
nonce; the daemon puts its own first, as Kraken reads it (``"nonce":"<n>"``). OKX's passphrase is a
header of every OKX request by OKX's design, so the engine sees it in the signed headers; no HMAC or
private key ever enters the process. Each signature is one daemon round trip.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["exchange", "wrap"]

_INSTALL_HINT = "vaultd_client.ccxt needs ccxt: pip install 'vaultd-agent[ccxt]'"


def exchange(exchange_id: str, credential: str, config: dict[str, Any] | None = None, *, client: Any = None) -> Any:
    """A new ccxt exchange ``exchange_id`` (as ccxt names it) signing through credential ``credential``.

    ``config`` is ccxt's usual dict (``apiKey``, ``options``, ``enableRateLimit`` ...) without
    ``secret``, ``password`` or ``privateKey``. With an :class:`~vaultd_client.AsyncClient` as
    ``client`` the exchange is a ``ccxt.async_support`` one; otherwise sync, signing through
    ``client`` or a :class:`~vaultd_client.Client` on the default socket.

    Raises:
        ValueError: ``config`` holds a secret (named, never shown), or no venue entry for ``exchange_id``.
        ImportError: ccxt is not installed.
    """
    settings = dict(config or {})
    for field in ("secret", "password", "privateKey"):
        if settings.get(field):
            raise ValueError(
                f"config holds {field!r}: the vaultd credential {credential!r} keeps it, out of this process; "
                "remove it from the config"
            )
    from ._venues import VENUES  # noqa: PLC0415

    if exchange_id not in VENUES:
        raise ValueError(f"vaultd_client.ccxt signs for {', '.join(sorted(VENUES))}; not for {exchange_id!r}")
    from .._sync import Client  # noqa: PLC0415

    asynchronous = client is not None and not isinstance(client, Client)  # wrap() checks it is an AsyncClient
    module = _ccxt(asynchronous)
    cls = getattr(module, exchange_id, None)
    if cls is None:
        raise ValueError(f"this ccxt has no exchange {exchange_id!r}")
    return wrap(cls(settings), credential, client=client)


def wrap(exchange: Any, credential: str, *, client: Any = None) -> Any:
    """Route ``exchange``'s (a ccxt instance without secrets) signatures through credential
    ``credential`` of the daemon, and return it.

    A sync exchange takes a :class:`~vaultd_client.Client` (default: one on the default socket);
    a ``ccxt.async_support`` or ``ccxt.pro`` one an :class:`~vaultd_client.AsyncClient`.

    Raises:
        ValueError: the exchange holds a secret, password or private key, or no venue entry fits it.
        TypeError: ``exchange`` is not a ccxt exchange instance, or a client of the other kind.
    """
    _ccxt(False)
    from ._adapter import install  # noqa: PLC0415 - imports ccxt

    return install(exchange, credential, client)


def _ccxt(asynchronous: bool) -> Any:
    try:
        if asynchronous:
            import ccxt.async_support as module  # noqa: PLC0415
        else:
            import ccxt as module  # noqa: PLC0415
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != "ccxt":
            raise
        raise ImportError(_INSTALL_HINT, name="ccxt") from exc
    return module
