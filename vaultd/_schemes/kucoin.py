"""KuCoin REST signatures: base64 HMAC-SHA256 over timestamp, method, endpoint and body.

KuCoin API docs ("Authentication", "Signing a Message"): ``KC-API-SIGN`` =
base64(HMAC-SHA256(secret, timestamp + METHOD + endpoint + body)), where the timestamp is the
``KC-API-TIMESTAMP`` header (epoch milliseconds), the endpoint is the path with ``?query`` when
there is one, and the body is the JSON sent (empty for GET and DELETE). For API keys of version 2
and 3, ``KC-API-PASSPHRASE`` is base64(HMAC-SHA256(secret, passphrase)), the passphrase signed
with the same key; ``KC-API-KEY`` and ``KC-API-KEY-VERSION`` go along.

Key version 1 (the raw passphrase in the header) is refused: KuCoin retired it, and it would put
the passphrase itself on the wire. ``extra["key_version"]`` is "2" (the default) or "3": the
credential's ``key_version`` field sets it (the two versions sign alike; only the header differs).

The query is signed exactly as :func:`encode_query` builds it, and the URL carries that string.
KuCoin rejects a request more than 5 seconds from its clock: ``valid_until`` is timestamp + 5 s.

The passphrase signature is a second HMAC with the key: through OpenBao transit, a KuCoin
signature costs two calls (:attr:`Kucoin.remote_calls`).
"""

from __future__ import annotations

import base64

from ._base import (
    JSON,
    Keys,
    Signed,
    SignError,
    SignRequest,
    body_headers,
    check_extra,
    check_json_body,
    check_request,
    encode_query,
    hmac_signer,
    require_passphrase,
)

__all__ = ["KEY_VERSIONS", "Kucoin", "prehash"]

VALID_FOR_S = 5.0
KEY_VERSIONS = ("2", "3")
_EXTRA = frozenset({"key_version"})


def prehash(request: SignRequest, query_string: str) -> bytes:
    """timestamp + METHOD + path[?query] + body: the bytes KuCoin signs."""
    endpoint = request.path + (f"?{query_string}" if query_string else "")
    return f"{request.timestamp_ms}{request.method}{endpoint}".encode() + request.body


class Kucoin:
    """KuCoin REST (spot, margin and futures hosts alike), API key version 2 or 3."""

    name = "kucoin"
    key_kind = "hmac"
    secret_encoding = "raw"
    remote_primitive = "hmac/sha2-256"
    #: One HMAC for the request, one for the passphrase.
    remote_calls = 2

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        """Raises: SignError: no passphrase, a key version other than 2 or 3, a malformed request."""
        check_request(request, self.name)
        check_extra(request, _EXTRA, self.name)
        check_json_body(request, self.name)
        version = request.extra.get("key_version", "2")
        if version not in KEY_VERSIONS:
            raise SignError("kucoin: 'key_version' must be 2 or 3 (version 1 keys are not supported)")
        passphrase = require_passphrase(keys, self.name)
        mac = hmac_signer(keys, self.name, "sha2-256")
        query_string = encode_query(request.query)
        signature = mac(prehash(request, query_string))
        signed_passphrase = mac(passphrase.reveal())
        headers = {
            "KC-API-KEY": keys.api_key,
            "KC-API-SIGN": base64.b64encode(signature).decode("ascii"),
            "KC-API-TIMESTAMP": str(request.timestamp_ms),
            "KC-API-PASSPHRASE": base64.b64encode(signed_passphrase).decode("ascii"),
            "KC-API-KEY-VERSION": version,
            **body_headers(request.body, JSON),
        }
        valid_until = request.timestamp_ms / 1000 + VALID_FOR_S
        return Signed(headers, request.query, request.body, valid_until, query_string)

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"
