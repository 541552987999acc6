"""Backup and restore, end to end: real daemons, real vaultctl, the fake exchange with strict reuse detection.

A backup restored on "a new host" (a second daemon with a data folder of its own) while the
vault it came from keeps running must never present the refresh token the two share: it holds
the rotating credential until the operator releases it. Real time (several processes); every
wait polls a condition with a deadline.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from vaultd._secret import Secret
from vaultd._vaultfile import decode
from vaultd_client.errors import OnHold

from ..daemon_process import BIN, PASS, DaemonProcess, FakeExchangeProcess
from .test_terminal import Terminal

#: Tokens live 4 s: the live daemon renews (and rotates) about every 2.5 s.
LIFETIME = 4.0


@pytest.fixture
def exchange() -> Iterator[FakeExchangeProcess]:
    fake = FakeExchangeProcess(expires_in=LIFETIME)
    fake.control(reuse_grace=0.0)  # strict: a rotated refresh token presented again revokes the family
    yield fake
    fake.stop()


@pytest.fixture
def new_host(short_tmp: Path) -> Iterator[DaemonProcess]:
    """A second daemon, with its own data, state and runtime folders: another machine, as far as vaultd knows."""
    (short_tmp / "b").mkdir()
    proc = DaemonProcess(short_tmp / "b")
    yield proc
    if proc.proc is not None:
        assert proc.stop() == 0, proc.log
    assert proc.leaked() == []


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def credential(daemon: DaemonProcess, name: str) -> dict[str, Any]:
    with daemon.client() as client:
        found: dict[str, Any] = next(c for c in client.status()["credentials"] if c["name"] == name)
        return found


def add_rotating(daemon: DaemonProcess, exchange: FakeExchangeProcess) -> str:
    """Credential 'live' (oauth2, a refresh token the exchange rotates at every use); its first refresh token."""
    first: str = exchange.control(new_refresh_token=True)["refresh_token"]
    config = {
        "token_url": exchange.url + "/oauth/token",
        "grant_type": "refresh_token",
        "client_id": "fake-client",
        "client_secret": "fake-secret",
        "refresh_token": first,
    }
    daemon.ctl("add", "live", "--kind", "oauth2", *daemon.pw(), stdin=json.dumps(config))
    wait_for("'live' FRESH", lambda: credential(daemon, "live")["state"] == "FRESH")
    return first


def upstream_calls_settled(daemon: DaemonProcess, exchange: FakeExchangeProcess) -> tuple[int, int]:
    """(token endpoint calls the exchange saw, calls the daemon made), read with no renewal between."""
    while True:
        before = exchange.calls()
        made = credential(daemon, "live")["upstream_calls"]
        if exchange.calls() == before:
            return before, made


def backup(daemon: DaemonProcess, path: Path, *extra: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(daemon.ctl("backup", str(path), "--json", *daemon.pw(), *extra).stdout)
    return result


def restore(daemon: DaemonProcess, path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(daemon.ctl("restore", str(path), "--json", *daemon.pw()).stdout)
    return result


def audit(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in daemon.audit_log.read_text().splitlines()]


def test_a_restored_copy_holds_the_rotating_credential_while_the_live_vault_renews_then_moves_over(
    daemon: DaemonProcess, new_host: DaemonProcess, exchange: FakeExchangeProcess, short_tmp: Path
) -> None:
    daemon.start()
    daemon.ready()  # 'ex', static: never held
    first = add_rotating(daemon, exchange)
    copy = short_tmp / "backups" / "vault-1.backup"
    copy.parent.mkdir(mode=0o700)

    made = backup(daemon, copy)
    data = copy.read_bytes()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert made["fingerprint"] == hashlib.sha256(data).hexdigest() and made["bytes"] == len(data)
    with daemon.client() as client:
        assert made["generation"] == client.status()["generation"]
    header_generation = decode(data, Secret(PASS))[0].generation
    assert header_generation == made["generation"], "it opens with the vault's passphrase, at its generation"

    # A new host: a daemon with no vault at all. The restore checks the file, then writes it.
    new_host.start()
    restored = restore(new_host, copy)
    assert restored["held"] == ["live"] and restored["previous"] is None
    assert restored["fingerprint"] == made["fingerprint"]
    assert stat.S_IMODE((new_host.data_dir / "vault").stat().st_mode) == 0o600
    with new_host.client() as client:
        assert client.status()["state"] == "LOCKED"
    new_host.ctl("unlock", *new_host.pw())  # no --accept-rollback: the restore was recorded as accepted

    held = credential(new_host, "live")
    assert held["state"] == "ON_HOLD" and "vaultctl release live" in held["hold"]
    assert credential(new_host, "ex")["state"] == "FRESH", "a static token has nothing to race: served"
    status = new_host.ctl("status")
    assert "ON_HOLD" in status.stdout and "restored from a backup" in status.stdout
    with new_host.client() as client, pytest.raises(OnHold) as info:
        client.token("live")
    assert info.value.code == 27 and info.value.name == "ON_HOLD"
    refused = new_host.ctl("get", "live", check=False)
    assert refused.returncode == 1 and "(ON_HOLD)" in refused.stderr
    forced = new_host.ctl("renew", "live", *new_host.pw(), check=False)
    assert forced.returncode == 1 and "(ON_HOLD)" in forced.stderr, "not even a forced renewal goes upstream"

    # The live vault renews (rotating its refresh token) through two lifetimes; the copy sends nothing.
    start = credential(daemon, "live")["upstream_calls"]
    wait_for("two renewals on the live vault", lambda: credential(daemon, "live")["upstream_calls"] >= start + 2)
    seen, live_made = upstream_calls_settled(daemon, exchange)
    assert seen == live_made, "every token endpoint call came from the live vault"
    assert credential(new_host, "live")["upstream_calls"] == 0
    assert exchange.control(current_of=first)["current"] is not None, "the family was not revoked"

    # The hold survives a lock and unlock, and a restart.
    new_host.ctl("lock")
    new_host.ctl("unlock", *new_host.pw())
    assert credential(new_host, "live")["state"] == "ON_HOLD"
    assert new_host.stop() == 0
    new_host.start()
    new_host.ctl("unlock", *new_host.pw())
    assert credential(new_host, "live")["state"] == "ON_HOLD"
    assert credential(new_host, "live")["upstream_calls"] == 0

    # The move: the old host copies and locks in one step (nothing rotates after the copy), and stops.
    final = short_tmp / "backups" / "vault-final.backup"
    moved = backup(daemon, final, "--lock")
    assert moved["locked"] is True
    with daemon.client() as client:
        assert client.status()["state"] == "LOCKED"
    assert daemon.stop() == 0
    new_host.ctl("lock")
    again = restore(new_host, final)
    assert again["held"] == ["live"] and again["passphrase_changed"] is False
    assert Path(again["previous"]).parent == new_host.data_dir
    assert Path(again["previous"]).name.startswith("vault.pre-restore-")
    new_host.ctl("unlock", *new_host.pw())
    assert credential(new_host, "live")["state"] == "ON_HOLD"

    released = new_host.ctl("release", "live", *new_host.pw())
    assert "released" in released.stdout
    wait_for("'live' FRESH on the new host", lambda: credential(new_host, "live")["state"] == "FRESH")
    with new_host.client() as client:
        assert client.token("live").value.startswith("fake-at-")
    assert exchange.control(current_of=first)["current"] is not None, "renewed fine: the family lives"
    start = credential(new_host, "live")["upstream_calls"]

    def renewed() -> bool:
        now = credential(new_host, "live")
        return bool(now["upstream_calls"] > start and now["state"] == "FRESH")

    wait_for("a renewal on the new host", renewed)
    assert exchange.control(current_of=first)["current"] is not None
    again_refused = new_host.ctl("release", "live", *new_host.pw(), check=False)
    assert again_refused.returncode == 1 and "not on hold" in again_refused.stderr
    new_host.ctl("lock")
    new_host.ctl("unlock", *new_host.pw())
    assert credential(new_host, "live")["state"] in ("FRESH", "RENEW_DUE"), "the release was sealed"

    assert new_host.stop() == 0  # flushes the audit log
    lines = audit(new_host)
    restores = [(line["outcome"], line.get("detail")) for line in lines if line["method"] == "vault.restore"]
    assert [outcome for outcome, _ in restores] == ["rollback_accepted", "ok", "rollback_accepted", "ok"]
    assert "on hold: live" in str(restores[0][1])
    releases = [line["outcome"] for line in lines if line["method"] == "credential.release"]
    assert releases == ["ok", "INVALID_PARAMS"]


def test_control_a_released_copy_racing_the_live_vault_gets_the_family_revoked(
    daemon: DaemonProcess, new_host: DaemonProcess, exchange: FakeExchangeProcess, short_tmp: Path
) -> None:
    """What the hold prevents: release the copy while the live vault still runs, and the two
    present one refresh token family; the provider's reuse detection revokes it for both."""
    daemon.start()
    daemon.ready()
    first = add_rotating(daemon, exchange)
    copy = short_tmp / "copy.backup"
    backup(daemon, copy)
    new_host.start()
    restore(new_host, copy)
    new_host.ctl("unlock", *new_host.pw())
    new_host.ctl("release", "live", *new_host.pw())

    wait_for("the family revoked", lambda: exchange.control(current_of=first)["current"] is None)
    wait_for(
        "both copies refused upstream",
        lambda: {credential(daemon, "live")["state"], credential(new_host, "live")["state"]} == {"NEEDS_REAUTH"},
        timeout=30,
    )


