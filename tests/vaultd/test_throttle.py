"""The wrong-passphrase delay cannot be skipped by cancelling a request (issue 14, item 2).

Each test records the trio time at which every key derivation starts (the vault's
``blocking`` hook sees each KDF), on the autojump clock: nothing sleeps for real.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from vaultd import _vaultfile
from vaultd._errors import RpcError
from vaultd._secret import Secret
from vaultd._vault import FailureDelay, Vault
from vaultd_protocol import ErrorCode, KdfProfile

PASS = "fake passphrase 1"
WRONG = "wrong passphrase 9"


class KdfTimes:
    """A ``blocking`` hook that runs the call inline and notes when each KDF began.

    ``kdf_seconds`` makes each KDF take that much (virtual) time, so that a test can cancel
    a request while its KDF runs.
    """

    def __init__(self, kdf_seconds: float = 0.0) -> None:
        self.started: list[float] = []
        self.kdf_seconds = kdf_seconds

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        kdf = fn is _vaultfile.unwrap or getattr(fn, "__name__", "") == "_read_and_open"
        if kdf:
            self.started.append(trio.current_time())
            if self.kdf_seconds:
                await trio.sleep(self.kdf_seconds)
        return fn(*args)


async def make_vault(nursery: trio.Nursery, path: Path, times: KdfTimes, *, unlocked: bool) -> Vault:
    vault = Vault(path, nursery=nursery, failure_delay=FailureDelay(step=1.0, cap=10.0), blocking=times)
    await vault.init(Secret(PASS), KdfProfile.MIN)
    if unlocked:
        await vault.unlock(Secret(PASS))
    times.started.clear()
    return vault


async def cancelled_after(seconds: float, call: Awaitable[Any]) -> None:
    """Run ``call`` and cancel it after ``seconds``, as the server does when its peer goes."""
    with trio.move_on_after(seconds) as scope:
        await call
    assert scope.cancelled_caught, "the call should still have been waiting"


async def test_a_guess_cancelled_during_its_delay_still_holds_back_the_next_unlock(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: Any
) -> None:
    times = KdfTimes()
    vault = await make_vault(nursery, tmp_path, times, unlocked=False)
    start = trio.current_time()
    await cancelled_after(0.5, vault.unlock(Secret(WRONG)))  # its delay is 1 s: cut at 0.5 s
    with pytest.raises(RpcError) as info:
        await vault.unlock(Secret(WRONG))
    assert info.value.code is ErrorCode.BAD_PASSPHRASE
    assert times.started[0] == pytest.approx(start)
    assert times.started[1] >= start + 1.0, "the second KDF ran before the first guess's delay was over"
    assert trio.current_time() - start >= 1.0 + 2.0, "the second wrong answer is still delayed (2nd failure: 2 s)"
    assert vault.failed_attempts == 2


@pytest.mark.parametrize(
    "guess",
    [
        lambda v: v.put(Secret(WRONG), "ex", "static", {"token": "fake-t-1"}, replace=False),
        lambda v: v.remove(Secret(WRONG), "ex"),
        lambda v: v.list(Secret(WRONG)),
        lambda v: v.renew(Secret(WRONG), "ex"),
        lambda v: v.get_policy(Secret(WRONG)),
        lambda v: v.set_policy(Secret(WRONG), {"rules": []}),
        lambda v: v.rekey(Secret(WRONG), Secret("new passphrase 2")),
        lambda v: v.unlock(Secret(WRONG)),  # on an unlocked vault: a passphrase check
    ],
    ids=["put", "remove", "list", "renew", "policy.get", "policy.set", "rekey", "unlock-unlocked"],
)
async def test_a_cancelled_admin_guess_holds_back_the_next_one(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: Any, guess: Callable[[Vault], Awaitable[Any]]
) -> None:
    times = KdfTimes()
    vault = await make_vault(nursery, tmp_path, times, unlocked=True)
    start = trio.current_time()
    await cancelled_after(0.5, guess(vault))
    await cancelled_after(0.2, guess(vault))  # still waiting for the first one's delay: no KDF
    assert len(times.started) == 1, "a guess ran its KDF inside the previous guess's delay"
    with pytest.raises(RpcError):
        await guess(vault)
    assert times.started[1] >= start + 1.0


async def test_a_guess_cancelled_during_its_kdf_counts_as_failed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: Any
) -> None:
    times = KdfTimes(kdf_seconds=0.3)
    vault = await make_vault(nursery, tmp_path, times, unlocked=False)
    start = trio.current_time()
    await cancelled_after(0.1, vault.unlock(Secret(WRONG)))  # cut inside the KDF: no answer seen
    assert vault.failed_attempts == 1, "a check counts as failed until it passes"
    await vault.unlock(Secret(PASS))
    assert times.started[1] >= start + 1.0, "the next check waited for the cancelled one's delay"
    assert vault.failed_attempts == 0


async def test_the_right_passphrase_clears_the_gate(nursery: trio.Nursery, tmp_path: Path, autojump_clock: Any) -> None:
    times = KdfTimes()
    vault = await make_vault(nursery, tmp_path, times, unlocked=False)
    with pytest.raises(RpcError):
        await vault.unlock(Secret(WRONG))
    after_wrong = trio.current_time()
    await vault.unlock(Secret(PASS))
    await vault.list(Secret(PASS))
    assert times.started[1:] == [after_wrong, after_wrong], "no wait once the passphrase was right"
