"""The trio client: :class:`TrioClient`. Imported only when used, so the library needs no trio.

A thin driver over the shared engine in ``_async_core``: trio's sockets, events and
deadlines. Many concurrent calls share one pipelined connection; no task runs in the
background, so no nursery is needed.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ._async_core import AsyncClientBase, Backend
from ._unix import RECEIVE_SIZE

__all__ = ["TrioClient"]


class _TrioBackend:
    too_slow: tuple[type[BaseException], ...] = (trio.TooSlowError,)

    def wrap(self, sock: socket.socket) -> trio.socket.SocketType:
        return trio.socket.from_stdlib_socket(sock)

    async def send(self, sock: trio.socket.SocketType, data: memoryview) -> int:
        # trio checks for cancellation before it writes, never after: cancelled, nothing was sent.
        try:
            return await sock.send(data)
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise ConnectionResetError(str(exc)) from None

    async def receive_some(self, sock: trio.socket.SocketType) -> bytes:
        try:
            return await sock.recv(RECEIVE_SIZE)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return b""

    def shutdown(self, sock: trio.socket.SocketType) -> None:
        sock.shutdown(socket.SHUT_RDWR)

    def close(self, sock: trio.socket.SocketType) -> None:
        sock.close()

    def event(self) -> trio.Event:
        return trio.Event()

    def lock(self) -> trio.Lock:
        return trio.Lock()

    @asynccontextmanager
    async def fail_after(self, seconds: float) -> AsyncIterator[None]:
        with trio.fail_after(seconds):
            yield

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


class TrioClient(AsyncClientBase):
    """Talk to the local vaultd from trio: ``async with TrioClient() as client``.

    The same methods and arguments as :class:`vaultd_client.AsyncClient`.
    """

    @staticmethod
    def _backend() -> Backend:
        return _TrioBackend()