def snapshot(daemon: DaemonProcess) -> dict[str, bytes]:
    """The vault's files, byte for byte: a refused restore must change none."""
    return {p.name: p.read_bytes() for p in sorted(daemon.data_dir.iterdir()) if p.is_file()}


def test_refused_restores_change_nothing(daemon: DaemonProcess, short_tmp: Path) -> None:
    daemon.start()
    daemon.ready()
    good = short_tmp / "good.backup"
    backup(daemon, good)
    daemon.ctl("add", "later", "--kind", "static", *daemon.pw(), stdin="fake-token-later-1\n")
    unlocked = daemon.ctl("restore", str(good), *daemon.pw(), check=False)
    assert unlocked.returncode == 1 and "lock it first" in unlocked.stderr
    daemon.ctl("lock")
    before = snapshot(daemon)
    data = good.read_bytes()
    other_pass = short_tmp / "other-pass"
    other_pass.write_text("another fake passphrase\n")
    cases: dict[str, tuple[bytes | None, str, str]] = {
        "truncated": (data[: len(data) - 40], "damaged or cut off", "INVALID_PARAMS"),
        "header-only": (data[:40], "truncated", "INVALID_PARAMS"),
        "garbage": (os.urandom(len(data)), "not a vaultd vault file", "INVALID_PARAMS"),
        "text": (b"just some notes\n", "not a vaultd vault file", "INVALID_PARAMS"),
        "empty": (b"", "truncated", "INVALID_PARAMS"),
        "missing": (None, "cannot be opened", "INVALID_PARAMS"),
    }
    for name, (content, said, code) in cases.items():
        path = short_tmp / f"{name}.backup"
        if content is not None:
            path.write_bytes(content)
        refused = daemon.ctl("restore", str(path), *daemon.pw(), check=False)
        assert refused.returncode == 1, (name, refused)
        assert said in refused.stderr and f"({code})" in refused.stderr, (name, refused.stderr)
        assert snapshot(daemon) == before, name
    wrong = daemon.ctl("restore", str(good), "--passphrase-file", str(other_pass), check=False)
    assert wrong.returncode == 1 and "(BAD_PASSPHRASE)" in wrong.stderr and "'passphrase'" in wrong.stderr
    wrong_backup = daemon.ctl(
        "restore", str(good), *daemon.pw(), "--backup-passphrase-file", str(other_pass), check=False
    )
    assert wrong_backup.returncode == 1 and "'backup_passphrase'" in wrong_backup.stderr
    folder = daemon.ctl("restore", str(short_tmp), *daemon.pw(), check=False)
    assert folder.returncode == 1 and "not a regular file" in folder.stderr
    assert snapshot(daemon) == before

    daemon.ctl("unlock", *daemon.pw())
    with daemon.client() as client:
        assert sorted(c["name"] for c in client.status()["credentials"]) == ["ex", "later"], "nothing was lost"


