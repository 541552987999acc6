"""Row: hostile clients against a live vaultd, while a well-behaved engine keeps getting tokens.

A real ``vaultd`` process (``tests/daemon_process.py``) holds credential ``ex``. An engine,
``vaultd_client.Client(cache=False)`` in a thread, asks for it every 2 ms from start to end;
its latencies, per phase, are the row's figures, and each call that fails or returns the
wrong token is an error. Hostile peers are raw sockets driven by an asyncio loop in this
process (no client library):

1. alone: the engine by itself, for a baseline.
2. attack, all at once:
   - half-sent messages (an array header, a request cut mid-name, all but the last byte, a
     string said to be 40,000 bytes long): the daemon must close each, unanswered, at its
     frame timeout (10 s by default; no command-line option changes it);
   - one byte per second of a real request: cut off at the same frame timeout, unanswered;
   - never-readers: pipeline requests until the socket is full, never read an answer. The
     daemon's RSS once they are stalled must stay within ``STALLED_BOUND_KIB`` of its RSS
     before; where the attack lasts long enough (not the short mode) the daemon must close
     each at its send timeout (30 s), and they reconnect and do it again;
   - a pipelined flood from several connections (up to ``FLOOD_WINDOW`` requests outstanding
     on each; the whole attack in the short mode, its first 20 s in the full one): every
     answer must be the token, none missing.
3. held: N connections opened and held (short: a few hundred against ``--max-connections``
   lowered; full and soak: 10,000 against the default cap). Each asks ``hello``: at most
   the cap (less the engine's connection) are served, the rest are closed, none is left
   hanging, the log says the cap was reached, and the served ones stay open while held.
   After they close, a new client gets a token again.

Every check that fails counts as an error and is named in the figures. The daemon's RSS is
sampled throughout: its peak may exceed the RSS before the attack by ``RSS_BOUND_KIB``.
The daemon is stopped with SIGTERM at the end; a death or a non-zero exit is a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from tests.daemon_process import DaemonProcess
from vaultd._daemon import build_parser
from vaultd._server import ServerLimits
from vaultd_client import Client, VaultdError

from .row_load import (
    connect_raw,
    is_good_answer,
    live_daemon,
    percentile,
    raise_fd_limit,
    rss_kib,
    stop_daemon,
    token_get,
)
from .rows import Mode, Row

__all__ = ["RSS_BOUND_KIB", "STALLED_BOUND_KIB", "run"]

TOKEN = "fake-token-hostile-" + "x" * 200
#: The daemon's timeouts: its defaults, which its command line does not change.
FRAME_TIMEOUT = ServerLimits().frame_timeout
SEND_TIMEOUT = ServerLimits().send_timeout
DEFAULT_CAP: int = build_parser().get_default("max_connections")
#: How late a timeout may fire on a busy 2-core machine, in seconds.
SLACK = 5.0
#: The daemon's RSS with every never-reader stalled, over its RSS before the attack.
STALLED_BOUND_KIB = 8 * 1024
#: The daemon's peak RSS during the row, over its RSS before the attack.
RSS_BOUND_KIB = 128 * 1024
ENGINE_PACE = 0.002
FLOOD_BATCH = 200
FLOOD_WINDOW = 2_000
HELLO = msgpack.packb([0, 1, "hello", [{"protocol": 1, "client": "held"}]])

HALF_MESSAGES = (
    b"\x94",  # an array header, nothing more
    token_get(1)[:10],  # cut in the middle of the method name
    token_get(1)[:-1],  # all but the last byte
    b"\x94\x00\x01\xda\x9c\x40" + b"m" * 100,  # a method name of 40,000 bytes announced, 100 sent
)


@dataclass(frozen=True)
class _Plan:
    half_sent: int
    trickling: int
    never_readers: int
    flooders: int
    held: int
    cap: int
    alone_seconds: float
    attack_seconds: float
    flood_seconds: float  # from the start of the attack; at most attack_seconds
    hold_seconds: float


PLANS: dict[Mode, _Plan] = {
    "short": _Plan(16, 16, 4, 3, 300, 128, 1.0, FRAME_TIMEOUT + 1, FRAME_TIMEOUT + 1, 2.0),
    "full": _Plan(64, 64, 8, 4, 10_000, DEFAULT_CAP, 3.0, SEND_TIMEOUT + 2 * SLACK, 20.0, 10.0),
    "soak": _Plan(64, 64, 8, 4, 10_000, DEFAULT_CAP, 10.0, 180.0, 120.0, 60.0),
}


@dataclass
class _Tally:
    """What the hostile peers did and saw."""

    opened: int = 0
    sent: int = 0  # messages (or parts of one) sent
    failed: list[str] = field(default_factory=list)
    cut_after: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    never_read_bytes: int = 0
    never_read_closed: list[float] = field(default_factory=list)
    flood_answers: int = 0
    flood_seconds: float = 0.0
    held_served: int = 0
    held_refused: int = 0

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.failed.append(what)


class _Engine:
    """The well-behaved client: ``Client(cache=False)`` in a thread, asking for ``ex`` in a loop."""

    def __init__(self, path: Path) -> None:
        self.phase = "alone"
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.failures: list[str] = []
        self._path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    @property
    def served(self) -> int:
        return sum(len(values) for values in self.latencies.values())

    def _run(self) -> None:
        with Client(self._path, cache=False) as client:
            while not self._stop.is_set():
                phase = self.phase
                started = time.perf_counter()
                try:
                    token = client.token("ex")
                except VaultdError as exc:
                    self.failures.append(f"{phase}: {type(exc).__name__}: {exc}")
                else:
                    if token.value == TOKEN:
                        self.latencies[phase].append(time.perf_counter() - started)
                    else:
                        self.failures.append(f"{phase}: a wrong token")
                self._stop.wait(ENGINE_PACE)


# -- raw socket helpers -----------------------------------------------------------------------


async def _until_closed(sock: socket.socket, deadline: float) -> tuple[float | None, bytes]:
    """Read until the daemon closes ``sock`` or the monotonic ``deadline`` passes.

    Returns when it closed (None: still open) and whatever it sent meanwhile.
    """
    loop = asyncio.get_running_loop()
    received = bytearray()
    while (left := deadline - time.monotonic()) > 0:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), left)
        except TimeoutError:
            break
        except OSError:  # reset by the daemon
            return time.monotonic(), bytes(received)
        if not data:
            return time.monotonic(), bytes(received)
        received += data
    return None, bytes(received)


async def _writable(sock: socket.socket, at_most: float) -> None:
    """Wait until ``sock`` can take more bytes (or the daemon closed it), at most ``at_most`` seconds."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(sock.fileno(), wake)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready, max(at_most, 0.0))
    finally:
        loop.remove_writer(sock.fileno())


