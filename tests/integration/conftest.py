"""An in-process daemon on a real Unix socket, and a raw protocol client for it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from vaultd._listen import bind_unix_socket
from vaultd._rpc import Dispatcher
from vaultd._server import ServerLimits, serve
from vaultd._vault import FailureDelay, Vault
from vaultd_protocol import NEED_DATA, Connection, Notification, Request, Response, Role

PASS = "fake passphrase 1"


@dataclass
class Served:
    socket_path: Path
    vault: Vault

    async def connect(self) -> RawClient:
        return RawClient(await trio.open_unix_socket(str(self.socket_path)))

    async def ready(self, token: str = "fake-token-inproc") -> None:
        """Init, unlock and store credential 'ex'."""
        client = await self.connect()
        await client.ok("vault.init", passphrase=PASS, kdf_profile="min")
        await client.ok("vault.unlock", passphrase=PASS)
        await client.ok("credential.put", passphrase=PASS, name="ex", kind="static", config={"token": token})
        await client.aclose()


class RawClient:
    """Speaks the protocol by hand so tests can also send what no good client would."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = Connection(Role.CLIENT)
        self._next = 0

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def request(self, rpc: str, /, **params: Any) -> int:
        self._next += 1
        await self.stream.send_all(self.conn.send(Request(self._next, rpc, [params])))
        return self._next

    async def receive(self) -> Response | Notification | None:
        """The next message, or None once the daemon closed the connection."""
        while True:
            event = self.conn.next_event()
            if isinstance(event, (Response, Notification)):
                return event
            if event is not NEED_DATA:
                return None
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            self.conn.receive_data(data)

    async def call(self, rpc: str, /, **params: Any) -> Response:
        msgid = await self.request(rpc, **params)
        response = await self.receive()
        assert isinstance(response, Response) and response.msgid == msgid, response
        return response

    async def ok(self, rpc: str, /, **params: Any) -> Any:
        response = await self.call(rpc, **params)
        assert response.error is None, response.error
        return response.result

    async def raw_answer_then_close(self) -> tuple[list[Any], bool]:
        """Read raw msgpack answers until the daemon closes (or 5 s pass)."""
        unpacker = msgpack.Unpacker(raw=False)
        answers: list[Any] = []
        closed = False
        with trio.move_on_after(5):
            while True:
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                if not data:
                    closed = True
                    break
                unpacker.feed(data)
                answers.extend(unpacker)
        return answers, closed

    async def aclose(self) -> None:
        await self.stream.aclose()


StartServer = Callable[..., Awaitable[Served]]


@pytest.fixture
def start_server(nursery: trio.Nursery, short_tmp: Path) -> StartServer:
    async def start(
        limits: ServerLimits | None = None, delay: FailureDelay | None = None, clock: Any = None, **options: Any
    ) -> Served:
        """``options`` go to the :class:`Dispatcher` (``max_watch_names=2``)."""
        socket_path = short_tmp / "run" / "vaultd.sock"
        sock = bind_unix_socket(socket_path)
        extra = {} if clock is None else {"clock": clock}
        vault = Vault(short_tmp / "data", nursery=nursery, failure_delay=delay, **extra)
        (short_tmp / "data").mkdir(mode=0o700, exist_ok=True)
        dispatcher = Dispatcher(vault, socket_path, **options)
        listener = trio.socket.from_stdlib_socket(sock)
        await nursery.start(serve, listener, dispatcher, limits or ServerLimits())
        return Served(socket_path, vault)

    return start