def test_a_restore_in_place_keeps_the_vault_it_replaces_and_unlocks_without_a_rollback_refusal(
    daemon: DaemonProcess, short_tmp: Path
) -> None:
    daemon.start()
    daemon.ready()
    good = short_tmp / "good.backup"
    made = backup(daemon, good)
    daemon.ctl("add", "later", "--kind", "static", *daemon.pw(), stdin="fake-token-later-2\n")
    daemon.ctl("lock")
    replaced = (daemon.data_dir / "vault").read_bytes()
    result = restore(daemon, good)
    assert result["generation"] > made["generation"] and result["held"] == []
    assert (daemon.data_dir / "vault.bak").read_bytes() == replaced, "the vault replaced is vault.bak"
    daemon.ctl("unlock", *daemon.pw())
    with daemon.client() as client:
        assert [c["name"] for c in client.status()["credentials"]] == ["ex"]
    assert daemon.stop() == 0
    daemon.start()
    daemon.ctl("unlock", *daemon.pw())  # and after a restart: still the newest


def test_backup_refusals_and_overwrites(daemon: DaemonProcess, short_tmp: Path) -> None:
    daemon.start()
    daemon.ready()
    other_pass = short_tmp / "other-pass"
    other_pass.write_text("another fake passphrase\n")
    target = short_tmp / "b.backup"

    wrong = daemon.ctl("backup", str(target), "--passphrase-file", str(other_pass), check=False)
    assert wrong.returncode == 1 and "(BAD_PASSPHRASE)" in wrong.stderr and not target.exists()
    nowhere = daemon.ctl("backup", str(short_tmp / "no-such-folder" / "b.backup"), *daemon.pw(), check=False)
    assert nowhere.returncode == 1 and "does not exist" in nowhere.stderr and "no-such-folder" in nowhere.stderr
    own = daemon.ctl("backup", str(daemon.data_dir / "vault.bak"), "--force", *daemon.pw(), check=False)
    assert own.returncode == 1 and "live vault's own files" in own.stderr

    first = backup(daemon, target)
    exists = daemon.ctl("backup", str(target), *daemon.pw(), check=False)
    assert exists.returncode == 1 and "(ALREADY_EXISTS)" in exists.stderr and "--force" in exists.stderr
    daemon.ctl("add", "later", "--kind", "static", *daemon.pw(), stdin="fake-token-later-3\n")
    second = backup(daemon, target, "--force")
    assert second["generation"] == first["generation"] + 1
    assert hashlib.sha256(target.read_bytes()).hexdigest() == second["fingerprint"]

    audit_like = short_tmp / "audit.log"
    audit_like.write_text('{"method": "token.get", "outcome": "ok"}\n')
    not_vault = daemon.ctl("backup", str(audit_like), "--force", *daemon.pw(), check=False)
    assert not_vault.returncode == 1 and "not a vault file" in not_vault.stderr
    assert audit_like.read_text() == '{"method": "token.get", "outcome": "ok"}\n'

    victim = short_tmp / "victim"
    victim.write_text("not to be overwritten\n")
    link = short_tmp / "link.backup"
    link.symlink_to(victim)
    for extra in ((), ("--force",)):
        refused = daemon.ctl("backup", str(link), *extra, *daemon.pw(), check=False)
        assert refused.returncode == 1 and "symbolic link" in refused.stderr
    assert victim.read_text() == "not to be overwritten\n" and link.is_symlink()

    # A relative FILE is vaultctl's working folder's, not the daemon's.
    work = short_tmp / "work"
    work.mkdir()
    relative = subprocess.run(
        [BIN / "vaultctl", "backup", "rel.backup", *daemon.pw()],
        cwd=work,
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert relative.returncode == 0, relative.stderr
    assert "generation:" in relative.stdout and "fingerprint:" in relative.stdout
    assert stat.S_IMODE((work / "rel.backup").stat().st_mode) == 0o600

    daemon.ctl("lock")
    locked = daemon.ctl("backup", str(short_tmp / "c.backup"), *daemon.pw(), check=False)
    assert locked.returncode == 4 and "(LOCKED)" in locked.stderr


def test_a_backup_whose_caller_leaves_mid_call_is_whole_or_absent(daemon: DaemonProcess, short_tmp: Path) -> None:
    """The peer sends vault.backup and hangs up at once: the daemon finishes the copy or never
    starts it, leaves no temp file, and serves the next caller."""
    daemon.start()
    daemon.ready()
    folder = short_tmp / "left"
    folder.mkdir()
    hello = msgpack.packb([0, 1, "hello", [{"protocol": 1, "client": "leaver"}]])
    for i in range(10):
        request = [0, 2, "vault.backup", [{"passphrase": PASS, "path": str(folder / f"{i}.backup")}]]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(daemon.socket_path))
            sock.sendall(hello + msgpack.packb(request))
    with daemon.client() as client:
        assert client.status()["state"] == "UNLOCKED"
    vault = (daemon.data_dir / "vault").read_bytes()
    wait_for("no temp file", lambda: not [p for p in folder.iterdir() if ".tmp-" in p.name])
    for path in folder.iterdir():
        assert path.read_bytes() == vault, path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    made = backup(daemon, folder / "after.backup")
    assert made["fingerprint"] == hashlib.sha256(vault).hexdigest()