def _judge_cut(tally: _Tally, case: str, started: float, closed_at: float | None, answer: bytes) -> None:
    """A message never finished must be cut off, unanswered, at the daemon's frame timeout."""
    if closed_at is None:
        tally.failed.append(f"{case}: still open {FRAME_TIMEOUT + SLACK:g} s after its first byte")
        return
    after = closed_at - started
    tally.cut_after[case].append(after)
    tally.expect(after >= FRAME_TIMEOUT - 1, f"{case}: closed after {after:.1f} s, before the frame timeout")
    tally.expect(not answer, f"{case}: answered ({answer[:60]!r})")


# -- the hostile peers ------------------------------------------------------------------------


async def _half_sent(path: Path, index: int, tally: _Tally) -> None:
    loop = asyncio.get_running_loop()
    with connect_raw(path) as sock:
        tally.opened += 1
        await loop.sock_sendall(sock, HALF_MESSAGES[index % len(HALF_MESSAGES)])
        tally.sent += 1
        started = time.monotonic()
        closed_at, answer = await _until_closed(sock, started + FRAME_TIMEOUT + SLACK)
        _judge_cut(tally, "half-sent", started, closed_at, answer)


async def _trickle(path: Path, tally: _Tally) -> None:
    """One byte of a real request per second."""
    message = token_get(1)
    with connect_raw(path) as sock:
        tally.opened += 1
        started = time.monotonic()
        closed_at: float | None = None
        answer = b""
        for offset in range(len(message)):
            try:
                sock.send(message[offset : offset + 1])
            except OSError:  # the daemon closed it
                closed_at = time.monotonic()
                break
            tally.sent += 1
            closed_at, answer = await _until_closed(sock, started + offset + 1)
            if closed_at is not None or answer:
                break
        else:
            closed_at, answer = await _until_closed(sock, time.monotonic() + SLACK)
        _judge_cut(tally, "one byte per second", started, closed_at, answer)


