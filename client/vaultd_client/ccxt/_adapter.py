"""The mechanism: one ccxt exchange instance whose signatures the daemon makes.

Imported only once ccxt is (``vaultd_client.ccxt`` loads it on first use).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ccxt.base.errors import (
    AuthenticationError,
    BadRequest,
    ExchangeError,
    ExchangeNotAvailable,
    NotSupported,
    PermissionDenied,
    RequestTimeout,
)
from ccxt.base.exchange import BaseExchange

from .._sync import Client
from .._types import Signed
from ..errors import (
    Busy,
    Forbidden,
    InvalidParams,
    Locked,
    NeedsReauth,
    NotInitialized,
    OnHold,
    Pulled,
    Timeout,
    TransportError,
    UnknownCredential,
    UpstreamUnavailable,
    VaultdError,
)
from ._venues import MARK, VENUES, Unsigned, Unsupported, Venue, WsLogin, action_mark

__all__ = ["SECRET_FIELDS", "install"]

#: What an engine's exchange must never hold: ccxt's names for secrets.
SECRET_FIELDS = ("secret", "password", "privateKey")
#: ccxt's option naming the credential that signs WebSocket logins (default: the REST one).
WS_CREDENTIAL_OPTION = "vaultdWsCredential"
_MARK_BYTES = MARK.encode("ascii")


# -- the primitives ccxt calls from sign(): a placeholder, never a hash of anything -------------


def _hmac(request: Any, secret: Any, algorithm: Any = None, digest: str = "hex") -> str | bytes:
    return MARK if digest in ("hex", "base64") else _MARK_BYTES


def _text(*args: Any, **kwargs: Any) -> str:
    return MARK


def _ecdsa(*args: Any, **kwargs: Any) -> dict[str, Any]:
    raise NotSupported(
        "vaultd_client.ccxt: this venue signs with a wallet key (ECDSA), which vaultd does not sign with"
    )


def _action_signature(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return action_mark()


def _credentials_ready(error: bool = True) -> bool:
    return True  # the daemon holds them


_PRIMITIVES = {"hmac": _hmac, "rsa": _text, "eddsa": _text, "jwt": _text, "ecdsa": _ecdsa}


#: How the daemon's refusal of ``token.sign``'s ``schemes`` reads (protocol/SPEC.md section 5.12):
#: "credential 'x' signs with scheme 'y', not ...: nothing signed".
_WRONG_SCHEME = "' signs with scheme '"


def _wrong_scheme(exc: VaultdError) -> bool:
    """Whether the daemon refused because the credential's scheme is not the venue's."""
    return isinstance(exc, InvalidParams) and _WRONG_SCHEME in str(exc) and "nothing signed" in str(exc)


def _ccxt_error(exc: VaultdError, exchange_id: str, credential: str) -> Exception:
    """The ccxt error an engine already handles for what the daemon answered."""
    cls: type[Exception]
    if _wrong_scheme(exc):  # a configuration error: the credential is another venue's
        cls = AuthenticationError
        return cls(
            f"{exchange_id}: vaultd credential {credential!r} does not fit this venue ({exc}); name a credential"
            f" of this venue in vaultd_client.ccxt.exchange() or wrap(); nothing was sent"
        )
    if isinstance(exc, Forbidden):
        cls = PermissionDenied
    elif isinstance(exc, Timeout):
        cls = RequestTimeout
    elif isinstance(exc, (TransportError, Busy, UpstreamUnavailable)):
        cls = ExchangeNotAvailable
    elif isinstance(exc, (Locked, UnknownCredential, NotInitialized, NeedsReauth, Pulled, OnHold)):
        cls = AuthenticationError
    elif isinstance(exc, InvalidParams):
        cls = BadRequest
    else:
        cls = ExchangeError
    return cls(f"{exchange_id} vaultd did not sign with credential {credential!r}: {exc}")


def _unsupported(exc: Unsupported) -> NotSupported:
    return NotSupported(f"vaultd_client.ccxt: {exc}")


def _answer(unsigned: Unsigned, signed: Signed) -> tuple[str, dict[str, str], str | None]:
    headers = unsigned.headers
    headers.update(signed.headers)
    return signed.url, headers, signed.body.decode("utf-8") if signed.body else None


def _check_public(request: Mapping[str, Any]) -> None:
    """A request no venue entry recognised must carry no placeholder: ccxt signed it some other way."""
    headers = request.get("headers") or {}
    if MARK in request["url"] or MARK in (request.get("body") or "") or any(MARK in str(v) for v in headers.values()):
        raise NotSupported(
            "vaultd_client.ccxt: ccxt signed this request in a way no vaultd scheme covers "
            f"({request['method']} {request['url'].split('?')[0]}): it was not sent"
        )


def _check_key_alone(request: Mapping[str, Any], placeholder: str, exchange_id: str) -> None:
    """A request without a signature that carries the adapter's stand-in API key (ccxt's API-key-only
    endpoints: Binance's listen keys, ``historicalTrades``) would reach the venue with a key it does
    not know: refused, saying what to give ccxt."""
    headers = request.get("headers") or {}
    if not any(value == placeholder for value in headers.values()):
        text = request["url"] + (request.get("body") or "")
        if placeholder not in text and placeholder.replace(":", "%3A") not in text:
            return
    raise AuthenticationError(
        f"{exchange_id}: {request['method']} {request['url'].split('?')[0]} carries the API key alone (no"
        " signature, so vaultd is not asked) and this exchange has none: give ccxt the credential's public API"
        " key as config 'apiKey'; it was not sent"
    )


class _Pending(dict[str, str]):
    """The headers of a request that the async fetch must have signed first."""

    __slots__ = ("unsigned",)

    def __init__(self, unsigned: Unsigned) -> None:
        super().__init__(unsigned.headers)
        self.unsigned = unsigned


class _Signer:
    """Installed on one exchange instance: its ``sign`` (and, async, ``fetch`` and WebSocket sends)."""

    def __init__(self, exchange: Any, venue: Venue, credential: str, client: Any) -> None:
        self.exchange_id: str = exchange.id
        self.venue = venue
        self.prepare = venue.prepare
        self.credential = credential
        self.client = client
        self.ccxt_sign = exchange.sign
        self.ccxt_fetch = exchange.fetch
        self.exchange = exchange
        self.sign_options = venue.sign_options
        #: The stand-in ``apiKey`` install() gave an exchange built without one, else None.
        self.key_placeholder: str | None = None

    def options(self) -> dict[str, str] | None:
        """The scheme knobs for this request (None: the credential's own)."""
        return None if self.sign_options is None else self.sign_options(self.exchange)

    def unsigned(  # noqa: PLR0917 - ccxt's sign() arguments, as ccxt passes them
        self, path: str, api: Any, method: str, params: Any, headers: Any, body: Any
    ) -> tuple[dict[str, Any], Unsigned | None]:
        if headers is None and body is None:
            request = self.ccxt_sign(path, api, method, {} if params is None else params)
        else:
            request = self.ccxt_sign(path, api, method, {} if params is None else params, headers, body)
        try:
            unsigned = self.prepare(request)
        except Unsupported as exc:
            raise _unsupported(exc) from None
        if unsigned is None:
            _check_public(request)
            if self.key_placeholder is not None:
                _check_key_alone(request, self.key_placeholder, self.exchange_id)
        return request, unsigned

    # -- sync: the daemon's round trip inside sign() -----------------------------------------

    def sign(  # noqa: PLR0917 - ccxt calls sign() with positional arguments
        self,
        path: str,
        api: Any = "public",
        method: str = "GET",
        params: Any = None,
        headers: Any = None,
        body: Any = None,
    ) -> dict[str, Any]:
        request, unsigned = self.unsigned(path, api, method, params, headers, body)
        if unsigned is None:
            return request
        try:
            signed = self.client.sign(
                self.credential,
                unsigned.method,
                unsigned.url,
                body=unsigned.body,
                timestamp=unsigned.timestamp,
                options=self.options(),
                schemes=self.venue.schemes,
            )
        except VaultdError as exc:
            raise _ccxt_error(exc, self.exchange_id, self.credential) from exc
        url, headers, body = _answer(unsigned, signed)
        return {"url": url, "method": unsigned.method, "body": body, "headers": headers}

    # -- async: sign() prepares, fetch() awaits the daemon ----------------------------------

    def sign_later(  # noqa: PLR0917 - ccxt calls sign() with positional arguments
        self,
        path: str,
        api: Any = "public",
        method: str = "GET",
        params: Any = None,
        headers: Any = None,
        body: Any = None,
    ) -> dict[str, Any]:
        request, unsigned = self.unsigned(path, api, method, params, headers, body)
        if unsigned is None:
            return request
        return {"url": unsigned.url, "method": unsigned.method, "body": unsigned.body, "headers": _Pending(unsigned)}

    async def fetch(self, url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        if headers.__class__ is _Pending:
            unsigned = headers.unsigned
            try:
                signed = await self.client.sign(
                    self.credential,
                    unsigned.method,
                    unsigned.url,
                    body=unsigned.body,
                    timestamp=unsigned.timestamp,
                    options=self.options(),
                    schemes=self.venue.schemes,
                )
            except VaultdError as exc:
                raise _ccxt_error(exc, self.exchange_id, self.credential) from exc
            url, headers, body = _answer(unsigned, signed)
        return await self.ccxt_fetch(url, method, headers, body)

    # -- ccxt.pro: the WebSocket login message ------------------------------------------------

    def client_hook(self, ccxt_client: Any, login: WsLogin | None) -> Any:
        """ccxt.pro's ``exchange.client(url)``, with each connection's ``send`` signing logins
        (and refusing any other message ccxt signed: it would carry the placeholder)."""

        def client(url: str) -> Any:
            connection = ccxt_client(url)
            if "send" not in connection.__dict__:
                connection.send = self.ws_send(connection, connection.send, login)
            return connection

        return client

    def ws_send(self, connection: Any, send: Any, login: WsLogin | None) -> Any:
        async def signed_send(message: Any) -> Any:
            try:
                if login is not None and isinstance(message, dict) and login.matches(message):
                    message = await self.ws_login(connection.url, message, login)
                elif MARK in (message if isinstance(message, str) else json.dumps(message, default=str)):
                    raise Unsupported(
                        f"{self.exchange_id}: ccxt signed a WebSocket message the way no vaultd scheme does: not sent"
                    )
            except Unsupported as exc:
                raise _unsupported(exc) from None
            return await send(message)

        return signed_send

    async def ws_login(self, url: str, message: dict[str, Any], login: WsLogin) -> dict[str, Any]:
        credential = self.exchange.options.get(WS_CREDENTIAL_OPTION)
        if not credential:  # the REST credential's scheme is never the login's: no need to ask
            raise AuthenticationError(self.ws_hint(login, f"the REST credential {self.credential!r} cannot sign it"))
        try:
            signed = await self.client.sign(credential, "GET", url, schemes=(login.scheme,))
        except VaultdError as exc:
            if _wrong_scheme(exc):
                raise AuthenticationError(self.ws_hint(login, str(exc))) from exc
            raise _ccxt_error(exc, self.exchange_id, credential) from exc
        params = parse_qsl(urlsplit(signed.url).query, keep_blank_values=True)
        try:
            return login.fill(message, params)
        except Unsupported as exc:
            raise Unsupported(f"{exc}: credential {credential!r} must use scheme {login.scheme}") from None

    def ws_hint(self, login: WsLogin, why: str) -> str:
        """What to configure for a WebSocket login: a credential of the login's scheme."""
        return (
            f"{self.exchange_id}: ccxt.pro's WebSocket login is signed with vaultd scheme {login.scheme!r} ({why}):"
            f" add the same API key a second time as a credential with scheme {login.scheme!r} (e.g. vaultctl add"
            f" {self.credential}-ws --kind sign) and pass options={{{WS_CREDENTIAL_OPTION!r}: "
            f"'{self.credential}-ws'}}; nothing was sent"
        )


def is_async(exchange: Any) -> bool:
    """Whether ``exchange`` is one of ccxt.async_support's (or ccxt.pro's) classes."""
    return inspect.iscoroutinefunction(type(exchange).fetch)


def install(exchange: Any, credential: str, client: Any) -> Any:
    """Route ``exchange``'s signatures through the daemon; see :func:`vaultd_client.ccxt.wrap`."""
    if not isinstance(exchange, BaseExchange):  # sync, async_support and pro alike
        raise TypeError(
            f"wrap() takes a ccxt exchange instance (such as ccxt.binance()), not {type(exchange).__name__}"
        )
    if not isinstance(credential, str) or not credential:
        raise ValueError("credential must be the name of a vaultd credential (a non-empty str)")
    venue = VENUES.get(getattr(exchange, "id", None) or "")
    if venue is None:
        known = ", ".join(sorted(VENUES))
        raise ValueError(f"vaultd_client.ccxt signs for {known}; not for ccxt exchange {exchange.id!r}")
    for field in SECRET_FIELDS:
        if getattr(exchange, field, None):
            raise ValueError(
                f"the exchange already holds {field!r}: vaultd signs so that no secret enters the engine; "
                f"build it without {field!r} (the daemon's credential {credential!r} holds it)"
            )
    if "_vaultd_signer" in exchange.__dict__:
        raise ValueError("this exchange is already wrapped by vaultd_client.ccxt")
    asynchronous = is_async(exchange)
    client = _client_for(asynchronous, client)
    signer = _Signer(exchange, venue, credential, client)
    # ccxt's sign() code reads these as text; empty, they hold nothing and no hash is ever made.
    exchange.secret = ""
    exchange.password = ""
    if not exchange.apiKey:
        exchange.apiKey = signer.key_placeholder = f"vaultd:{credential}"  # the daemon puts the real key in
    for name, primitive in _PRIMITIVES.items():
        setattr(exchange, name, primitive)
    for name in venue.action_signers:
        setattr(exchange, name, _action_signature)
    exchange.check_required_credentials = _credentials_ready
    exchange.checkRequiredCredentials = _credentials_ready
    exchange._vaultd_signer = signer
    if asynchronous:
        exchange.sign = signer.sign_later
        exchange.fetch = signer.fetch
        if hasattr(exchange, "client"):
            exchange.client = signer.client_hook(exchange.client, venue.ws_login)
    else:
        exchange.sign = signer.sign
    return exchange


def _client_for(asynchronous: bool, client: Any) -> Any:
    if not asynchronous:
        if client is None:
            return Client()
        if not isinstance(client, Client):
            raise TypeError("a ccxt sync exchange signs through a vaultd_client.Client (not an async client)")
        return client
    from .._asyncio import AsyncClient  # noqa: PLC0415 - asyncio only for async exchanges

    if client is None:
        return AsyncClient()
    if not isinstance(client, AsyncClient):
        raise TypeError("a ccxt.async_support (or ccxt.pro) exchange signs through a vaultd_client.AsyncClient")
    return client
