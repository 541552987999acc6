"""Secrets never print, can be wiped, and cannot be pickled."""

from __future__ import annotations

import pickle

import pytest

from vaultd._credentials import from_config
from vaultd._secret import Secret


def test_repr_and_str_hide_the_value() -> None:
    secret = Secret("fake-api-secret-123")
    assert "fake-api-secret" not in repr(secret)
    assert "fake-api-secret" not in str(secret)
    assert "fake-api-secret" not in f"{secret!s} {[secret]}"


def test_wipe_zeroes_the_buffer() -> None:
    secret = Secret(b"fake-key")
    buffer = secret._buf
    secret.wipe()
    assert secret.wiped and buffer == bytearray()


def test_cannot_be_pickled() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Secret("x"))


def test_credential_repr_hides_the_token() -> None:
    cred = from_config("ex", "static", {"token": "fake-tok-999"}, now=1.0)
    assert "fake-tok-999" not in repr(cred.provider)
    assert "fake-tok-999" not in repr(cred)
    assert "fake-tok-999" not in str(cred.describe(2.0))
