"""The server's clocks and queues, on trio's autojump clock over in-memory streams.

The transport is what is tested here, so requests go to a small handler that sleeps for
as long as a request asks (virtual time) instead of to the vault; the hostile-input and
end-to-end behaviour with the real dispatcher is in tests/integration.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import trio
import trio.testing

from vaultd._peer import Peer
from vaultd._server import ServerLimits, serve_stream
from vaultd_protocol import Request

PEER = Peer(pid=1, uid=1000, gid=1000)


class Recorder:
    """A handler: sleeps ``params[0]["sleep"]`` seconds, answers the method name; counts calls."""

    def __init__(self) -> None:
        self.started = 0

    async def __call__(self, request: Request, peer: Peer) -> Any:
        self.started += 1
        await trio.sleep(request.params[0].get("sleep", 0) if request.params else 0)
        return {"method": request.method, "pad": "x" * request.params[0].get("pad", 0) if request.params else ""}


def req(msgid: int, sleep: float = 0, pad: int = 0) -> bytes:
    return msgpack.packb([0, msgid, "m", [{"sleep": sleep, "pad": pad}]])


async def read_until_closed(stream: trio.abc.ReceiveStream) -> tuple[list[Any], float]:
    """Every answer, and the (virtual) time at which the server closed."""
    unpacker = msgpack.Unpacker(raw=False)
    answers: list[Any] = []
    while data := await stream.receive_some(65536):
        unpacker.feed(data)
        answers.extend(unpacker)
    return answers, trio.current_time()


async def start(nursery: trio.Nursery, limits: ServerLimits, handler: Recorder | None = None) -> trio.abc.Stream:
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(serve_stream, server, PEER, handler or Recorder(), limits)
    return client


async def test_answers_come_back_as_they_finish(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        client = await start(nursery, ServerLimits(idle_timeout=60))
        await client.send_all(req(1, sleep=5) + req(2, sleep=1) + req(3, sleep=3))
        await client.send_eof()
        answers, _ = await read_until_closed(client)
    assert [a[1] for a in answers] == [2, 3, 1]


async def test_a_message_trickling_in_is_cut_off_at_the_frame_timeout(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        client = await start(nursery, ServerLimits(frame_timeout=10))
        wire = req(1, pad=100)
        start_time = trio.current_time()

        async def trickle() -> None:
            for i in range(len(wire)):
                try:
                    await client.send_all(wire[i : i + 1])
                except trio.BrokenResourceError:
                    return
                await trio.sleep(1)  # one byte a second

        nursery.start_soon(trickle)
        answers, closed_at = await read_until_closed(client)
    assert answers == []
    assert closed_at - start_time == pytest.approx(10)


async def test_pipelined_writes_that_split_messages_are_not_cut_off(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        client = await start(nursery, ServerLimits(frame_timeout=3, idle_timeout=60))
        messages = [req(i) for i in range(1, 21)]
        stream = b"".join(messages)
        cuts = [sum(len(m) for m in messages[:i]) + 5 for i in range(len(messages))] + [len(stream)]
        last = 0
        for cut in cuts:  # every write ends inside a message; 21 s in all, 7 frame timeouts
            await client.send_all(stream[last:cut])
            last = cut
            await trio.sleep(1)
        await client.send_eof()
        answers, _ = await read_until_closed(client)
    assert sorted(a[1] for a in answers) == list(range(1, 21))


async def test_idle_closes_only_when_nothing_is_in_flight(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        client = await start(nursery, ServerLimits(idle_timeout=300, request_timeout=2000))
        t0 = trio.current_time()
        await client.send_all(req(1, sleep=1000))  # far longer than the idle timeout
        answers, closed_at = await read_until_closed(client)
    assert [(a[1], a[2]) for a in answers] == [(1, None)]
    assert closed_at - t0 == pytest.approx(1000 + 300)


async def test_a_request_past_its_timeout_is_answered_internal(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        client = await start(nursery, ServerLimits(request_timeout=120))
        await client.send_all(req(1, sleep=1000))
        await client.send_eof()
        answers, _ = await read_until_closed(client)
    assert answers[0][2]["name"] == "INTERNAL" and "timed out" in answers[0][2]["message"]


async def test_a_peer_that_does_not_read_is_dropped(autojump_clock: trio.abc.Clock) -> None:
    client, server = trio.testing.lockstep_stream_pair()  # no buffer: unread answers block the sender
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_stream, server, PEER, Recorder(), ServerLimits(send_timeout=30))
        t0 = trio.current_time()
        await client.send_all(req(1))
        with trio.fail_after(100):
            while True:  # the peer reads nothing until the server has given up on it
                await trio.sleep(1)
                if trio.current_time() - t0 > 31:
                    break
        _, closed_at = await read_until_closed(client)
    assert closed_at - t0 < 40, "closed at the send timeout, long before the idle timeout"


async def test_requests_in_flight_are_capped_by_not_reading(autojump_clock: trio.abc.Clock) -> None:
    handler = Recorder()
    async with trio.open_nursery() as nursery:
        client = await start(nursery, ServerLimits(max_in_flight=2, idle_timeout=600), handler)
        await client.send_all(b"".join(req(i, sleep=100) for i in range(1, 6)))
        await trio.sleep(50)
        assert handler.started == 2, "the third request waits until a slot frees"
        await client.send_eof()
        answers, _ = await read_until_closed(client)
    assert sorted(a[1] for a in answers) == [1, 2, 3, 4, 5]
    assert handler.started == 5


class AtOnce(Recorder):
    """A handler that answers at once (the server's fast path), with ``pad`` bytes of filler."""

    def immediate(self, request: Request, peer: Peer) -> Any:
        return {"pad": "x" * request.params[0]["pad"], "id": request.msgid}


async def test_answers_written_at_once_survive_a_full_socket() -> None:
    # A real socket pair with a small send buffer: the daemon's non-blocking writes stop part-way
    # through an answer, and the rest must follow through the waiting path, byte for byte.
    client_sock, server_sock = trio.socket.socketpair()
    server_sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_SNDBUF, 4096)
    client = trio.SocketStream(client_sock)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_stream, trio.SocketStream(server_sock), PEER, AtOnce(), ServerLimits())
        await client.send_all(b"".join(req(msgid, pad=3000) for msgid in range(200)))
        await trio.testing.wait_all_tasks_blocked()  # the daemon is stuck on a full socket
        await client.send_eof()
        answers, _ = await read_until_closed(client)
    assert [(a[1], a[3]["id"], len(a[3]["pad"])) for a in answers] == [(i, i, 3000) for i in range(200)]
