"""Kraken Futures REST signatures: ``Authent`` over the parameters, the nonce and the endpoint path.

Kraken's docs ("Futures REST", "Authentication"): ``Authent`` =
base64(HMAC-SHA512(base64-decoded secret, SHA256(postData + Nonce + endpointPath))), with headers
``APIKey``, ``Authent`` and the optional ``Nonce``. ``postData`` is the ``&``-joined
``name=value`` parameters as sent (since 20 February 2024: URL-encoded, as in the URL); the
endpoint path is the URL path without the ``/derivatives`` prefix
(``https://futures.kraken.com/derivatives/api/v3/sendorder`` signs ``/api/v3/sendorder``; the
history and charts APIs, ``/api/history/...``, have no prefix to drop).

postData is the query string when the request has one (Kraken's calls carry their parameters in
the URL, POST included), else the form body (``batchorder``'s ``json=...``); a request with both
is refused, since which one Kraken would read is not said.

The signed string has no separators, so a request could be cut so that its bytes are another
endpoint's: parameters ending in ``/api/v3/withdrawal`` before a nonce-less header, or a path
like ``/derivatives/x/api/v3/withdrawal`` whose tail Kraken would route. Every endpoint
starts with ``/api/`` and the nonce is digits, so a signature is made only when the endpoint
path starts with ``/api/`` and holds it nowhere else, and the parameters hold no ``/api/``.

For the same reason the parameters must not end in a digit, which could pass for the nonce's
first (``size=15`` and nonce N sign as ``size=1`` and nonce ``5N``): a query's parameters are
reordered to put one that ends otherwise last (the URL carries the order signed); a body, or
a query whose every value ends in a digit, is refused.

The nonce, optional for Kraken, is always sent: without it a signature carries no time and
could be replayed for ever. The daemon owns it as for Kraken Spot (strictly increasing,
persisted), so :attr:`SignRequest.nonce` is required; Kraken tolerates nonces briefly out of
order, never a repeat. Nothing else limits a signature's life: ``valid_until`` is a convention,
the timestamp plus 60 seconds.
"""

from __future__ import annotations

import base64
import hashlib

from ._base import (
    FORM,
    Keys,
    Primitive,
    Signed,
    SignError,
    SignRequest,
    body_headers,
    check_extra,
    check_request,
    daemon_nonce,
    encode_query,
    hmac_signer,
)

__all__ = ["KrakenFutures", "authent", "endpoint_path"]

VALID_FOR_S = 60.0
_PREFIX = "/derivatives"
#: Where every Kraken Futures endpoint path starts (after the prefix).
_API = "/api/"


def endpoint_path(path: str) -> str:
    """The path Kraken signs: ``path`` without a leading ``/derivatives`` segment."""
    if path.startswith(_PREFIX + "/"):
        return path[len(_PREFIX) :]
    return path


def _last_not_a_digit(query: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """``query`` with a parameter whose encoded form does not end in a digit moved last, if the
    last one does: the order of a query's parameters means nothing to Kraken, and the URL
    carries the order signed."""
    if not query or not encode_query(query[-1:])[-1:].isdigit():
        return query
    for index in range(len(query) - 2, -1, -1):
        if not encode_query(query[index : index + 1])[-1:].isdigit():
            return query[:index] + query[index + 1 :] + query[index : index + 1]
    return query


def authent(mac: Primitive, message: bytes) -> str:
    """base64(HMAC-SHA512(key, SHA256(message))): also how a WebSocket challenge is signed."""
    return base64.b64encode(mac(hashlib.sha256(message).digest())).decode("ascii")


class KrakenFutures:
    """Kraken Futures REST: HMAC-SHA512 keyed with the base64-decoded API secret."""

    name = "kraken-futures"
    key_kind = "hmac"
    secret_encoding = "base64"
    remote_primitive = "hmac/sha2-512"

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        """Raises: SignError: no nonce, both a query and a body, a non-ASCII body, a malformed request."""
        check_request(request, self.name)
        check_extra(request, frozenset(), self.name)
        nonce = daemon_nonce(request, self.name)
        if request.query and request.body:
            raise SignError("kraken-futures: send the parameters in the query or in the body, not both")
        if not request.body.isascii():
            raise SignError("kraken-futures: 'body' must be form-encoded ASCII (percent-encode other characters)")
        query = _last_not_a_digit(request.query)
        query_string = encode_query(query)
        post_data = query_string.encode("ascii") if query else request.body
        if post_data[-1:].isdigit():
            raise SignError(
                "kraken-futures: the parameters must not end in a digit (Kraken signs the nonce right after them, "
                "so trailing digits could pass for the nonce's first): put a parameter ending otherwise last"
            )
        endpoint = endpoint_path(request.path)
        if not endpoint.startswith(_API) or endpoint.lower().find(_API, 1) != -1:
            raise SignError(
                "kraken-futures: the path must be one endpoint: /derivatives/api/... or /api/..., "
                "with '/api/' nowhere else in it (Kraken signs the path right after the parameters)"
            )
        if _API.encode() in post_data.lower():
            raise SignError(
                "kraken-futures: the parameters must not hold '/api/' (percent-encode '/' as %2F): "
                "Kraken signs them right before the nonce and the path"
            )
        message = post_data + str(nonce).encode("ascii") + endpoint.encode("ascii")
        headers = {
            "APIKey": keys.api_key,
            "Authent": authent(hmac_signer(keys, self.name, "sha2-512"), message),
            "Nonce": str(nonce),
            **body_headers(request.body, FORM),
        }
        valid_until = request.timestamp_ms / 1000 + VALID_FOR_S
        return Signed(headers, query, request.body, valid_until, query_string)

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"
