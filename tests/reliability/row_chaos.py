"""Row "chaos": client processes leave a live vaultd in every way while engines fetch and sign.

DESIGN.md section 11, "Peers die mid-conversation". A real ``vaultd`` process (MIN KDF
profile, fake credentials: ``ex`` static, ``binance`` a ``sign`` one, ``renewing`` an
``oauth2`` one that a local fake exchange lets it renew every few seconds, so that watchers
get notifications) serves, for the mode's duration:

* well-behaved engines (``chaos_peers.py engine``, processes of their own): the sync client
  asks ``token.get`` and ``token.sign`` in turn, recording latencies and every error;
* chaos peers (``chaos_peers.py chaos``, a bounded number of processes, replaced as they end):
  the sync, asyncio and trio clients and raw sockets do random mixes of gets, signs, watches,
  pipelined bursts and admin calls with a wrong passphrase, and leave in random ways: close
  with answers unread, SO_LINGER 0 (a reset), half-close, garbage mid-frame, a stalled reader,
  a watcher that stops reading, a client timeout or a cancelled burst, SIGKILL of themselves
  mid-burst; and this row SIGKILLs chaos processes at random moments as well.

A daemon that dies is a crash: it is restarted (and unlocked) so that the row goes on and
counts how often it dies, and when first. Judged at the end: no restart (the same pid from
start to end, still alive), a fresh client still gets a token and a signature, zero errors
seen by the engines, the daemon's RSS at the end within ``RSS_BOUND_KIB`` of its RSS at the
start, its descriptors back to their count at the start (within ``FD_SLACK``) once every peer
has gone, no traceback in its log, every way of leaving and every client tried at least once.
The engines' p50/p99 are figures, not judged. The chaos peers' own errors are expected (short
timeouts, the wrong-passphrase delay, refusals) and not counted, except those no peer may
ever see (``NEVER``: INTERNAL and the like).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.connection_script import check_daemon, setup_vault
from tests.daemon_process import PASS, DaemonProcess, FakeExchangeProcess
from vaultd_client import Client, VaultdError

from .chaos_peers import CLIENTS, LIBRARY_EXITS, RAW_EXITS, RENEWING
from .row_load import percentile, rss_kib, stop_daemon
from .rows import Mode, Row

__all__ = ["RSS_BOUND_KIB", "run"]

REPO = Path(__file__).resolve().parents[2]
#: The daemon's RSS at the end over its RSS at the start (engines connected). What a churn of
#: short connections may keep: the allocator's pools and the audit log's queue (see row_load).
#: Measured: +2.7 MiB after a short run.
RSS_BOUND_KIB = 24 * 1024
#: Lifetime of the ``renewing`` credential's tokens: renewed about every 2/3 of it.
RENEW_EVERY = 4.0
RESTART_ATTEMPTS = 5
#: Descriptors the daemon may hold at the end, every peer gone, over its count at the start
#: (when it held the engines' connections): a connection it never closed is one more.
FD_SLACK = 4
#: Errors a client may never see, whatever it or another peer does: a bug in the daemon.
NEVER = frozenset({"Internal", "MalformedResponse", "ProtocolError", "UnknownMethod", "InvalidParams"})


class _GaveUp(Exception):
    """The daemon kept dying: the row stops early (its crashes are counted already)."""


@dataclass(frozen=True)
class _Plan:
    seconds: float
    engines: int
    chaos: int  # chaos processes running at once
    kills_per_second: float  # SIGKILLs of chaos processes by this row


PLANS: dict[Mode, _Plan] = {
    "short": _Plan(seconds=16.0, engines=2, chaos=4, kills_per_second=0.7),
    "full": _Plan(seconds=180.0, engines=2, chaos=6, kills_per_second=1.0),
    "soak": _Plan(seconds=900.0, engines=3, chaos=8, kills_per_second=1.0),
}


@dataclass
class _Run:
    daemon: DaemonProcess
    folder: Path
    plan: _Plan
    rng: random.Random
    started: float = field(default_factory=time.monotonic)
    chaos: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    spawned: int = 0
    killed: int = 0
    deaths: list[str] = field(default_factory=list)
    rss_samples: list[int] = field(default_factory=list)
    fd_samples: list[int] = field(default_factory=list)

    def spawn(self, role: str, until: float) -> tuple[subprocess.Popen[bytes], Path]:
        self.spawned += 1
        out = self.folder / f"{role}-{self.spawned}.out"
        command = [
            sys.executable,
            "-m",
            "tests.reliability.chaos_peers",
            role,
            "--socket",
            str(self.daemon.socket_path),
        ]
        command += ["--until", f"{until:.3f}", "--out", str(out), "--seed", str(self.rng.getrandbits(32))]
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return proc, out

    def watch_daemon(self) -> None:
        """A dead daemon is a crash: note it, and start it again so that the row goes on."""
        proc = self.daemon.proc
        assert proc is not None
        if proc.poll() is None:
            return
        at = time.monotonic() - self.started
        self.deaths.append(f"exit {proc.returncode} at {at:.1f} s")
        if len(self.deaths) == 1:
            print(f"chaos: vaultd died at {at:.1f} s; its log ends:\n{self.daemon.log[-2500:]}", file=sys.stderr)
        self.daemon.proc = None
        for _ in range(RESTART_ATTEMPTS):  # it may die again before it is unlocked
            try:
                self.daemon.start()
                with Client(self.daemon.socket_path, timeout=30, cache=False) as client:
                    client.unlock(PASS)
                return
            except (AssertionError, VaultdError):  # start() asserts that it came up
                if self.daemon.proc is not None and self.daemon.proc.poll() is None:
                    self.daemon.proc.kill()
                    self.daemon.proc.wait()
                self.daemon.proc = None
                self.deaths.append("died again while restarted")
        raise _GaveUp(f"vaultd could not be restarted in {RESTART_ATTEMPTS} attempts")

    def step(self, until: float) -> None:
        """Replace the chaos processes that ended; now and then SIGKILL one."""
        for entry in list(self.chaos):
            if entry[0].poll() is not None:
                self.chaos.remove(entry)
        while len(self.chaos) < self.plan.chaos and time.time() < until - 0.5:
            self.chaos.append(entry := self.spawn("chaos", until))
            self.logs.append(entry[1])
        if self.chaos and self.rng.random() < self.plan.kills_per_second * 0.05:
            victim, log = self.rng.choice(self.chaos)
            if victim.poll() is None:
                victim.send_signal(signal.SIGKILL)
                self.killed += 1
                with log.open("a") as out:
                    out.write(json.dumps({"client": "process", "exit": "sigkill-by-row", "requests": 0}) + "\n")


def _setup(daemon: DaemonProcess, exchange: FakeExchangeProcess) -> None:
    renewing = {
        "token_url": exchange.url + "/oauth/token",
        "grant_type": "client_credentials",
        "client_id": "fake-client",  # what the fake exchange knows
        "client_secret": "fake-secret",
    }
    setup_vault(daemon.socket_path, PASS, {RENEWING: ("oauth2", renewing)})


def fd_count(pid: int) -> int:
    """How many descriptors the process holds open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def _settled_fds(pid: int, start: int) -> int:
    """The daemon's descriptor count once the connections of the peers that left are closed (5 s at most)."""
    deadline = time.monotonic() + 5.0
    while (count := fd_count(pid)) > start and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def _log_lines(log: str, level: str) -> Counter[str]:
    """The daemon's lines of ``level``, with numbers blanked out so that alike lines count together."""
    return Counter(re.sub(r"\d+", "N", line)[:160] for line in log.splitlines() if f": {level}: " in line)


