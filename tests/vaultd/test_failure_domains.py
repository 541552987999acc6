"""A bug in one part of the daemon's machinery fails that part only, never the nursery that runs it all.

The renewer and the vault run in the daemon's main nursery: an exception out of them would stop
the daemon (every engine loses its tokens). These tests plant a bug and check that the rest
carries on. Virtual time (``autojump_clock``) drives the renewals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from vaultd._fake_exchange import FakeExchange
from vaultd._renewer import Renewer

from .renewal_tools import Wall, add, open_vault
from .test_renewer import oauth


async def test_a_failing_vault_listener_fails_neither_the_change_nor_the_renewals(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    exchange.behaviour.expires_in = 90
    vault = await open_vault(nursery, tmp_path, wall)
    told: list[str] = []

    def broken() -> None:
        raise RuntimeError("a bug in a listener")

    vault.add_listener(broken)
    vault.add_listener(lambda: told.append("changed"))
    await add(vault, "ex", oauth(exchange))  # the change is made and saved
    await vault.get("ex", 0)
    await trio.sleep(600)  # renewed every minute: the renewer survived the listener each time
    assert exchange.calls["/oauth/token"] >= 10
    assert (await vault.get("ex", 0))["token"] == exchange.issued_access[-1]
    assert told, "the other listeners are still told"


async def test_a_bug_in_one_renewal_attempt_leaves_the_renewer_running(
    nursery: trio.Nursery,
    tmp_path: Path,
    exchange: FakeExchange,
    wall: Wall,
    autojump_clock: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exchange.behaviour.expires_in = 90
    vault = await open_vault(nursery, tmp_path, wall)
    original = Renewer._succeeded
    planted = {"left": 1}

    def succeeded_once_broken(self: Renewer, credential: Any, issued: Any) -> None:
        if planted["left"]:
            planted["left"] -= 1
            raise RuntimeError("a planted bug after the fetch")
        original(self, credential, issued)

    monkeypatch.setattr(Renewer, "_succeeded", succeeded_once_broken)
    await add(vault, "ex", oauth(exchange))
    await trio.sleep(1)
    assert planted["left"] == 0, "the first fetch met the bug"
    await trio.sleep(600)
    assert (await vault.get("ex", 0))["token"] == exchange.issued_access[-1], "later attempts succeed"
    assert len(exchange.issued_access) >= 10, "the renewer kept renewing"
