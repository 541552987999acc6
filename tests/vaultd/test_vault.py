"""The vault's lifecycle with real files and the MIN KDF; time runs on trio's autojump clock."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from vaultd import _atomic as atomic_module
from vaultd import _vault as vault_module
from vaultd._errors import RpcError
from vaultd._secret import Secret
from vaultd._vault import FailureDelay, Vault
from vaultd_protocol import ErrorCode, KdfProfile, VaultState

PASS = "fake passphrase 1"
TOKEN = "fake-token-7d1e-not-real"


class WallClock:
    """An injected wall clock (the vault takes ``clock=``), moved by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def pw(text: str = PASS) -> Secret:
    return Secret(text)


async def ready_vault(data_dir: Path, nursery: trio.Nursery, **kwargs: Any) -> Vault:
    vault = Vault(data_dir, nursery=nursery, **kwargs)
    await vault.init(pw(), KdfProfile.MIN)
    await vault.unlock(pw())
    return vault


async def expect(code: ErrorCode, coro: Any) -> RpcError:
    with pytest.raises(RpcError) as info:
        await coro
    assert info.value.code is code, info.value
    return info.value


async def test_lifecycle(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = Vault(tmp_path, nursery=nursery)
    assert vault.state is VaultState.UNINITIALIZED
    await expect(ErrorCode.NOT_INITIALIZED, vault.unlock(pw()))
    await vault.init(pw(), KdfProfile.MIN)
    assert vault.state is VaultState.LOCKED
    assert vault.kdf_profile() == "min"
    await expect(ErrorCode.ALREADY_INITIALIZED, vault.init(pw(), KdfProfile.MIN))
    await vault.unlock(pw())
    assert vault.state is VaultState.UNLOCKED
    assert await vault.put(pw(), "ex", "static", {"token": TOKEN}, replace=False) is True
    assert (await vault.get("ex", 0))["token"] == TOKEN
    vault.lock()
    assert vault.state is VaultState.LOCKED
    await expect(ErrorCode.LOCKED, vault.get("ex", 0))


async def test_credentials_survive_a_restart(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = await ready_vault(tmp_path, nursery)
    await vault.put(pw(), "ex", "static", {"token": TOKEN}, replace=False)
    vault.lock()
    again = Vault(tmp_path, nursery=nursery)
    assert again.state is VaultState.LOCKED
    await again.unlock(pw())
    assert (await again.get("ex", 0))["token"] == TOKEN
    assert again.generation == 2


async def test_lock_wipes_every_secret(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = await ready_vault(tmp_path, nursery)
    await vault.put(pw(), "ex", "static", {"token": TOKEN}, replace=False)
    assert (await vault.get("ex", 0))["token"] == TOKEN
    credential = vault._credentials["ex"]
    issued = credential.issued
    data_key = vault._open.data_key if vault._open else None
    assert data_key is not None and issued is not None
    vault.lock()
    assert credential.provider._token.wiped and issued.token.wiped and data_key.wiped  # type: ignore[attr-defined]


async def test_failed_passphrases_wait_longer_each_time_up_to_a_cap(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: Any
) -> None:
    vault = Vault(tmp_path, nursery=nursery, failure_delay=FailureDelay(step=0.1, cap=0.35))
    await vault.init(pw(), KdfProfile.MIN)
    waits = []
    for _ in range(5):
        start = trio.current_time()
        await expect(ErrorCode.BAD_PASSPHRASE, vault.unlock(pw("wrong passphrase")))
        waits.append(round(trio.current_time() - start, 3))
    assert waits == [0.1, 0.2, 0.3, 0.35, 0.35]
    await vault.unlock(pw())
    assert vault.failed_attempts == 0


async def test_parallel_guesses_are_serialised(nursery: trio.Nursery, tmp_path: Path, autojump_clock: Any) -> None:
    vault = Vault(tmp_path, nursery=nursery, failure_delay=FailureDelay(step=1.0, cap=10.0))
    await vault.init(pw(), KdfProfile.MIN)
    start = trio.current_time()
    async with trio.open_nursery() as guesses:
        for _ in range(3):
            guesses.start_soon(lambda: expect(ErrorCode.BAD_PASSPHRASE, vault.unlock(pw("guess 1234"))))
    assert trio.current_time() - start == pytest.approx(1 + 2 + 3)


async def test_admin_calls_need_the_passphrase(nursery: trio.Nursery, tmp_path: Path, autojump_clock: Any) -> None:
    vault = await ready_vault(tmp_path, nursery)
    await expect(ErrorCode.BAD_PASSPHRASE, vault.put(pw("wrong one!"), "ex", "static", {"token": TOKEN}, replace=False))
    await expect(ErrorCode.BAD_PASSPHRASE, vault.list(pw("wrong one!")))
    assert vault.describe() == []
    vault.lock()
    await expect(ErrorCode.LOCKED, vault.put(pw(), "ex", "static", {"token": TOKEN}, replace=False))


async def test_put_replace_and_remove(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = await ready_vault(tmp_path, nursery)
    await vault.put(pw(), "ex", "static", {"token": TOKEN}, replace=False)
    await expect(ErrorCode.ALREADY_EXISTS, vault.put(pw(), "ex", "static", {"token": "fake-2"}, replace=False))
    assert (await vault.get("ex", 0))["token"] == TOKEN
    assert await vault.put(pw(), "ex", "static", {"token": "fake-2"}, replace=True) is False
    assert (await vault.get("ex", 0))["token"] == "fake-2"
    await expect(ErrorCode.INVALID_PARAMS, vault.put(pw(), "bad", "static", {"token": ""}, replace=False))
    await vault.remove(pw(), "ex")
    await expect(ErrorCode.UNKNOWN_CREDENTIAL, vault.get("ex", 0))
    await expect(ErrorCode.UNKNOWN_CREDENTIAL, vault.remove(pw(), "ex"))


async def test_a_failed_write_changes_nothing_and_is_reported(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = await ready_vault(tmp_path, nursery)
    await vault.put(pw(), "a", "static", {"token": TOKEN}, replace=False)
    on_disk = vault.path.read_bytes()
    generation = vault.generation
    vault.backup.unlink()
    vault.backup.mkdir()  # a real failure: the backup step cannot replace a directory
    error = await expect(ErrorCode.STORAGE_FAILED, vault.put(pw(), "b", "static", {"token": "fake-b"}, replace=False))
    assert "not saved" in str(error)
    assert vault.path.read_bytes() == on_disk
    assert [c["name"] for c in vault.describe()] == ["a"]
    assert vault.last_write_error is not None
    vault.backup.rmdir()
    await vault.put(pw(), "b", "static", {"token": "fake-b"}, replace=False)
    assert vault.last_write_error is None
    assert vault.generation > generation + 1, "the failed write's generation is never reused"


async def test_expiry_follows_the_wall_clock(nursery: trio.Nursery, tmp_path: Path) -> None:
    clock = WallClock()
    vault = await ready_vault(tmp_path, nursery, clock=clock)
    await vault.put(pw(), "ex", "static", {"token": TOKEN, "not_after": clock.now + 60}, replace=False)
    assert (await vault.get("ex", 0))["ttl"] == pytest.approx(60)
    clock.now += 61  # e.g. the machine was suspended
    await expect(ErrorCode.TOKEN_EXPIRED, vault.get("ex", 0))
    assert vault.describe()[0]["state"] == "EXPIRED"


async def test_damaged_file_fails_unlock_and_stays_as_it_was(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = Vault(tmp_path, nursery=nursery)
    await vault.init(pw(), KdfProfile.MIN)
    original = vault.path.read_bytes()
    damaged = bytearray(original)
    damaged[-5] ^= 0xFF
    vault.path.write_bytes(bytes(damaged))
    await expect(ErrorCode.BAD_PASSPHRASE, vault.unlock(pw()))
    assert vault.state is VaultState.LOCKED
    assert vault.path.read_bytes() == bytes(damaged)


async def test_init_refuses_when_only_the_backup_remains(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = await ready_vault(tmp_path, nursery)
    await vault.put(pw(), "a", "static", {"token": TOKEN}, replace=False)
    vault.path.unlink()
    fresh = Vault(tmp_path, nursery=nursery)
    assert fresh.state is VaultState.UNINITIALIZED
    error = await expect(ErrorCode.ALREADY_INITIALIZED, fresh.init(pw(), KdfProfile.MIN))
    assert "vault.bak" in str(error)


class PausedVault(Vault):
    """A real vault whose key derivation waits for the test, to land a lock inside it."""

    def __init__(self, data_dir: Path, nursery: trio.Nursery) -> None:
        super().__init__(data_dir, nursery=nursery)
        self.in_kdf = threading.Event()
        self.resume = threading.Event()
        self.armed = True

    def _pause(self) -> None:
        if self.armed:
            self.in_kdf.set()
            self.resume.wait(10)

    def _read_and_open(self, passphrase: Secret) -> Any:
        self._pause()
        return super()._read_and_open(passphrase)


async def _lock_during(vault: PausedVault, call: Any) -> list[object]:
    outcome: list[object] = []

    async def run() -> None:
        try:
            await call()
            outcome.append("done")
        except RpcError as exc:
            outcome.append(exc.code)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.to_thread.run_sync(vault.in_kdf.wait, 10)
        vault.lock()
        vault.resume.set()
    return outcome


@pytest.mark.parametrize("call", ["put", "list", "remove", "unlock again"])
async def test_a_lock_during_an_admin_call_answers_locked(
    nursery: trio.Nursery, tmp_path: Path, call: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = PausedVault(tmp_path, nursery)
    vault.armed = False
    await vault.init(pw(), KdfProfile.MIN)
    await vault.unlock(pw())
    await vault.put(pw(), "a", "static", {"token": TOKEN}, replace=False)
    vault.armed = True
    real_unwrap = vault_module._vaultfile.unwrap

    def paused_unwrap(*args: Any) -> Any:
        vault._pause()
        return real_unwrap(*args)

    monkeypatch.setattr(vault_module._vaultfile, "unwrap", paused_unwrap)
    calls = {
        "put": lambda: vault.put(pw(), "b", "static", {"token": "fake-b"}, replace=False),
        "list": lambda: vault.list(pw()),
        "remove": lambda: vault.remove(pw(), "a"),
        "unlock again": lambda: vault.unlock(pw()),
    }
    assert await _lock_during(vault, calls[call]) == [ErrorCode.LOCKED]
    assert vault.state is VaultState.LOCKED
    vault.armed = False
    await vault.unlock(pw())
    assert [c["name"] for c in vault.describe()] == ["a"], "nothing changed"


async def test_a_lock_during_an_unlock_wins(nursery: trio.Nursery, tmp_path: Path) -> None:
    """The emergency brake: a lock that lands while the KDF runs must not be undone."""
    vault = PausedVault(tmp_path, nursery)
    await vault.init(pw(), KdfProfile.MIN)
    assert await _lock_during(vault, lambda: vault.unlock(pw())) == [ErrorCode.LOCKED]
    assert vault.state is VaultState.LOCKED


async def test_status_knows_the_generation_before_unlock(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = await ready_vault(tmp_path, nursery)
    await vault.put(pw(), "a", "static", {"token": TOKEN}, replace=False)
    restarted = Vault(tmp_path, nursery=nursery)
    assert restarted.generation == 2 and restarted.kdf_profile() == "min"


async def test_when_only_the_folder_fsync_fails_memory_still_matches_the_file(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Injected: a real failing fsync needs a failing block device, which this sandbox lacks.
    vault = await ready_vault(tmp_path, nursery)
    await vault.put(pw(), "a", "static", {"token": TOKEN}, replace=False)

    def failing_dir_fsync(directory: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic_module, "fsync_dir", failing_dir_fsync)
    error = await expect(ErrorCode.STORAGE_FAILED, vault.put(pw(), "b", "static", {"token": "fake-b"}, replace=False))
    assert "in effect" in str(error)
    assert [c["name"] for c in vault.describe()] == ["a", "b"], "memory holds what the file holds"
    assert vault.last_write_error is not None
    monkeypatch.undo()
    vault.lock()
    await vault.unlock(pw())
    assert [c["name"] for c in vault.describe()] == ["a", "b"]
    assert (await vault.get("b", 0))["token"] == "fake-b"
