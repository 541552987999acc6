"""Many and hostile clients against the daemon's server: what the reliability rows found."""

from __future__ import annotations

import contextlib
import socket

import msgpack
import trio
import trio.lowlevel

from .conftest import StartServer

HELLO = msgpack.packb([0, 1, "hello", [{"protocol": 1, "client": "pytest"}]])


async def test_a_backlog_of_new_connections_is_taken_in_one_pass(start_server: StartServer) -> None:
    # Found by the load row: with 1,000 busy connections, a new one waited up to 9 s in the listen
    # backlog, because each accept cost the accept loop a whole scheduler pass (every busy
    # connection's turn). Here each pass is one turn of the loop below.
    served = await start_server()
    with contextlib.ExitStack() as stack:
        waiting = []
        for _ in range(40):  # queued in the backlog: the server has not run since
            sock = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            sock.connect(str(served.socket_path))
            sock.sendall(HELLO)
            sock.setblocking(False)
            waiting.append(sock)
        passes = 0
        while waiting and passes < 1000:
            await trio.lowlevel.checkpoint()
            passes += 1
            for sock in list(waiting):
                with contextlib.suppress(BlockingIOError):
                    if sock.recv(65536):
                        waiting.remove(sock)
        assert not waiting, "some connections were never answered"
        assert passes < 10, f"40 queued connections took {passes} scheduler passes to answer"
