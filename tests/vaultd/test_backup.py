"""Backup, restore and holds in-process, on trio's autojump clock, against the fake exchange on 127.0.0.1.

The end-to-end story (two daemons, a live one renewing) is tests/integration/test_backup_restore.py;
these pin the rule for what is held and what a hold stops, hour by virtual hour.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from vaultd._backup import needs_hold
from vaultd._credentials import from_record
from vaultd._fake_exchange import FakeExchange
from vaultd._secret import Secret
from vaultd._vault import Vault
from vaultd._vaultfile import decode, encode
from vaultd_protocol import ErrorCode, KdfProfile

from .bao_standin import StandInBao, serving, upstream_config
from .renewal_tools import PASS, Wall, add, inline, open_vault, refused, state
from .test_renewer import oauth


@pytest.mark.parametrize(
    ("record", "held"),
    [
        ({"kind": "oauth2", "config": {"grant_type": "refresh_token", "refresh_token": "fake-rt"}}, True),
        ({"kind": "oauth2", "config": {"grant_type": "client_credentials", "refresh_token": None}}, False),
        ({"kind": "oauth2", "config": {"grant_type": "client_credentials", "refresh_token": "fake-rt"}}, True),
        ({"kind": "oauth2", "config": {"grant_type": "authorization_code", "refresh_token": "fake-rt"}}, True),
        ({"kind": "oauth2", "config": None}, True),
        ({"kind": "exec", "config": {"command": ["/usr/bin/aws-helper"]}}, True),
        ({"kind": "kind-from-a-newer-vaultd", "config": {}}, True),
        ({"kind": "static", "config": {"token": "fake"}}, False),
        ({"kind": "jwt", "config": {}}, False),
        ({"kind": "sign", "config": {}}, False),
        ({"kind": "keepalive", "config": {}}, False),
    ],
)
def test_what_a_restore_holds_when_unknown_it_holds(record: dict[str, Any], held: bool) -> None:
    assert needs_hold(record) is held


def test_a_hold_that_is_not_text_is_a_record_this_version_cannot_read() -> None:
    record = {"kind": "static", "config": {"token": "fake-token-1"}, "created_at": 1.0, "updated_at": 1.0}
    assert from_record("a", {**record, "hold": "restored"}).hold == "restored"
    assert from_record("a", record).hold is None
    with pytest.raises(TypeError):
        from_record("a", {**record, "hold": 1})


async def test_a_held_credential_sends_nothing_upstream_for_hours_then_renews_once_released(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    exchange.behaviour.expires_in = 90
    (tmp_path / "live").mkdir()
    live = await open_vault(nursery, tmp_path / "live", wall)
    await add(live, "rot", oauth(exchange))
    await add(live, "cc", oauth(exchange, grant_type="client_credentials", refresh_token=None))
    await live.get("rot", 0)
    made = await live.backup_to(Secret(PASS), tmp_path / "copy", force=False)
    live.lock()  # the live vault is stopped before the copy is released: nothing races

    (tmp_path / "new").mkdir()
    new = Vault(tmp_path / "new", nursery=nursery, clock=wall, blocking=inline)
    restored = await new.restore_from(Secret(PASS), tmp_path / "copy")
    assert restored["held"] == ["rot"] and restored["generation"] == made["generation"] + 1
    calls = exchange.calls.get("/oauth/token", 0)
    await new.unlock(Secret(PASS))
    assert state(new, "rot")["state"] == "ON_HOLD" and "vaultctl release rot" in state(new, "rot")["hold"]
    assert (await new.get("cc", 0))["token"], "client_credentials: nothing rotates, served"

    for attempt in (lambda: new.get("rot", 0), lambda: new.renew(Secret(PASS), "rot")):
        error = await refused(attempt())
        assert error.code is ErrorCode.ON_HOLD and "on hold: restored from a backup" in str(error)
    await trio.sleep(6 * 3600)
    assert state(new, "cc")["upstream_calls"] > 300, "'cc' renewed all along"
    assert exchange.calls["/oauth/token"] - calls == state(new, "cc")["upstream_calls"], "every call was 'cc''s"
    assert state(new, "rot")["upstream_calls"] == 0 and state(new, "rot")["state"] == "ON_HOLD"

    wrong = await refused(new.release(Secret("not the passphrase"), "rot"))
    assert wrong.code is ErrorCode.BAD_PASSPHRASE and state(new, "rot")["state"] == "ON_HOLD"
    described = await new.release(Secret(PASS), "rot")
    assert described["hold"] is None
    served = await new.get("rot", 0)
    assert served["token"] == exchange.issued_access[-1]
    assert state(new, "rot")["upstream_calls"] == 1
    not_held = await refused(new.release(Secret(PASS), "rot"))
    assert not_held.code is ErrorCode.INVALID_PARAMS and "not on hold" in str(not_held)
    assert await new.clear_hold("rot") is False


async def test_a_login_path_ends_a_hold_without_the_passphrase_and_the_release_is_sealed(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    (tmp_path / "live").mkdir()
    live = await open_vault(nursery, tmp_path / "live", wall)
    await add(live, "rot", oauth(exchange))
    await live.backup_to(Secret(PASS), tmp_path / "copy")
    live.lock()
    (tmp_path / "new").mkdir()
    new = Vault(tmp_path / "new", nursery=nursery, clock=wall, blocking=inline)
    await new.restore_from(Secret(PASS), tmp_path / "copy")
    await new.unlock(Secret(PASS))
    assert await new.clear_hold("rot") is True
    new.lock()
    await new.unlock(Secret(PASS))
    assert state(new, "rot")["hold"] is None, "the release was written to the vault"
    await trio.sleep(1)
    assert state(new, "rot")["state"] == "FRESH"


async def test_a_path_with_a_nul_byte_or_relative_is_refused_by_name(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    for path in (Path("/tmp/a\x00b"), Path("relative/backup")):
        error = await refused(vault.backup_to(Secret(PASS), path))
        assert error.code is ErrorCode.INVALID_PARAMS and "'path'" in str(error)
    vault.lock()
    for path in (Path("/tmp/a\x00b"), Path("relative/backup")):
        error = await refused(vault.restore_from(Secret(PASS), path))
        assert error.code is ErrorCode.INVALID_PARAMS and "'path'" in str(error)


async def test_backup_with_lock_waits_for_a_renewal_in_flight_so_the_copy_holds_its_rotation(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    """The exchange has rotated the refresh token but not answered yet: a copy made now would
    hold the token it just retired. ``backup --lock`` waits for the answer, then copies and locks."""
    vault = await open_vault(nursery, tmp_path, wall)
    config = oauth(exchange)
    first = config["refresh_token"]
    await add(vault, "rot", config)
    await vault.get("rot", 0)
    exchange.behaviour.fault, exchange.behaviour.times, exchange.behaviour.delay = "late", 1, 5.0
    nursery.start_soon(vault.renew, Secret(PASS), "rot")
    await trio.sleep(1)
    rotated = exchange.current_refresh_token(first)
    assert rotated is not None and rotated != first
    assert (
        decode((tmp_path / "vault").read_bytes(), Secret(PASS))[2]["credentials"]["rot"]["config"]["refresh_token"]
        != rotated
    ), "in flight: not in the vault yet"

    started = trio.current_time()
    made = await vault.backup_to(Secret(PASS), tmp_path / "move", then_lock=True)
    assert trio.current_time() - started == pytest.approx(4, abs=0.5), "it waited for the answer"
    assert made["locked"] is True and str(vault.state) == "LOCKED"
    body = decode((tmp_path / "move").read_bytes(), Secret(PASS))[2]
    assert body["credentials"]["rot"]["config"]["refresh_token"] == rotated, "the copy holds the rotation"
    assert (tmp_path / "move").read_bytes() == (tmp_path / "vault").read_bytes(), "and nothing was written since"


# -- the security review's findings (each failed before its fix) ---------------------------------


async def own_vault(nursery: trio.Nursery, folder: Path, wall: Wall, passphrase: str) -> Vault:
    """A vault sealed under ``passphrase`` (someone else's, or an older one), unlocked, in a new ``folder``."""
    await trio.Path(folder).mkdir()
    vault = Vault(folder, nursery=nursery, clock=wall, blocking=inline)
    await vault.init(Secret(passphrase), KdfProfile.MIN)
    await vault.unlock(Secret(passphrase))
    return vault


async def test_a_restore_over_a_vault_needs_the_current_passphrase_first_and_keeps_the_replaced_vault(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, autojump_clock: Any
) -> None:
    """A process that may lock the vault (any process of the user) must not replace it with a vault
    of its own: the restore's ``passphrase`` must open the vault there, checked before the path is
    even opened (no file-existence oracle), through the failure delay."""
    (tmp_path / "data").mkdir()
    vault = await open_vault(nursery, tmp_path / "data", wall)
    await vault.put(Secret(PASS), "mine", "static", {"token": "fake-token-operator"}, replace=False)
    attacker = await own_vault(nursery, tmp_path / "attacker", wall, "the attacker's fake passphrase")
    await attacker.put(
        Secret("the attacker's fake passphrase"), "mine", "static", {"token": "fake-evil"}, replace=False
    )
    await attacker.backup_to(Secret("the attacker's fake passphrase"), tmp_path / "evil")
    vault.lock()
    before = (tmp_path / "data" / "vault").read_bytes()

    evil = Secret("the attacker's fake passphrase")
    for path in (tmp_path / "evil", tmp_path / "no-such-file"):
        error = await refused(vault.restore_from(evil, path))
        assert error.code is ErrorCode.BAD_PASSPHRASE and "'passphrase'" in str(error), str(error)
        assert "no-such-file" not in str(error), "no oracle: the path is not opened before the check"
    assert vault.failed_attempts == 2, "each refusal counted through the daemon-wide delay"
    error = await refused(vault.restore_from(evil, tmp_path / "evil", backup_passphrase=evil))
    assert error.code is ErrorCode.BAD_PASSPHRASE
    assert (tmp_path / "data" / "vault").read_bytes() == before, "nothing replaced"

    # The operator's passphrase, the backup's own given apart: restored, and the old vault kept.
    await trio.sleep(10)
    done = await vault.restore_from(Secret(PASS), tmp_path / "evil", backup_passphrase=evil)
    assert done["passphrase_changed"] is True
    previous = trio.Path(done["previous"])
    assert previous.parent == trio.Path(tmp_path / "data") and previous.name.startswith("vault.pre-restore-")
    assert await previous.read_bytes() == before and stat.S_IMODE((await previous.stat()).st_mode) == 0o600
    await vault.unlock(evil)
    for i in range(3):  # later writes rotate vault.bak, never the pre-restore copy
        await vault.put(evil, f"n{i}", "static", {"token": f"fake-token-{i}"}, replace=False)
    assert await previous.read_bytes() == before
    vault.lock()
    await trio.sleep(1)
    again = await vault.restore_from(evil, tmp_path / "evil")
    assert again["passphrase_changed"] is False and again["previous"] != done["previous"]
    assert await previous.read_bytes() == before, "a second restore keeps the first one's copy"


async def test_a_backup_from_before_a_passphrase_change_restores_with_its_own_passphrase(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, autojump_clock: Any
) -> None:
    (tmp_path / "data").mkdir()
    vault = await open_vault(nursery, tmp_path / "data", wall)
    await vault.backup_to(Secret(PASS), tmp_path / "old")
    await vault.rekey(Secret(PASS), Secret("a new fake passphrase"))
    vault.lock()
    new = Secret("a new fake passphrase")
    error = await refused(vault.restore_from(new, tmp_path / "old"))
    assert error.code is ErrorCode.BAD_PASSPHRASE and "'backup_passphrase'" in str(error), str(error)
    done = await vault.restore_from(new, tmp_path / "old", backup_passphrase=Secret(PASS))
    assert done["passphrase_changed"] is True
    await vault.unlock(Secret(PASS))  # installed as it is: it opens with the backup's passphrase


async def test_a_new_openbao_version_keeps_a_restored_credential_on_hold(
    nursery: trio.Nursery,
    tmp_path: Path,
    exchange: FakeExchange,
    wall: Wall,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: Any,
) -> None:
    """The restored copy adopts a new version of its record (a scope changed): it stays held, so
    it never presents the refresh token the live copy rotated (the strict exchange would revoke
    the family)."""
    exchange.behaviour.expires_in = 90
    with serving(monkeypatch, StandInBao()) as bao:
        (tmp_path / "live").mkdir()
        live = await open_vault(nursery, tmp_path / "live", wall)
        await live.put_upstream(Secret(PASS), "bao", "openbao", upstream_config(), replace=False)
        config = oauth(exchange)
        first = config["refresh_token"]
        bao.put("desk/oauth", config)
        source = {"upstream": "bao", "path": "desk/oauth", "refresh": 60}
        await live.put(Secret(PASS), "rot", "oauth2", None, replace=False, source=source)
        await live.get("rot", 0)  # rotates 'first'
        await live.backup_to(Secret(PASS), tmp_path / "copy")
        live.lock()

        (tmp_path / "new").mkdir()
        new = Vault(tmp_path / "new", nursery=nursery, clock=wall, blocking=inline)
        await new.restore_from(Secret(PASS), tmp_path / "copy")
        calls = exchange.calls["/oauth/token"]
        await new.unlock(Secret(PASS))
        assert state(new, "rot")["state"] == "ON_HOLD"
        bao.put("desk/oauth", {**config, "scope": "read"})
        await trio.sleep(3600)
        assert state(new, "rot")["source"]["version"] == 2, "the new version was adopted"
        assert state(new, "rot")["state"] == "ON_HOLD"
        assert exchange.calls["/oauth/token"] == calls, "nothing went to the token endpoint (OpenBao is read)"
        assert not exchange.family_revoked(first)
        new.lock()
        await new.unlock(Secret(PASS))
        assert state(new, "rot")["state"] == "ON_HOLD", "the hold was sealed with the new version"

        # A replacement by the operator ends it, as documented.
        await new.put(Secret(PASS), "rot", "oauth2", oauth(exchange), replace=True)
        assert state(new, "rot")["hold"] is None


BAD_NAMES = ["$(id>/tmp/x)", "\x1b[2Jcleared", "a b", "", "x" * 65]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_a_sealed_record_with_a_name_that_is_not_a_credential_name_is_not_read(bad: str) -> None:
    record = {"kind": "static", "config": {"token": "fake-token-1"}, "created_at": 1.0, "updated_at": 1.0}
    with pytest.raises(ValueError):
        from_record(bad, record)


async def crafted_backup(tmp_path: Path, wall: Wall, nursery: trio.Nursery, names: list[str]) -> Path:
    """A vault file sealed under PASS whose records carry ``names`` as they are (a crafted file)."""
    (tmp_path / "craft").mkdir()
    crafter = await open_vault(nursery, tmp_path / "craft", wall)
    for i, _ in enumerate(names):
        await crafter.put(Secret(PASS), f"c{i}", "static", {"token": f"fake-token-{i}"}, replace=False)
    crafter.lock()
    data = (tmp_path / "craft" / "vault").read_bytes()
    header, key, body = decode(data, Secret(PASS))
    body["credentials"] = {name: body["credentials"][f"c{i}"] for i, name in enumerate(names)}
    path = tmp_path / "crafted"
    path.write_bytes(encode(header, key, body))
    return path


async def test_a_restore_refuses_a_file_with_a_crafted_name_naming_the_record_by_index(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, autojump_clock: Any
) -> None:
    path = await crafted_backup(tmp_path, wall, nursery, ["fine", "$(id>/tmp/x)\x1b[2J"])
    (tmp_path / "new").mkdir()
    new = Vault(tmp_path / "new", nursery=nursery, clock=wall, blocking=inline)
    error = await refused(new.restore_from(Secret(PASS), path))
    assert error.code is ErrorCode.INVALID_PARAMS and "record #2" in str(error), str(error)
    assert "$(id" not in str(error) and "\x1b" not in str(error)
    assert not (tmp_path / "new" / "vault").exists()


async def test_an_existing_vault_with_a_crafted_name_unlocks_without_that_record(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    path = await crafted_backup(tmp_path, wall, nursery, ["fine", "$(id>/tmp/x)"])
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "vault").write_bytes(path.read_bytes())
    vault = Vault(tmp_path / "data", nursery=nursery, clock=wall, blocking=inline)
    await vault.unlock(Secret(PASS), accept_rollback=True)
    assert [c["name"] for c in vault.describe()] == ["fine"]
    assert "record #2" in caplog.text and "$(id" not in caplog.text


async def test_backup_force_replaces_only_a_vault_file(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, autojump_clock: Any
) -> None:
    (tmp_path / "data").mkdir()
    vault = await open_vault(nursery, tmp_path / "data", wall)
    log = tmp_path / "audit.log"
    log.write_text('{"method": "token.get", "outcome": "ok"}\n')
    error = await refused(vault.backup_to(Secret(PASS), log, force=True))
    assert error.code is ErrorCode.INVALID_PARAMS and "not a vault file" in str(error), str(error)
    assert log.read_text() == '{"method": "token.get", "outcome": "ok"}\n'
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert (await refused(vault.backup_to(Secret(PASS), empty, force=True))).code is ErrorCode.INVALID_PARAMS
    older = await vault.backup_to(Secret(PASS), tmp_path / "older")
    await vault.put(Secret(PASS), "later", "static", {"token": "fake-token-later"}, replace=False)
    newer = await vault.backup_to(Secret(PASS), tmp_path / "older", force=True)
    assert newer["generation"] == older["generation"] + 1