def test_a_backup_restores_over_a_damaged_vault(daemon: DaemonProcess, short_tmp: Path) -> None:
    """Disaster recovery on the same host: the vault file is garbage; the backup puts it right."""
    daemon.start()
    daemon.ready()
    good = short_tmp / "good.backup"
    backup(daemon, good)
    assert daemon.stop() == 0
    (daemon.data_dir / "vault").write_bytes(os.urandom(2048))
    daemon.start()
    damaged = daemon.ctl("unlock", *daemon.pw(), check=False)
    assert damaged.returncode == 1 and "(VAULT_DAMAGED)" in damaged.stderr
    result = restore(daemon, good)
    assert result["held"] == [] and Path(result["previous"]).name.startswith("vault.pre-restore-")
    daemon.ctl("unlock", *daemon.pw())
    assert daemon.ctl("get", "ex").stdout == "fake-token-e2e-1\n"


def test_a_process_that_may_lock_the_vault_cannot_replace_it_with_one_of_its_own(
    daemon: DaemonProcess, new_host: DaemonProcess, short_tmp: Path
) -> None:
    """Any process of the user may 'vault.lock'; before the fix it could then restore a vault it
    sealed under its own passphrase, and engines got its credentials. Now the restore needs the
    passphrase of the vault there; the operator's own restore of a foreign backup keeps the vault
    replaced as vault.pre-restore-<time> and says that the passphrase changed."""
    daemon.start()
    daemon.ready()
    other_pass = short_tmp / "other-pass"
    other_pass.write_text("the attacker's fake passphrase\n")
    new_host.start()
    new_host.ctl("init", "--passphrase-file", str(other_pass), "--kdf-profile", "min")
    new_host.ctl("unlock", "--passphrase-file", str(other_pass))
    new_host.ctl("add", "ex", "--kind", "static", "--passphrase-file", str(other_pass), stdin="fake-token-evil-1\n")
    evil = short_tmp / "evil.backup"
    new_host.ctl("backup", str(evil), "--passphrase-file", str(other_pass))

    daemon.ctl("lock")
    before = snapshot(daemon)
    for extra in ((), ("--backup-passphrase-file", str(other_pass))):
        attack = daemon.ctl("restore", str(evil), "--passphrase-file", str(other_pass), *extra, check=False)
        assert attack.returncode == 1 and "(BAD_PASSPHRASE)" in attack.stderr, attack.stderr
    missing = daemon.ctl("restore", str(short_tmp / "nothing-here"), "--passphrase-file", str(other_pass), check=False)
    assert "(BAD_PASSPHRASE)" in missing.stderr and "nothing-here" not in missing.stderr, "no file-existence oracle"
    assert snapshot(daemon) == before

    # The operator, knowingly: the vault's passphrase, the backup's own apart.
    done = daemon.ctl("restore", str(evil), *daemon.pw(), "--backup-passphrase-file", str(other_pass))
    assert "opens with the backup's passphrase" in done.stderr
    kept = [p for p in daemon.data_dir.iterdir() if p.name.startswith("vault.pre-restore-")]
    assert len(kept) == 1 and kept[0].read_bytes() == before["vault"]
    assert stat.S_IMODE(kept[0].stat().st_mode) == 0o600 and str(kept[0]) in done.stdout
    refused_old = daemon.ctl("unlock", *daemon.pw(), check=False)
    assert "(BAD_PASSPHRASE)" in refused_old.stderr
    daemon.ctl("unlock", "--passphrase-file", str(other_pass))


