"""The vault's newer admin state: the passphrase change, the sealed policy, the audit key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from vaultd import _vaultfile
from vaultd._sealing import OpenFailed
from vaultd._secret import Secret
from vaultd._vault import Vault
from vaultd_protocol import ErrorCode, KdfProfile

from .test_vault import PASS, TOKEN, expect, pw, ready_vault

NEW = "fake new passphrase 2"


async def test_rekey_changes_the_passphrase_and_keeps_everything_else(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = await ready_vault(tmp_path, nursery)
    await vault.put(pw(), "a", "static", {"token": TOKEN}, replace=False)
    generation = vault.generation
    await vault.rekey(pw(), pw(NEW))
    assert (await vault.get("a", 0))["token"] == TOKEN, "still unlocked, still serving"
    assert vault.generation == generation + 2, "written twice: vault.bak is sealed under the new passphrase too"
    await expect(ErrorCode.BAD_PASSPHRASE, vault.list(pw()))
    assert [c["name"] for c in await vault.list(pw(NEW))] == ["a"]
    await vault.put(pw(NEW), "b", "static", {"token": "fake-b"}, replace=False)  # later writes keep the new wrap
    vault.lock()
    await expect(ErrorCode.BAD_PASSPHRASE, vault.unlock(pw()))
    await vault.unlock(pw(NEW))
    assert sorted(c["name"] for c in vault.describe()) == ["a", "b"]
    _, _, body = _vaultfile.decode(vault.path.read_bytes(), Secret(NEW))
    assert sorted(body["credentials"]) == ["a", "b"]


async def test_after_a_rekey_the_old_passphrase_opens_neither_file_nor_what_is_written_next(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    vault = await ready_vault(tmp_path, nursery)
    await vault.put(pw(), "a", "static", {"token": TOKEN}, replace=False)
    old_copy = vault.path.read_bytes()  # e.g. a backup taken before the change
    _, old_key, _ = _vaultfile.decode(old_copy, Secret(PASS))
    await vault.rekey(pw(), pw(NEW))
    for path in (vault.path, vault.backup):
        with pytest.raises(OpenFailed):
            _vaultfile.decode(path.read_bytes(), Secret(PASS))
        _vaultfile.decode(path.read_bytes(), Secret(NEW))
    _, end = _vaultfile.read_header(vault.path.read_bytes())
    with pytest.raises(OpenFailed):  # the old data key (from the old copy) does not open the new file
        _vaultfile.decode_body(vault.path.read_bytes(), end, old_key)


async def test_rekey_refuses_a_wrong_passphrase_and_a_locked_vault(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = await ready_vault(tmp_path, nursery)
    on_disk = vault.path.read_bytes()
    await expect(ErrorCode.BAD_PASSPHRASE, vault.rekey(pw("fake wrong passphrase"), pw(NEW)))
    assert vault.path.read_bytes() == on_disk
    vault.lock()
    await expect(ErrorCode.LOCKED, vault.rekey(pw(), pw(NEW)))


async def test_tokens_are_served_while_a_rekey_runs_its_kdf(nursery: trio.Nursery, tmp_path: Path) -> None:
    started, release = trio.Event(), trio.Event()

    async def slow_blocking(fn: Any, *args: Any) -> Any:
        if fn is _vaultfile.rekey:  # hold the KDF until the test has fetched a token
            started.set()
            await release.wait()
        return fn(*args)

    vault = Vault(tmp_path, nursery=nursery, blocking=slow_blocking)
    await vault.init(pw(), KdfProfile.MIN)
    await vault.unlock(pw())
    await vault.put(pw(), "a", "static", {"token": TOKEN}, replace=False)
    async with trio.open_nursery() as inner:
        inner.start_soon(vault.rekey, pw(), pw(NEW))
        await started.wait()
        assert (await vault.get("a", 0))["token"] == TOKEN
        assert vault.get_now("a", 0) is not None
        release.set()
    await vault.list(pw(NEW))


async def test_the_policy_is_sealed_in_the_vault_and_set_with_the_passphrase(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    vault = await ready_vault(tmp_path, nursery)
    assert vault.policy() == {"rules": []}
    assert await vault.get_policy(pw()) == {"rules": []}
    rules = {"rules": [{"unit": "engine-a.service", "credentials": ["deribit*"], "methods": ["get"]}]}
    await expect(ErrorCode.BAD_PASSPHRASE, vault.set_policy(pw("fake wrong passphrase"), rules))
    await vault.set_policy(pw(), rules)
    assert vault.policy() == rules
    vault.lock()
    assert vault.policy() is None, "locked: the policy is sealed"
    raw = vault.path.read_bytes()
    assert b"engine-a.service" not in raw, "the policy is inside the sealed body"
    await vault.unlock(pw())
    assert await vault.get_policy(pw()) == rules


async def test_a_failed_policy_write_leaves_the_old_policy(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = await ready_vault(tmp_path, nursery)
    vault.backup.unlink(missing_ok=True)
    vault.backup.mkdir()  # the backup step cannot replace a directory: the write fails
    await expect(ErrorCode.STORAGE_FAILED, vault.set_policy(pw(), {"rules": [{"uid": 1, "methods": ["get"]}]}))
    assert vault.policy() == {"rules": []}


async def test_token_fingerprints_are_keyed_and_stable_across_unlocks(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = await ready_vault(tmp_path, nursery)
    first = vault.fingerprint(TOKEN)
    assert first is not None and len(first) == 16 and TOKEN not in first
    assert vault.fingerprint("fake-other-token") != first
    vault.lock()
    assert vault.fingerprint(TOKEN) is None
    await vault.unlock(pw())
    assert vault.fingerprint(TOKEN) == first
    (tmp_path / "other").mkdir(mode=0o700)
    other = await ready_vault(tmp_path / "other", nursery)
    assert other.fingerprint(TOKEN) != first, "another vault, another key"


async def test_a_vault_written_before_policies_opens_with_no_rules(nursery: trio.Nursery, tmp_path: Path) -> None:
    header, data_key = _vaultfile.new_vault(Secret(PASS), KdfProfile.MIN)
    (tmp_path / "vault").write_bytes(_vaultfile.encode(header, data_key, {"credentials": {}}))
    vault = Vault(tmp_path, nursery=nursery)
    await vault.unlock(pw())
    assert vault.policy() == {"rules": []}
    fingerprint = vault.fingerprint(TOKEN)
    await vault.put(pw(), "a", "static", {"token": TOKEN}, replace=False)  # the key is written from now on
    vault.lock()
    await vault.unlock(pw())
    assert vault.fingerprint(TOKEN) == fingerprint
