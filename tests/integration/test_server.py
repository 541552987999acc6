"""The daemon's server on a real Unix socket: hostile input closes one connection only."""

from __future__ import annotations

import contextlib
import os
import struct

import msgpack
import trio

from vaultd._server import ServerLimits
from vaultd._vault import FailureDelay
from vaultd_protocol import ErrorCode, Request, Response

from .conftest import PASS, StartServer


async def test_hello_reports_the_identity_the_daemon_saw(start_server: StartServer) -> None:
    served = await start_server()
    client = await served.connect()
    result = await client.ok("hello", protocol=1, client="pytest")
    assert result["protocol"] == 1 and result["state"] == "UNINITIALIZED"
    assert result["peer"] == {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid()}
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


async def test_pipelined_answers_come_back_out_of_order(start_server: StartServer) -> None:
    served = await start_server(delay=FailureDelay(step=0.3))
    await served.ready()
    client = await served.connect()
    slow = await client.request("vault.unlock", passphrase="wrong passphrase!")  # waits 0.3 s
    fast = await client.request("token.get", name="ex")
    first, second = await client.receive(), await client.receive()
    assert isinstance(first, Response) and isinstance(second, Response)
    assert (first.msgid, second.msgid) == (fast, slow)
    assert second.error is not None and second.error.name == "BAD_PASSPHRASE"


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


async def test_connection_cap(start_server: StartServer) -> None:
    served = await start_server(ServerLimits(max_connections=2))
    first, second = await served.connect(), await served.connect()
    await first.ok("status")
    await second.ok("status")
    third = await served.connect()
    _, closed = await third.raw_answer_then_close()
    assert closed, "a connection over the cap must be closed at once"
    await first.aclose()
    await trio.sleep(0.05)  # let the server notice the close (real socket, real time)
    fourth = await served.connect()
    assert (await fourth.ok("status"))["state"] == "UNINITIALIZED"


async def test_half_sent_message_times_out(start_server: StartServer) -> None:
    served = await start_server(ServerLimits(frame_timeout=0.2))
    client = await served.connect()
    wire = msgpack.packb([0, 1, "status", [{}]])
    await client.send_raw(wire[:5])
    _, closed = await client.raw_answer_then_close()
    assert closed


async def test_idle_connections_are_closed_but_busy_ones_are_not(start_server: StartServer) -> None:
    served = await start_server(ServerLimits(idle_timeout=0.2), delay=FailureDelay(step=0.5))
    await served.ready()
    busy = await served.connect()
    response = await busy.call("vault.unlock", passphrase="wrong passphrase!")  # 0.5 s > idle timeout
    assert response.error is not None and response.error.name == "BAD_PASSPHRASE"
    _, closed = await busy.raw_answer_then_close()
    assert closed, "then idle: closed"


async def test_a_pipelining_client_whose_writes_split_messages_is_not_cut_off(start_server: StartServer) -> None:
    """The half-message timer restarts with each message, not only at quiet moments."""
    served = await start_server(ServerLimits(frame_timeout=0.3))
    client = await served.connect()
    messages = [client.conn.send(Request(msgid, "status", [{}])) for msgid in range(1, 10)]
    starts = [sum(len(m) for m in messages[:i]) for i in range(len(messages))]
    stream = b"".join(messages)
    cuts = [start + 5 for start in starts] + [len(stream)]  # every write ends inside a message
    last = 0
    for cut in cuts:
        await client.send_raw(stream[last:cut])
        last = cut
        await trio.sleep(0.1)  # 0.9 s in all: three times the frame timeout
    answers = []
    while len(answers) < len(messages):
        message = await client.receive()
        assert message is not None, f"closed after {len(answers)} answers"
        answers.append(message)
