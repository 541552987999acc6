"""Gate API v4 signatures: hex HMAC-SHA512 over method, path, query, body hash and timestamp.

Gate API v4 docs ("Authentication", "API Signature string generation"): ``SIGN`` =
hex(HMAC-SHA512(secret, METHOD + "\\n" + path + "\\n" + query + "\\n" + hex(SHA512(body)) + "\\n"
+ timestamp)). The path is the URL path as sent, ``/api/v4`` included (``/api/v4/futures/orders``);
the query is the query string without ``?`` and **not URL-encoded** (empty when there is none);
the body hash is that of the empty string when there is no body; the timestamp is the
``Timestamp`` header, in **seconds**. ``KEY`` goes along.

The query is sent percent-encoded by :func:`encode_query`; the signed decoded form agrees with it
for unreserved characters (ccxt signs it decoded too).
Gate rejects a timestamp more than 60 seconds from its clock: ``valid_until`` is timestamp + 60 s.
"""

from __future__ import annotations

import hashlib

from ._base import JSON, Keys, Signed, SignRequest, body_headers, check_extra, check_request, hmac_signer

__all__ = ["Gate", "string_to_sign"]

VALID_FOR_S = 60


def string_to_sign(request: SignRequest) -> bytes:
    """METHOD\\npath\\nquery\\nhex(SHA512(body))\\ntimestamp-in-seconds: the bytes Gate signs."""
    query = "&".join(f"{name}={value}" for name, value in request.query)
    body_hash = hashlib.sha512(request.body).hexdigest()
    return f"{request.method}\n{request.path}\n{query}\n{body_hash}\n{request.timestamp_ms // 1000}".encode()


class Gate:
    """Gate API v4 (spot, margin, futures, wallet): HMAC-SHA512 keyed with the secret text."""

    name = "gate"
    key_kind = "hmac"
    secret_encoding = "raw"
    remote_primitive = "hmac/sha2-512"

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        """Raises: SignError: no secret, a malformed request."""
        check_request(request, self.name)
        check_extra(request, frozenset(), self.name)
        signature = hmac_signer(keys, self.name, "sha2-512")(string_to_sign(request)).hex()
        seconds = request.timestamp_ms // 1000
        headers = {
            "KEY": keys.api_key,
            "Timestamp": str(seconds),
            "SIGN": signature,
            **body_headers(request.body, JSON),
        }
        return Signed(headers, request.query, request.body, float(seconds + VALID_FOR_S))

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"
