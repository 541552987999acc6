"""A rolled-back vault is noticed at unlock (issue 14, item 5): real files, the MIN KDF.

Each "restart" is a new :class:`Vault` on the same folders, as a new daemon process would be.
The worst case, a rotated refresh token put back by an old copy, runs against the fake
exchange on 127.0.0.1 in the same trio run (virtual time).
"""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from vaultd import _atomic as atomic_module
from vaultd._atomic import ensure_private_dir
from vaultd._errors import RpcError
from vaultd._fake_exchange import FakeExchange
from vaultd._secret import Secret
from vaultd._vault import Vault
from vaultd._vaultfile import decode
from vaultd_protocol import ErrorCode, KdfProfile, VaultState

from .renewal_tools import Wall, inline

PASS = "fake passphrase 1"
TOKEN = "fake-token-rb-1"


def pw() -> Secret:
    return Secret(PASS)


def record(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "vault.generation").read_bytes())
    return data


async def started(nursery: trio.Nursery, data: Path, **options: Any) -> Vault:
    """A vault on ``data`` as a freshly started daemon has it (locked)."""
    return Vault(data, nursery=nursery, blocking=inline, **options)


async def created(nursery: trio.Nursery, data: Path, **options: Any) -> Vault:
    ensure_private_dir(data)
    vault = await started(nursery, data, **options)
    await vault.init(pw(), KdfProfile.MIN)
    await vault.unlock(pw())
    return vault


async def refused(vault: Vault, **options: Any) -> str:
    with pytest.raises(RpcError) as info:
        await vault.unlock(pw(), **options)
    assert info.value.code is ErrorCode.ROLLBACK, info.value
    assert vault.state is VaultState.LOCKED and vault.describe() == []
    return str(info.value)


