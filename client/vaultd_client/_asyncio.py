"""The asyncio client: :class:`AsyncClient`, for engines built on asyncio (ccxt, aiohttp).

A thin driver over the shared engine in ``_async_core``: asyncio's socket calls, events and
timeouts. Many concurrent calls share one pipelined connection.
"""

from __future__ import annotations

import asyncio
import socket

from ._async_core import AsyncClientBase, Backend
from ._unix import RECEIVE_SIZE, check_listener, unavailable

__all__ = ["AsyncClient"]


class _AsyncioBackend:
    too_slow: tuple[type[BaseException], ...] = (TimeoutError,)

    async def connect(self, path: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, path)
            check_listener(sock, path)
        except OSError as exc:
            sock.close()
            raise unavailable(path, exc) from None
        except BaseException:
            sock.close()
            raise
        return sock

    async def send_all(self, sock: socket.socket, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(sock, data)

    async def receive_some(self, sock: socket.socket) -> bytes:
        return await asyncio.get_running_loop().sock_recv(sock, RECEIVE_SIZE)

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