async def _never_reader(path: Path, until: float, judge_close: bool, tally: _Tally, stalled: asyncio.Event) -> None:
    """Pipeline requests until the socket is full, never read; again each time the daemon closes it."""
    msgid = 0
    while time.monotonic() < until:
        with connect_raw(path) as sock:
            tally.opened += 1
            pending = b""
            stalled_at: float | None = None
            closed_at: float | None = None
            while (now := time.monotonic()) < until:
                if not pending:
                    pending = b"".join(token_get(msgid + i) for i in range(1, 257))
                    msgid += 256
                    tally.sent += 256
                try:
                    sent = sock.send(pending)
                except BlockingIOError:
                    if stalled_at is None:
                        stalled_at = now
                        stalled.set()
                    await _writable(sock, min(1.0, until - now))
                    continue
                except OSError:  # EPIPE or a reset: the daemon closed it
                    closed_at = now
                    break
                tally.never_read_bytes += sent
                pending = pending[sent:]
                stalled_at = None  # the daemon read some: it was not stuck writing to us yet
        if closed_at is None:
            if judge_close and stalled_at is not None and stalled_at + SEND_TIMEOUT + SLACK < until:
                tally.failed.append(f"never-reader: not closed {until - stalled_at:.0f} s after it stopped reading")
            return
        if stalled_at is None:
            tally.failed.append("never-reader: closed while it could still send")
        else:
            tally.never_read_closed.append(closed_at - stalled_at)
            tally.expect(
                closed_at - stalled_at <= SEND_TIMEOUT + SLACK,
                f"never-reader: closed {closed_at - stalled_at:.0f} s after it stopped reading",
            )


