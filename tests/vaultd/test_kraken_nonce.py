"""The Kraken nonce mark is used only once on disk: a failed or cancelled write rolls it back."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from vaultd._errors import RpcError
from vaultd._providers.sign import SignProvider
from vaultd._signing import _kraken_nonce
from vaultd_protocol import ErrorCode

SECRET = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="


def kraken() -> SignProvider:
    return SignProvider.from_config({"scheme": "kraken", "api_key": "fake-key", "secret": SECRET})


async def test_a_failed_write_rolls_the_mark_back(autojump_clock: Any) -> None:
    provider = kraken()

    async def failing() -> None:
        raise RpcError(ErrorCode.STORAGE_FAILED, "disk full")

    with pytest.raises(RpcError):
        await _kraken_nonce(provider, None, 1_000, trio.Lock(), failing)
    assert provider.reserved_nonce == 0 and provider.needs_reservation(), "the next signer writes again"


async def test_a_cancelled_write_rolls_the_mark_back(autojump_clock: Any) -> None:
    provider = kraken()

    async def slow() -> None:
        await trio.sleep(100)

    with trio.move_on_after(1):
        await _kraken_nonce(provider, None, 1_000, trio.Lock(), slow)
    assert provider.reserved_nonce == 0 and provider.needs_reservation()


async def test_a_saved_mark_covers_the_next_minute_of_nonces(autojump_clock: Any) -> None:
    provider = kraken()
    writes = 0

    async def persist() -> None:
        nonlocal writes
        writes += 1

    nonces = [await _kraken_nonce(provider, None, 1_000 + i, trio.Lock(), persist) for i in range(100)]
    assert nonces == sorted(set(nonces)) and writes == 1 and provider.reserved_nonce > nonces[-1]