def _read_actions(logs: list[Path]) -> tuple[Counter[str], Counter[str]]:
    """What the chaos peers did (client and exit, and "requests") and the errors their clients saw."""
    actions: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for path in logs:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut by a SIGKILL
                continue
            if "error" in entry:
                errors[entry["error"]] += 1
                continue
            actions[f"{entry['client']} {entry['exit']}"] += 1
            actions["requests"] += entry["requests"]
    return actions, errors


def _chaos(run_: _Run, row: Row) -> None:
    plan, daemon = run_.plan, run_.daemon
    assert daemon.proc is not None
    pid = daemon.proc.pid
    until = time.time() + plan.seconds
    engines = [run_.spawn("engine", until) for _ in range(plan.engines)]
    time.sleep(1.0)  # the engines are connected and served: the daemon's size to compare with
    rss_start, fds_start = rss_kib(pid), fd_count(pid)
    next_sample = time.monotonic()
    while time.time() < until:
        run_.watch_daemon()
        run_.step(until)
        if time.monotonic() >= next_sample and daemon.proc is not None and daemon.proc.poll() is None:
            run_.rss_samples.append(rss_kib(daemon.proc.pid))
            run_.fd_samples.append(fd_count(daemon.proc.pid))
            next_sample += 0.5
        time.sleep(0.05)
    for proc, _ in [*engines, *run_.chaos]:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            row.errors += 1
            row.figures.setdefault("FAILED", "")
            row.figures["FAILED"] += "a client process did not end by itself; "
    run_.watch_daemon()
    _judge(run_, row, engines, pid, (rss_start, fds_start))


