"""Other users cannot hold the desk: per-uid shares, slots kept for the owner, revocation at once.

Needs root: the test process connects as uid 65534 (and 65533) by switching its effective uid
around ``connect()``, the moment the kernel records the peer's credentials (SO_PEERCRED). The
daemon in this process then judges those connections exactly as it judges any other user's.
Each refusal has a positive control beside it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from vaultd._peer import Peer
from vaultd._rpc import Dispatcher
from vaultd._server import ServerLimits, Session
from vaultd._vault import Vault

from .conftest import PASS, RawClient, Served, StartServer
from .test_policy import _open_to_others, _require_root

NOBODY, OTHER = 65534, 65533


@contextlib.contextmanager
def _as_uid(uid: int) -> Iterator[None]:
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)


def _connect_as(uid: int, path: Path) -> RawClient:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with _as_uid(uid):
        sock.connect(str(path))
    return RawClient(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))


async def _closed_without_answer(client: RawClient) -> bool:
    answers, closed = await client.raw_answer_then_close()
    return closed and answers == []


async def _set_policy(admin: RawClient, *rules: dict[str, Any]) -> None:
    await admin.ok("policy.set", passphrase=PASS, policy={"rules": list(rules)})


OWN_RULE = {"credentials": ["*"], "methods": ["get", "sign", "watch", "status"]}


async def _desk(
    start_server: StartServer, short_tmp: Path, limits: ServerLimits | None = None
) -> tuple[Served, RawClient]:
    _require_root()
    served = await start_server(limits)
    await served.ready()
    _open_to_others(short_tmp, served.socket_path)
    admin = await served.connect()
    return served, admin


async def test_each_other_uid_has_its_share_and_the_owner_keeps_slots(
    start_server: StartServer, short_tmp: Path
) -> None:
    limits = ServerLimits(max_connections=8, max_connections_per_uid=3, reserved_connections=3)
    served, admin = await _desk(start_server, short_tmp, limits)
    await _set_policy(
        admin, OWN_RULE, *({"uid": uid, "credentials": ["ex"], "methods": ["get"]} for uid in (NOBODY, OTHER))
    )
    nobody = [_connect_as(NOBODY, served.socket_path) for _ in range(3)]
    for client in nobody:
        assert (await client.ok("token.get", name="ex"))["token"] == "fake-token-inproc"
    assert await _closed_without_answer(_connect_as(NOBODY, served.socket_path)), "a fourth is over its share"
    others = [_connect_as(OTHER, served.socket_path) for _ in range(3)]
    for client in others[:2]:
        assert (await client.ok("token.get", name="ex"))["token"] == "fake-token-inproc", "its own share"
    assert await _closed_without_answer(others[2]), "other users hold the 5 slots open to them"
    # The owner's operator still gets in: status, then the emergency brake.
    operator = await served.connect()
    assert (await operator.ok("status"))["state"] == "UNLOCKED"
    await operator.ok("vault.lock")
    # The lock shut every other user out, at once: their slots are free again.
    for client in [*nobody, *others[:2]]:
        assert await _closed_without_answer(client)
    await trio.testing.wait_all_tasks_blocked()
    await operator.ok("vault.unlock", passphrase=PASS)
    late = _connect_as(NOBODY, served.socket_path)
    assert (await late.ok("token.get", name="ex"))["token"] == "fake-token-inproc", "slots were given back"


async def test_a_new_policy_closes_the_connections_it_shuts_out_at_once(
    start_server: StartServer, short_tmp: Path
) -> None:
    served, admin = await _desk(start_server, short_tmp)
    await _set_policy(
        admin,
        OWN_RULE,
        {"uid": NOBODY, "credentials": ["ex"], "methods": ["get"]},
        {"uid": OTHER, "credentials": ["ex"], "methods": ["get"]},
    )
    revoked, kept = _connect_as(NOBODY, served.socket_path), _connect_as(OTHER, served.socket_path)
    assert (await revoked.ok("hello", protocol=1))["peer"]["uid"] == NOBODY
    assert (await kept.ok("hello", protocol=1))["peer"]["uid"] == OTHER
    await _set_policy(admin, OWN_RULE, {"uid": OTHER, "credentials": ["ex"], "methods": ["get"]})
    with trio.fail_after(5):
        assert await _closed_without_answer(revoked), "closed as the policy changed, without a request"
    assert (await kept.ok("token.get", name="ex"))["token"] == "fake-token-inproc", "positive control"


async def test_another_uid_may_lock_or_administer_only_where_a_rule_says_so(
    start_server: StartServer, short_tmp: Path
) -> None:
    served, admin = await _desk(start_server, short_tmp)
    await _set_policy(admin, OWN_RULE, {"uid": NOBODY, "credentials": ["ex"], "methods": ["get"]})
    engine = _connect_as(NOBODY, served.socket_path)
    refused = await engine.call("vault.lock")
    assert refused.error is not None and refused.error.name == "FORBIDDEN"
    assert "does not allow lock" in refused.error.message
    for method, params in [
        ("credential.list", {"passphrase": PASS}),
        ("vault.unlock", {"passphrase": "fake wrong guess"}),
        ("policy.get", {"passphrase": PASS}),
        ("notify.test", {"passphrase": PASS}),  # even with the passphrase: no engine rings the pager
    ]:
        answer = await engine.call(method, **params)
        assert answer.error is not None and answer.error.name == "FORBIDDEN", (method, answer.error)
        assert "does not allow admin" in answer.error.message
    assert served.vault.failed_attempts == 0, "a refused guess is never checked"
    assert served.vault.state.value == "UNLOCKED"

    await _set_policy(admin, OWN_RULE, {"uid": NOBODY, "credentials": ["ex"], "methods": ["get", "lock", "admin"]})
    engine = _connect_as(NOBODY, served.socket_path)
    listed = await engine.ok("credential.list", passphrase=PASS)
    assert [c["name"] for c in listed["credentials"]] == ["ex"]
    assert (await engine.ok("notify.test", passphrase=PASS))["sinks"] == []  # no [[notify]] table here
    await engine.ok("vault.lock")
    assert served.vault.state.value == "LOCKED"
    # The daemon's own uid needs no rule for either, even where rules exist.
    await admin.ok("vault.unlock", passphrase=PASS)
    await admin.ok("vault.lock")


@pytest.fixture(autouse=True)
def _back_to_root() -> Iterator[None]:
    yield
    if os.geteuid() != os.getuid():
        os.seteuid(os.getuid())


async def test_a_refused_user_reconnecting_in_a_loop_does_not_flood_the_daemons_log(
    start_server: StartServer, short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    served, _ = await _desk(start_server, short_tmp)  # no rule names uid 65534
    caplog.set_level(logging.INFO, logger="vaultd.server")
    for _ in range(300):
        assert await _closed_without_answer(_connect_as(NOBODY, served.socket_path))
    lines = [r.getMessage() for r in caplog.records if "refused a connection from another user" in r.getMessage()]
    assert len(lines) == 3, lines  # the 1st, 10th and 100th
    assert lines[-1].endswith("(100 from uid 65534 so far)")


async def test_another_uids_connection_that_starts_after_a_lock_is_closed_at_once(
    nursery: trio.Nursery, short_tmp: Path
) -> None:
    """Found by review: admitted at accept, its task started one scheduler pass later, after a lock
    had already closed every other-uid connection the daemon knew of. No root needed: no socket."""
    (short_tmp / "data").mkdir(mode=0o700)
    dispatcher = Dispatcher(Vault(short_tmp / "data", nursery=nursery), short_tmp / "s.sock")
    closed: list[str] = []

    def session(uid: int, label: str) -> Session:
        return Session(Peer(1, uid, uid), trio.open_memory_channel[Any](1)[0], lambda: closed.append(label))

    dispatcher.opened(session(os.getuid(), "own"))  # positive control: the owner's stays
    dispatcher.opened(session(NOBODY, "other"))  # the vault is locked: nothing lets it in now
    assert closed == ["other"]