class _Flooder:
    """One connection pipelining ``token.get`` as fast as the daemon answers, checking each answer."""

    def __init__(self, path: Path, tally: _Tally) -> None:
        self._path = path
        self._tally = tally
        self._outstanding: set[int] = set()
        self._progress = asyncio.Event()
        self._closed = False

    async def run(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        with connect_raw(self._path) as sock:
            self._tally.opened += 1
            reader = asyncio.create_task(self._read(sock))
            try:
                next_id = 1
                while (now := time.monotonic()) < until and not reader.done():
                    if len(self._outstanding) >= FLOOD_WINDOW:
                        self._progress.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._progress.wait(), until - now)
                        continue
                    ids = range(next_id, next_id + FLOOD_BATCH)
                    self._outstanding.update(ids)
                    next_id += FLOOD_BATCH
                    await loop.sock_sendall(sock, b"".join(token_get(i) for i in ids))
                    self._tally.sent += FLOOD_BATCH
                deadline = time.monotonic() + 10
                while self._outstanding and not reader.done() and (left := deadline - time.monotonic()) > 0:
                    self._progress.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._progress.wait(), left)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        self._tally.expect(not self._closed, "flood: the daemon closed a flooding connection")
        self._tally.expect(not self._outstanding, f"flood: {len(self._outstanding)} requests never answered")

    async def _read(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            try:
                data = await loop.sock_recv(sock, 65536)
            except OSError:
                data = b""
            if not data:
                self._closed = True
                return
            unpacker.feed(data)
            for answer in unpacker:
                msgid = answer[1] if isinstance(answer, list) and len(answer) == 4 else None
                if msgid in self._outstanding and is_good_answer(answer, msgid, TOKEN):
                    self._outstanding.discard(msgid)
                    self._tally.flood_answers += 1
                else:
                    self._tally.failed.append(f"flood: a wrong answer {answer!r:.120}")
            self._progress.set()


async def _hold(path: Path, plan: _Plan, daemon: DaemonProcess, tally: _Tally) -> None:
    """Open ``plan.held`` connections and hold them; the daemon serves up to its cap only."""
    socks: list[socket.socket] = []
    try:
        for _ in range(plan.held):
            try:
                socks.append(connect_raw(path))
            except OSError as exc:
                tally.failed.append(f"held: a connect failed ({exc})")
                break
        tally.opened += len(socks)
        outcomes = await asyncio.gather(*(_probe(sock) for sock in socks))
        tally.sent += len(socks)
        served = [sock for sock, outcome in zip(socks, outcomes, strict=True) if outcome == "served"]
        tally.held_served = len(served)
        tally.held_refused = outcomes.count("refused")
        silent = outcomes.count("silent")
        # The engine's connection is one of the cap's; a few may still be closing from the attack.
        tally.expect(
            plan.cap - 3 <= len(served) <= plan.cap - 1,
            f"held: {len(served)} served with a cap of {plan.cap} (the engine holds one)",
        )
        tally.expect(silent == 0, f"held: {silent} connections neither served nor refused")
        tally.expect(
            f"connection cap of {plan.cap} reached" in daemon.log, "held: the log does not say the cap was reached"
        )
        deadline = time.monotonic() + plan.hold_seconds
        early = await asyncio.gather(*(_until_closed(sock, deadline) for sock in served))
        dropped = sum(closed_at is not None for closed_at, _ in early)
        tally.expect(dropped == 0, f"held: the daemon dropped {dropped} served connections while held")
    finally:
        for sock in socks:
            sock.close()


async def _probe(sock: socket.socket) -> str:
    """``hello`` on a held connection: "served", "refused" (closed by the daemon) or "silent"."""
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, HELLO)
    except OSError:
        return "refused"
    unpacker = msgpack.Unpacker(raw=False)
    deadline = time.monotonic() + 15
    while (left := deadline - time.monotonic()) > 0:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), left)
        except TimeoutError:
            break
        except OSError:
            return "refused"
        if not data:
            return "refused"
        unpacker.feed(data)
        for answer in unpacker:
            return "served" if isinstance(answer, list) and answer[:3] == [1, 1, None] else "wrong"
    return "silent"


