"""Private keys of the signing schemes: parsing the text a venue hands out, and JWS signatures.

The one place that turns key text into a key object for the schemes (and for the ``jwt``
kind, which wraps :func:`load_signing_key` to raise its own ``ConfigError``): PEM PKCS#8 or
SEC1, or the base64 forms Ed25519 keys come in. A bad key raises :class:`SignError` naming
the format expected, never holding the key.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from nacl.signing import SigningKey

from ._base import SignError

__all__ = ["SigningKeyObject", "load_signing_key", "sign_jws"]

_ED_FORMAT = "'private_key' must be a PEM PKCS#8 Ed25519 key or base64 of a 32- or 64-byte Ed25519 key"
_EC_FORMAT = "'private_key' must be a PEM P-256 key (PKCS#8 'BEGIN PRIVATE KEY' or SEC1 'BEGIN EC PRIVATE KEY')"

SigningKeyObject: TypeAlias = SigningKey | ec.EllipticCurvePrivateKey


def _key_name(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"an EC {key.curve.name} key"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "an Ed25519 key"
    return f"a key of type {type(key).__name__.removeprefix('_').removesuffix('PrivateKey')}"


def load_signing_key(alg: str, text: str) -> SigningKeyObject:
    """The signing key for ``alg`` from the text an exchange hands out.

    PEM (PKCS#8, or SEC1 for P-256; literal ``\\n`` escapes are accepted, as pasted from a
    JSON download), or for EdDSA base64 of a raw 32-byte seed or of the 64-byte seed || public
    key form of Coinbase CDP.

    Raises:
        SignError: unparseable, encrypted, or not a key for ``alg`` (names the format expected).
    """
    expected = _ED_FORMAT if alg == "EdDSA" else _EC_FORMAT
    body = text.strip()
    if "\\n" in body and "\n" not in body:
        body = body.replace("\\n", "\n")
    if body.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(body.encode("ascii", "replace"), password=None)
        except TypeError:
            raise SignError("'private_key' is encrypted: export it without a passphrase") from None
        except (ValueError, UnsupportedAlgorithm):
            raise SignError(expected) from None
        if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PrivateKey):
            seed = key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            return SigningKey(seed)
        if alg == "ES256" and isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            return key
        raise SignError(f"{expected} for alg {alg}; this PEM holds {_key_name(key)}")
    if alg != "EdDSA":
        raise SignError(expected)
    try:
        url_safe = "-" in body or "_" in body
        raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_" if url_safe else None, validate=True)
    except (binascii.Error, ValueError):
        raise SignError(expected) from None
    if len(raw) not in (32, 64):
        raise SignError(expected)
    signing = SigningKey(raw[:32])
    if len(raw) == 64 and not hmac.compare_digest(bytes(signing.verify_key), raw[32:]):
        raise SignError("'private_key': the public half of the 64-byte Ed25519 key does not match its seed")
    return signing


def sign_jws(key: SigningKeyObject, signing_input: bytes) -> bytes:
    """The JWS signature of ``signing_input``: 64 bytes for both algorithms.

    ES256 signatures are raw ``r || s`` (32 bytes each, big-endian, RFC 7518 section 3.4),
    not the DER that ``cryptography`` returns.
    """
    if isinstance(key, SigningKey):
        signature: bytes = key.sign(signing_input).signature
        return signature
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")
