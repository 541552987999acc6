"""Row: many concurrent connections asking for tokens, with zero errors and bounded memory.

A real ``vaultd`` process (``tests/daemon_process.py``) serves C connections at once, each
asking ``token.get`` over and over, one request at a time, over raw sockets (an asyncio
protocol in this process: the client library is not what is measured here). Every answer
is checked (its id, no error, the stored token); anything else counts as an error.

Memory: the daemon's VmRSS is read before the load, every 0.2 s during it, and at the end
(connections still open). The first half of the run pays for the connections, the
allocator's pools and the audit log's queue (up to a second of lines, written every
second); the second half repeats the same work, so what it adds is what the daemon keeps
per request. Two bounds, stated in the figures: the RSS at the end exceeds the RSS before by
at most ``GROWTH_BOUND_KIB``, and (once the first half is long enough to reach a steady
size, so not in the short mode) the first half's peak by at most ``LEAK_BOUND_KIB``.

Also the live-daemon helpers that the hostile row shares: a daemon in a short temporary
folder, its RSS, and a raw connection that cannot hang on a full listen backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from tests.daemon_process import DaemonProcess

from .rows import Mode, Row

__all__ = [
    "GROWTH_BOUND_KIB",
    "LEAK_BOUND_KIB",
    "connect_raw",
    "is_good_answer",
    "live_daemon",
    "percentile",
    "raise_fd_limit",
    "rss_kib",
    "run",
    "stop_daemon",
    "token_get",
]

#: Growth of the daemon's RSS allowed from before the load to its end, connections still open.
#: Measured: about 36 MiB for the audit log's queue at full rate and the allocator's pools,
#: plus about 9 KiB per open connection.
GROWTH_BOUND_KIB = 64 * 1024
#: Growth allowed in the second half of the run, over the first half's peak.
LEAK_BOUND_KIB = 8 * 1024
#: How long the daemon takes to reach its steady size under full load (measured: about three
#: audit flushes); the second-half bound is judged only when the first half lasted this long.
WARM_UP_SECONDS = 3.0


@dataclass(frozen=True)
class _Plan:
    connections: int
    requests: int


PLANS: dict[Mode, _Plan] = {
    "short": _Plan(connections=50, requests=20_000),
    "full": _Plan(connections=1_000, requests=200_000),
    "soak": _Plan(connections=1_000, requests=1_000_000),
}

TOKEN = "fake-token-load-1"


# -- helpers shared with the hostile row ------------------------------------------------------


@contextlib.contextmanager
def live_daemon(*args: str, token: str) -> Iterator[DaemonProcess]:
    """A started, unlocked ``vaultd`` holding credential ``ex`` = ``token``; removed afterwards.

    The folder is short (``/tmp/vd-...``): a Unix socket path must fit in 108 bytes. The
    caller stops the daemon with :func:`stop_daemon`; whatever is still running is killed.
    """
    root = Path(tempfile.mkdtemp(prefix="vd-", dir="/tmp"))
    daemon = DaemonProcess(root)
    try:
        daemon.start(*args)
        daemon.ready(token)
        yield daemon
    finally:
        if daemon.proc is not None:
            daemon.proc.kill()
            daemon.proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def stop_daemon(daemon: DaemonProcess) -> int:
    """Stop the daemon with SIGTERM; the number of crashes seen (0 or 1).

    A daemon that died before we asked, exited non-zero, or would not stop counts as one.
    """
    proc = daemon.proc
    assert proc is not None
    code = proc.poll()
    if code is not None:
        daemon.proc = None
        print(f"vaultd died (exit {code}); its log ends:\n{daemon.log[-3000:]}", file=sys.stderr)
        return 1
    try:
        code = daemon.stop(signal.SIGTERM)
    except subprocess.TimeoutExpired:
        print("vaultd did not stop on SIGTERM", file=sys.stderr)
        return 1
    if code != 0:
        print(f"vaultd exited {code} on SIGTERM; its log ends:\n{daemon.log[-3000:]}", file=sys.stderr)
        return 1
    return 0


def rss_kib(pid: int) -> int:
    """The process's resident set (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def connect_raw(path: Path, timeout: float = 10.0) -> socket.socket:
    """A non-blocking connected Unix socket.

    The connect itself blocks: a non-blocking connect to a Unix socket whose listen backlog
    is full fails with EAGAIN instead of waiting (and asyncio would mistake it for success).
    SO_SNDTIMEO bounds that wait, so a daemon that stopped accepting cannot hang the row.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        seconds = int(timeout)
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, int((timeout - seconds) * 1e6))
        )
        sock.connect(str(path))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def raise_fd_limit(needed: int) -> None:
    """Let this process hold ``needed`` open files (raising the hard limit too, as root)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        hard = needed  # needs root (CAP_SYS_RESOURCE); fails loudly otherwise
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def token_get(msgid: int, name: str = "ex") -> bytes:
    """A ``token.get`` request, as any msgpack-rpc client would write it."""
    return msgpack.packb([0, msgid, "token.get", [{"name": name}]])  # type: ignore[no-any-return]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def is_good_answer(answer: Any, msgid: int, token: str) -> bool:
    """Whether a decoded message is the successful answer to request ``msgid`` with ``token``."""
    return (
        isinstance(answer, list)
        and len(answer) == 4
        and answer[0] == 1
        and answer[1] == msgid
        and answer[2] is None
        and isinstance(answer[3], dict)
        and answer[3].get("token") == token
    )


