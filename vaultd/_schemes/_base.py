"""What every signing scheme shares: the request to sign, the keys, the answer, and input checks.

A scheme is a pure function of (request, keys): no clock (the caller passes the time), no
randomness (the caller passes any nonce), no I/O and no logging. Messages of :class:`SignError`
name the field at fault and never hold a secret.

Schemes reach the key only through :func:`hmac_signer` and :func:`ed25519_signer` (Coinbase's
ES256 through :attr:`Keys.remote` too), each one primitive call per request: so a key held
elsewhere (OpenBao transit) stands in as :attr:`Keys.remote`, which :mod:`._remote` records and
replays (``remote_primitive`` on a scheme says which primitive it calls).

Query strings are signed in the form :func:`encode_query` makes, so whoever builds the URL from
:attr:`Signed.query` must encode it with that same function: another encoder (``+`` for spaces,
kept commas) would send bytes other than the ones signed. A scheme that signs the query in
another form (Bybit's, unencoded as its SDK sends it) returns that form as
:attr:`Signed.query_string`, and the URL is built from it as it is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from nacl.signing import SigningKey

from .._secret import Secret

__all__ = [
    "FORM",
    "HMAC_DIGESTS",
    "JSON",
    "Keys",
    "RemoteKey",
    "Scheme",
    "SignError",
    "SignRequest",
    "Signed",
    "body_headers",
    "check_extra",
    "check_json_body",
    "check_request",
    "daemon_nonce",
    "decode_secret",
    "ed25519_key",
    "ed25519_signer",
    "encode_query",
    "hmac_signer",
    "require_passphrase",
    "require_secret",
]

_METHOD = re.compile(r"[A-Z]{1,16}")
#: Host, optionally with a port: no scheme, no path, no whitespace.
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")
#: A path as it goes on the request line: no whitespace or control characters, no query.
_PATH = re.compile(r"/[\x21-\x7e]*")
_ENCODINGS = {
    "raw": "the secret text itself",
    "base64": "standard base64 (A-Z a-z 0-9 + /, padded with =)",
    "hex": "hexadecimal (an even number of 0-9 a-f characters)",
}
#: 2100-01-01T00:00:00Z in milliseconds: a later timestamp is surely a unit mistake.
MAX_TIMESTAMP_MS = 4_102_444_800_000
#: HMAC hash functions by their OpenBao transit names.
HMAC_DIGESTS: dict[str, Callable[[], Any]] = {"sha2-256": hashlib.sha256, "sha2-512": hashlib.sha512}

Primitive = Callable[[bytes], bytes]

#: The media types of the bodies schemes sign: a form (Binance, Kraken) or JSON (most others).
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


class RemoteKey(Protocol):
    """A key held elsewhere, computing a scheme's one primitive. Pure stand-ins only (no I/O):
    :mod:`._remote` records what a scheme asks, then replays what the key's holder answered."""

    def hmac(self, data: bytes, algorithm: str) -> bytes:
        """The raw MAC of ``data``; ``algorithm`` is "sha2-256" or "sha2-512"."""
        ...

    def sign(self, data: bytes, algorithm: str) -> bytes:
        """The raw signature of ``data``: "ed25519" (64 bytes), "es256" (JWS ``r || s``, 64 bytes) or
        "rsa-pkcs1v15-sha256" (RSASSA-PKCS1-v1_5 over SHA-256, as long as the key's modulus)."""
        ...


@dataclass(frozen=True, slots=True)
class SignRequest:
    """One HTTP request an engine is about to send, as the scheme must sign it."""

    method: str
    host: str
    path: str
    query: tuple[tuple[str, str], ...]
    body: bytes
    timestamp_ms: int
    #: Kraken only: the nonce the daemon decided (strictly increasing, never reused).
    nonce: int | None = None
    #: Scheme-specific knobs (``recvWindow``, ``recv_window``, ``nonce``); unknown ones are refused.
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Keys:
    """One credential's key material, already imported (see each scheme's ``key_kind``)."""

    api_key: str
    #: The raw HMAC key bytes, already decoded (:func:`decode_secret`).
    secret: Secret | None = None
    #: An Ed25519 (pynacl ``SigningKey`` or ``cryptography`` key) or P-256 private key object.
    signing_key: Any = field(default=None, repr=False)
    passphrase: Secret | None = None
    #: The key is held elsewhere: the primitive goes there instead of ``secret``/``signing_key``.
    remote: RemoteKey | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Signed:
    """What to send instead of the engine's request: headers to add, the final query and body."""

    headers: dict[str, str]
    #: The final query parameters, in order, decoded: encode them with :func:`encode_query`.
    query: tuple[tuple[str, str], ...]
    body: bytes
    #: Epoch seconds until which the exchange accepts this signature.
    valid_until: float
    #: ``encode_query(query)``, when the scheme has it at hand already (it signed it).
    query_string: str | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        # Header values can be credentials (OKX's passphrase, Coinbase's bearer JWT): names only.
        return (
            f"Signed(headers={sorted(self.headers)!r}, query={len(self.query)} params,"
            f" body={len(self.body)} bytes, valid_until={self.valid_until!r})"
        )


