"""The daemon's server on a real Unix socket: hostile input closes one connection only."""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path

import msgpack
import pytest
import trio
import trio.lowlevel
import trio.testing

from vaultd._listen import AlreadyRunning, bind_unix_socket
from vaultd._peer import unit_of
from vaultd._server import ServerLimits
from vaultd_protocol import ErrorCode, Notification, Request, Response

from .conftest import PASS, StartServer


def _this_process() -> dict[str, object]:
    unit = unit_of(Path("/proc/self/cgroup").read_text())
    return {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "unit": unit,
        "exe": os.readlink("/proc/self/exe"),
    }


async def test_hello_reports_the_identity_the_daemon_saw(start_server: StartServer) -> None:
    served = await start_server()
    client = await served.connect()
    result = await client.ok("hello", protocol=1, client="pytest")
    assert result["protocol"] == 1 and result["state"] == "UNINITIALIZED"
    assert result["peer"] == _this_process()
    response = await client.call("hello", protocol=99)
    assert response.error is not None and response.error.name == "UNSUPPORTED_PROTOCOL"


async def test_token_get_while_locked_is_refused(start_server: StartServer) -> None:
    served = await start_server()
    await served.ready()
    client = await served.connect()
    assert (await client.ok("token.get", name="ex"))["token"] == "fake-token-inproc"
    await client.ok("vault.lock")
    response = await client.call("token.get", name="ex")
    assert response.error is not None and response.error.code == ErrorCode.LOCKED


async def test_bad_params_and_unknown_methods_keep_the_connection_usable(start_server: StartServer) -> None:
    served = await start_server()
    await served.ready()
    client = await served.connect()
    cases = [
        ("token.get", {"name": 42}, "INVALID_PARAMS", "'name' must be a string"),
        ("token.get", {}, "INVALID_PARAMS", "missing parameter 'name'"),
        ("token.get", {"name": "ex", "min_ttl": "x"}, "INVALID_PARAMS", "min_ttl"),
        ("credential.put", {"passphrase": PASS, "name": "y", "kind": "static", "config": []}, "INVALID_PARAMS", "map"),
        ("no.such.method", {}, "UNKNOWN_METHOD", "no.such.method"),
        ("token.get", {"name": "missing"}, "UNKNOWN_CREDENTIAL", "missing"),
    ]
    for method, params, name, words in cases:
        response = await client.call(method, **params)
        assert response.error is not None and response.error.name == name, (method, response.error)
        assert words in response.error.message
    assert (await client.ok("token.get", name="ex"))["token"] == "fake-token-inproc"


async def test_unknown_notifications_are_ignored_not_answered(start_server: StartServer) -> None:
    served = await start_server()
    client = await served.connect()
    await client.send_raw(msgpack.packb([2, "client.heartbeat", [{}]]))
    result = await client.ok("status")  # the very next message is this call's answer
    assert result["state"] == "UNINITIALIZED"


HOSTILE = {
    "garbage": (b"\xc1\xff\x00garbage", None),
    "4 GiB string announced": (b"\x94\x00\x07\xa9token.get\x91\x81\xa4name\xdb" + struct.pack(">I", 2**32 - 1), 7),
    "nesting 2000 deep": (b"\x94\x00\x08\xa6status\x91" + b"\x91" * 2000 + b"\xc0", 8),
    "over the size limit": (msgpack.packb([0, 9, "token.get", [{"name": "x" * 70_000}]]), 9),
}


async def test_hostile_input_closes_that_connection_only(start_server: StartServer) -> None:
    served = await start_server()
    await served.ready()
    bystander = await served.connect()
    assert (await bystander.ok("token.get", name="ex"))["token"] == "fake-token-inproc"
    for label, (payload, msgid) in HOSTILE.items():
        attacker = await served.connect()
        # The daemon may close while a big payload is still being written.
        with contextlib.suppress(trio.BrokenResourceError):
            await attacker.send_raw(payload)
        answers, closed = await attacker.raw_answer_then_close()
        assert closed, f"{label}: connection left open"
        if msgid is not None:
            assert len(answers) == 1, label
            kind, answered_id, error, _ = answers[0]
            assert (kind, answered_id) == (1, msgid), label
            assert error["name"] in ("TOO_LARGE", "PROTOCOL_ERROR"), label
        else:
            assert answers == [], label
        assert (await bystander.ok("token.get", name="ex"))["token"] == "fake-token-inproc", label


async def test_a_pipelined_burst_is_answered_whole_and_in_order(start_server: StartServer) -> None:
    # 3,000 requests in one write: the daemon answers them at once (yielding every few), in order.
    served = await start_server()
    await served.ready(token="fake-token-" + "x" * 1000)
    client = await served.connect()
    wire = b"".join(client.conn.send(Request(msgid, "token.get", [{"name": "ex"}])) for msgid in range(3000))
    await client.send_raw(wire)
    answers = [await client.receive() for _ in range(3000)]
    assert [a.msgid for a in answers if isinstance(a, Response)] == list(range(3000))
    assert all(isinstance(a, Response) and a.result["token"].endswith("x" * 1000) for a in answers)
    probe = await served.connect()  # and the daemon still serves others
    assert (await probe.ok("token.get", name="ex"))["token"].startswith("fake-token-")


async def test_connection_cap(start_server: StartServer) -> None:
    served = await start_server(ServerLimits(max_connections=2))
    first, second = await served.connect(), await served.connect()
    await first.ok("status")
    await second.ok("status")
    third = await served.connect()
    _, closed = await third.raw_answer_then_close()
    assert closed, "a connection over the cap must be closed at once"
    await first.aclose()
    await trio.testing.wait_all_tasks_blocked()  # the server has seen the close
    fourth = await served.connect()
    assert (await fourth.ok("status"))["state"] == "UNINITIALIZED"


