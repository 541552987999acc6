"""A rolled-back vault, end to end: a real daemon process, restarted on a file put back by hand.

Real time (two processes); every wait polls a condition with a deadline.
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

import pytest

from vaultd._secret import Secret
from vaultd._vaultfile import decode
from vaultd_client.errors import Rollback

from ..daemon_process import PASS, DaemonProcess, FakeExchangeProcess


def audit_lines(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in daemon.audit_log.read_text().splitlines()]


def stored_refresh_token(daemon: DaemonProcess) -> str:
    _, _, body = decode((daemon.data_dir / "vault").read_bytes(), Secret(PASS))
    return str(body["credentials"]["live"]["config"]["refresh_token"])


def test_vault_bak_put_back_and_a_restart_is_refused_until_the_operator_accepts_it(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready()  # generation 1 (init), 2 (add 'ex')
    assert daemon.stop() == 0
    shutil.copy2(daemon.data_dir / "vault.bak", daemon.data_dir / "vault")
    daemon.start()

    with daemon.client() as client, pytest.raises(Rollback) as info:
        client.unlock(PASS)  # the library's own class for code 17
    assert info.value.code == 17 and info.value.name == "ROLLBACK"
    refused = daemon.ctl("unlock", *daemon.pw(), check=False)
    assert refused.returncode == 1, refused
    assert "(ROLLBACK)" in refused.stderr and "generation 1" in refused.stderr and "generation 2" in refused.stderr
    assert "--accept-rollback" in refused.stderr
    assert daemon.client().status()["state"] == "LOCKED"

    accepted = daemon.ctl("unlock", "--accept-rollback", *daemon.pw())
    assert accepted.stdout == "vault unlocked\n"
    assert "rollback accepted: generation 1 accepted; 2 was recorded" in accepted.stderr, "the operator is told"
    status = daemon.client().status()
    assert status["state"] == "UNLOCKED" and status["generation"] == 3 and status["credentials"] == []
    assert "rollback accepted by the operator: generation 1 accepted; 2 was recorded" in daemon.log
    assert daemon.stop() == 0  # flushes the audit log
    unlocks = [(line["outcome"], line["detail"]) for line in audit_lines(daemon) if line["method"] == "vault.unlock"]
    assert unlocks[-3:] == [
        ("ROLLBACK", None),
        ("rollback_accepted", "generation 1 accepted; 2 was recorded"),
        ("ok", None),
    ]

    daemon.start()
    daemon.ctl("unlock", *daemon.pw())  # accepted once: it is the newest now


def test_a_rotated_refresh_token_put_back_is_never_sent_upstream(
    daemon: DaemonProcess, fake_exchange: FakeExchangeProcess
) -> None:
    """The worst case. The old copy holds a refresh token the exchange has rotated away; sending
    it would trip reuse detection and revoke the whole family (the desk loses the credential)."""
    fake_exchange.control(reuse_grace=0.0)
    daemon.start()
    daemon.ready()
    stale = fake_exchange.control(new_refresh_token=True)["refresh_token"]
    config = {
        "token_url": fake_exchange.url + "/oauth/token",
        "grant_type": "refresh_token",
        "client_id": "fake-client",
        "client_secret": "fake-secret",
        "refresh_token": stale,
    }
    daemon.ctl("add", "live", "--kind", "oauth2", *daemon.pw(), stdin=json.dumps(config))
    old_copy = (daemon.data_dir / "vault").read_bytes()
    daemon.ctl("renew", "live", *daemon.pw())
    current = fake_exchange.control(current_of=stale)["current"]
    assert current != stale and stored_refresh_token(daemon) == current, "rotated upstream, and saved"
    assert daemon.stop() == 0

    (daemon.data_dir / "vault").write_bytes(old_copy)
    daemon.start()
    calls = fake_exchange.calls()
    refused = daemon.ctl("unlock", *daemon.pw(), check=False)
    assert refused.returncode == 1 and "(ROLLBACK)" in refused.stderr, refused
    time.sleep(1.0)  # long enough for a renewer to have tried, were one running
    assert fake_exchange.calls() == calls, "the stale refresh token was sent upstream"
    assert fake_exchange.control(current_of=stale)["current"] == current, "the token family was not revoked"

    # What the refusal prevented: accepted anyway (through the library), the stale token goes
    # upstream at the next renewal, and reuse detection revokes the whole family.
    with daemon.client() as client:
        assert client.unlock(PASS, accept_rollback=True)["state"] == "UNLOCKED"
    renewed = daemon.ctl("renew", "live", *daemon.pw(), check=False)
    assert renewed.returncode == 1 and "NEEDS_REAUTH" in renewed.stderr, renewed
    assert fake_exchange.control(current_of=stale)["current"] is None, "revoked: the operator must log in again"