def _recovered(path: Path, timeout: float = 10.0) -> bool:
    """Whether a new client gets a token again once the held connections are gone."""
    deadline = time.monotonic() + timeout
    with Client(path, cache=False, timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                return client.token("ex").value == TOKEN
            except VaultdError:
                client.close()  # refused while the daemon still counts the old ones: again
                time.sleep(0.05)
    return False


# -- the row ----------------------------------------------------------------------------------


async def _sample_rss(pid: int, samples: list[int]) -> None:
    while True:
        samples.append(rss_kib(pid))
        await asyncio.sleep(0.2)


async def _attack(daemon: DaemonProcess, plan: _Plan, engine: _Engine, tally: _Tally, row: Row) -> None:
    assert daemon.proc is not None
    pid, path = daemon.proc.pid, daemon.socket_path
    samples: list[int] = []
    await asyncio.sleep(plan.alone_seconds)  # the engine alone: its baseline
    rss_before = rss_kib(pid)
    sampler = asyncio.create_task(_sample_rss(pid, samples))
    try:
        engine.phase = "attack"
        started = time.monotonic()
        until = started + plan.attack_seconds
        judge_close = plan.attack_seconds >= SEND_TIMEOUT + SLACK
        stalls = [asyncio.Event() for _ in range(plan.never_readers)]
        tasks: list[Awaitable[None]] = [_half_sent(path, i, tally) for i in range(plan.half_sent)]
        tasks += [_trickle(path, tally) for _ in range(plan.trickling)]
        tasks += [_never_reader(path, until, judge_close, tally, stall) for stall in stalls]
        attack = asyncio.gather(*tasks)
        # Memory with every never-reader stuck, before the flood adds its own.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(stall.wait() for stall in stalls)), 10)
        tally.expect(all(stall.is_set() for stall in stalls), "never-reader: the socket never filled up")
        rss_stalled = rss_kib(pid)
        flood_started = time.monotonic()
        flood_until = min(until, started + plan.flood_seconds)
        await asyncio.gather(attack, *(_Flooder(path, tally).run(flood_until) for _ in range(plan.flooders)))
        tally.flood_seconds = flood_until - flood_started
        rss_attack = rss_kib(pid)
        engine.phase = "held"
        await _hold(path, plan, daemon, tally)
        engine.phase = "after"
        tally.expect(await asyncio.to_thread(_recovered, path), "held: no token for a new client once they closed")
    finally:
        sampler.cancel()
    rss_after = rss_kib(pid)
    peak = max([rss_after, *samples])
    row.figures["daemon RSS"] = (
        f"before {rss_before / 1024:.1f} MiB, never-readers stalled {rss_stalled / 1024:.1f} MiB"
        f" (bound +{STALLED_BOUND_KIB / 1024:.0f} MiB), after the attack {rss_attack / 1024:.1f} MiB,"
        f" peak {peak / 1024:.1f} MiB (bound +{RSS_BOUND_KIB / 1024:.0f} MiB), end {rss_after / 1024:.1f} MiB"
    )
    tally.expect(rss_stalled - rss_before <= STALLED_BOUND_KIB, "never-reader: the daemon's RSS grew beyond its bound")
    tally.expect(peak - rss_before <= RSS_BOUND_KIB, "the daemon's RSS grew beyond its bound")


def _latency(values: list[float]) -> str:
    if not values:
        return "no answers"
    return (
        f"p50 {percentile(values, 50) * 1e3:.2f} ms, p99 {percentile(values, 99) * 1e3:.2f} ms,"
        f" max {max(values) * 1e3:.1f} ms ({len(values):,} tokens)"
    )


def run(mode: Mode) -> Row:
    plan = PLANS[mode]
    row = Row(f"hostile: {plan.held:,} held, cap {plan.cap}")
    tally = _Tally()
    raise_fd_limit(plan.held + 1024)
    args = () if plan.cap == DEFAULT_CAP else ("--max-connections", str(plan.cap))
    with live_daemon(*args, token=TOKEN) as daemon:
        engine = _Engine(daemon.socket_path)
        engine.start()
        try:
            asyncio.run(_attack(daemon, plan, engine, tally, row))
            errors = [line for line in daemon.log.splitlines() if ": ERROR: " in line or "Traceback" in line]
            tally.expect(not errors, f"the daemon logged {len(errors)} errors, first: {errors[:1]}")
        finally:
            engine.stop()
            row.crashes += stop_daemon(daemon)
    every = [value for values in engine.latencies.values() for value in values]
    row.figures["engine"] = _latency(every)
    for phase in ("alone", "attack", "held"):
        row.figures[f"engine, {phase}"] = _latency(engine.latencies.get(phase, []))
    for case, times in sorted(tally.cut_after.items()):
        row.figures[f"{case} cut after"] = f"{min(times):.1f}-{max(times):.1f} s ({len(times)} connections)"
    closes = tally.never_read_closed
    row.figures["never-readers"] = f"{tally.never_read_bytes / 1024:,.0f} KiB taken in, " + (
        f"closed {min(closes):.1f}-{max(closes):.1f} s after they stopped reading"
        if closes
        else f"held until the end (the daemon's send timeout is {SEND_TIMEOUT:g} s)"
    )
    rate = tally.flood_answers / tally.flood_seconds if tally.flood_seconds else 0.0
    row.figures["flood"] = f"{tally.flood_answers:,} answers, {rate:,.0f}/s over {plan.flooders} connections"
    row.figures["held"] = f"{tally.held_served} served, {tally.held_refused:,} refused at the cap of {plan.cap}"
    row.inputs = tally.sent
    row.faults = tally.opened
    row.connections = tally.opened + 1
    row.served = engine.served
    row.errors += len(engine.failures) + len(tally.failed)
    if tally.failed or engine.failures:
        row.figures["FAILED"] = "; ".join((tally.failed + engine.failures)[:5])
        for problem in tally.failed + engine.failures:
            print(f"hostile: {problem}", file=sys.stderr)
    return row