def test_binding_refuses_when_a_daemon_already_listens(short_tmp: Path) -> None:
    """The probe behind 'another vaultd is already listening', without the lock file."""
    first = bind_unix_socket(short_tmp / "run" / "vaultd.sock")
    try:
        with pytest.raises(AlreadyRunning, match="already listening"):
            bind_unix_socket(short_tmp / "run" / "vaultd.sock")
    finally:
        first.close()
    bind_unix_socket(short_tmp / "run" / "vaultd.sock").close()  # stale now: replaced


async def test_token_watch_pushes_renewals_and_the_lock(start_server: StartServer) -> None:
    served = await start_server()
    await served.ready()
    watcher, operator = await served.connect(), await served.connect()
    assert await watcher.ok("token.watch", names=["ex"]) == {"watching": ["ex"]}
    await operator.ok(
        "credential.put", passphrase=PASS, name="ex", kind="static", config={"token": "fake-new"}, replace=True
    )
    update = await watcher.receive()
    assert isinstance(update, Notification) and update.method == "token.updated"
    assert update.params[0]["name"] == "ex" and update.params[0]["token"] == "fake-new"
    await operator.ok("vault.lock")
    locked = await watcher.receive()
    assert isinstance(locked, Notification) and locked.method == "vault.locked"
    assert served.vault.hub.watchers("ex") == 0


async def test_token_watch_refuses_unknown_names_and_a_locked_vault(start_server: StartServer) -> None:
    served = await start_server()
    await served.ready()
    client = await served.connect()
    response = await client.call("token.watch", names=["ex", "nope"])
    assert (
        response.error is not None and response.error.name == "UNKNOWN_CREDENTIAL" and "nope" in response.error.message
    )
    response = await client.call("token.watch", names=[])
    assert response.error is not None and response.error.name == "INVALID_PARAMS"
    await client.ok("vault.lock")
    response = await client.call("token.watch", names=["ex"])
    assert response.error is not None and response.error.name == "LOCKED"


async def test_a_watcher_that_closes_leaves_no_subscription(start_server: StartServer) -> None:
    served = await start_server()
    await served.ready()
    watcher = await served.connect()
    await watcher.ok("token.watch", names=["ex"])
    assert served.vault.hub.watchers("ex") == 1
    await watcher.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert served.vault.hub.watchers("ex") == 0


async def test_a_watcher_that_never_reads_is_dropped_and_others_carry_on(start_server: StartServer) -> None:
    served = await start_server(ServerLimits(max_queued=4, send_timeout=3600))
    await served.ready()
    lazy, bystander = await served.connect(), await served.connect()
    await lazy.ok("token.watch", names=["ex"])
    big = {"name": "ex", "padding": "x" * 60_000}
    for _ in range(200):  # far more than the socket buffer and the queue of 4 hold
        served.vault.hub.publish("token.updated", "ex", lambda: big)
        await trio.lowlevel.checkpoint()
    await trio.testing.wait_all_tasks_blocked()
    assert served.vault.hub.watchers("ex") == 0, "the slow watcher was dropped"
    assert (await bystander.ok("token.get", name="ex"))["token"] == "fake-token-inproc"


# Found by the reliability suite's fuzz row (hypothesis): a URL that urllib cannot split (an
# unclosed IPv6 bracket; a host that NFKC normalisation changes) made token.sign answer INTERNAL,
# on the fast path and the slow one. It is INVALID_PARAMS, and the connection carries on.
@pytest.mark.parametrize(
    "wire",
    [
        bytes.fromhex(
            "940001aa746f6b656e2e7369676e9183a46e616d65a762696e616e6365a66d6574686f64a3474554a375726cae68747470733a2f2f5b3a3a312f78"
        ),
        msgpack.packb([0, 1, "token.sign", [{"name": "binance", "method": "GET", "url": "https://a\uff03b/x"}]]),
    ],
)
async def test_a_url_urllib_cannot_split_is_invalid_params_not_internal(start_server: StartServer, wire: bytes) -> None:
    served = await start_server()
    await served.ready()
    client = await served.connect()
    config = {"scheme": "binance-hmac", "api_key": "fake-key", "secret": "fake-secret"}
    await client.ok("credential.put", passphrase=PASS, name="binance", kind="sign", config=config)
    raw = await served.connect()
    await raw.send_raw(wire)
    unpacker = msgpack.Unpacker()
    with trio.fail_after(5):
        while not (answers := list(unpacker)):
            unpacker.feed(await raw.stream.receive_some(65536))
    [(kind, msgid, error, result)] = answers
    assert (kind, msgid, result) == (1, 1, None) and error["name"] == "INVALID_PARAMS", error
    assert (await client.ok("token.get", name="ex"))["token"] == "fake-token-inproc"


# Found by the reliability suite's fuzz row (hypothesis): vault.rekey counted the new passphrase
# in UTF-8 bytes, so three 4-byte characters passed the 8-character minimum that vault.init and
# SPEC.md apply; the vault was then sealed under a 3-character passphrase.
async def test_rekey_counts_the_new_passphrase_in_characters(start_server: StartServer) -> None:
    served = await start_server()
    await served.ready()
    client = await served.connect()
    response = await client.call("vault.rekey", passphrase=PASS, new_passphrase="\U0007e488\U00040b5c\x7f")
    assert response.error is not None and response.error.name == "INVALID_PARAMS", response.error
    await client.ok("vault.lock")
    await client.ok("vault.unlock", passphrase=PASS)  # the old passphrase still opens it
    await client.ok("vault.rekey", passphrase=PASS, new_passphrase="ééééééé\U0007e488")  # 8 characters
    await client.ok("vault.lock")
    await client.ok("vault.unlock", passphrase="ééééééé\U0007e488")
