"""OKX v5 REST signatures: base64 HMAC-SHA256 over timestamp, method, request path and body.

OKX API v5 docs ("REST Authentication", "Making Requests" / "Signature"): ``OK-ACCESS-SIGN`` =
base64(HMAC-SHA256(secret, timestamp + method + requestPath + body)), where the timestamp is the
``OK-ACCESS-TIMESTAMP`` header, ISO 8601 UTC with milliseconds (``2020-12-08T09:08:57.715Z``),
requestPath includes ``?query`` when there is one, and the body is the JSON sent (empty for GET).
``OK-ACCESS-KEY`` and ``OK-ACCESS-PASSPHRASE`` (set when the key was created) go along.

OKX rejects a request more than 30 seconds after its timestamp: ``valid_until`` is that.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from ._base import (
    JSON,
    Keys,
    Signed,
    SignRequest,
    body_headers,
    check_extra,
    check_json_body,
    check_request,
    encode_query,
    hmac_signer,
    require_passphrase,
)

__all__ = ["Okx", "iso_timestamp", "prehash"]

VALID_FOR_S = 30.0


def iso_timestamp(timestamp_ms: int) -> str:
    """``2020-12-08T09:08:57.715Z`` for 1607418537715: integer arithmetic, no float rounding."""
    seconds, millis = divmod(timestamp_ms, 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def prehash(request: SignRequest) -> bytes:
    """timestamp + METHOD + path[?query] + body: the bytes OKX signs."""
    request_path = request.path + (f"?{encode_query(request.query)}" if request.query else "")
    return f"{iso_timestamp(request.timestamp_ms)}{request.method}{request_path}".encode() + request.body


class Okx:
    """OKX v5 REST: HMAC-SHA256 keyed with the secret text, plus the passphrase header."""

    name = "okx"
    key_kind = "hmac"
    secret_encoding = "raw"
    remote_primitive = "hmac/sha2-256"

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        """Raises: SignError: no passphrase, no secret, a malformed request."""
        check_request(request, self.name)
        check_extra(request, frozenset(), self.name)
        check_json_body(request, self.name)
        passphrase = require_passphrase(keys, self.name)
        mac = hmac_signer(keys, self.name, "sha2-256")(prehash(request))
        headers = {
            "OK-ACCESS-KEY": keys.api_key,
            "OK-ACCESS-SIGN": base64.b64encode(mac).decode("ascii"),
            "OK-ACCESS-TIMESTAMP": iso_timestamp(request.timestamp_ms),
            "OK-ACCESS-PASSPHRASE": passphrase.reveal_str(),
            **body_headers(request.body, JSON),
        }
        return Signed(headers, request.query, request.body, request.timestamp_ms / 1000 + VALID_FOR_S)

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"