# -- the load ---------------------------------------------------------------------------------


class _Sequential(asyncio.Protocol):
    """One connection asking ``token.get`` again and again, one request at a time."""

    def __init__(self, latencies: array[float], problems: list[str]) -> None:
        self._latencies = latencies
        self._problems = problems
        self._transport: asyncio.Transport | None = None
        self._unpacker = msgpack.Unpacker(raw=False)
        self._msgid = 0
        self._left = 0
        self._sent_at = 0.0
        self._done: asyncio.Future[None] | None = None
        self.answered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def ask(self, count: int) -> asyncio.Future[None]:
        """Send ``count`` requests in turn; the future resolves after the last answer."""
        self._done = asyncio.get_running_loop().create_future()
        self._left = count
        if count:
            self._send()
        else:
            self._done.set_result(None)
        return self._done

    def _send(self) -> None:
        assert self._transport is not None
        self._msgid = (self._msgid + 1) & 0xFFFF_FFFF
        self._sent_at = time.perf_counter()
        self._transport.write(token_get(self._msgid))

    def data_received(self, data: bytes) -> None:
        self._unpacker.feed(data)
        for answer in self._unpacker:
            if self._left <= 0:
                self._fail(f"an answer nobody asked for: {answer!r:.200}")
                return
            if not is_good_answer(answer, self._msgid, TOKEN):
                self._fail(f"a wrong answer to request {self._msgid}: {answer!r:.200}")
                return
            self._latencies.append(time.perf_counter() - self._sent_at)
            self.answered += 1
            self._left -= 1
            if self._left:
                self._send()
            elif self._done is not None and not self._done.done():
                self._done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._left > 0:
            self._fail(f"connection lost with {self._left} requests to go ({exc!r})")

    def _fail(self, problem: str) -> None:
        self._problems.append(problem)
        self._left = 0
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
        if self._transport is not None:
            self._transport.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def _sample_rss(pid: int, samples: list[tuple[float, int]], interval: float = 0.2) -> None:
    """Read the daemon's RSS every ``interval`` seconds until cancelled."""
    started = time.perf_counter()
    while True:
        samples.append((time.perf_counter() - started, rss_kib(pid)))
        await asyncio.sleep(interval)


