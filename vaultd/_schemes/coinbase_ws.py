"""Coinbase Advanced Trade WebSocket JWTs: the ``jwt`` field of a ``subscribe`` message.

Coinbase Developer Platform docs ("Advanced Trade WebSocket Authentication"): "WebSocket JWTs
(vs those for REST API) are not built with a request method or request path": the same JWT
as the ``coinbase`` scheme's (:mod:`.coinbase`: header ``{alg, kid, nonce, typ}``, claims
``{iss: "cdp", sub, nbf, exp: nbf + 120}``, ES256 or EdDSA by key type) without the ``uri``
claim. ccxt pro's ``coinbase.create_ws_auth`` puts it in the subscribe message as ``jwt``; it
expires after two minutes, so each subscribe needs a fresh one.

The token comes back as ``Signed.query`` = ``(("jwt", token),)``, the way ``binance-ws-logon``
returns its params; headers and body are empty. The request (e.g. ``GET
wss://advanced-trade-ws-user.coinbase.com/``) only serves the allow-list and must carry no query
or body.
"""

from __future__ import annotations

from ._base import Keys, Signed, SignError, SignRequest, check_extra, check_request
from .coinbase import _EXTRA, _NONCE, LIFETIME_S, _b64url, _segment, _signer

__all__ = ["CoinbaseWsJwt"]


class CoinbaseWsJwt:
    """Coinbase Advanced Trade WebSocket: a JWT without ``uri``, for the subscribe message."""

    name = "coinbase-ws-jwt"
    key_kind = "jwt-key"
    remote_primitive = "sign/es256"

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        """Raises: SignError: a query or body, no or malformed ``extra["nonce"]``, no usable key."""
        check_request(request, self.name)
        check_extra(request, _EXTRA, self.name)
        if request.query or request.body:
            raise SignError(f"{self.name}: a WebSocket JWT signs no query or body: send the request without them")
        nonce = request.extra.get("nonce")
        if nonce is None or not _NONCE.fullmatch(nonce):
            raise SignError(f"{self.name}: the option 'nonce' (required) must be 16 to 64 lower-case hex digits")
        if not keys.api_key or not keys.api_key.isprintable():
            raise SignError(f"{self.name}: 'api_key' (the key name, organizations/.../apiKeys/...) must be printable")
        alg, sign = _signer(keys)
        now = request.timestamp_ms // 1000
        header = {"alg": alg, "kid": keys.api_key, "nonce": nonce, "typ": "JWT"}
        claims = {"iss": "cdp", "sub": keys.api_key, "nbf": now, "exp": now + LIFETIME_S}
        signing_input = f"{_segment(header)}.{_segment(claims)}"
        token = f"{signing_input}.{_b64url(sign(signing_input.encode('ascii')))}"
        return Signed({}, (("jwt", token),), b"", float(now + LIFETIME_S))

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"
