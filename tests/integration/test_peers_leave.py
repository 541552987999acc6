"""Peers that leave mid-conversation, in every way an engine leaves: that connection ends, nothing else.

Each test has a bystander connected before the peer leaves, and a newcomer after: both must be
served, so the accept loop and the other connections are proven untouched. Before the fix, the
first of these (a reply left unread, then a close: the kernel resets the connection) stopped the
whole daemon with ``BrokenResourceError`` out of an ``ExceptionGroup``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
import trio.testing

from vaultd._errors import RpcError
from vaultd._listen import bind_unix_socket
from vaultd._peer import Peer
from vaultd._server import ServerLimits, Session, serve, serve_stream
from vaultd._watch import WatchHub
from vaultd_client import Client
from vaultd_protocol import ErrorCode, Request

from ..daemon_process import DaemonProcess
from .conftest import PASS, Served, StartServer

HELLO = msgpack.packb([0, 1, "hello", [{"protocol": 1, "client": "leaver"}]])


def _gets(count: int, first: int = 1) -> bytes:
    return b"".join(msgpack.packb([0, msgid, "token.get", [{"name": "ex"}]]) for msgid in range(first, first + count))


async def _raw(served: Served) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.connect(str(served.socket_path))
    return sock


async def _serve_handler(
    nursery: trio.Nursery, short_tmp: Path, handler: Callable[[Request, Session], Awaitable[Any]]
) -> Served:
    """The server alone on a real socket, with ``handler`` in place of the dispatcher (no vault)."""
    path = short_tmp / "s.sock"
    await nursery.start(serve, trio.socket.from_stdlib_socket(bind_unix_socket(path)), handler, ServerLimits())
    return Served(path, None)  # type: ignore[arg-type]


async def _still_serving(served: Served, bystander: Any) -> None:
    """The bystander's connection works, and so does a new one (the accept loop runs)."""
    await trio.testing.wait_all_tasks_blocked()
    assert (await bystander.ok("token.get", name="ex"))["token"] == "fake-token-inproc"
    newcomer = await served.connect()
    assert (await newcomer.ok("token.get", name="ex"))["token"] == "fake-token-inproc"
    await newcomer.aclose()


async def _reply_unread_then_close(sock: trio.socket.SocketType) -> None:
    await sock.send(HELLO)
    await trio.lowlevel.wait_readable(sock)  # the answer is there, unread
    sock.close()


async def _abortive_close(sock: trio.socket.SocketType) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await sock.send(_gets(50))
    await trio.lowlevel.wait_readable(sock)
    sock.close()


async def _half_close_with_pipelined_requests(sock: trio.socket.SocketType) -> None:
    await sock.send(_gets(500))
    sock.shutdown(socket.SHUT_WR)
    await trio.lowlevel.wait_readable(sock)
    sock.close()


async def _burst_then_close_unread(sock: trio.socket.SocketType) -> None:
    # More answers than the socket buffers hold: the daemon's writes meet EPIPE or a reset.
    await sock.send(_gets(3000))
    await trio.lowlevel.wait_readable(sock)
    sock.close()


async def _garbage_mid_frame_with_answers_queued(sock: trio.socket.SocketType) -> None:
    await sock.send(_gets(200) + msgpack.packb([0, 999, "token.get", [{"name": "ex"}]])[:7] + b"\xc1\xc1")
    await trio.lowlevel.wait_readable(sock)
    sock.close()


async def _close_mid_frame(sock: trio.socket.SocketType) -> None:
    await sock.send(HELLO[:5])
    sock.close()


LEAVERS: dict[str, Callable[[trio.socket.SocketType], Awaitable[None]]] = {
    "a reply unread, then close (reset)": _reply_unread_then_close,
    "SO_LINGER 0 with answers unread": _abortive_close,
    "half-close with pipelined requests": _half_close_with_pipelined_requests,
    "a pipelined burst, closed unread": _burst_then_close_unread,
    "garbage mid-frame with answers queued": _garbage_mid_frame_with_answers_queued,
    "close in the middle of a message": _close_mid_frame,
}


