"""vaultd fed by OpenBao, for the benchmark suite: credentials sourced through vaultctl, and the
requests that reach OpenBao, counted in its audit log.

What the suite takes from here:

- :func:`add_upstream` and :func:`source`: ``vaultctl upstream add NAME --kind openbao`` (the
  settings as JSON on stdin, the passphrase from a file) and ``vaultctl add NAME --kind KIND
  --from UPSTREAM:PATH``, run as an operator runs them, against a running vaultd.
- :class:`AuditLog`: the requests that reached the server in a window of time, read from its
  file audit device (``openbao_agent.start_dev_server`` declares one), by the AppRole role of
  the token that made them (``auth.metadata.role_name``, in clear in the audit log; the agents
  log in as ``bench``, the suite's vaultd as ``vaultd``, the load's as ``vaultd-load``) and by
  kind: KV reads, ``renew-self``, logins, anything else (by path).
- :func:`vaultd_load`: a vaultd of its own, N credentials sourced at ``refresh`` 1 s (each its
  own record, ``secret/bench/load/I``; put with ``upstream.put`` and ``credential.put``, what
  ``vaultctl`` sends, without its start-up per call), for each N in turn on the same daemon,
  the requests counted over a window after the last one is added. Its token is a
  ``vaultd-load`` token of 6 s, so that its renewals (at 2/3 of the TTL less up to 10% jitter)
  can be counted over the daemon's life.
- :func:`agent_load`: an engine reading through OpenBao Agent at a steady rate (100 reads a
  second), the server's requests counted over the same window.

Scaling, printed beside what was measured: a sourced credential is read once per ``refresh``,
so its reads per hour at the default 60 s are the measured rate times 1 s / 60 s; the token's
renewals per hour at a TTL of 1 h are the measured renewals per TTL, over 1 h. The agent's
load does not scale with anything but the engines' reads.
"""

from __future__ import annotations

import calendar
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from openbao_agent import OpenBaoAgent, Reader, Upstream, api, approle
from sign_vs_ssh_agent import PASS

from vaultd_client import Client

#: The AppRole roles whose requests are told apart in the audit log.
AGENT_ROLE, VAULTD_ROLE, LOAD_ROLE = "bench", "vaultd", "vaultd-load"
#: The load daemon's token TTL (seconds): short, so that its renewals happen within the run.
LOAD_TOKEN_TTL = 6
#: The refresh the load is measured at, and the default it is scaled to (seconds).
LOAD_REFRESH, DEFAULT_REFRESH = 1.0, 60.0
#: The kinds of request counted.
KV_READ, RENEW, LOGIN = "KV read", "renew-self", "login"


class DaemonLike(Protocol):
    """What is needed of the suite's ``Daemon``: its environment (XDG folders) and socket."""

    env: dict[str, str]
    path: Path


