"""Coinbase CDP (Advanced Trade) signatures: a JWT minted for one request, sent as a bearer token.

Coinbase Developer Platform docs ("API Key Authentication", "Creating a JWT"): header
``{alg, kid: key name, nonce: random hex, typ: "JWT"}``, claims ``{iss: "cdp", sub: key name,
nbf: now, exp: now + 120, uri: "METHOD host/path"}`` (no query string in ``uri``), signed with
the key's ES256 (P-256) or EdDSA (Ed25519) private key; ``Authorization: Bearer <jwt>``.

The signature itself is :func:`._keys.sign_jws` (raw ``r || s`` for ES256); the
nonce comes from the caller as ``extra["nonce"]`` (e.g. ``secrets.token_hex(16)``) so that the
scheme stays pure. ``valid_until`` is the token's ``exp``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from nacl.signing import SigningKey

from ._base import JSON, Keys, Signed, SignError, SignRequest, body_headers, check_extra, check_request, ed25519_key
from ._keys import SigningKeyObject, load_signing_key, sign_jws

__all__ = ["Coinbase", "load_key"]

LIFETIME_S = 120
_EXTRA = frozenset({"nonce"})
_NONCE = re.compile(r"[0-9a-f]{16,64}")
_KEY_FORMAT = (
    "'private_key' must be a Coinbase CDP key: a PEM P-256 key ('BEGIN EC PRIVATE KEY' or PKCS#8) for ES256,"
    " or an Ed25519 key (base64 of 64 bytes as Coinbase hands it out, or PEM PKCS#8) for EdDSA"
)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _segment(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def load_key(text: str) -> SigningKeyObject:
    """The signing key from a CDP key's ``privateKey`` text: ES256 if it is an EC PEM, else EdDSA.

    Raises:
        SignError: neither (the message names both formats expected).
    """
    is_pem = text.strip().startswith("-----BEGIN")
    for alg in ("ES256", "EdDSA") if is_pem else ("EdDSA",):
        try:
            return load_signing_key(alg, text)
        except SignError:
            continue
    raise SignError(_KEY_FORMAT)


def _signer(keys: Keys) -> tuple[str, Callable[[bytes], bytes]]:
    """The JWS ``alg`` and its signature function: a remote key signs ES256 (an OpenBao transit
    ``ecdsa-p256`` key, ``marshaling_algorithm=jws``)."""
    remote = keys.remote
    if remote is not None:
        return "ES256", lambda data: remote.sign(data, "es256")
    alg, key = _algorithm(keys)
    return alg, lambda data: sign_jws(key, data)


def _algorithm(keys: Keys) -> tuple[str, SigningKeyObject]:
    key = keys.signing_key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise SignError("coinbase: an EC 'private_key' must be on curve P-256 (ES256)")
        return "ES256", key
    if key is None or not isinstance(key, SigningKey):
        key = ed25519_key(keys, "coinbase")
    return "EdDSA", key


class Coinbase:
    """Coinbase CDP / Advanced Trade: one short-lived JWT per request."""

    name = "coinbase"
    key_kind = "jwt-key"
    remote_primitive = "sign/es256"

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        """Raises: SignError: no or malformed ``extra["nonce"]``, no usable key, a malformed request."""
        check_request(request, self.name)
        check_extra(request, _EXTRA, self.name)
        nonce = request.extra.get("nonce")
        if nonce is None or not _NONCE.fullmatch(nonce):
            raise SignError("coinbase: the option 'nonce' (required) must be 16 to 64 lower-case hex digits")
        if not keys.api_key or not keys.api_key.isprintable():
            raise SignError("coinbase: 'api_key' (the key name, organizations/.../apiKeys/...) must be printable")
        alg, sign = _signer(keys)
        now = request.timestamp_ms // 1000
        header = {"alg": alg, "kid": keys.api_key, "nonce": nonce, "typ": "JWT"}
        claims = {
            "iss": "cdp",
            "sub": keys.api_key,
            "nbf": now,
            "exp": now + LIFETIME_S,
            "uri": f"{request.method} {request.host}{request.path}",
        }
        signing_input = f"{_segment(header)}.{_segment(claims)}"
        token = f"{signing_input}.{_b64url(sign(signing_input.encode('ascii')))}"
        headers = {"Authorization": f"Bearer {token}", **body_headers(request.body, JSON)}
        return Signed(headers, request.query, request.body, float(now + LIFETIME_S))

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"
