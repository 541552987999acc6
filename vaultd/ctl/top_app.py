"""The running ``vaultctl top``: its trio tasks, the terminal's modes, and the one-snapshot form.

Three trio tasks share one :class:`vaultd_client.TrioClient` (a pipelined connection): one
reads ``status`` every ``--interval`` seconds (never more than once a second), one follows
``token.watch`` on every credential for renewals as they happen, one reads keys from the
controlling terminal in cbreak mode (``l`` then ``y`` locks the vault, ``q`` quits); rich draws
the screen (:mod:`.top_view`) on the terminal's alternate screen. The terminal's modes and
screen are restored on every way out: ``q``, Ctrl-C, SIGTERM, SIGHUP, an error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import termios
import time
import tty
from collections.abc import Iterator
from typing import Any

import trio
from rich.console import Console
from rich.live import Live

from vaultd_client import Client, TrioClient, VaultdError
from vaultd_client.errors import Forbidden, RemoteError, TransportError

from .common import EXIT_OK
from .top_view import TopModel, plain_snapshot, render

#: What the lock key asks before it locks.
LOCK_QUESTION = "Lock the vault now? Engines get LOCKED until 'vaultctl unlock'. [y/N]"


def snapshot(client: Client, interval: float) -> int:
    """One snapshot: coloured on a terminal, plain text anywhere else; no daemon is exit status 3."""
    model = TopModel(interval)
    model.own_connections = 1  # this command's own connection is no engine
    model.took_status(client.status(), time.time(), time.monotonic())
    if sys.stdout.isatty():
        console = Console()
        console.print(render(model, time.time(), console.height, console.width))
    else:
        print(plain_snapshot(model, time.time()))
    return EXIT_OK


# -- the terminal ---------------------------------------------------------------------------


def _open_tty() -> int | None:
    """The controlling terminal, for keys (None when there is none: the view runs without keys)."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    if not os.isatty(fd):
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def _cbreak(fd: int | None) -> Iterator[None]:
    """Keys one at a time, not echoed (signals still work); the old modes back on every way out."""
    if fd is None:
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


# -- the live view ----------------------------------------------------------------------------


