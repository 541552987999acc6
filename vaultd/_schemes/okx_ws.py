"""OKX WebSocket login: the ``login`` op's args, signed as a GET of ``/users/self/verify``.

OKX API v5 docs ("WebSocket", "Login"): the args are ``apiKey``, ``passphrase``, ``timestamp``
(Unix epoch in **seconds**, a string) and ``sign`` = base64(HMAC-SHA256(secret, timestamp +
"GET" + "/users/self/verify")). OKX refuses a login whose timestamp is more than 30 seconds
from its clock: ``valid_until`` is timestamp + 30 s.

``Signed.query`` holds the args in that order (``apiKey``, ``passphrase``, ``timestamp``,
``sign``), to send as the one object of ``{"op": "login", "args": [{...}]}``; headers and body
are empty. The request's method, host and path (the WebSocket URL, e.g.
``wss://ws.okx.com:8443/ws/v5/private``) only serve the allow-list: it must carry no query or
body of its own. The args hold the passphrase, as OKX asks.
"""

from __future__ import annotations

import base64

from ._base import Keys, Signed, SignError, SignRequest, check_extra, check_request, hmac_signer, require_passphrase

__all__ = ["OkxWsLogin", "login_prehash"]

VALID_FOR_S = 30
VERIFY_PATH = "/users/self/verify"


def login_prehash(seconds: int) -> bytes:
    """timestamp (seconds) + "GET" + "/users/self/verify": the bytes OKX signs for a login."""
    return f"{seconds}GET{VERIFY_PATH}".encode()


class OkxWsLogin:
    """OKX v5 WebSocket login: HMAC-SHA256 keyed with the secret text, plus the passphrase."""

    name = "okx-ws-login"
    key_kind = "hmac"
    secret_encoding = "raw"
    remote_primitive = "hmac/sha2-256"

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        """Raises: SignError: a query or body, no passphrase, no secret, a malformed request."""
        check_request(request, self.name)
        check_extra(request, frozenset(), self.name)
        if request.query or request.body:
            raise SignError(f"{self.name}: the login takes no parameters besides those the scheme adds")
        passphrase = require_passphrase(keys, self.name)
        seconds = request.timestamp_ms // 1000
        mac = hmac_signer(keys, self.name, "sha2-256")(login_prehash(seconds))
        args = (
            ("apiKey", keys.api_key),
            ("passphrase", passphrase.reveal_str()),
            ("timestamp", str(seconds)),
            ("sign", base64.b64encode(mac).decode("ascii")),
        )
        return Signed({}, args, b"", float(seconds + VALID_FOR_S))

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"
