"""Deribit v2 signatures: the ``deri-hmac-sha256`` Authorization header, and ``client_signature``.

Deribit API v2 docs ("Authentication", "Additional authorization method - Deribit signature
credentials"): ``Authorization: deri-hmac-sha256 id=ClientId,ts=Timestamp,sig=Signature,nonce=Nonce``
with Signature = hex(HMAC-SHA256(ClientSecret, Timestamp + "\\n" + Nonce + "\\n" + RequestData)) and
RequestData = UPPERCASE(method) + "\\n" + URI (path?query) + "\\n" + body + "\\n". The timestamp is
valid for 60 seconds: ``valid_until`` is that.

The nonce is a random string used once. Schemes stay pure, so the caller makes it (for
instance ``secrets.token_hex(8)``) and passes it as ``extra["nonce"]``; it is required.

:func:`client_signature` is the same HMAC for the WebSocket ``public/auth`` grant
``client_signature`` (Timestamp + "\\n" + Nonce + "\\n" + Data).
"""

from __future__ import annotations

import hashlib
import hmac
import re

from ._base import (
    JSON,
    Keys,
    Signed,
    SignError,
    SignRequest,
    body_headers,
    check_extra,
    check_request,
    encode_query,
    hmac_signer,
)

__all__ = ["Deribit", "client_signature", "request_data"]

VALID_FOR_S = 60.0
_EXTRA = frozenset({"nonce"})
#: What fits in the header between commas: no separators, no spaces.
_NONCE = re.compile(r"[A-Za-z0-9_.~-]{1,64}")
_CLIENT_ID = re.compile(r"[\x21-\x7e]{1,128}")


def client_signature(secret: bytes, timestamp_ms: int, nonce: str, data: bytes = b"") -> str:
    """hex(HMAC-SHA256(secret, Timestamp + "\\n" + Nonce + "\\n" + Data))."""
    return hmac.new(secret, _string_to_sign(timestamp_ms, nonce, data), hashlib.sha256).hexdigest()


def _string_to_sign(timestamp_ms: int, nonce: str, data: bytes) -> bytes:
    return f"{timestamp_ms}\n{nonce}\n".encode() + data


def request_data(request: SignRequest) -> bytes:
    """METHOD + "\\n" + path[?query] + "\\n" + body + "\\n": what the HTTP signature covers."""
    uri = request.path + (f"?{encode_query(request.query)}" if request.query else "")
    return f"{request.method}\n{uri}\n".encode() + request.body + b"\n"


class Deribit:
    """Deribit v2 HTTP API: per-request HMAC-SHA256 keyed with the client secret text."""

    name = "deribit"
    key_kind = "hmac"
    secret_encoding = "raw"
    remote_primitive = "hmac/sha2-256"

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        """Raises: SignError: no or malformed ``extra["nonce"]``, no secret, a malformed request."""
        check_request(request, self.name)
        check_extra(request, _EXTRA, self.name)
        nonce = request.extra.get("nonce")
        if nonce is None or not _NONCE.fullmatch(nonce):
            raise SignError("deribit: the option 'nonce' (required) must be 1 to 64 letters, digits or -_.~")
        if not _CLIENT_ID.fullmatch(keys.api_key) or "," in keys.api_key:
            raise SignError("deribit: 'api_key' (the client id) must be printable, without spaces or commas")
        mac = hmac_signer(keys, self.name, "sha2-256")
        signature = mac(_string_to_sign(request.timestamp_ms, nonce, request_data(request))).hex()
        authorization = f"deri-hmac-sha256 id={keys.api_key},ts={request.timestamp_ms},sig={signature},nonce={nonce}"
        return Signed(
            {"Authorization": authorization, **body_headers(request.body, JSON)},
            request.query,
            request.body,
            request.timestamp_ms / 1000 + VALID_FOR_S,
        )

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"