def _judge(
    run_: _Run, row: Row, engines: list[tuple[subprocess.Popen[bytes], Path]], pid: int, start: tuple[int, int]
) -> None:
    rss_start, fds_start = start
    daemon = run_.daemon
    failed: list[str] = []
    latencies: list[float] = []
    engine_errors: list[str] = []
    for proc, out in engines:
        if proc.returncode != 0 or not out.exists():
            failed.append(f"an engine exited {proc.returncode} without its report")
            continue
        report = json.loads(out.read_text())
        latencies += report["latencies"]
        engine_errors += report["errors"]
    row.served = len(latencies)
    row.errors += len(engine_errors)
    row.crashes += len(run_.deaths)
    alive = daemon.proc is not None and daemon.proc.poll() is None
    if not alive or daemon.proc is None or daemon.proc.pid != pid:
        failed.append(f"the daemon at the end is not the one from the start (pid {pid})")
    problem = check_daemon(daemon.socket_path) if alive else "dead"
    if problem is not None:
        failed.append(problem)
    rss_end = rss_kib(daemon.proc.pid) if alive and daemon.proc is not None else 0
    fds_end = _settled_fds(daemon.proc.pid, fds_start) if alive and daemon.proc is not None else 0
    if fds_end > fds_start + FD_SLACK:
        failed.append(f"the daemon holds {fds_end} descriptors with every peer gone ({fds_start} at the start)")
    row.figures["daemon fds"] = (
        f"start {fds_start} (engines connected), peak {max(run_.fd_samples, default=0)},"
        f" end {fds_end} (every peer gone; bound start + {FD_SLACK})"
    )
    if rss_end > rss_start + RSS_BOUND_KIB:
        failed.append(f"the daemon's RSS grew by {(rss_end - rss_start) / 1024:.1f} MiB")
    actions, chaos_errors = _read_actions(run_.logs)
    if wrong := {kind: n for kind, n in chaos_errors.items() if kind.split(":")[0] in NEVER}:
        failed.append(f"the chaos peers' clients saw {wrong}: never right, whatever a peer does")
    tried = {key.split(" ", 1)[1] for key in actions if " " in key}
    missing = sorted({*RAW_EXITS, *LIBRARY_EXITS} - tried - {"sigkill-self"})
    if "sigkill" not in tried and "sigkill-by-row" not in tried:
        missing.append("sigkill")
    if missing:
        failed.append(f"ways of leaving never tried: {', '.join(missing)}")
    clients_used = {key.split(" ", 1)[0] for key in actions if " " in key}
    if unused := sorted(set(CLIENTS) - clients_used):
        failed.append(f"clients never used: {', '.join(unused)}")
    log = daemon.log
    tracebacks = log.count("Traceback (most recent call last)")
    if tracebacks and not run_.deaths:
        failed.append(f"{tracebacks} traceback(s) in the daemon's log: a bug met on some connection")
    row.figures["daemon log"] = (
        f"{len(log.splitlines()):,} lines, {log.count(': ERROR: '):,} ERROR, {tracebacks} tracebacks"
    )
    for level in ("ERROR", "WARNING"):
        for i, (line, count) in enumerate(_log_lines(log, level).most_common(2)):
            row.figures[f"daemon {level} {i + 1}"] = f"{count:,}x {line}"
    row.errors += len(failed)
    requests = actions.pop("requests", 0)
    row.inputs = requests
    row.faults = sum(actions.values())
    row.connections = sum(count for key, count in actions.items() if not key.startswith("process "))
    row.figures["daemon"] = (
        f"pid {pid}, restarts {len(run_.deaths)}"
        + (f" ({'; '.join(run_.deaths[:5])})" if run_.deaths else "")
        + f", alive at the end: {'yes' if alive else 'no'}, a fresh client served: {problem or 'yes'}"
    )
    row.figures["engines"] = (
        f"{len(latencies):,} token.get/token.sign answered, {len(engine_errors)} errors;"
        f" p50 {percentile(latencies, 50) * 1e3:.2f} ms, p99 {percentile(latencies, 99) * 1e3:.2f} ms,"
        f" max {max(latencies, default=0.0) * 1e3:.1f} ms"
    )
    peak = max(run_.rss_samples, default=rss_end)
    quarters = [run_.rss_samples[len(run_.rss_samples) * q // 4 - 1] for q in (1, 2, 3, 4) if run_.rss_samples]
    row.figures["daemon RSS"] = (
        f"start {rss_start / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, end {rss_end / 1024:.1f} MiB"
        f" ({(rss_end - rss_start) / 1024:+.1f} MiB; bound +{RSS_BOUND_KIB / 1024:.0f} MiB);"
        f" at each quarter of the run: {', '.join(f'{kib / 1024:.1f}' for kib in quarters)} MiB"
    )
    row.figures["chaos processes"] = f"{run_.spawned - len(engines)} started, {run_.killed} SIGKILLed by the row"
    by_exit: Counter[str] = Counter()
    for key, count in actions.items():
        by_exit[key.split(" ", 1)[1]] += count
    row.figures["chaos exits"] = ", ".join(f"{how} {count:,}" for how, count in sorted(by_exit.items()))
    row.figures["chaos clients"] = ", ".join(
        f"{client} {sum(c for k, c in actions.items() if k.startswith(client + ' ')):,}" for client in CLIENTS
    )
    by_kind = Counter[str]()
    for kind, n in chaos_errors.items():
        by_kind[kind.split(":")[0]] += n
    row.figures["chaos clients' errors"] = (
        ", ".join(f"{kind} {n:,}" for kind, n in by_kind.most_common()) + " (expected: not counted but "
        f"{', '.join(sorted(NEVER))})"
    )
    for i, (kind, n) in enumerate(chaos_errors.most_common(3)):
        row.figures[f"chaos error {i + 1}"] = f"{n:,}x {kind}"
    for i, error in enumerate(engine_errors[:3]):
        row.figures[f"engine error {i + 1}"] = error[:200]
    if failed:
        row.figures["FAILED"] = row.figures.get("FAILED", "") + "; ".join(failed)


def run(mode: Mode) -> Row:
    plan = PLANS[mode]
    row = Row(f"chaos: peers leave in every way ({plan.seconds:.0f} s)")
    folder = Path(tempfile.mkdtemp(prefix="vdc-", dir="/tmp"))
    exchange = FakeExchangeProcess(expires_in=RENEW_EVERY)
    daemon = DaemonProcess(folder)
    run_ = _Run(daemon, folder, plan, random.Random(random.SystemRandom().getrandbits(32)))
    try:
        daemon.start()
        _setup(daemon, exchange)
        _chaos(run_, row)
    except _GaveUp as exc:
        row.crashes += len(run_.deaths)
        row.figures["FAILED"] = str(exc)
    except (VaultdError, OSError) as exc:
        row.errors += 1
        row.figures["FAILED"] = f"the row could not run: {type(exc).__name__}: {exc}"
    finally:
        for proc, _ in run_.chaos:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if daemon.proc is not None:
            row.crashes += stop_daemon(daemon)  # a death at the end, or a non-zero exit on SIGTERM
        exchange.stop()
        shutil.rmtree(folder, ignore_errors=True)
    row.figures["plan"] = f"{mode}: {plan.engines} engines, {plan.chaos} chaos processes at a time"
    return row