@pytest.mark.parametrize("leave", LEAVERS.values(), ids=list(LEAVERS))
async def test_a_peer_that_leaves_ends_its_connection_only(
    start_server: StartServer, leave: Callable[[trio.socket.SocketType], Awaitable[None]]
) -> None:
    served = await start_server()
    await served.ready()
    bystander = await served.connect()
    for _ in range(3):  # and again: the first failure must not have changed anything
        await leave(await _raw(served))
        await _still_serving(served, bystander)


async def test_a_watcher_that_leaves_with_notifications_unread(start_server: StartServer) -> None:
    served = await start_server()
    await served.ready()
    bystander = await served.connect()
    watcher = await _raw(served)
    await watcher.send(msgpack.packb([0, 1, "token.watch", [{"names": ["ex"]}]]))
    await trio.lowlevel.wait_readable(watcher)
    operator = await served.connect()
    await operator.ok(
        "credential.put", passphrase=PASS, name="ex", kind="static", config={"token": "fake-2"}, replace=True
    )
    watcher.close()  # the update and the watch answer unread: a reset
    for n in range(3, 6):  # notifications pushed at a peer that is gone
        await operator.ok(
            "credential.put", passphrase=PASS, name="ex", kind="static", config={"token": f"fake-{n}"}, replace=True
        )
    await operator.ok(
        "credential.put", passphrase=PASS, name="ex", kind="static", config={"token": "fake-token-inproc"}, replace=True
    )
    await _still_serving(served, bystander)
    assert served.vault.hub.watchers("ex") == 0


