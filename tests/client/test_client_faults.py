"""The drivers against a daemon gone wrong: a same-uid fake on a real Unix socket, scripted.

Each test is a defect a review found (and reproduced) before it was fixed: cancellations that
lost or broke other calls, a closed socket an event loop still watched, a cache refilled after
a lock, duplicate subscriptions, a watch that could not be closed, timeouts that did not bound
a call, one exception object shared by every waiter, and a busy daemon taken for an intruder.
A real daemon cannot be made to misbehave on cue, hence the fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from vaultd_client import AsyncClient, Client, DaemonUnavailable, Timeout, TrioClient, UntrustedSocket
from vaultd_client._cache import TokenCache
from vaultd_client._types import Token
from vaultd_client.errors import ConnectionLost, MalformedResponse

Answer = Callable[[socket.socket, list[Any]], None]


class FakeDaemon:
    """Accepts, reads requests, and hands each to ``answer`` (which may reply or not)."""

    def __init__(self, path: Path, answer: Answer | None = None, *, read: bool = True) -> None:
        self.path = path
        self.answer = answer
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        self.listener.listen(16)
        self.connections: list[socket.socket] = []
        self.requests: list[list[Any]] = []
        self.changed = threading.Condition()
        self.read = read
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.changed:
                self.connections.append(conn)
                self.changed.notify_all()
            if self.read:
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            unpacker.feed(data)
            for request in unpacker:
                with self.changed:
                    self.requests.append(request)
                    self.changed.notify_all()
                if self.answer is not None:
                    try:
                        self.answer(conn, request)
                    except OSError:
                        return

    def wait_requests(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.requests) >= count, 5), self.requests

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:
            conn.close()


def token_answer(msgid: int, value: str) -> bytes:
    return bytes(msgpack.packb([1, msgid, None, {"token": value, "type": "bearer", "expires_at": None}]))


def answer_tokens(conn: socket.socket, request: list[Any]) -> None:
    if request[2] == "token.watch":
        conn.sendall(msgpack.packb([1, request[1], None, {"watching": request[3][0]["names"]}]))
    else:
        conn.sendall(token_answer(request[1], "fake-" + request[3][0].get("name", "")))


@pytest.fixture
def fake(short_tmp: Path) -> Iterator[Callable[..., FakeDaemon]]:
    made: list[FakeDaemon] = []

    def start(answer: Answer | None = None, *, read: bool = True) -> FakeDaemon:
        daemon = FakeDaemon(short_tmp / f"f{len(made)}.sock", answer, read=read)
        made.append(daemon)
        return daemon

    yield start
    for daemon in made:
        daemon.close()


def test_asyncio_a_reader_that_times_out_does_not_lose_the_others_answer(fake: Callable[..., FakeDaemon]) -> None:
    daemon = fake()

    async def run() -> tuple[BaseException | None, Any]:
        client = AsyncClient(daemon.path, cache=False)
        first = asyncio.create_task(client.call("token.get", {"name": "a"}, timeout=0.2))  # the reader
        await asyncio.sleep(0.01)
        second = asyncio.create_task(client.call("token.get", {"name": "b"}, timeout=3.0))
        await asyncio.sleep(0.01)
        daemon.wait_requests(2)
        daemon.connections[0].sendall(token_answer(daemon.requests[1][1], "fake-b"))
        time.sleep(0.3)  # noqa: ASYNC251 - the loop busy past the reader's deadline as the answer arrives
        results = await asyncio.gather(first, second, return_exceptions=True)
        return results[0] if isinstance(results[0], BaseException) else None, results[1]

    timed_out, answer = asyncio.run(run())
    assert isinstance(timed_out, Timeout)
    assert answer == {"token": "fake-b", "type": "bearer", "expires_at": None}


async def test_trio_a_call_cancelled_before_it_was_sent_leaves_the_connection_to_the_others(
    fake: Callable[..., FakeDaemon],
) -> None:
    def later(conn: socket.socket, request: list[Any]) -> None:
        data = token_answer(request[1], "fake-" + request[3][0]["name"])

        def send() -> None:
            with contextlib.suppress(OSError):  # the client may be gone by then
                conn.sendall(data)

        threading.Timer(0.3, send).start()

    daemon = fake(later)
    for turns in range(4):
        client = TrioClient(daemon.path, cache=False)
        results: dict[str, Any] = {}

        async def victim(client: TrioClient = client, results: dict[str, Any] = results) -> None:
            results["victim"] = await client.call("token.get", {"name": "v"}, timeout=3)

        async def cancelled(scope: trio.CancelScope, client: TrioClient = client) -> None:
            with scope:
                await client.call("token.get", {"name": "x"}, timeout=3)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(victim)
            await trio.sleep(0.05)
            scope = trio.CancelScope()
            nursery.start_soon(cancelled, scope)
            for _ in range(turns):
                await trio.lowlevel.cancel_shielded_checkpoint()
            scope.cancel()
        assert results["victim"]["token"] == "fake-v", turns
        await client.aclose()


def test_asyncio_closing_with_a_blocked_writer_leaves_the_event_loop_sound(
    fake: Callable[..., FakeDaemon], short_tmp: Path
) -> None:
    daemon = fake(read=False)  # a daemon that stopped reading: a big request blocks in send
    other = short_tmp / "other.sock"

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    async def run() -> tuple[BaseException | None, bytes]:
        server = await asyncio.start_unix_server(echo, str(other))
        client = AsyncClient(daemon.path, cache=False)
        blocked = asyncio.create_task(client.call("credential.put", {"pad": "a" * 4_000_000}, timeout=5))
        await asyncio.sleep(0.1)
        await client.aclose()
        # The engine's next, unrelated connection may get the same descriptor number.
        reader, writer = await asyncio.open_unix_connection(str(other))
        writer.write(b"hello\n")
        echoed = await asyncio.wait_for(reader.readline(), 2)
        writer.close()
        error = (await asyncio.gather(blocked, return_exceptions=True))[0]
        server.close()
        return error if isinstance(error, BaseException) else None, echoed

    error, echoed = asyncio.run(run())
    assert echoed == b"hello\n"
    assert type(error) is ConnectionLost, repr(error)


def test_a_token_fetched_before_a_lock_is_not_cached_after_it() -> None:
    cache = TokenCache(margin=0)
    before = cache.generation
    cache.clear()  # what a 'locked' event does while the call is on its way
    cache.put(Token("ex", "fake-token", "bearer", None), before)
    assert cache.get("ex") is None
    cache.put(Token("ex", "fake-token", "bearer", None), cache.generation)
    assert cache.get("ex") is not None


def test_two_async_watches_on_one_name_subscribe_once(fake: Callable[..., FakeDaemon]) -> None:
    daemon = fake(answer_tokens)

    async def run() -> None:
        async with AsyncClient(daemon.path) as client:
            first, second = client.watch(["ex"]), client.watch(["ex"])
            await asyncio.gather(first.__aenter__(), second.__aenter__())
            daemon.connections[0].sendall(msgpack.packb([2, "vault.locked", [{}]]))
            async with asyncio.timeout(5):
                assert [e.kind async for e in first] == ["locked"]
                assert [e.kind async for e in second] == ["locked"]

    asyncio.run(run())
    assert [r[2] for r in daemon.requests] == ["token.watch"]


def test_a_malformed_notification_drops_the_connection_with_a_clear_error(fake: Callable[..., FakeDaemon]) -> None:
    # A token that is not a string (an update without a token is a signing credential's: fine).
    bad = msgpack.packb([2, "token.updated", [{"name": "ex", "token": 5, "expires_at": 1.0}]])

    sent_bad: list[bool] = []

    def answer(conn: socket.socket, request: list[Any]) -> None:
        if request[2] == "token.get":
            conn.sendall((b"" if sent_bad else bad) + token_answer(request[1], "fake-ok"))
            sent_bad.append(True)
        else:
            answer_tokens(conn, request)

    daemon = fake(answer)

    async def run() -> None:
        async with AsyncClient(daemon.path) as client, client.watch(["ex"]):
            with pytest.raises(MalformedResponse):
                await client.call("token.get", {"name": "other"}, timeout=2)
            assert client._core._link is None, "that connection is not used again"
            assert (await client.call("token.get", {"name": "again"}, timeout=2))["token"] == "fake-ok"

    asyncio.run(run())


def test_a_sync_watch_closed_from_another_thread_stops_its_iteration(fake: Callable[..., FakeDaemon]) -> None:
    daemon = fake(answer_tokens)
    watch = Client(daemon.path).watch(["ex"])
    seen: list[Any] = []

    def follow() -> None:
        seen.extend(watch)
        seen.append("ended")

    thread = threading.Thread(target=follow)
    thread.start()
    time.sleep(0.1)  # the thread is blocked reading: the point of the test
    watch.close()
    thread.join(timeout=5)
    assert not thread.is_alive() and seen == ["ended"]


def test_the_sync_timeout_bounds_the_whole_call_for_every_thread(fake: Callable[..., FakeDaemon]) -> None:
    daemon = fake()  # reads, never answers
    client = Client(daemon.path, timeout=0.5, cache=False)
    took: list[float] = []

    def worker(i: int) -> None:
        started = time.monotonic()
        with pytest.raises(Timeout):
            client.token(f"c{i}")
        took.append(time.monotonic() - started)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(took) == 4 and max(took) < 1.5, took  # not 0.5 s per thread waiting in line


def test_a_trickled_answer_cannot_stretch_the_sync_timeout(fake: Callable[..., FakeDaemon]) -> None:
    def trickle(conn: socket.socket, request: list[Any]) -> None:
        for byte in token_answer(request[1], "fake-slow"):
            time.sleep(0.05)
            conn.sendall(bytes([byte]))

    daemon = fake(trickle)
    started = time.monotonic()
    with pytest.raises(Timeout):
        Client(daemon.path, timeout=0.3, cache=False).token("ex")
    assert time.monotonic() - started < 1.0


def test_every_waiter_gets_its_own_exception(fake: Callable[..., FakeDaemon]) -> None:
    daemon = fake()

    async def run() -> dict[str, BaseException]:
        client = AsyncClient(daemon.path, cache=False)
        caught: dict[str, BaseException] = {}

        async def one(label: str, call: Any) -> None:
            try:
                await call
            except ConnectionLost as exc:
                caught[label] = exc

        tasks = [asyncio.create_task(one("unlock", client.unlock("fake passphrase 1")))]
        await asyncio.sleep(0.05)
        tasks += [asyncio.create_task(one(f"sign{i}", client.sign(f"c{i}", "GET", "https://x"))) for i in range(3)]
        await asyncio.sleep(0.05)
        daemon.wait_requests(4)
        daemon.connections[0].shutdown(socket.SHUT_RDWR)  # the daemon dies
        await asyncio.gather(*tasks)
        return caught

    caught = asyncio.run(run())
    assert len(caught) == 4 and len({id(exc) for exc in caught.values()}) == 4
    for label in ("sign0", "sign1", "sign2"):
        frames = [frame.f_locals for frame, _ in traceback.walk_tb(caught[label].__traceback__)]
        assert not any("fake passphrase 1" in repr(local) for local in frames), label


def test_a_busy_daemon_is_waited_for_not_taken_for_another_user(short_tmp: Path) -> None:
    path = short_tmp / "busy.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(0)  # never accepts: its queue fills at once
    queued = []
    for _ in range(4):
        sock = socket.socket(socket.AF_UNIX)
        sock.setblocking(False)
        try:
            sock.connect(str(path))
        except BlockingIOError:
            break
        queued.append(sock)
    with pytest.raises(DaemonUnavailable, match="busy"):
        Client(path, timeout=0.3).hello()

    async def on_asyncio() -> None:
        with pytest.raises(Timeout):
            await AsyncClient(path, timeout=0.3).hello()

    asyncio.run(on_asyncio())

    async def on_trio() -> None:
        with pytest.raises(Timeout):
            await TrioClient(path, timeout=0.3).hello()

    trio.run(on_trio)
    listener.close()


def test_server_uid_names_the_uid_the_daemon_must_run_as(fake: Callable[..., FakeDaemon]) -> None:
    # An engine of another user, let in by the daemon's policy, names the daemon's uid; a
    # listener of any other uid is refused before a byte is sent, on every driver.
    daemon = fake(answer_tokens)
    assert Client(daemon.path, server_uid=os.getuid()).token("ex").value == "fake-ex"
    with pytest.raises(UntrustedSocket):
        Client(daemon.path, server_uid=os.getuid() + 1).token("ex")

    async def on_asyncio() -> None:
        with pytest.raises(UntrustedSocket):
            await AsyncClient(daemon.path, server_uid=os.getuid() + 1).token("ex")

    asyncio.run(on_asyncio())

    async def on_trio() -> None:
        with pytest.raises(UntrustedSocket):
            await TrioClient(daemon.path, server_uid=os.getuid() + 1).token("ex")

    trio.run(on_trio)
    assert len(daemon.requests) == 1, "nothing was sent to the refused listener"