def test_on_a_terminal_restore_asks_for_the_backups_passphrase_only_when_the_vaults_does_not_open_it(
    daemon: DaemonProcess, short_tmp: Path
) -> None:
    daemon.start()
    daemon.ready()
    old = short_tmp / "old.backup"
    backup(daemon, old)
    new_pass = short_tmp / "new-pass"
    new_pass.write_text("a new fake passphrase\n")
    daemon.ctl("passwd", *daemon.pw(), "--new-passphrase-file", str(new_pass))
    newer = short_tmp / "newer.backup"
    daemon.ctl("backup", str(newer), "--passphrase-file", str(new_pass))
    daemon.ctl("lock")

    same = Terminal(daemon, "restore", str(newer))  # opens with the vault's passphrase: one question
    same.expect("Passphrase: ")
    same.type("a new fake passphrase")
    assert same.finish() == 0, same.screen
    assert b"backup's passphrase" not in same.screen and b"restored" in same.screen

    older = Terminal(daemon, "restore", str(old))  # from before the passwd: asked for the backup's
    older.expect("Passphrase: ")
    older.type("a new fake passphrase")
    older.expect("The backup's passphrase: ")
    older.type(PASS)
    assert older.finish() == 0, older.screen
    assert b"opens with the backup's passphrase" in older.screen
    daemon.ctl("unlock", *daemon.pw())  # installed as it is: the backup's passphrase opens it