def vaultctl(daemon: DaemonLike, *commands: list[str], stdin: str = "") -> None:
    """Run ``vaultctl`` against ``daemon`` with each of ``commands`` (its arguments) at once, on every
    core (this process may be pinned; they are set-up, not measured), ``stdin`` given to each.

    Raises:
        RuntimeError: one of them did not exit 0 (every one is reaped first).
    """
    beside = Path(sys.executable).parent / "vaultctl"
    argv = [str(beside)] if beside.exists() else [sys.executable, "-c", "from vaultd.ctl import main; main()"]
    every_core = set(range(os.cpu_count() or 1))
    procs = [
        subprocess.Popen(
            [*argv, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=daemon.env,
            preexec_fn=lambda: os.sched_setaffinity(0, every_core),  # noqa: PLW1509 - sched_setaffinity only
        )
        for args in commands
    ]
    failed = []
    for args, proc in zip(commands, procs, strict=True):
        try:
            _, stderr = proc.communicate(stdin, timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        if proc.returncode != 0:
            failed.append(f"vaultctl {' '.join(args)} exited {proc.returncode}: {stderr.strip()}")
    if failed:
        raise RuntimeError("; ".join(failed))


def passphrase_file(root: Path) -> Path:
    """The suite's passphrase in a file, for ``--passphrase-file``."""
    path = root / "passphrase"
    if not path.exists():
        path.write_text(PASS + "\n")
        path.chmod(0o600)
    return path


def add_upstream(daemon: DaemonLike, root: Path, upstream: Upstream, role: str, name: str = "bao") -> None:
    """``vaultctl upstream add NAME --kind openbao``: a new ``role`` (see :func:`openbao_agent.approle`;
    tokens of 1 h) whose role_id and plain secret_id go on stdin; vaultd logs in at once."""
    role_id, secret_id = approle(upstream, role)
    settings = {
        "address": upstream.address,
        "auth": {"method": "approle", "role": role, "role_id": role_id, "secret_id": secret_id},
    }
    vaultctl(
        daemon,
        ["upstream", "add", name, "--kind", "openbao", "--passphrase-file", str(passphrase_file(root))],
        stdin=json.dumps(settings),
    )


def source(daemon: DaemonLike, root: Path, credentials: list[tuple[str, str, str]]) -> None:
    """``vaultctl add NAME --kind KIND --from UPSTREAM:PATH`` for each (NAME, KIND, UPSTREAM:PATH), at once."""
    where = str(passphrase_file(root))
    vaultctl(
        daemon,
        *(["add", name, "--kind", kind, "--from", at, "--passphrase-file", where] for name, kind, at in credentials),
    )


def epoch(stamp: str) -> float:
    """An audit entry's ``time`` (RFC 3339 in UTC, nanoseconds) as seconds since the epoch."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float("0." + (fraction or "0"))


def kind_of(entry: dict[str, Any]) -> str:
    request = entry.get("request") or {}
    path = str(request.get("path", ""))
    if path.startswith("auth/") and path.endswith("/login"):
        return LOGIN
    if path == "auth/token/renew-self":
        return RENEW
    if request.get("operation") == "read" and "/data/" in path:
        return KV_READ
    return f"{request.get('operation')} {path}"


def role_of(entry: dict[str, Any]) -> str:
    """The AppRole role of the token that made the request (a login's, from its answer), or "-"."""
    for auth in (entry.get("auth"), (entry.get("response") or {}).get("auth")):
        role = ((auth or {}).get("metadata") or {}).get("role_name")
        if role:
            return str(role)
    return "-"


class Entry(NamedTuple):
    """One answer the server logged: when (wall clock), to whom (role), what (kind), where (path)."""

    at: float
    role: str
    kind: str
    path: str


class AuditLog:
    """The server's audit log, read from a mark: what reached the server, by role and kind."""

    #: How long after a window's end to wait for the server to write its last entries (it writes
    #: an answer's entry before it sends the answer: this is for reads under way at the end).
    SETTLE = 0.05

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> tuple[int, float]:
        """(where the file ends, now): entries stamped from now on are written after that offset."""
        offset = self.path.stat().st_size if self.path.exists() else 0
        return offset, time.time()

    def answers(self, mark: tuple[int, float], until: float) -> list[Entry]:
        """The answers the server logged from ``mark`` to ``until`` (wall clock), in order."""
        offset, since = mark
        time.sleep(max(0.0, until + self.SETTLE - time.time()))
        found = []
        with self.path.open("rb") as log:
            log.seek(offset)
            for line in log:
                if not line.endswith(b"\n"):
                    break  # the server is still writing it: after the window, so not counted
                if not line.strip():
                    continue
                entry = json.loads(line)
                if entry.get("type") == "response" and since <= (at := epoch(entry["time"])) <= until:
                    path = str((entry.get("request") or {}).get("path", ""))
                    found.append(Entry(at, role_of(entry), kind_of(entry), path))
        return sorted(found)


def tally(answers: list[Entry]) -> Counter[tuple[str, str]]:
    """How many answers, by (role, kind)."""
    return Counter((entry.role, entry.kind) for entry in answers)


def mean_gap(times: list[float]) -> float:
    """The mean time between consecutive ``times`` (sorted), NaN with fewer than two."""
    return (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else float("nan")


def vaultd_load(
    daemon: DaemonLike,
    pid: int,
    upstream: Upstream,
    counts: list[int],
    window: float,
    rss_mib: Callable[[int], float],
    during: Callable[[float], None] = time.sleep,
    settle: float = LOAD_REFRESH / 2,
) -> dict[str, Any]:
    """The requests a vaultd with N sourced credentials sends OpenBao, for each N in ``counts``.

    ``daemon``: a vaultd started and not yet initialised, of its own (``pid`` its process, whose
    RSS ``rss_mib`` gives). Its upstream and credentials are put over the socket, as ``vaultctl
    upstream add`` and ``vaultctl add --from`` put them (``upstream.put``, ``credential.put``).
    Returns, per N: the window, the KV reads and renewals counted in it, any other request, the
    reads per second and scaled to an hour at the default refresh, the mean time between two
    reads of one record, and the daemon's RSS; and over the daemon's life since it logged in:
    the reads besides each ``put``'s own (and vaultd's count of them, ``upstream_calls``), the
    renewals (and the mean time between them) and the logins. ``during(seconds)`` fills each
    window (the suite reads through OpenBao Agent meanwhile: its requests are another role's);
    by default, a sleep.

    Each window begins ``settle`` seconds after the last credential was added (whose ``put`` read
    the record once, before the window): half a refresh, the default, puts a credential's reads
    furthest from the edges of a window of whole refreshes, whose last read drifts by the
    jitter (+-10% a refresh, summed); a window of one refresh (``--short``) has room for less.
    Every window ends within 40 s of the first credential's put: the default call budget of a
    credential (20 calls, refilled at 30 a minute) holds a 1 s refresh that long, then halves it.
    """
    audit = AuditLog(upstream.audit)
    for index in range(max(counts)):
        record = {"token": f"fake-load-{index:03d}-" + "x" * 182}  # 200 bytes, as secret/bench/static
        api(upstream, "POST", f"secret/data/bench/load/{index}", {"data": record})
    role_id, secret_id = approle(upstream, LOAD_ROLE, f"{LOAD_TOKEN_TTL}s")
    settings = {
        "address": upstream.address,
        "auth": {"method": "approle", "role": LOAD_ROLE, "role_id": role_id, "secret_id": secret_id},
    }
    windows: list[tuple[int, tuple[int, float], float, float]] = []  # (N, mark, until, RSS)
    with Client(daemon.path, timeout=60, cache=False) as admin:
        admin.call("vault.init", {"passphrase": PASS, "kdf_profile": "min"}, timeout=60)
        admin.unlock(PASS)
        life = audit.mark()
        admin.call("upstream.put", {"passphrase": PASS, "name": "bao", "kind": "openbao", "config": settings})
        added = 0
        for n in counts:
            for index in range(added, n):
                put = {
                    "passphrase": PASS,
                    "name": f"load{index}",
                    "kind": "static",
                    "source": {"upstream": "bao", "path": f"bench/load/{index}", "refresh": LOAD_REFRESH},
                }
                admin.call("credential.put", put, timeout=60)
            added = n
            time.sleep(settle)
            mark = audit.mark()
            during(window)
            windows.append((n, mark, time.time(), rss_mib(pid)))
        described = admin.call("status", {})["credentials"]
        until = time.time()
    answers = [entry for entry in audit.answers(life, until) if entry.role == LOAD_ROLE]
    rows: dict[str, Any] = {}
    for n, (_, since), to, rss in windows:
        inside = [entry for entry in answers if since <= entry.at <= to]
        reads = [entry for entry in inside if entry.kind == KV_READ]
        gaps = [mean_gap([e.at for e in reads if e.path == path]) for path in {e.path for e in reads}]
        gaps = [gap for gap in gaps if gap == gap]  # noqa: PLR0124 - NaN: a record read once in the window
        seconds = to - since
        rows[str(n)] = {
            "window_s": round(seconds, 2),
            "reads": len(reads),
            "renewals": sum(1 for entry in inside if entry.kind == RENEW),
            "other": dict(Counter(entry.kind for entry in inside if entry.kind not in (KV_READ, RENEW))),
            "reads_per_s": round(len(reads) / seconds, 2),
            "reads_per_hour_at_60s": round(len(reads) / seconds * 3600 * LOAD_REFRESH / DEFAULT_REFRESH),
            "one_record_read_every_s": round(sum(gaps) / len(gaps), 3) if gaps else None,
            "rss_mib": round(rss, 1),
        }
    reads = [entry for entry in answers if entry.kind == KV_READ]
    renewals = [entry.at for entry in answers if entry.kind == RENEW]
    every = mean_gap(renewals)
    return {
        "sourced": rows,
        "life_s": round(until - life[1], 1),
        "reads_life": len(reads) - len({entry.path for entry in reads}),  # each record's first: its put's
        "reads_life_by_vaultd": sum(c["upstream_calls"] for c in described if c.get("source")),
        "token_ttl_s": LOAD_TOKEN_TTL,
        "renewals": len(renewals),
        "logins": sum(1 for entry in answers if entry.kind == LOGIN),
        "renewal_every_s": round(every, 2) if every == every else None,  # noqa: PLR0124 - NaN
        "renewals_per_hour_at_ttl_1h": round(LOAD_TOKEN_TTL / every, 2) if every == every else None,  # noqa: PLR0124
    }


class AgentRun(NamedTuple):
    """Reads made through an agent at a steady rate: how many, and when (the audit log's mark at the start)."""

    reads: int
    mark: tuple[int, float]
    until: float


def paced_reads(agent: OpenBaoAgent, upstream: Upstream, rate: float, seconds: float) -> AgentRun:
    """Read through ``agent`` at ``rate`` reads a second for ``seconds``, on a connection of its own
    (the agent closes a keep-alive connection left idle for some seconds)."""
    reader = Reader(agent.socket_path)
    try:
        reader.read()  # connected and answered before the window
        mark = AuditLog(upstream.audit).mark()
        started = time.perf_counter()
        reads = 0
        while (now := time.perf_counter()) < started + seconds:
            due = started + reads / rate
            if now < due:
                time.sleep(due - now)
            reader.read()
            reads += 1
        return AgentRun(reads, mark, mark[1] + (time.perf_counter() - started))
    finally:
        reader.close()


def agent_load(upstream: Upstream, runs: list[AgentRun], rate: float) -> dict[str, Any]:
    """The server's requests from the agents' role during ``runs`` of :func:`paced_reads` at ``rate``:
    engine reads, server requests, requests per engine read, per hour."""
    audit = AuditLog(upstream.audit)
    reads = requests = kv_reads = 0
    seconds = 0.0
    other: Counter[str] = Counter()
    for run in runs:
        answers = [entry for entry in audit.answers(run.mark, run.until) if entry.role == AGENT_ROLE]
        reads += run.reads
        seconds += run.until - run.mark[1]
        requests += len(answers)
        kv_reads += sum(1 for entry in answers if entry.kind == KV_READ)
        other.update(entry.kind for entry in answers if entry.kind != KV_READ)
    return {
        "paced_at_per_s": rate,
        "window_s": round(seconds, 2),
        "engine_reads": reads,
        "engine_reads_per_s": round(reads / seconds, 1),
        "server_requests": requests,
        "kv_reads": kv_reads,
        "other": dict(other),
        "per_engine_read": round(requests / reads, 3),
        "requests_per_hour": round(requests / seconds * 3600),
    }
