"""Helpers for tests that run a vault and its renewer on trio's virtual clock."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import trio

from vaultd._errors import RpcError
from vaultd._secret import Secret
from vaultd._vault import Vault
from vaultd_protocol import KdfProfile

PASS = "fake passphrase 1"


class Wall:
    """The vault's wall clock: trio's clock plus an offset (move it to jump the wall clock)."""

    def __init__(self) -> None:
        self.offset = 1_800_000_000.0

    def __call__(self) -> float:
        return self.offset + trio.current_time()


async def inline(fn: Any, *args: Any) -> Any:
    """Run the vault's blocking calls (MIN KDF, small writes) inline: no thread, so the
    autojump clock cannot skip ahead while one works."""
    return fn(*args)


async def open_vault(nursery: trio.Nursery, path: Path, wall: Wall, **options: Any) -> Vault:
    vault = Vault(
        path, nursery=nursery, clock=wall, renewer_options={"rng": random.Random(7), **options}, blocking=inline
    )
    await vault.init(Secret(PASS), KdfProfile.MIN)
    await vault.unlock(Secret(PASS))
    return vault


async def add(vault: Vault, name: str, config: dict[str, Any], kind: str = "oauth2") -> None:
    await vault.put(Secret(PASS), name, kind, config, replace=False)


def state(vault: Vault, name: str) -> dict[str, Any]:
    return next(c for c in vault.describe() if c["name"] == name)


async def refused(coro: Any) -> RpcError:
    with pytest.raises(RpcError) as info:
        await coro
    return info.value