class SignError(ValueError):
    """The request or keys do not fit the scheme. The message names the field, never a secret."""


class Scheme(Protocol):
    name: str
    #: What ``add`` must import: "hmac" (Keys.secret), "ed25519", "ec", "jwt-key", "rsa" or
    #: "secp256k1" (Keys.signing_key).
    key_kind: str

    @property
    def remote_primitive(self) -> str | None:
        """The one primitive it asks of :attr:`Keys.remote` per request, as "hmac/sha2-256",
        "hmac/sha2-512", "sign/ed25519", "sign/es256" or "sign/rsa-pkcs1v15-sha256"; None: it
        cannot use a remote key."""
        ...

    def sign(self, request: SignRequest, keys: Keys) -> Signed: ...


def decode_secret(text: str, encoding: str) -> bytes:
    """The HMAC key bytes from the secret text an exchange hands out.

    ``raw``: the UTF-8 bytes of the text (Binance, OKX, Bybit, Deribit key their HMAC with the
    secret string itself); ``base64``: standard, padded base64 (Kraken); ``hex``.

    Raises:
        SignError: empty, or not in ``encoding`` (the message names the format expected).
    """
    if encoding not in _ENCODINGS:
        raise SignError(f"unknown secret encoding (known: {', '.join(_ENCODINGS)})")
    expected = f"'secret' must be {_ENCODINGS[encoding]}"
    body = text if encoding == "raw" else text.strip()
    if not body:
        raise SignError(f"{expected}, and not empty")
    if encoding == "raw":
        return body.encode("utf-8")
    try:
        if encoding == "base64":
            raw = base64.b64decode(body.encode("ascii"), validate=True)
        else:
            raw = bytes.fromhex(body) if re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", body) else b""
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raw = b""
    if not raw:
        raise SignError(expected)
    return raw


def encode_query(pairs: Iterable[tuple[str, str]]) -> str:
    """``name=value`` pairs joined by ``&``, each side percent-encoded as RFC 3986 asks.

    Only the unreserved characters (``A-Z a-z 0-9 - _ . ~``) stay as they are; UTF-8 bytes of
    anything else become ``%XX``: the form Binance documents for its signature payload.
    """
    return "&".join(f"{_quote(name)}={_quote(value)}" for name, value in pairs)


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def _quote(text: str) -> str:
    # Most names and values are unreserved already: one regex match instead of quote()'s work,
    # and for ASCII letters and digits alone (most of them) two C calls instead of the match.
    # ASCII text is escaped character by character (its UTF-8 bytes are its characters) by one
    # translate(), as quote() would; quote() keeps the rest.
    if (text.isascii() and text.isalnum()) or _UNRESERVED.fullmatch(text):
        return text
    return text.translate(_ESCAPES) if text.isascii() else quote(text, safe="")


#: Every ASCII character but the unreserved ones, to its ``%XX`` (upper-case hex, as quote() writes it).
_ESCAPES = {code: f"%{code:02X}" for code in range(128) if not _UNRESERVED.fullmatch(chr(code))}


def body_headers(body: bytes, content_type: str) -> dict[str, str]:
    """``{"Content-Type": content_type}`` for a non-empty body, else nothing: the header the
    venue needs to read the body it was signed as (a body posted without one can be misread)."""
    return {"Content-Type": content_type} if body else {}


#: The largest nonce a venue's 64-bit field holds.
MAX_NONCE = 2**64 - 1


def daemon_nonce(request: SignRequest, scheme: str) -> int:
    """The nonce the daemon decided (Kraken Spot and Futures).

    Raises:
        SignError: none given, or not a positive 64-bit integer.
    """
    nonce = request.nonce
    if nonce is None:
        raise SignError(f"{scheme}: a 'nonce' is required (the daemon decides it)")
    if not 0 < nonce <= MAX_NONCE:
        raise SignError(f"{scheme}: 'nonce' must be a positive 64-bit integer")
    return nonce


