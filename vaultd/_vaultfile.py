"""The vault file format: envelope encryption of one msgpack body, bytes in and bytes out.

Layout (all integers big-endian)::

    magic      8 bytes   b"\\x89VAULTD\\n"
    version    u16       FORMAT_VERSION
    hlen       u16       length of the header map
    header     hlen      msgpack map: kdf {alg, opslimit, memlimit, salt},
                         wrapped_key (nonce || sealed 32-byte data key), generation
    body       rest      nonce || XChaCha20-Poly1305(msgpack body) || tag

The data key is wrapped by the Argon2id passphrase key with the KDF parameters as
associated data; the body is sealed by the data key with *all bytes before it* (magic,
version, header) as associated data, so any change to the header fails the open.
Changing the passphrase seals the body under a fresh data key (:func:`rekey`), so a copy made
before opens with the old passphrase but shows nothing written since. No file I/O here: see ``_atomic``.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from vaultd_protocol import KdfProfile

from ._sealing import (
    KDF_ALG,
    KEY_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    KdfLimitsExceeded,
    KdfParams,
    derive_key,
    new_data_key,
    open_sealed,
    seal,
)
from ._secret import Secret

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "Header",
    "VaultFormatError",
    "decode",
    "decode_body",
    "encode",
    "new_vault",
    "read_header",
    "unwrap",
]

MAGIC = b"\x89VAULTD\n"
FORMAT_VERSION = 1
_PREFIX = struct.Struct(">8sHH")
_MAX_HEADER = 1024
_WRAPPED_BYTES = NONCE_BYTES + KEY_BYTES + TAG_BYTES
_BODY_VERSION = 1


class VaultFormatError(ValueError):
    """The file is not a vault this version can read. Says why, and nothing secret."""


@dataclass(frozen=True, slots=True)
class Header:
    kdf: KdfParams
    wrapped_key: bytes
    generation: int

    def to_bytes(self) -> bytes:
        """Magic, version, length and the header map: the body's associated data."""
        kdf = {
            "alg": KDF_ALG,
            "opslimit": self.kdf.opslimit,
            "memlimit": self.kdf.memlimit,
            "salt": self.kdf.salt,
        }
        packed: bytes = msgpack.packb(
            {"kdf": kdf, "wrapped_key": self.wrapped_key, "generation": self.generation},
            use_bin_type=True,
        )
        return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(packed)) + packed


def _wrap_aad(kdf: KdfParams) -> bytes:
    params: bytes = msgpack.packb([KDF_ALG, kdf.opslimit, kdf.memlimit, kdf.salt], use_bin_type=True)
    return MAGIC + FORMAT_VERSION.to_bytes(2, "big") + b"wrap" + params


def new_vault(passphrase: Secret, profile: KdfProfile) -> tuple[Header, Secret]:
    """A header with a fresh data key wrapped under ``passphrase`` (slow: runs the KDF)."""
    kdf = KdfParams.for_profile(profile)
    wrapped, data_key = _wrap_new_key(passphrase, kdf)
    return Header(kdf, wrapped, 0), data_key


def rekey(header: Header, passphrase: Secret) -> tuple[Header, Secret]:
    """``header`` with a fresh data key wrapped under a new ``passphrase`` (fresh salt, the
    same KDF limits), and that key. Slow: runs the KDF. A new key, not the old one re-wrapped:
    the old passphrase, with any old copy of the file, must not open what is written next."""
    kdf = replace(header.kdf, salt=secrets.token_bytes(len(header.kdf.salt)))
    wrapped, data_key = _wrap_new_key(passphrase, kdf)
    return replace(header, kdf=kdf, wrapped_key=wrapped), data_key


def _wrap_new_key(passphrase: Secret, kdf: KdfParams) -> tuple[bytes, Secret]:
    """A fresh data key, and that key sealed under the key ``passphrase`` derives with ``kdf``."""
    data_key = new_data_key()
    wrapping = derive_key(passphrase, kdf)
    try:
        return seal(wrapping, data_key.reveal(), _wrap_aad(kdf)), data_key
    finally:
        wrapping.wipe()


def unwrap(header: Header, passphrase: Secret) -> Secret:
    """The data key, if ``passphrase`` is right (slow: runs the KDF).

    Raises:
        OpenFailed: wrong passphrase or damaged header.
        KdfLimitsExceeded: the header's KDF parameters are refused (before the KDF runs).
    """
    wrapping = derive_key(passphrase, header.kdf)
    try:
        return Secret(open_sealed(wrapping, header.wrapped_key, _wrap_aad(header.kdf)))
    finally:
        wrapping.wipe()