async def test_a_fresh_vault_unlocks_and_its_record_follows_every_write(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = await created(nursery, tmp_path)
    assert record(tmp_path)["generation"] == 1
    assert stat.S_IMODE((tmp_path / "vault.generation").stat().st_mode) == 0o600
    await vault.put(pw(), "a", "static", {"token": TOKEN}, replace=False)
    await vault.set_policy(pw(), {"rules": []})
    await vault.rekey(pw(), Secret("fake passphrase 2"))  # two writes, the record key is unchanged
    assert record(tmp_path)["generation"] == vault.generation == 5
    vault.lock()
    again = await started(nursery, tmp_path)
    await again.unlock(Secret("fake passphrase 2"))
    assert again.generation == 5


async def test_vault_bak_copied_over_vault_is_refused_after_a_restart(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = await created(nursery, tmp_path)
    await vault.put(pw(), "a", "static", {"token": TOKEN}, replace=False)
    vault.lock()
    shutil.copy2(tmp_path / "vault.bak", tmp_path / "vault")  # generation 1 over generation 2
    restarted = await started(nursery, tmp_path)
    message = await refused(restarted)
    assert "generation 1" in message and "generation 2 was written before" in message
    assert "--accept-rollback" in message
    assert TOKEN not in message


async def test_an_old_copy_put_back_after_the_policy_was_tightened_and_a_credential_removed(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    vault = await created(nursery, tmp_path)
    await vault.put(pw(), "kept", "static", {"token": TOKEN}, replace=False)
    await vault.put(pw(), "gone", "static", {"token": "fake-token-rb-2"}, replace=False)
    old = (tmp_path / "vault").read_bytes()
    await vault.set_policy(pw(), {"rules": [{"uid": 4242, "methods": ["get"], "credentials": ["kept"]}]})
    await vault.remove(pw(), "gone")
    vault.lock()
    (tmp_path / "vault").write_bytes(old)
    message = await refused(vault)  # the same daemon, and after a restart
    assert "generation 3" in message and "generation 5" in message
    await refused(await started(nursery, tmp_path))


async def test_accept_rollback_unlocks_it_and_makes_it_the_newest(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = await created(nursery, tmp_path)
    await vault.put(pw(), "a", "static", {"token": TOKEN}, replace=False)
    await vault.remove(pw(), "a")
    vault.lock()
    shutil.copy2(tmp_path / "vault.bak", tmp_path / "vault")  # generation 2: 'a' is back
    restarted = await started(nursery, tmp_path)
    await refused(restarted)
    accepted = await restarted.unlock(pw(), accept_rollback=True)
    assert accepted == "generation 2 accepted; 3 was recorded"
    assert [c["name"] for c in restarted.describe()] == ["a"]
    assert restarted.generation == 4 and record(tmp_path)["generation"] == 4, "written again above the record"
    header_generation = decode((tmp_path / "vault").read_bytes(), pw())[0].generation
    assert header_generation == 4
    restarted.lock()
    assert await (await started(nursery, tmp_path)).unlock(pw()) == "", "the next unlock needs no acceptance"


async def test_accept_rollback_on_a_vault_that_is_not_rolled_back_changes_nothing(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    vault = await created(nursery, tmp_path)
    vault.lock()
    assert await vault.unlock(pw(), accept_rollback=True) == ""
    assert vault.generation == 1 and record(tmp_path)["generation"] == 1


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: {**r, "generation": r["generation"] - 1},  # a lower generation, the MAC kept
        lambda r: {**r, "mac": "0" * 64},
        lambda r: "not a record",
    ],
    ids=["generation", "mac", "garbage"],
)
async def test_a_tampered_record_is_a_clear_error_until_accepted(
    nursery: trio.Nursery, tmp_path: Path, tamper: Any
) -> None:
    vault = await created(nursery, tmp_path)
    await vault.put(pw(), "a", "static", {"token": TOKEN}, replace=False)
    vault.lock()
    changed = tamper(record(tmp_path))
    (tmp_path / "vault.generation").write_text(changed if isinstance(changed, str) else json.dumps(changed))
    message = await refused(await started(nursery, tmp_path))
    assert "vault.generation cannot be trusted" in message and "--accept-rollback" in message
    restarted = await started(nursery, tmp_path)
    accepted = await restarted.unlock(pw(), accept_rollback=True)
    assert accepted == "generation 2 accepted; untrusted record vault.generation replaced"
    assert record(tmp_path)["generation"] == 3


async def test_another_vaults_record_does_not_authenticate(nursery: trio.Nursery, tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    (await created(nursery, first)).lock()
    (await created(nursery, second)).lock()
    shutil.copy2(second / "vault.generation", first / "vault.generation")
    assert "does not match this vault's key" in await refused(await started(nursery, first))


async def test_a_missing_record_is_created_not_refused(nursery: trio.Nursery, tmp_path: Path) -> None:
    """The first unlock after an upgrade. (So an attacker who can delete the record as well as
    put back the file wins: SPEC.md and the README say so; the state-folder copy narrows it.)"""
    vault = await created(nursery, tmp_path)
    await vault.put(pw(), "a", "static", {"token": TOKEN}, replace=False)
    vault.lock()
    (tmp_path / "vault.generation").unlink()
    restarted = await started(nursery, tmp_path)
    assert await restarted.unlock(pw()) == ""
    assert record(tmp_path)["generation"] == 2


async def test_the_running_daemon_remembers_even_without_records(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = await created(nursery, tmp_path)
    await vault.put(pw(), "a", "static", {"token": TOKEN}, replace=False)
    vault.lock()
    (tmp_path / "vault.generation").unlink()
    shutil.copy2(tmp_path / "vault.bak", tmp_path / "vault")
    assert "generation 2 was written before" in await refused(vault)


async def test_a_new_vault_in_place_of_a_deleted_one_is_not_a_rollback(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = await created(nursery, tmp_path)
    await vault.put(pw(), "a", "static", {"token": TOKEN}, replace=False)
    vault.lock()
    (tmp_path / "vault").unlink()
    (tmp_path / "vault.bak").unlink()
    with pytest.raises(RpcError) as info:
        await vault.unlock(pw())
    assert info.value.code is ErrorCode.NOT_INITIALIZED
    await vault.init(pw(), KdfProfile.MIN)  # the same daemon: generation 1 again, records replaced
    await vault.unlock(pw())
    assert record(tmp_path)["generation"] == 1
    vault.lock()
    await (await started(nursery, tmp_path)).unlock(pw())


async def test_the_state_folder_record_catches_a_restore_of_the_whole_data_folder(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    data, state, saved = tmp_path / "data", tmp_path / "state", tmp_path / "saved"
    vault = await created(nursery, data, record_dirs=[state])
    (copies,) = state.glob("vault-*.generation")
    assert stat.S_IMODE(state.stat().st_mode) == 0o700 and stat.S_IMODE(copies.stat().st_mode) == 0o600
    shutil.copytree(data, saved)  # a backup of the data folder, record included
    await vault.put(pw(), "a", "static", {"token": TOKEN}, replace=False)
    vault.lock()
    shutil.rmtree(data)
    shutil.copytree(saved, data)
    assert "generation 1" in await refused(await started(nursery, data, record_dirs=[state]))


async def test_the_record_moves_only_once_the_write_is_durable(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Injected: a real failing fsync needs a failing block device, which this sandbox lacks.
    vault = await created(nursery, tmp_path)

    def failing_dir_fsync(directory: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic_module, "fsync_dir", failing_dir_fsync)
    with pytest.raises(RpcError):
        await vault.put(pw(), "a", "static", {"token": TOKEN}, replace=False)
    monkeypatch.undo()
    assert record(tmp_path)["generation"] == 1, "not recorded: a power loss may still undo that write"


async def test_a_rolled_back_rotating_refresh_token_is_never_used(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    """The worst case: an old copy holds a refresh token the exchange has rotated away.
    Presenting it would revoke the whole token family (reuse detection): the desk loses the
    credential. The unlock must refuse before the renewer can send it."""
    vault = Vault(tmp_path, nursery=nursery, clock=wall, blocking=inline)
    await vault.init(pw(), KdfProfile.MIN)
    await vault.unlock(pw())
    stale = exchange.new_refresh_token()
    config = {
        "token_url": exchange.url + "/oauth/token",
        "grant_type": "refresh_token",
        "client_id": "fake-client",
        "client_secret": "fake-secret",
        "refresh_token": stale,
    }
    await vault.put(pw(), "ex", "oauth2", config, replace=False)
    old_copy = (tmp_path / "vault").read_bytes()
    assert (await vault.get("ex", 0))["token"] in exchange.issued_access
    await vault.renew(pw(), "ex")
    stored = decode((tmp_path / "vault").read_bytes(), pw())[2]["credentials"]["ex"]["config"]["refresh_token"]
    assert stored != stale and exchange.current_refresh_token(stale) == stored, "rotated, and the new one saved"
    vault.lock()

    (tmp_path / "vault").write_bytes(old_copy)
    calls = exchange.calls["/oauth/token"]
    restarted = Vault(tmp_path, nursery=nursery, clock=wall, blocking=inline)
    await refused(restarted)
    await trio.sleep(3600)  # an hour: nothing may call upstream on the stale token's behalf
    assert exchange.calls["/oauth/token"] == calls, "the stale refresh token was sent upstream"
    assert not exchange.family_revoked(stored), "the family is intact: the current token still works"


async def test_a_lone_vault_bak_put_back_while_the_daemon_runs_unlocks_with_acceptance(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """An operator's recovery: the vault file is gone, vault.bak is moved into its place, no restart."""
    data = tmp_path / "data"
    vault = await created(nursery, data)
    await vault.put(pw(), "ex", "static", {"token": TOKEN}, replace=False)
    vault.lock()
    (data / "vault").unlink()
    vault = await started(nursery, data)  # the daemon restarted: nothing to unlock, and it says why
    assert vault.state is VaultState.UNINITIALIZED
    with pytest.raises(RpcError) as info:
        await vault.unlock(pw())
    assert info.value.code is ErrorCode.NOT_INITIALIZED
    assert "vault.bak is there: restore it" in str(info.value) and "--accept-rollback" in str(info.value)
    (data / "vault.bak").rename(data / "vault")  # as the message says, while the daemon runs
    await refused(vault)  # ROLLBACK, not NOT_INITIALIZED: the daemon sees the file now
    await vault.unlock(pw(), accept_rollback=True)
    assert vault.state is VaultState.UNLOCKED