async def _load(daemon: DaemonProcess, plan: _Plan, row: Row) -> None:
    assert daemon.proc is not None
    pid = daemon.proc.pid
    loop = asyncio.get_running_loop()
    latencies: array[float] = array("d")
    problems: list[str] = []
    clients: list[_Sequential] = []
    samples: list[tuple[float, int]] = []
    rss_before = rss_kib(pid)
    per_client = plan.requests // plan.connections
    try:
        for _ in range(plan.connections):
            sock = connect_raw(daemon.socket_path)
            _, client = await loop.create_unix_connection(lambda: _Sequential(latencies, problems), sock=sock)
            clients.append(client)
        row.connections = len(clients)
        sampler = asyncio.create_task(_sample_rss(pid, samples))
        started = time.perf_counter()
        budget = 60 + plan.requests / 2_000  # far beyond any healthy run: a stall is an error
        await asyncio.wait_for(asyncio.gather(*(c.ask(per_client) for c in clients)), budget)
        took = time.perf_counter() - started
        sampler.cancel()
        rss_after = rss_kib(pid)
    except TimeoutError:
        problems.append("the load stalled: no end within its time budget")
        return
    finally:
        answered = sum(c.answered for c in clients)
        row.inputs = row.served = answered
        missing = per_client * plan.connections - answered
        row.errors += missing if missing > 0 else len(problems)  # a failed connection asks no more
        for client in clients:
            client.close()
        for problem in problems[:5]:
            print(f"load: {problem}", file=sys.stderr)
    row.figures["requests/s"] = f"{answered / took:,.0f} ({answered:,} token.get over {len(clients):,} connections)"
    row.figures["latency"] = (
        f"p50 {percentile(latencies, 50) * 1e3:.2f} ms, p99 {percentile(latencies, 99) * 1e3:.2f} ms,"
        f" max {max(latencies, default=0.0) * 1e3:.1f} ms"
    )
    _judge_rss(row, samples, rss_before, rss_after, took)


def _judge_rss(row: Row, samples: list[tuple[float, int]], before: int, after: int, took: float) -> None:
    """Put the RSS figures in the row, and count each bound exceeded as an error."""
    # The first half pays for the connections, the allocator's pools and a full audit queue;
    # the second half repeats the same work: what it adds was kept.
    first_half = max((rss for at, rss in samples if at <= took / 2), default=before)
    peak = max((rss for _, rss in samples), default=after)
    growth, late = after - before, after - first_half
    row.figures["daemon RSS"] = (
        f"before {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, after {after / 1024:.1f} MiB"
        f" ({growth / 1024:+.1f} MiB; bound {GROWTH_BOUND_KIB / 1024:.0f} MiB)"
    )
    judged = took / 2 >= WARM_UP_SECONDS
    verdict = (
        f"bound {LEAK_BOUND_KIB / 1024:.0f} MiB" if judged else f"not judged: a first half under {WARM_UP_SECONDS} s"
    )
    row.figures["RSS, second half"] = f"{late / 1024:+.1f} MiB over the first half's peak ({verdict})"
    failed = []
    if growth > GROWTH_BOUND_KIB:
        failed.append("the daemon's RSS grew beyond its bound")
    if judged and late > LEAK_BOUND_KIB:
        failed.append("the daemon's RSS kept growing in the second half of the run")
    if failed:
        row.errors += len(failed)
        row.figures["FAILED"] = "; ".join(failed)


def run(mode: Mode) -> Row:
    plan = PLANS[mode]
    row = Row(f"load: {plan.connections:,} conns, token.get")
    raise_fd_limit(plan.connections + 256)
    cap = str(plan.connections + 64)  # the default cap (256) is below the full run's 1,000
    with live_daemon("--max-connections", cap, token=TOKEN) as daemon:
        try:
            asyncio.run(_load(daemon, plan, row))
        finally:
            row.crashes += stop_daemon(daemon)
    return row
