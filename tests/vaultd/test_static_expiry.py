"""A static token's ``not_after``: refused at ``credential.put`` when already past, and EXPIRED
(with the reason, never retried) when it passes while the daemon runs or while it is locked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from vaultd._secret import Secret
from vaultd_protocol import ErrorCode

from .renewal_tools import PASS, Wall, add, open_vault, refused, state


async def test_a_not_after_in_the_past_is_refused_at_put_naming_when(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    for not_after in ("2020-01-01T00:00:00Z", wall() - 1, wall()):
        error = await refused(add(vault, "old", {"token": "fake-old", "not_after": not_after}, kind="static"))
        assert error.code is ErrorCode.INVALID_PARAMS
        assert "'not_after'" in str(error) and "is in the past" in str(error), str(error)
        assert "fake-old" not in str(error)
    error = await refused(add(vault, "old", {"token": "fake-old", "not_after": "2020-01-01T00:00:00Z"}, kind="static"))
    assert "2020-01-01T00:00:00Z" in str(error) and "it is now 2027-01-15T08:00" in str(error)
    assert [c["name"] for c in vault.describe()] == [], "nothing was stored"
    await add(vault, "new", {"token": "fake-new", "not_after": wall() + 60}, kind="static")  # positive control
    assert (await vault.get("new", 0))["token"] == "fake-new"


async def test_a_not_after_that_passes_while_running_is_expired_with_the_reason(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "st", {"token": "fake-st", "not_after": wall() + 60}, kind="static")
    assert (await vault.get("st", 0))["token"] == "fake-st"
    await trio.sleep(61)
    described = state(vault, "st")
    assert described["state"] == "EXPIRED"
    assert "not_after" in (described["last_error"] or "") and "slow endpoint" not in (described["last_error"] or "")
    assert (await refused(vault.get("st", 0))).code is ErrorCode.TOKEN_EXPIRED
    await trio.sleep(3600)
    assert state(vault, "st") == described, "nothing retried, nothing changed"


async def test_a_not_after_that_passed_while_locked_is_expired_not_retried(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "st", {"token": "fake-st", "not_after": wall() + 60}, kind="static")
    vault.lock()
    wall.offset += 3600  # the machine slept, locked, past the not_after
    await vault.unlock(Secret(PASS))
    await trio.sleep(1)
    described = state(vault, "st")
    assert described["state"] == "EXPIRED" and described["next_renewal"] is None, described
    assert "not_after" in described["last_error"] and "slow endpoint" not in described["last_error"]
    error = await refused(vault.get("st", 0))
    assert error.code is ErrorCode.TOKEN_EXPIRED and "not_after passed" in str(error)
    await trio.sleep(3600)
    assert state(vault, "st") == described, "no retry loop"
