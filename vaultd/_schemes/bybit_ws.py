"""Bybit WebSocket ``auth``: hex HMAC-SHA256 over ``GET/realtime`` and the expiry.

Bybit V5 docs ("WebSocket Stream", "Authentication"): ``{"op": "auth", "args": [apiKey,
expires, signature]}`` with ``expires`` a time in epoch milliseconds, in the future, and
signature = hex(HMAC-SHA256(secret, "GET/realtime" + expires)). Bybit refuses the auth after
``expires``: ``valid_until`` is that.

``expires`` = the request's timestamp + ``extra["expires_in"]`` (milliseconds, default 10000
as ccxt uses, at most 60000). ``Signed.query`` holds the args as ordered pairs, ``apiKey``,
``expires``, ``signature``: send their values, in that order, as ``args`` (``expires`` as a
JSON number, as Bybit's example does). Headers and body are empty. The request's method, host
and path (the WebSocket URL, e.g. ``wss://stream.bybit.com/v5/private``) only serve the
allow-list: it must carry no query or body of its own.
"""

from __future__ import annotations

from ._base import Keys, Signed, SignError, SignRequest, check_extra, check_request, hmac_signer

__all__ = ["BybitWsAuth", "auth_payload"]

DEFAULT_EXPIRES_IN_MS = 10_000
MAX_EXPIRES_IN_MS = 60_000
_EXTRA = frozenset({"expires_in"})


def auth_payload(expires_ms: int) -> bytes:
    """ "GET/realtime" + expires: the bytes Bybit signs for a WebSocket auth."""
    return f"GET/realtime{expires_ms}".encode()


def _expires_in(request: SignRequest) -> int:
    text = request.extra.get("expires_in", str(DEFAULT_EXPIRES_IN_MS))
    if not text.isdigit() or text[0] == "0" or not 0 < int(text) <= MAX_EXPIRES_IN_MS:
        raise SignError("bybit-ws-auth: 'expires_in' must be whole milliseconds, above 0 and at most 60000")
    return int(text)


class BybitWsAuth:
    """Bybit V5 private WebSocket auth with a system-generated (HMAC) key."""

    name = "bybit-ws-auth"
    key_kind = "hmac"
    secret_encoding = "raw"
    remote_primitive = "hmac/sha2-256"

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        """Raises: SignError: a query or body, a bad ``expires_in``, no secret, a malformed request."""
        check_request(request, self.name)
        check_extra(request, _EXTRA, self.name)
        if request.query or request.body:
            raise SignError(f"{self.name}: the auth takes no parameters besides those the scheme adds")
        expires = request.timestamp_ms + _expires_in(request)
        signature = hmac_signer(keys, self.name, "sha2-256")(auth_payload(expires)).hex()
        args = (("apiKey", keys.api_key), ("expires", str(expires)), ("signature", signature))
        return Signed({}, args, b"", expires / 1000)

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"
