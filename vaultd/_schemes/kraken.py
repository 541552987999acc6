"""Kraken Spot REST signatures: ``API-Sign`` over the URI path and the nonce-bearing form body.

Kraken's REST docs ("Spot REST Authentication", "Setting the API-Sign Parameter"):
``API-Sign`` = base64(HMAC-SHA512(base64-decoded secret, URI path + SHA256(nonce + POST data))),
``API-Key`` = the public key, and the ``nonce`` travels in the form body.

The daemon owns the nonce (strictly increasing, persisted): :attr:`SignRequest.nonce` is
required. A body without ``nonce`` gets ``nonce=<nonce>`` put first; a body that carries the same
nonce is signed as it is; one that carries another nonce is refused, since the daemon's must win.

Kraken nonces do not expire, so ``valid_until`` is a convention, not Kraken's: the request's
timestamp plus 60 seconds, after which the engine should ask for a fresh signature (and nonce).
"""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import unquote_plus

from ._base import Keys, Signed, SignError, SignRequest, check_extra, check_request, hmac_signer

__all__ = ["Kraken", "body_with_nonce"]

VALID_FOR_S = 60.0
_MAX_NONCE = 2**64 - 1


def body_with_nonce(body: bytes, nonce: int) -> bytes:
    """The form body to send and sign: ``body`` with ``nonce=<nonce>`` first unless already there.

    Raises:
        SignError: the body is not ASCII form data, or carries a different or repeated nonce.
    """
    if not body.isascii():
        raise SignError("kraken: 'body' must be form-encoded ASCII (percent-encode other characters)")
    carried = [
        unquote_plus(pair.partition("=")[2])
        for pair in body.decode("ascii").split("&")
        if unquote_plus(pair.partition("=")[0]) == "nonce"
    ]
    if len(carried) > 1:
        raise SignError("kraken: 'body' carries 'nonce' twice")
    if carried:
        if carried[0] != str(nonce):
            raise SignError("kraken: the body's 'nonce' differs from the nonce the daemon chose")
        return body
    return f"nonce={nonce}".encode("ascii") + (b"&" + body if body else b"")


class Kraken:
    """Kraken Spot REST: HMAC-SHA512 keyed with the base64-decoded private key."""

    name = "kraken"
    key_kind = "hmac"
    secret_encoding = "base64"
    remote_primitive = "hmac/sha2-512"

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        """Raises: SignError: no nonce, a conflicting body nonce, a malformed request."""
        check_request(request, self.name)
        check_extra(request, frozenset(), self.name)
        nonce = request.nonce
        if nonce is None:
            raise SignError("kraken: a 'nonce' is required (the daemon decides it)")
        if not 0 < nonce <= _MAX_NONCE:
            raise SignError("kraken: 'nonce' must be a positive 64-bit integer")
        mac_of = hmac_signer(keys, self.name, "sha2-512")
        body = body_with_nonce(request.body, nonce)
        digest = hashlib.sha256(str(nonce).encode("ascii") + body).digest()
        mac = mac_of(request.path.encode("ascii") + digest)
        headers = {"API-Key": keys.api_key, "API-Sign": base64.b64encode(mac).decode("ascii")}
        return Signed(headers, request.query, body, request.timestamp_ms / 1000 + VALID_FOR_S)

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"
