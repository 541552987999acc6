"""All of vaultd's cryptography in one place: Argon2id key derivation and XChaCha20-Poly1305.

Every failed open raises the same opaque :class:`OpenFailed`; a wrong key, a flipped bit
and a cut-off ciphertext are indistinguishable by design. KDF parameters are checked
against :data:`KDF_CAPS` before the KDF runs, so a hostile header cannot make the daemon
allocate gigabytes or spin for hours.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import nacl.bindings as sodium
import nacl.exceptions
from nacl.pwhash import argon2id

from vaultd_protocol import KdfProfile

from ._secret import Secret

__all__ = [
    "KDF_CAPS",
    "KEY_BYTES",
    "NONCE_BYTES",
    "PROFILES",
    "SALT_BYTES",
    "TAG_BYTES",
    "KdfLimitsExceeded",
    "KdfParams",
    "OpenFailed",
    "derive_key",
    "new_data_key",
    "open_sealed",
    "seal",
]

KEY_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES
NONCE_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
TAG_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES
SALT_BYTES = argon2id.SALTBYTES
KDF_ALG = "argon2id13"

#: libsodium's named cost profiles: (opslimit, memlimit in bytes).
PROFILES: dict[KdfProfile, tuple[int, int]] = {
    KdfProfile.MIN: (argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN),
    KdfProfile.INTERACTIVE: (argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE),
    KdfProfile.MODERATE: (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE),
    KdfProfile.SENSITIVE: (argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE),
}

#: The most a vault header may ask of the KDF: the SENSITIVE profile's memory and a few
#: times its passes. Anything above is refused before the KDF runs.
KDF_CAPS = (4 * argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE)


class OpenFailed(Exception):
    """Authentication failed: wrong key, or damaged data. Deliberately says no more."""

    def __init__(self) -> None:
        super().__init__("wrong passphrase, or the vault file is damaged")


class KdfLimitsExceeded(ValueError):
    """The KDF parameters are outside what vaultd will run."""


@dataclass(frozen=True, slots=True)
class KdfParams:
    opslimit: int
    memlimit: int
    salt: bytes

    @classmethod
    def for_profile(cls, profile: KdfProfile) -> KdfParams:
        ops, mem = PROFILES[profile]
        return cls(ops, mem, secrets.token_bytes(SALT_BYTES))

    def check(self) -> None:
        """Refuse parameters a hostile header could use to exhaust the machine.

        Raises:
            KdfLimitsExceeded: a limit is below libsodium's minimum or above :data:`KDF_CAPS`.
        """
        max_ops, max_mem = KDF_CAPS
        if not argon2id.OPSLIMIT_MIN <= self.opslimit <= max_ops:
            raise KdfLimitsExceeded(f"KDF opslimit {self.opslimit} is outside 1..{max_ops}")
        if not argon2id.MEMLIMIT_MIN <= self.memlimit <= max_mem:
            raise KdfLimitsExceeded(f"KDF memlimit {self.memlimit} is outside {argon2id.MEMLIMIT_MIN}..{max_mem}")
        if len(self.salt) != SALT_BYTES:
            raise KdfLimitsExceeded(f"KDF salt must be {SALT_BYTES} bytes")

    def profile_name(self) -> str:
        """The profile these limits match, or ``custom``."""
        for profile, limits in PROFILES.items():
            if limits == (self.opslimit, self.memlimit):
                return str(profile)
        return "custom"


def derive_key(passphrase: Secret, params: KdfParams) -> Secret:
    """Argon2id: passphrase to a 32-byte key. Slow by design: run it off the event loop.

    Raises:
        KdfLimitsExceeded: see :meth:`KdfParams.check`; checked before any work is done.
    """
    params.check()
    key = argon2id.kdf(KEY_BYTES, passphrase.reveal(), params.salt, params.opslimit, params.memlimit)
    return Secret(key)


def new_data_key() -> Secret:
    return Secret(secrets.token_bytes(KEY_BYTES))


def seal(key: Secret, plaintext: bytes, aad: bytes) -> bytes:
    """XChaCha20-Poly1305 with a fresh random nonce; returns ``nonce || ciphertext || tag``."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + bytes(sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key.reveal()))


def open_sealed(key: Secret, blob: bytes, aad: bytes) -> bytes:
    """Reverse :func:`seal`.

    Raises:
        OpenFailed: for any failure at all (the same error for every cause).
    """
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise OpenFailed
    try:
        return bytes(
            sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(blob[NONCE_BYTES:], aad, blob[:NONCE_BYTES], key.reveal())
        )
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise OpenFailed from None
