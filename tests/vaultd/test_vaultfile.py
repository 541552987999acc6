"""The vault file format: round trip, and one clear failure for every kind of damage."""

from __future__ import annotations

import pytest

from vaultd._sealing import OpenFailed
from vaultd._secret import Secret
from vaultd._vaultfile import Header, VaultFormatError, decode, encode, new_vault, read_header
from vaultd_protocol import KdfProfile

from ..vaultfile_tools import with_header

PASSPHRASE = Secret("correct horse battery staple")
TOKEN = "fake-token-4f1c2e-not-real"


@pytest.fixture(scope="module")
def vault_bytes() -> bytes:
    header, key = new_vault(PASSPHRASE, KdfProfile.MIN)
    return encode(header, key, {"credentials": {"x": {"kind": "static", "token": TOKEN}}})


def test_round_trip(vault_bytes: bytes) -> None:
    header, key, body = decode(vault_bytes, PASSPHRASE)
    assert body["credentials"]["x"]["token"] == TOKEN
    assert header.kdf.profile_name() == "min"
    assert len(key) == 32


def test_the_token_is_not_in_the_file_in_the_clear(vault_bytes: bytes) -> None:
    assert TOKEN.encode() not in vault_bytes
    assert TOKEN[:12].encode() not in vault_bytes


def test_each_write_uses_a_fresh_nonce() -> None:
    header, key = new_vault(PASSPHRASE, KdfProfile.MIN)
    a = encode(header, key, {"credentials": {}})
    b = encode(header, key, {"credentials": {}})
    assert a != b


def test_wrong_passphrase_is_opaque(vault_bytes: bytes) -> None:
    with pytest.raises(OpenFailed, match="wrong passphrase, or the vault file is damaged"):
        decode(vault_bytes, Secret("not the passphrase"))


def test_every_flipped_byte_fails_cleanly(vault_bytes: bytes) -> None:
    for offset in range(len(vault_bytes)):
        damaged = bytearray(vault_bytes)
        damaged[offset] ^= 0x01
        with pytest.raises((OpenFailed, VaultFormatError)):
            decode(bytes(damaged), PASSPHRASE)


def test_every_truncation_fails_cleanly(vault_bytes: bytes) -> None:
    for length in range(len(vault_bytes)):
        with pytest.raises((OpenFailed, VaultFormatError)):
            decode(vault_bytes[:length], PASSPHRASE)


@pytest.mark.parametrize(
    "changes",
    [{"memlimit": 4 * 2**30}, {"memlimit": 2**42}, {"opslimit": 2**32 - 1}, {"opslimit": 0}, {"memlimit": 1}],
)
def test_hostile_kdf_parameters_are_refused_before_the_kdf_runs(vault_bytes: bytes, changes: dict[str, int]) -> None:
    hostile = with_header(vault_bytes, **changes)
    with pytest.raises(VaultFormatError, match="vault header refused: KDF"):
        read_header(hostile)
    # decode() checks the header first: were the KDF to run with 4 TiB it would fail
    # differently (MemoryError) or take hours; it raises the same clear error at once.
    with pytest.raises(VaultFormatError, match="vault header refused"):
        decode(hostile, PASSPHRASE)


@pytest.mark.parametrize(
    "changes",
    [
        {"opslimit": float("inf")},
        {"opslimit": 2.0},
        {"memlimit": "8192"},
        {"salt": 2**64 - 1},
        {"salt": 3 * 10**9},
        {"salt": b"short"},
        {"alg": 5},
        {"opslimit": True},
    ],
)
def test_wrong_types_in_the_kdf_header_are_refused_without_conversion(
    vault_bytes: bytes, changes: dict[str, object]
) -> None:
    with pytest.raises(VaultFormatError, match="vault header"):
        decode(with_header(vault_bytes, **changes), PASSPHRASE)


@pytest.mark.parametrize("fields", [{"generation": float("inf")}, {"generation": -1}, {"wrapped_key": 7}, {"kdf": []}])
def test_wrong_header_fields_are_refused(vault_bytes: bytes, fields: dict[str, object]) -> None:
    with pytest.raises(VaultFormatError, match="vault header"):
        decode(with_header(vault_bytes, header_fields=fields), PASSPHRASE)


def test_unknown_format_version_says_so(vault_bytes: bytes) -> None:
    with pytest.raises(VaultFormatError, match="unsupported vault format version 7"):
        decode(with_header(vault_bytes, version=7), PASSPHRASE)


def test_not_a_vault_says_so() -> None:
    with pytest.raises(VaultFormatError, match="not a vaultd vault file"):
        decode(b"PK\x03\x04" + b"\x00" * 200, PASSPHRASE)


def test_header_is_authenticated_with_the_body(vault_bytes: bytes) -> None:
    """A well-formed header with one field changed (here the generation) must not open."""
    header, end = read_header(vault_bytes)
    forged = Header(header.kdf, header.wrapped_key, header.generation + 5).to_bytes()
    with pytest.raises(OpenFailed):
        decode(forged + vault_bytes[end:], PASSPHRASE)
