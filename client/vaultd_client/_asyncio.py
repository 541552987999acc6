"""The asyncio client: :class:`AsyncClient`, for engines built on asyncio (ccxt, aiohttp).

A thin driver over the shared engine in ``_async_core``: asyncio's events and timeouts, and
socket I/O that is safe to cancel (it waits for readiness, then reads or writes at once, so a
cancelled wait has consumed nothing: ``loop.sock_recv`` can lose what it read when a timeout
fires in the same turn). Many concurrent calls share one pipelined connection.
"""

from __future__ import annotations

import asyncio
import socket

from ._async_core import AsyncClientBase, Backend
from ._unix import RECEIVE_SIZE

__all__ = ["AsyncClient"]


async def _ready(sock: socket.socket, *, readable: bool) -> None:
    """Wait until ``sock`` is readable (or writable); cancelling this consumes nothing."""
    loop = asyncio.get_running_loop()
    woken = loop.create_future()

    def wake() -> None:
        if not woken.done():
            woken.set_result(None)

    fd = sock.fileno()
    if readable:
        loop.add_reader(fd, wake)
    else:
        loop.add_writer(fd, wake)
    try:
        await woken
    finally:
        if readable:
            loop.remove_reader(fd)
        else:
            loop.remove_writer(fd)


class _AsyncioBackend:
    too_slow: tuple[type[BaseException], ...] = (TimeoutError,)

    def wrap(self, sock: socket.socket) -> socket.socket:
        return sock

    async def send(self, sock: socket.socket, data: memoryview) -> int:
        while True:
            try:
                return sock.send(data)
            except BlockingIOError:
                await _ready(sock, readable=False)

    async def receive_some(self, sock: socket.socket) -> bytes:
        while True:
            try:
                return sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                await _ready(sock, readable=True)

    def shutdown(self, sock: socket.socket) -> None:
        sock.shutdown(socket.SHUT_RDWR)

    def close(self, sock: socket.socket) -> None:
        sock.close()

    def event(self) -> asyncio.Event:
        return asyncio.Event()

    def lock(self) -> asyncio.Lock:
        return asyncio.Lock()

    def fail_after(self, seconds: float) -> asyncio.Timeout:
        return asyncio.timeout(seconds)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class AsyncClient(AsyncClientBase):
    """Talk to the local vaultd from asyncio: ``async with AsyncClient() as client``.

    The same methods as the sync ``Client``, awaited. ``socket_path`` defaults to
    ``$VAULTD_SOCKET``, else ``$XDG_RUNTIME_DIR/vaultd/vaultd.sock``; ``timeout`` bounds every
    call (``slow_timeout`` those that run the passphrase KDF). ``cache`` keeps tokens in
    process until ``cache_margin`` seconds before they expire.
    """

    @staticmethod
    def _backend() -> Backend:
        return _AsyncioBackend()