def encode(header: Header, data_key: Secret, body: dict[str, Any]) -> bytes:
    """The whole file: header bytes, then the body sealed with them as associated data."""
    aad = header.to_bytes()
    plaintext = msgpack.packb({"version": _BODY_VERSION, **body}, use_bin_type=True)
    return aad + seal(data_key, plaintext, aad)


def read_header(data: bytes) -> tuple[Header, int]:
    """Parse and sanity-check the header; return it and the offset where the body starts.

    Raises:
        VaultFormatError: not a vault, an unknown version, a malformed or truncated header,
            or KDF parameters outside the caps (checked here, before any KDF can run).
    """
    if len(data) < _PREFIX.size:
        raise VaultFormatError("vault file is truncated (no header)")
    magic, version, hlen = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise VaultFormatError("not a vaultd vault file (bad magic)")
    if version != FORMAT_VERSION:
        raise VaultFormatError(f"unsupported vault format version {version} (this vaultd reads {FORMAT_VERSION})")
    if hlen > _MAX_HEADER:
        raise VaultFormatError("vault header is too large")
    end = _PREFIX.size + hlen
    if len(data) < end + NONCE_BYTES + TAG_BYTES:
        raise VaultFormatError("vault file is truncated")
    try:
        fields = msgpack.unpackb(data[_PREFIX.size : end], raw=False)
    except (msgpack.UnpackException, ValueError) as exc:
        raise VaultFormatError(f"vault header is damaged ({type(exc).__name__})") from None
    header = _header_from_fields(fields)
    try:
        header.kdf.check()
    except KdfLimitsExceeded as exc:
        raise VaultFormatError(f"vault header refused: {exc}") from None
    if len(header.wrapped_key) != _WRAPPED_BYTES or header.generation < 0:
        raise VaultFormatError("vault header is damaged (wrapped key or generation)")
    return header, end


def _field(container: object, key: str, kind: type) -> object:
    """One header field, of exactly the expected type (no conversion of untrusted values)."""
    if not isinstance(container, dict) or key not in container:
        raise VaultFormatError(f"vault header is damaged (no {key!r})")
    value = container[key]
    if type(value) is not kind:
        raise VaultFormatError(f"vault header is damaged ({key!r} is not {kind.__name__})")
    return value


def _header_from_fields(fields: object) -> Header:
    kdf = _field(fields, "kdf", dict)
    alg = _field(kdf, "alg", str)
    if alg != KDF_ALG:
        raise VaultFormatError(f"unsupported KDF {str(alg)[:32]!r}")
    opslimit, memlimit = _field(kdf, "opslimit", int), _field(kdf, "memlimit", int)
    salt, wrapped = _field(kdf, "salt", bytes), _field(fields, "wrapped_key", bytes)
    generation = _field(fields, "generation", int)
    assert isinstance(opslimit, int) and isinstance(memlimit, int) and isinstance(generation, int)
    assert isinstance(salt, bytes) and isinstance(wrapped, bytes)
    return Header(KdfParams(opslimit, memlimit, salt), wrapped, generation)


def decode(data: bytes, passphrase: Secret) -> tuple[Header, Secret, dict[str, Any]]:
    """Open a whole vault file: header, data key and body (slow: runs the KDF).

    Raises:
        VaultFormatError: see :func:`read_header`.
        OpenFailed: wrong passphrase, or any bit of the file changed or cut off.
    """
    header, end = read_header(data)
    data_key = unwrap(header, passphrase)
    try:
        body = decode_body(data, end, data_key)
    except BaseException:
        data_key.wipe()
        raise
    return header, data_key, body


def decode_body(data: bytes, end: int, data_key: Secret) -> dict[str, Any]:
    """Open the body with an already-unwrapped data key.

    Raises:
        OpenFailed: the body does not authenticate under this key and header.
    """
    plaintext = open_sealed(data_key, data[end:], data[:end])
    try:
        body = msgpack.unpackb(plaintext, raw=False)
    except (msgpack.UnpackException, ValueError) as exc:  # authenticated but unreadable: a bug
        raise VaultFormatError(f"vault body is unreadable ({type(exc).__name__})") from None
    if not isinstance(body, dict) or body.get("version") != _BODY_VERSION:
        raise VaultFormatError("unsupported vault body version")
    return body
