"""Backup, restore and holds in-process, on trio's autojump clock, against the fake exchange on 127.0.0.1.

The end-to-end story (two daemons, a live one renewing) is tests/integration/test_backup_restore.py;
these pin the rule for what is held and what a hold stops, hour by virtual hour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from vaultd._backup import needs_hold
from vaultd._credentials import from_record
from vaultd._fake_exchange import FakeExchange
from vaultd._secret import Secret
from vaultd._vault import Vault
from vaultd._vaultfile import decode
from vaultd_protocol import ErrorCode

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