def check_json_body(request: SignRequest, scheme: str) -> None:
    """Raises: SignError: a non-empty body that does not start with ``{`` or ``[``.

    For schemes that sign the body right after the path, with no separator (OKX, KuCoin,
    Bitget): a body starting with characters a path may hold would let a request for an allowed
    path (``/api/v5/asset/w`` with body ``ithdrawal{...}``) carry the very bytes of another
    (``/api/v5/asset/withdrawal``), which the allow-list would refuse. A JSON object or array
    cannot be part of a path.
    """
    if request.body and request.body[:1] not in (b"{", b"["):
        raise SignError(
            f"{scheme}: 'body' must be JSON, starting with '{{' or '[' (the venue signs it right after another "
            "field, with nothing between)"
        )


def check_request(request: SignRequest, scheme: str) -> None:
    """Raises: SignError: a malformed method, host, path, query or timestamp."""
    if not _METHOD.fullmatch(request.method):
        raise SignError(f"{scheme}: 'method' must be an upper-case HTTP method such as GET or POST")
    if not _HOST.fullmatch(request.host):
        raise SignError(f"{scheme}: 'host' must be a host name (and port), without scheme or path")
    if not _PATH.fullmatch(request.path) or "?" in request.path or "#" in request.path:
        raise SignError(f"{scheme}: 'path' must start with '/' and hold no query, fragment or whitespace")
    for name, value in request.query:
        if not name or not name.isprintable() or not value.isprintable():
            raise SignError(f"{scheme}: query parameter names must be non-empty and printable, values printable")
    if not 0 <= request.timestamp_ms <= MAX_TIMESTAMP_MS:
        raise SignError(f"{scheme}: 'timestamp_ms' must be epoch milliseconds")


def check_extra(request: SignRequest, allowed: frozenset[str], scheme: str) -> None:
    """Raises: SignError: an option this scheme does not know (a typo would silently do nothing).

    ``SignRequest.extra`` is what engines send as ``options`` (``token.sign``): messages say "option".
    """
    unknown = sorted(set(request.extra) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise SignError(f"{scheme}: unknown option {unknown[0][:32]!r} (known: {known})")


def require_secret(keys: Keys, scheme: str) -> bytes:
    """Raises: SignError: the keys hold no HMAC secret."""
    if keys.secret is None or not len(keys.secret):
        raise SignError(f"{scheme}: needs an HMAC secret ('secret')")
    return keys.secret.reveal()


def require_passphrase(keys: Keys, scheme: str) -> Secret:
    """Raises: SignError: the keys hold no passphrase (OKX, KuCoin and Bitget keys come with one)."""
    if keys.passphrase is None or not len(keys.passphrase):
        raise SignError(f"{scheme}: needs the API key's passphrase ('passphrase')")
    return keys.passphrase


def hmac_signer(keys: Keys, scheme: str, algorithm: str) -> Primitive:
    """The raw HMAC of bytes with the credential's key (``algorithm``: "sha2-256" or "sha2-512").

    Raises:
        SignError: the keys hold no HMAC secret and no remote key.
    """
    remote = keys.remote
    if remote is not None:
        return lambda data: remote.hmac(data, algorithm)
    secret, digest = require_secret(keys, scheme), HMAC_DIGESTS[algorithm]
    return lambda data: hmac.new(secret, data, digest).digest()


def ed25519_signer(keys: Keys, scheme: str) -> Primitive:
    """The raw 64-byte Ed25519 signature of bytes with the credential's key.

    Raises:
        SignError: no Ed25519 key and no remote key.
    """
    remote = keys.remote
    if remote is not None:
        return lambda data: remote.sign(data, "ed25519")
    key = ed25519_key(keys, scheme)
    return lambda data: bytes(key.sign(data).signature)


def ed25519_key(keys: Keys, scheme: str) -> Any:
    """The pynacl signing key for ``keys.signing_key`` (pynacl or ``cryptography`` Ed25519).

    Raises:
        SignError: no key, or a key of another type.
    """
    key = keys.signing_key
    if isinstance(key, SigningKey):
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return SigningKey(seed)
    raise SignError(f"{scheme}: needs an Ed25519 private key ('private_key')")
