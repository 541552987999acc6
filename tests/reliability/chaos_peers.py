"""The chaos row's client processes: well-behaved engines, and peers that leave in every way.

Run by ``row_chaos.py`` as ``python -m tests.reliability.chaos_peers ROLE ...``, one process
each, so that a SIGKILL takes a real process with its sockets:

* ``engine``: ``vaultd_client.Client(cache=False)`` asking ``token.get ex`` and
  ``token.sign binance`` in turn until its deadline; it writes one JSON object (calls answered,
  latencies, every error) to ``--out``.
* ``chaos``: one connection ("life") after another until its deadline, each with a client chosen
  at random (the sync ``Client``, ``AsyncClient``, ``TrioClient``, or a raw socket), doing a
  random mix of ``token.get``, ``token.sign``, ``token.watch``, pipelined bursts and admin calls
  with a wrong passphrase, and leaving in a random way (see :data:`LIBRARY_EXITS` and
  :class:`~tests.connection_script.Exit`, plus killing itself with SIGKILL mid-burst). Before
  each exit it appends one JSON line to ``--out`` (client, exit, requests sent): what the
  parent counts. Its own errors are expected and not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import trio

from tests.connection_script import SIGN_REQUEST, STATIC_TOKEN, WRONG_PASSPHRASE, Exit, ScriptedConnection
from vaultd_client import AsyncClient, Client, TrioClient, VaultdError

__all__ = ["CLIENTS", "LIBRARY_EXITS", "RAW_EXITS", "RENEWING", "main"]

CLIENTS = ("sync", "asyncio", "trio", "raw")
#: How a library client's life ends (the raw client leaves in each way of ``Exit``).
LIBRARY_EXITS = ("close", "timeout-unread", "cancel-burst", "watch-abandoned", "sigkill-self")
#: The credential the daemon renews every few seconds (its watchers get ``token.updated``).
RENEWING = "renewing"
ENGINE_PACE = 0.004
RAW_EXITS = (*map(str, Exit), "watch-stalled", "sigkill-self")
RAW_MIX = ("get", "get", "sign", "watch", "status", "hello", "admin", "get-missing")


# -- the well-behaved engine -----------------------------------------------------------------


def engine(path: Path, until: float, out: Path) -> None:
    """Fetch and sign in turn until ``until`` (time.time()); every failure is recorded."""
    latencies: list[float] = []
    errors: list[str] = []
    with Client(path, timeout=10, cache=False) as client:
        turn = 0
        while time.time() < until:
            turn += 1
            started = time.perf_counter()
            try:
                if turn % 2:
                    token = client.token("ex")
                    if token.value != STATIC_TOKEN:
                        errors.append(f"{time.time():.3f} token.get: a wrong token")
                        continue
                else:
                    client.sign("binance", "GET", str(SIGN_REQUEST["url"]))
            except VaultdError as exc:
                errors.append(f"{time.time():.3f} {type(exc).__name__}: {exc}")
                time.sleep(0.05)  # a dead daemon: do not spin
                continue
            latencies.append(time.perf_counter() - started)
            time.sleep(ENGINE_PACE)
    out.write_text(json.dumps({"served": len(latencies), "latencies": latencies, "errors": errors}))


# -- chaos ------------------------------------------------------------------------------------


class _Chaos:
    def __init__(self, path: Path, until: float, rng: random.Random, log: TextIO) -> None:
        self.path = path
        self.until = until
        self.rng = rng
        self.log = log
        self.deck: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def noting(self) -> Iterator[None]:
        """Swallow a client error (expected here), writing down its kind: some kinds never are."""
        try:
            yield
        except VaultdError as exc:
            self.note(exc)

    def note(self, exc: BaseException) -> None:
        if isinstance(exc, VaultdError):
            self.log.write(json.dumps({"error": f"{type(exc).__name__}: {str(exc)[:60]}"}) + "\n")
            self.log.flush()

    def record(self, client: str, how: str, requests: int) -> None:
        self.log.write(json.dumps({"client": client, "exit": how, "requests": requests}) + "\n")
        self.log.flush()

    def hold(self, most: float) -> None:
        """Sleep a random while, at most ``most`` seconds and never past the deadline."""
        time.sleep(max(0.0, min(self.rng.uniform(0.0, most), self.until - time.time())))

    def next_life(self) -> tuple[str, str]:
        """The next (client, exit) from a shuffled deck of every pair: each is tried early and often."""
        if not self.deck:
            self.deck = [("raw", how) for how in RAW_EXITS] + [(c, how) for c in CLIENTS[:3] for how in LIBRARY_EXITS]
            self.rng.shuffle(self.deck)
        return self.deck.pop()

    def life(self) -> None:
        kind, how = self.next_life()
        if kind == "raw":
            self.raw(how)
        elif kind == "sync":
            self.sync(how)
        elif kind == "asyncio":
            asyncio.run(self.asyncio(how))
        else:
            trio.run(self.trio, how)

    def kill_self(self, client: str, requests: int) -> None:
        self.record(client, "sigkill", requests)
        os.kill(os.getpid(), signal.SIGKILL)

    # raw sockets: every way of Exit

    def raw(self, how: str) -> None:
        conn = ScriptedConnection(self.path)
        if not conn.open():
            self.record("raw", "refused", 0)
            return
        if how == "watch-stalled":  # a watcher that stops reading while renewals arrive
            conn.send("watch-renewing")
            self.record("raw", how, 1)
            self.hold(4.0)
            conn.leave(Exit.CLOSE_UNREAD)
            return
        for _ in range(self.rng.randint(1, 4)):
            conn.send(self.rng.choice(RAW_MIX), self.rng.choice((1, 1, 5, 50)))
            if self.rng.random() < 0.3:
                conn.read_available()
            if self.rng.random() < 0.3:
                time.sleep(self.rng.uniform(0.0, 0.05))
        if how == "sigkill-self":
            self.kill_self("raw", conn.next_msgid)
        exit_ = Exit(how)
        self.record("raw", exit_, conn.next_msgid)
        if exit_ is Exit.STALL:
            conn.send("get", 500)
            self.hold(2.0)
            exit_ = Exit.CLOSE_UNREAD
        conn.leave(exit_, polite_timeout=5.0)

    # the sync client

    def sync(self, how: str) -> None:
        rng = self.rng
        requests = 0
        with Client(self.path, timeout=rng.uniform(0.05, 0.5), cache=False) as client:
            for _ in range(rng.randint(1, 6)):
                requests += 1
                with self.noting():
                    self._sync_call(client, rng.choice(("get", "sign", "admin", "status")))
            if how in {"timeout-unread", "cancel-burst"}:
                self.record("sync", how, requests + 1)
                with self.noting():  # gives up before the answer: close it unread
                    client.call("token.get", {"name": "ex"}, timeout=rng.uniform(0.0, 0.002))
                return
            if how == "watch-abandoned":
                self.record("sync", how, requests + 1)
                with self.noting(), client.watch([RENEWING, "ex"], timeout=1.0) as watch:
                    self.hold(3.0)  # renewals arrive unread; then the block is left
                    if rng.random() < 0.5:
                        next(watch, None)
                return
            if how == "sigkill-self":  # mid-call: the request sent, its answer on its way
                threading.Thread(target=self._sync_call, args=(client, "get"), daemon=True).start()
                time.sleep(rng.uniform(0.0, 0.002))
                self.kill_self("sync", requests + 1)
            self.record("sync", how, requests)

    def _sync_call(self, client: Client, what: str) -> None:
        if what == "get":
            client.token("ex")
        elif what == "sign":
            client.sign("binance", "GET", str(SIGN_REQUEST["url"]))
        elif what == "admin":
            client.call("credential.list", {"passphrase": WRONG_PASSPHRASE}, timeout=0.2)
        else:
            client.status()

    # the asyncio and trio clients: pipelined bursts, cancelled with answers unread

    async def asyncio(self, how: str) -> None:
        rng = self.rng
        async with AsyncClient(self.path, timeout=rng.uniform(0.05, 0.5), cache=False) as client:
            calls = self._burst(client)
            if how == "sigkill-self":
                tasks = [asyncio.ensure_future(call) for call in calls]
                await asyncio.sleep(0)
                self.kill_self("asyncio", len(tasks))
            wait = rng.uniform(0.0, 0.01) if how in ("cancel-burst", "timeout-unread") else 0.5
            self.record("asyncio", how, len(calls))
            with contextlib.suppress(TimeoutError):
                for result in await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), wait):
                    self.note(result)
            if how == "watch-abandoned":
                with contextlib.suppress(TimeoutError), self.noting():
                    async with client.watch([RENEWING, "ex"]):
                        await asyncio.sleep(rng.uniform(0.0, 3.0))

    async def trio(self, how: str) -> None:
        rng = self.rng
        async with TrioClient(self.path, timeout=rng.uniform(0.05, 0.5), cache=False) as client:
            calls = self._burst(client)
            wait = rng.uniform(0.0, 0.01) if how in ("cancel-burst", "timeout-unread") else 0.5
            if how != "sigkill-self":
                self.record("trio", how, len(calls))
            async with trio.open_nursery() as nursery:
                for call in calls:
                    nursery.start_soon(self._swallow, call)
                if how == "sigkill-self":
                    await trio.lowlevel.checkpoint()  # the burst is written, its answers on their way
                    await trio.lowlevel.checkpoint()
                    self.kill_self("trio", len(calls))
                await trio.sleep(wait)
                nursery.cancel_scope.cancel()
            if how == "watch-abandoned":
                with trio.move_on_after(rng.uniform(0.0, 3.0)), self.noting():
                    async with client.watch([RENEWING, "ex"]):
                        await trio.sleep_forever()

    async def _swallow(self, call: Any) -> None:
        with self.noting():
            await call

    def _burst(self, client: AsyncClient | TrioClient) -> list[Any]:
        """A pipelined burst of coroutines (not started): gets, signs, an admin guess, a watch."""
        calls: list[Any] = []
        for _ in range(self.rng.choice((1, 5, 20, 50))):
            what = self.rng.choice(("get", "get", "sign", "admin", "status"))
            if what == "get":
                calls.append(client.token("ex"))
            elif what == "sign":
                calls.append(client.sign("binance", "GET", str(SIGN_REQUEST["url"])))
            elif what == "admin":
                calls.append(client.call("credential.list", {"passphrase": WRONG_PASSPHRASE}, timeout=0.2))
            else:
                calls.append(client.status())
        return calls


def chaos(path: Path, until: float, seed: int, out: Path) -> None:
    """Lives, one after another, until ``until`` (time.time())."""
    with out.open("a") as log:
        peer = _Chaos(path, until, random.Random(seed), log)
        while time.time() < until:
            peer.life()
            time.sleep(peer.rng.uniform(0.0, 0.05))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("role", choices=("engine", "chaos"))
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--until", type=float, required=True, help="time.time() at which to stop")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.role == "engine":
        engine(args.socket, args.until, args.out)
    else:
        with contextlib.suppress(KeyboardInterrupt):
            chaos(args.socket, args.until, args.seed, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