async def test_a_bug_that_breaks_one_connection_is_logged_once_and_ends_it_alone(
    nursery: trio.Nursery, short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler whose answer cannot be encoded (a bug): its connection closes, the server goes on."""

    async def handler(request: Request, session: Session) -> Any:
        if request.method == "broken":
            return object()  # msgpack cannot pack it: raised while sending, inside the nursery
        return {"ok": True}

    served = await _serve_handler(nursery, short_tmp, handler)
    caplog.set_level(logging.INFO, logger="vaultd.server")
    bystander = await served.connect()
    for _ in range(3):
        breaker = await served.connect()
        await breaker.request("broken")
        assert await breaker.receive() is None, "the broken connection is closed"
        assert (await bystander.ok("anything")) == {"ok": True}
    newcomer = await served.connect()
    assert (await newcomer.ok("anything")) == {"ok": True}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 3 and sum(1 for r in errors if r.exc_info) == 1, "one traceback, then a line each"


async def test_a_failing_close_callback_does_not_skip_the_others(start_server: StartServer) -> None:
    served = await start_server()
    await served.ready()
    ran: list[str] = []
    session = Session(Peer(1, os.getuid(), os.getgid()), trio.open_memory_channel[Any](1)[0], lambda: None)

    def boom() -> None:
        raise RuntimeError("a bug in a cleanup")

    session.on_close(boom)
    session.on_close(lambda: ran.append("second"))
    session.closed()
    assert ran == ["second"]


# -- a real daemon process, and real clients that leave as engines do ---------------------------------

_LEAVE_A_WATCH = textwrap.dedent(
    """
    import sys
    from vaultd_client import Client
    with Client(sys.argv[1]) as client:
        with client.watch(["ex"]) as events:
            print("watching", flush=True)
            sys.stdin.readline()   # renewals arrive unread meanwhile
    print("left", flush=True)
    """
)

_PIPELINE_THEN_WAIT = textwrap.dedent(
    """
    import socket, sys, msgpack
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(sys.argv[1])
    sock.sendall(b"".join(msgpack.packb([0, i, "token.get", [{"name": "ex"}]]) for i in range(2000)))
    print("sent", flush=True)
    sys.stdin.readline()
    """
)


def _replace_token(daemon: DaemonProcess, n: int) -> None:
    daemon.ctl("add", "ex", "--kind", "static", "--replace", *daemon.pw(), stdin=f"fake-token-{n}\n")


def test_real_engines_leaving_do_not_stop_the_daemon(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    env = daemon.env
    with Client(daemon.socket_path, cache=False) as bystander:
        assert bystander.token("ex").value == "fake-token-e2e-1"
        # The reference client leaves a watch block with renewals still arriving unread.
        watcher = subprocess.Popen(
            [sys.executable, "-c", _LEAVE_A_WATCH, str(daemon.socket_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert watcher.stdout is not None and watcher.stdin is not None
        assert watcher.stdout.readline() == "watching\n"
        for n in range(2, 6):
            _replace_token(daemon, n)
        watcher.stdin.write("\n")
        watcher.stdin.flush()
        assert watcher.wait(timeout=30) == 0
        # An engine SIGKILLed with pipelined requests in flight.
        engine = subprocess.Popen(
            [sys.executable, "-c", _PIPELINE_THEN_WAIT, str(daemon.socket_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert engine.stdout is not None
        assert engine.stdout.readline() == "sent\n"
        engine.send_signal(signal.SIGKILL)
        engine.wait(timeout=10)
        _replace_token(daemon, 7)
        assert bystander.token("ex").value == "fake-token-7"
    assert daemon.proc.poll() is None and daemon.proc.pid == pid
    with daemon.client() as newcomer:
        assert newcomer.token("ex").value == "fake-token-7"
    assert "Traceback" not in daemon.log


async def test_an_error_from_a_handlers_tasks_is_answered_as_itself(nursery: trio.Nursery, short_tmp: Path) -> None:
    """A handler that runs tasks raises its RpcError inside an ExceptionGroup: the peer gets that error."""

    async def handler(request: Request, session: Session) -> Any:
        async def fails() -> None:
            raise RpcError(ErrorCode.UNKNOWN_CREDENTIAL, "no credential named 'x'")

        async with trio.open_nursery() as inner:
            inner.start_soon(fails)

    client = await (await _serve_handler(nursery, short_tmp, handler)).connect()
    for _ in range(2):
        response = await client.call("token.get", name="x")
        assert response.error is not None and response.error.name == "UNKNOWN_CREDENTIAL"


def test_a_watcher_sink_that_fails_ends_its_subscription_not_the_publisher() -> None:
    hub = WatchHub()
    got: list[str] = []

    def broken(method: str, params: dict[str, Any]) -> bool:
        raise RuntimeError("a bug in a sink")

    def working(method: str, params: dict[str, Any]) -> bool:
        got.append(params["name"])
        return True

    hub.subscribe(["ex"], broken)
    hub.subscribe(["ex"], working)
    hub.publish("token.updated", "ex", lambda: {"name": "ex"})
    hub.publish("token.updated", "ex", lambda: {"name": "ex"})
    assert got == ["ex", "ex"] and hub.watchers("ex") == 1


async def test_a_half_closed_peer_still_gets_every_answer(start_server: StartServer) -> None:
    """Half-closed (SHUT_WR) is not gone: it still reads. Only a peer gone both ways is dropped at once."""
    served = await start_server(ServerLimits(max_connections=2, reserved_connections=0))
    await served.ready()
    sock = await _raw(served)
    await sock.send(_gets(20))
    sock.shutdown(socket.SHUT_WR)
    unpacker = msgpack.Unpacker()
    with trio.fail_after(10):
        while (data := await sock.recv(65536)) != b"":
            unpacker.feed(data)
    assert [msgid for _, msgid, _, _ in unpacker] == list(range(1, 21))
    sock.close()


async def test_garbage_while_a_notification_is_queued_is_an_ordinary_end(caplog: pytest.LogCaptureFixture) -> None:
    """Found by review: the push task, already woken with a notification, sent it on a connection the
    garbage had just broken; that raised LocalProtocolError, logged as an internal error."""
    caplog.set_level(logging.INFO, logger="vaultd.server")
    sessions: list[Session] = []

    async def handler(request: Request, session: Session) -> Any:
        sessions.append(session)
        return {}

    for _ in range(20):  # the order of the two tasks' turns varies: try both often
        client, server = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_stream, server, Peer(1, os.getuid(), os.getgid()), handler, ServerLimits())
            await client.send_all(msgpack.packb([0, 1, "x", [{}]]))
            await client.receive_some()
            await client.send_all(b"\xc1")
            sessions[-1].notify("token.updated", {"name": "a"})
            with trio.move_on_after(5):
                while await client.receive_some():
                    pass
            nursery.cancel_scope.cancel()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no internal error"