async def live(settings: Client, interval: float) -> int:
    """Run the full-screen view until ``q``, Ctrl-C, SIGTERM or SIGHUP; its exit status.

    ``settings`` is vaultctl's sync client, for its socket, timeout and server uid only: the
    view talks through a :class:`TrioClient` of its own.
    """
    fd = _open_tty()
    try:
        client = TrioClient(settings.socket_path, timeout=settings.timeout, cache=False, server_uid=settings.server_uid)
        console = Console()
        view = _View(client, TopModel(interval), console)
        view.model.keys = fd is not None
        view.model.own_connections = 1  # the view's one (pipelined) connection is no engine
        _count_calls(client, view.model)
        screen = Live(console=console, screen=True, auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
        try:
            with _cbreak(fd), screen:
                view.live = screen
                return await view.run(fd)
        finally:
            await client.aclose()
    finally:
        if fd is not None:
            os.close(fd)


def _count_calls(client: TrioClient, model: TopModel) -> None:
    """Count every request the view sends (status, token.watch, and their resends after a reconnect, lock).

    The daemon's ``requests_total`` counts them too; the view leaves them out of the rate it shows.
    Every request of a TrioClient goes through its core's ``call``, which this wraps.
    """
    core = client._core
    send = core.call

    async def counted(*args: Any, **kwargs: Any) -> Any:
        model.own_calls += 1
        return await send(*args, **kwargs)

    setattr(core, "call", counted)  # noqa: B010 - an instance attribute over the method, on purpose


class _View:
    """The tasks of one live view and what they share."""

    def __init__(self, client: TrioClient, model: TopModel, console: Console) -> None:
        self.client, self.model, self.console = client, model, console
        self.live: Live | None = None
        self.status = 0
        self._wake = trio.Event()
        self._polled = trio.Event()
        self._watch_scope: trio.CancelScope | None = None
        self._watching: list[str] = []
        self._nursery: trio.Nursery | None = None

    async def run(self, fd: int | None) -> int:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._signals)
            nursery.start_soon(self._poll)
            nursery.start_soon(self._follow)
            nursery.start_soon(self._draw)
            if fd is not None:
                nursery.start_soon(self._keys, fd)
        return self.status

    def quit(self, status: int = EXIT_OK) -> None:
        self.status = status
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def redraw(self) -> None:
        self._wake.set()

    async def _draw(self) -> None:
        while True:
            if self.live is not None:
                size = self.console.size
                self.live.update(render(self.model, time.time(), size.height, size.width), refresh=True)
            with trio.move_on_after(1.0 - time.time() % 1.0):  # the countdowns move on the second
                await self._wake.wait()
            self._wake = trio.Event()

    async def _signals(self) -> None:
        quitting = {signal.SIGINT: EXIT_OK, signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGHUP: 128 + signal.SIGHUP}
        with trio.open_signal_receiver(signal.SIGWINCH, *quitting) as received:
            async for signum in received:
                if signum in quitting:
                    self.quit(quitting[signal.Signals(signum)])
                    return
                self.redraw()  # the terminal was resized

    async def _poll(self) -> None:
        """``status`` every interval: one call at a time, so never more often than the interval."""
        model = self.model
        while True:
            try:
                model.took_status(await self.client.status(), time.time(), time.monotonic())
            except TransportError as exc:
                model.lost(str(exc), time.time())
            except RemoteError as exc:
                model.message = f"status refused: {exc.message} ({exc.name})"
            if self._watch_scope is not None and model.gone is None and model.names != self._watching:
                self._watch_scope.cancel()  # credentials came or went, or the vault was locked: watch anew
            self._polled.set()
            self._polled = trio.Event()
            self.redraw()
            await trio.sleep(model.interval)

    async def _follow(self) -> None:
        """``token.watch`` on every credential status lists; the client resubscribes after a restart."""
        model = self.model
        refused: list[str] = []  # the names the policy refused to let us watch: not asked again
        while True:
            names = model.names
            if names and names != refused:
                with trio.CancelScope() as scope:
                    self._watch_scope, self._watching = scope, names
                    try:
                        async with self.client.watch(names) as watch:
                            async for event in watch:
                                token = event.token
                                expires = token.expires_at if token else None
                                ttl = token.ttl if token else None
                                model.watched(event.kind, event.name, expires, ttl, time.time())
                                self.redraw()
                    except Forbidden as exc:
                        refused = names  # asking again each second would only fill the audit log
                        model.note(time.time(), "refused", None, f"renewals not shown: {exc.message}")
                    except VaultdError:
                        pass  # locked, a credential removed meanwhile, the daemon gone: status shows which
                self._watch_scope, self._watching = None, []
            await self._polled.wait()  # try again after the next status read

    async def _keys(self, fd: int) -> None:
        while True:
            await trio.lowlevel.wait_readable(fd)
            try:
                data = os.read(fd, 64)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:  # the terminal hung up
                self.model.keys = False
                return
            for key in data.decode("latin-1"):
                self._key(key)
            self.redraw()

    def _key(self, key: str) -> None:
        model = self.model
        if model.asking is not None:
            model.asking = None
            if key in "yY" and self._nursery is not None:
                model.message = "locking..."
                self._nursery.start_soon(self._lock)
            else:
                model.message = "not locked"
        elif key in "qQ":
            self.quit(EXIT_OK)
        elif key in "lL":
            model.message = None
            model.asking = LOCK_QUESTION

    async def _lock(self) -> None:
        model = self.model
        try:
            result = await self.client.lock()
        except VaultdError as exc:
            model.message = f"lock failed: {exc}"
        else:
            model.locked_now()
            model.message = f"vault {str(result.get('state', 'locked')).lower()}"
            model.note(time.time(), "lock", None, "you locked the vault from top")
        self.redraw()
