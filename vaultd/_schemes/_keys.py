"""Private keys of the signing schemes: parsing the text a venue hands out, and JWS signatures.

The one place that turns key text into a key object for the schemes (and for the ``jwt``
kind, which wraps :func:`load_signing_key` to raise its own ``ConfigError``): PEM PKCS#8 or
SEC1, or the base64 forms Ed25519 keys come in; RSA keys (PEM PKCS#8 or PKCS#1, at least 2048
bits, :func:`load_rsa_key`); secp256k1 keys as wallets export them (``0x`` and 64 hex digits,
:func:`load_secp256k1_key`). A bad key raises :class:`SignError` naming the format expected,
never holding the key.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from typing import TypeAlias

from coincurve import PrivateKey as Secp256k1Key
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from nacl.signing import SigningKey

from ._base import SignError

__all__ = [
    "MIN_RSA_BITS",
    "Secp256k1Key",
    "SigningKeyObject",
    "load_rsa_key",
    "load_secp256k1_key",
    "load_signing_key",
    "sign_jws",
    "sign_rsa",
]

_ED_FORMAT = "'private_key' must be a PEM PKCS#8 Ed25519 key or base64 of a 32- or 64-byte Ed25519 key"
_EC_FORMAT = "'private_key' must be a PEM P-256 key (PKCS#8 'BEGIN PRIVATE KEY' or SEC1 'BEGIN EC PRIVATE KEY')"

_RSA_FORMAT = (
    "'private_key' must be a PEM RSA key of at least 2048 bits (PKCS#8 'BEGIN PRIVATE KEY' or PKCS#1 "
    "'BEGIN RSA PRIVATE KEY'), unencrypted"
)
_SECP256K1_FORMAT = (
    "'private_key' must be a secp256k1 private key: '0x' and 64 hex digits (32 bytes), as wallets export it"
)
_SECP256K1_HEX = re.compile(r"(?:0x)?([0-9A-Fa-f]{64})")
#: RSA keys below this size are refused: 1024-bit keys are within reach of a determined attacker.
MIN_RSA_BITS = 2048

SigningKeyObject: TypeAlias = SigningKey | ec.EllipticCurvePrivateKey


def _key_name(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"an EC {key.curve.name} key"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "an Ed25519 key"
    return f"a key of type {type(key).__name__.removeprefix('_').removesuffix('PrivateKey')}"


def _pem_text(text: str) -> str:
    body = text.strip()
    if "\\n" in body and "\n" not in body:  # pasted from a JSON download: literal \n escapes
        body = body.replace("\\n", "\n")
    return body


def load_signing_key(alg: str, text: str) -> SigningKeyObject:
    """The signing key for ``alg`` from the text an exchange hands out.

    PEM (PKCS#8, or SEC1 for P-256; literal ``\\n`` escapes are accepted, as pasted from a
    JSON download), or for EdDSA base64 of a raw 32-byte seed or of the 64-byte seed || public
    key form of Coinbase CDP.

    Raises:
        SignError: unparseable, encrypted, or not a key for ``alg`` (names the format expected).
    """
    expected = _ED_FORMAT if alg == "EdDSA" else _EC_FORMAT
    body = _pem_text(text)
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


def load_rsa_key(text: str) -> rsa.RSAPrivateKey:
    """The RSA private key from PEM text: PKCS#8 (``BEGIN PRIVATE KEY``) or PKCS#1 (``BEGIN RSA
    PRIVATE KEY``), unencrypted, at least :data:`MIN_RSA_BITS` bits; literal ``\\n`` escapes are
    accepted as for the other PEM keys.

    Raises:
        SignError: not PEM, encrypted, not RSA, or too short (names the format expected).
    """
    body = _pem_text(text)
    if not body.startswith("-----BEGIN"):
        raise SignError(_RSA_FORMAT)
    try:
        key = serialization.load_pem_private_key(body.encode("ascii", "replace"), password=None)
    except TypeError:
        raise SignError("'private_key' is encrypted: export it without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise SignError(_RSA_FORMAT) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SignError(f"{_RSA_FORMAT}; this PEM holds {_key_name(key)}")
    if key.key_size < MIN_RSA_BITS:
        raise SignError(f"{_RSA_FORMAT}; this key has {key.key_size} bits")
    return key


def sign_rsa(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """RSASSA-PKCS1-v1_5 with SHA-256 over ``data``: deterministic, as long as the key's modulus."""
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def load_secp256k1_key(text: str) -> Secp256k1Key:
    """The secp256k1 private key from ``0x`` and 64 hex digits (the ``0x`` may be left out).

    Raises:
        SignError: another form, or a number that is no valid key (0, or not below the group order).
    """
    match = _SECP256K1_HEX.fullmatch(text.strip())
    if match is None:
        raise SignError(_SECP256K1_FORMAT)
    try:
        return Secp256k1Key(bytes.fromhex(match.group(1)))
    except ValueError:
        raise SignError(f"{_SECP256K1_FORMAT}, from 1 to the curve order - 1") from None
