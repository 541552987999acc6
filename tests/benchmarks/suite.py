"""The benchmark suite: vaultd beside its floor and its peers, in one run, with ratios.

    python tests/benchmarks/suite.py                  # the full run (a few minutes)
    python tests/benchmarks/suite.py --short          # a smoke run (CI): every row, few samples
    python tests/benchmarks/suite.py --out DIR        # also DIR/bench.txt, bench.json, bench.png

Rows (each measured here, in this run, on this machine):
- the floor: ``floor_server.py``, a bare trio MessagePack-RPC server answering a fixed 200-byte
  token (the very map vaultd answers with), timed with the same client calls as vaultd;
- vaultd ``token.get`` (static, and oauth2 against the fake exchange) and ``token.sign`` (HMAC,
  Ed25519): p50 and p99 on one connection (sync client; the median over several starts of every
  server, see ``over_starts``), the CPU each server spends per ``token.get`` (from /proc, over
  the same-core starts: steadier than a p50), and requests per second at 1, 8 and 64
  connections (asyncio, one client per connection);
- ``token.sign_many`` of N HMAC requests in one call (N = 1, 10, 100), p50 and p99 per
  signature, where the daemon knows the method ("n/a (method absent)" where it answers
  UNKNOWN_METHOD);
- every latency row (these, the peers', the exe rule's) in three placements
  (``placements.py``): engine and servers on one core, on two (engine cpu 0, servers cpu 1),
  and unpinned; the targets of the latency rows (``placements.TARGETS``) are judged in each,
  and the report names every one missed, where and by how much;
- peers: OpenSSH ssh-agent (REQUEST_IDENTITIES, an Ed25519 SIGN_REQUEST), gnome-keyring
  through secretstorage, and OpenBao Agent (``openbao_agent.py``: a KV v2 read through its
  Unix-socket API proxy, a real ``bao server -dev`` behind it; p50 and p99 with a lean client
  and with httpx, requests per second, the CPU and RSS of agent and server, and, not in
  ``--short``, one read with the server sealed), each left out, with the reason, where it is
  not installed;
- with that OpenBao server (``sourced.py``): vaultd ``token.get`` of a ``static`` credential
  and ``token.sign`` of the very binance-hmac record the agent reads, both sourced from it
  (``vaultctl upstream add`` and ``vaultctl add --from``, refresh 60 s) and answered from
  memory: the same rows as vaultd's own (requests per second at 1 and 64 connections), and,
  not in ``--short``, the sourced ``token.sign`` again once the server is sealed; then the
  requests that reach OpenBao from one host, counted in its audit log: a vaultd of its own
  with N credentials sourced at refresh 1 s (N = 1, 10, 100; 1 and 10 in ``--short``), scaled
  to the default 60 s, its token's renewals (a 6 s TTL, scaled to 1 h), and OpenBao Agent
  serving 100 engine reads a second meanwhile;
- every row's p50 and 64-connection rate as a ratio to the floor's;
- what an ``exe`` rule costs (``exe_rule.py``): ``token.get`` under a rule by exe beside one by
  uid on the same daemon (p50, p99, server CPU per call), the policy's decision under each in
  process (nanoseconds), and ``peer_of`` at accept on a peer with few and many descriptors open
  (of which the exe check);
- ``token.get`` p50 and p99 on a daemon serving metrics (``--metrics``), with a Prometheus-style
  scraper (another process, ``GET /metrics`` once a second) and without, in alternating windows
  of the same run, and what one scrape takes;
- the cached ``token()`` per call; ``import vaultd_client`` over bare Python; the daemon's
  start to READY (a NOTIFY_SOCKET of our own); unlock time per KDF profile; RSS idle with
  10,000 credentials; CPU per hour idle with 10,000 credentials (the renewer on trio's
  MockClock, as in renewal_scheduler.py).
The audit log is on throughout (the daemon's default). Figures, never assertions: the
targets are printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openbao_agent
import placements
import sourced
import trio
import trio.testing
from client_drivers import import_ms, per_call_us, start_floor
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from exe_rule import accept_rows, check_rows, rule_rows
from gnome_keyring import GnomeKeyring, missing
from openbao_agent import HTTPX_LABEL, LABEL, OpenBaoAgent, Upstream, sealed_read, start_upstream
from renewal_scheduler import idle_renewer
from sign_vs_ssh_agent import PASS, SshAgent, add, pinned, summary, timed

from vaultd import _vaultfile
from vaultd._secret import Secret
from vaultd_client import AsyncClient, Client
from vaultd_client.errors import UnknownMethod
from vaultd_protocol import KdfProfile

URL = "https://api.binance.com/api/v3/order?symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.01"
CONNECTIONS = (1, 8, 64)
#: vaultd's one-connection rows after ``token.get static`` (which is timed beside the floor):
#: (label, credential, kind). The OpenBao Agent rows follow them.
VAULTD_ROWS = [
    ("vaultd token.get oauth2", "oauth", "oauth2"),
    ("vaultd token.sign HMAC", "hmac", "sign"),
    ("vaultd token.sign Ed25519", "ed", "sign"),
]
#: The requests-per-second rows against vaultd: (label, method, params, connections).
VAULTD_RATE_ROWS = [
    ("vaultd token.get static", "token.get", {"name": "tok"}, CONNECTIONS),
    ("vaultd token.sign Ed25519", "token.sign", {"name": "ed", "method": "POST", "url": URL}, CONNECTIONS),
]
#: The rows of credentials sourced from OpenBao (``measure_vaultd`` adds them, and these rows go
#: after the rows above, where ``upstream`` is not None: without bao there is no upstream). They
#: are answered from memory like a local credential; the sign is of the record the agent reads.
SOURCED = "sourced (OpenBao)"
SOURCED_ROWS = [
    (f"vaultd token.get static, {SOURCED}", "sstatic", "static"),
    (f"vaultd token.sign HMAC, {SOURCED}", "sbinance", "sign"),
]
SOURCED_RATE_ROWS = [
    (f"vaultd token.get static, {SOURCED}", "token.get", {"name": "sstatic"}, (1, 64)),
    (f"vaultd token.sign HMAC, {SOURCED}", "token.sign", {"name": "sbinance", "method": "POST", "url": URL}, (1, 64)),
]
#: The upstream load (``sourced.vaultd_load``): N sourced credentials, a window of seconds for
#: each, and the engine reads per second through OpenBao Agent meanwhile.
LOAD_COUNTS, LOAD_WINDOW, AGENT_READS_PER_S = [1, 10, 100], 5.0, 100.0
#: In --short, windows of one refresh from 0.2 s after the last put: a credential just put reads
#: 0.7 to 0.9 s into it (a 1 s refresh, +-10%).
SHORT_LOAD_COUNTS, SHORT_LOAD_WINDOW, SHORT_LOAD_SETTLE = [1, 10], 1.0, 0.2
#: The batch rows: ``token.sign_many`` of N copies of the HMAC request in one call, shown per signature.
SIGN_MANY_SIZES = (1, 10, 100)
#: (p50, p99) in microseconds.
Sample = tuple[float, float]
#: The targets of the latency rows are held in every placement (``placements.TARGETS``).
TARGETS = {
    "64-connection throughput / floor": ">= 0.8",
    "Ed25519 sign p50 / ssh-agent sign p50": "<= 0.25",
    "cached token() us": "<= 2",
    "import ms over bare python": "<= 30",
    "start to READY ms": "<= 400",
}


class Daemon:
    """A real vaultd in a throwaway root, pinned to ``cpu``; READY is heard on our own NOTIFY_SOCKET."""

    def __init__(self, root: Path, cpu: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.root = root
        self.args = args
        (root / "run").mkdir(mode=0o700, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if k != "VAULTD_SOCKET"}
        self.env.update(
            XDG_RUNTIME_DIR=str(root / "run"), XDG_DATA_HOME=str(root / "data"), XDG_STATE_HOME=str(root / "state")
        )
        self.path = root / "run" / "vaultd" / "vaultd.sock"
        self.cpu = cpu
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.spawned = 0.0

    def start(self) -> float:
        """Start it; return the seconds from spawn to READY=1."""
        self.spawn()
        return self.ready()

    def spawn(self) -> None:
        """Start it, without waiting for it to be ready (:meth:`ready`)."""
        self.notify.close()
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify_path = self.root / "notify.sock"
        notify_path.unlink(missing_ok=True)
        self.notify.bind(str(notify_path))
        self.notify.settimeout(30)
        self.spawned = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vaultd", "--log-level", "warning", *self.args],
            env={**self.env, "NOTIFY_SOCKET": str(notify_path)},
            preexec_fn=pinned(self.cpu),  # noqa: PLW1509 - sched_setaffinity only
        )

    def ready(self) -> float:
        """Wait for READY=1; return the seconds since :meth:`spawn`."""
        while b"READY=1" not in self.notify.recv(4096):
            pass
        took = time.perf_counter() - self.spawned
        self.notify.setblocking(False)  # open until stop: the daemon keeps sending STATUS lines
        return took

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
            self.proc = None
        self.notify.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def throughput(path: Path, connections: int, seconds: float, call: str, params: dict[str, Any]) -> float:
    """Requests per second from ``connections`` asyncio clients (one connection each), sequential each."""

    async def run() -> float:
        clients = [AsyncClient(path, cache=False) for _ in range(connections)]
        done = 0
        deadline = 0.0

        async def one(client: AsyncClient) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await client.call(call, params)
                done += 1

        for client in clients:
            await client.call(call, params)  # connect and warm up
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        await asyncio.gather(*(one(client) for client in clients))
        elapsed = time.perf_counter() - started
        for client in clients:
            await client.aclose()
        return done / elapsed

    return asyncio.run(run())


def bulk_vault(data_dir: Path, count: int) -> None:
    """A vault file holding ``count`` static credentials, written directly (10,000 puts would
    rewrite the file 10,000 times)."""
    data_dir.mkdir(parents=True, mode=0o700)
    header, key = _vaultfile.new_vault(Secret(PASS), KdfProfile.MIN)
    now = time.time()
    credentials = {
        f"c{i}": {"kind": "static", "config": {"token": f"fake-token-{i:05d}"}, "created_at": now, "updated_at": now}
        for i in range(count)
    }
    body = {"credentials": credentials, "policy": {"rules": []}, "audit_key": secrets.token_bytes(32)}
    (data_dir / "vault").write_bytes(_vaultfile.encode(header, key, body))
    (data_dir / "vault").chmod(0o600)


def oauth_config(exchange_url: str, refresh: str) -> dict[str, Any]:
    return {
        "token_url": exchange_url + "/oauth/token",
        "grant_type": "refresh_token",
        "client_id": "fake-client",
        "client_secret": "fake-secret",
        "refresh_token": refresh,
    }


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vaultd_call(client: Client, name: str, kind: str) -> Callable[[], object]:
    """What an engine calls for credential ``name``: ``token.sign`` of ``URL`` if it signs, else ``token.get``."""
    return (lambda: client.sign(name, "POST", URL)) if kind == "sign" else (lambda: client.token(name))


def sign_many_label(n: int) -> str:
    return f"vaultd token.sign_many HMAC N={n}, per sig."


def sign_many_rows(client: Client, count: int) -> dict[str, Sample | None]:
    """p50 and p99 per signature of ``token.sign_many`` with N copies of the HMAC request (N in
    ``SIGN_MANY_SIZES``; about ``count`` signatures each, at least 200 calls); None for every row
    when the daemon does not know the method (UNKNOWN_METHOD)."""
    rows: dict[str, Sample | None] = {}
    for n in SIGN_MANY_SIZES:
        params = {"requests": [{"name": "hmac", "method": "POST", "url": URL, "body": b""}] * n}
        try:
            client.call("token.sign_many", params)
        except UnknownMethod:
            return dict.fromkeys(map(sign_many_label, SIGN_MANY_SIZES))
        p50, p99 = summary(timed(lambda params=params: client.call("token.sign_many", params), max(200, count // n)))
        rows[sign_many_label(n)] = (p50 / n, p99 / n)
    return rows


def latency_rows(
    servers: dict[str, Any],
    agent: SshAgent | None,
    keyring: GnomeKeyring | None,
    bao: OpenBaoAgent | None,
    count: int,
    *,
    floor_first: bool,
    vaultd_rows: list[tuple[str, str, str]],
) -> tuple[dict[str, Sample], dict[str, float]]:
    """(p50, p99) of each one-connection row against the servers of one start, and the CPU
    seconds each server spent on its ``token.get`` row (``servers``: path and pid by name); the
    rows of ``vaultd_rows`` (label, credential, kind) after ``token.get static``. With
    ``bao``, also the CPU seconds of OpenBao's agent, its server and this client on the agent's
    rows, and the wall seconds those rows took ("openbao rows, wall")."""
    rows: dict[str, Sample] = {}
    cpu: dict[str, float] = {}
    with Client(servers["vaultd"][0], cache=False) as client, Client(servers["floor"][0], cache=False) as floor:
        pair = [("floor", "floor token.get", floor), ("vaultd", "vaultd token.get static", client)]
        for name, label, caller in pair if floor_first else pair[::-1]:
            before = cpu_seconds(servers[name][1])
            rows[label] = summary(timed(lambda caller=caller: caller.token("tok"), count))  # the same call
            cpu[name] = cpu_seconds(servers[name][1]) - before
        rows = {label: rows[label] for _, label, _ in pair}  # the floor's row first, whichever ran first
        for label, name, kind in vaultd_rows:
            rows[label] = summary(timed(vaultd_call(client, name, kind), count))
        for label, sample in sign_many_rows(client, count).items():
            if sample is not None:
                rows[label] = sample
    if bao is not None:
        started = time.perf_counter()
        pids = {"openbao agent": bao.pid(), "openbao server": servers["openbao server"][1]}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        client_before = time.process_time()
        rows[LABEL] = summary(timed(bao.read, count))
        cpu["openbao client"] = time.process_time() - client_before
        cpu.update({name: cpu_seconds(pid) - before[name] for name, pid in pids.items()})
        client_before = time.process_time()
        rows[HTTPX_LABEL] = summary(timed(bao.read_httpx, count))
        cpu["openbao client, httpx"] = time.process_time() - client_before
        cpu["openbao rows, wall"] = time.perf_counter() - started
    if agent is not None:
        payload = URL.encode()
        rows["ssh-agent REQUEST_IDENTITIES"] = summary(timed(agent.identities, count))
        rows["ssh-agent SIGN_REQUEST Ed25519"] = summary(timed(lambda: agent.sign(payload), count))
    if keyring is not None:
        rows["gnome-keyring get_secret (secretstorage)"] = summary(timed(keyring.get, count))
    return rows, cpu


def over_starts(per_start: list[dict[str, Sample]]) -> dict[str, dict[str, Any]]:
    """Each row's median p50 and p99 over the starts, and its p50 at each start.

    One start is not enough on one core: whether the scheduler lets the client run the moment
    a server writes its answer is settled early in a pair of processes' life and then holds,
    so a p50 can differ by a third from one start of the same code to the next.
    """
    return {
        label: {
            "p50": round(statistics.median(rows[label][0] for rows in per_start), 1),
            "p99": round(statistics.median(rows[label][1] for rows in per_start), 1),
            "p50 per start": [round(rows[label][0], 1) for rows in per_start],
        }
        for label in per_start[0]
    }


def source_credentials(daemon: Daemon, root: Path, upstream: Upstream, failed: list[BaseException]) -> None:
    """``vaultctl upstream add``, then ``vaultctl add --from`` of the static and the sign credential
    (the records' refresh at its default); what goes wrong is appended to ``failed``. Run in a
    thread while the suite adds the local credentials: vaultctl's start-up is most of its time."""
    try:
        sourced.add_upstream(daemon, root, upstream, sourced.VAULTD_ROLE)
        sourced.source(
            daemon, root, [("sbinance", "sign", "bao:bench/binance"), ("sstatic", "static", "bao:bench/static")]
        )
    except BaseException as exc:  # raised again by the suite's thread
        failed.append(exc)


def measure_vaultd(args: argparse.Namespace, results: dict[str, Any]) -> None:
    count, seconds = args.count, args.seconds
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[0]
    root = Path(tempfile.mkdtemp(prefix="vd-suite-"))
    daemon = Daemon(root, cpu)
    floor, floor_path = start_floor(root, cpu)
    exchange = subprocess.Popen(
        [sys.executable, "-m", "vaultd._fake_exchange", "--expires-in", "86400"], stdout=subprocess.PIPE, text=True
    )
    agent: SshAgent | None = None
    keyring: GnomeKeyring | None = None
    has_agent = all(shutil.which(tool) for tool in ("ssh-agent", "ssh-keygen", "ssh-add"))
    if not has_agent:
        results["left out"].append("ssh-agent: ssh-agent, ssh-keygen or ssh-add is not installed")
    keyring_missing = missing()
    if keyring_missing:
        results["left out"].append(keyring_missing)
    bao_missing = openbao_agent.missing()
    if bao_missing:
        results["left out"].append(bao_missing)
    upstream: Upstream | None = None
    bao: OpenBaoAgent | None = None
    bao_seconds = 0.0  # the OpenBao rows' wall time: server start and configuration, agent starts, rows
    sourced_seconds = 0.0  # the sourced rows' wall time: vaultctl, rows, the upstream load
    load_daemon: Daemon | None = None
    setup: threading.Thread | None = None
    setup_failed: list[BaseException] = []
    try:
        if not bao_missing:  # before this process is pinned: the server is left to the scheduler
            started = time.perf_counter()
            upstream = start_upstream(root)
            bao_seconds += time.perf_counter() - started
        os.sched_setaffinity(0, {cpu})
        assert exchange.stdout is not None
        exchange_url = f"http://127.0.0.1:{int(exchange.stdout.readline())}"
        ready = [daemon.start()]
        with Client(daemon.path, timeout=60, cache=False) as admin:
            admin.call("vault.init", {"passphrase": PASS, "kdf_profile": "min"}, timeout=60)
            admin.unlock(PASS)
            if upstream is not None:  # meanwhile, as an operator would: vaultctl, the refresh at its default
                setup = threading.Thread(target=source_credentials, args=(daemon, root, upstream, setup_failed))
                setup.start()
            add(admin, "tok", "static", {"token": "f" * 200})
            control = urllib.request.Request(
                exchange_url + "/_control", data=json.dumps({"new_refresh_token": True}).encode(), method="POST"
            )
            with urllib.request.urlopen(control, timeout=10) as answer:
                refresh = json.loads(answer.read())["refresh_token"]
            add(admin, "oauth", "oauth2", oauth_config(exchange_url, refresh))
            add(admin, "hmac", "sign", {"scheme": "binance-hmac", "api_key": "fake-key", "secret": "fake-secret"})
            pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            add(admin, "ed", "sign", {"scheme": "binance-ed25519", "api_key": "fake-key", "private_key": pem.decode()})
            admin.token("oauth")  # the first oauth2 token comes from the exchange
        vaultd_rows = list(VAULTD_ROWS)
        if setup is not None:
            started = time.perf_counter()
            setup.join()
            setup = None
            if setup_failed:
                raise setup_failed[0]
            vaultd_rows += SOURCED_ROWS
            sourced_seconds += time.perf_counter() - started  # what the run waited for beyond the local adds

        # The one-connection rows in each placement, at each of several starts of every server
        # (see over_starts); the servers start afresh for each (the first start is the one above).
        server_seconds: dict[str, float] = {}
        latency: dict[str, dict[str, dict[str, Any]]] = {}
        for index, (placement, server_cpu, engine_cpus) in enumerate(placements.placements(cpus, results["left out"])):
            per_start = []
            for start in range(args.starts):
                os.sched_setaffinity(0, engine_cpus)  # first: a server left unpinned inherits it
                if index or start:
                    daemon.stop()
                    floor.kill()
                    floor.wait()
                    floor_path.unlink(missing_ok=True)
                    daemon.cpu = server_cpu
                    ready.append(daemon.start())
                    floor, floor_path = start_floor(root, server_cpu)
                    with Client(daemon.path, timeout=60, cache=False) as admin:
                        admin.unlock(PASS)
                run = f"{index}-{start}"
                if has_agent:
                    (root / f"agent-{run}").mkdir()
                    agent = SshAgent(root / f"agent-{run}", server_cpu)
                if not keyring_missing:
                    keyring = GnomeKeyring(root / f"keyring-{run}", server_cpu)
                servers = {"vaultd": (daemon.path, daemon.pid()), "floor": (floor_path, floor.pid)}
                if upstream is not None:
                    started = time.perf_counter()
                    bao = OpenBaoAgent(root / f"openbao-agent-{run}", upstream, server_cpu)
                    bao_seconds += time.perf_counter() - started
                    servers["openbao server"] = (upstream.address, upstream.proc.pid)
                rows, spent = latency_rows(
                    servers, agent, keyring, bao, count, floor_first=start % 2 == 0, vaultd_rows=vaultd_rows
                )
                per_start.append(rows)
                if index == 0:  # the CPU figures are the same-core placement's, as before
                    for name, spent_seconds in spent.items():
                        server_seconds[name] = server_seconds.get(name, 0.0) + spent_seconds
                if agent is not None:
                    agent.stop()
                    agent = None
                if keyring is not None:
                    keyring.stop()
                    keyring = None
                if bao is not None:
                    started = time.perf_counter()
                    bao.stop()
                    bao = None
                    bao_seconds += time.perf_counter() - started
            latency[placement] = over_starts(per_start)
        os.sched_setaffinity(0, {cpu})
        for pid in (daemon.pid(), floor.pid):  # the rows below as before: the servers on one core
            placements.pin_threads(pid, {cpu})
        results["latency_us"] = latency
        results["latency_absent"] = [
            sign_many_label(n) for n in SIGN_MANY_SIZES if sign_many_label(n) not in latency["same core"]
        ]
        results["latency_targets"] = placements.targets(latency)
        calls = args.starts * (count + min(200, count))  # timed() warms up with up to 200 calls
        results["server_cpu_us_per_token_get"] = {
            name: round(server_seconds[name] / calls * 1e6, 1) for name in ("floor", "vaultd")
        }
        if upstream is not None:
            bao_seconds += server_seconds.pop("openbao rows, wall")
            results["openbao_cpu_us_per_read"] = {
                name.removeprefix("openbao "): round(server_seconds[name] / calls * 1e6, 1)
                for name in ("openbao client", "openbao client, httpx", "openbao agent", "openbao server")
            }
        results["start_to_ready_ms"] = round(statistics.median(ready) * 1000, 1)

        rates: dict[str, dict[int, float]] = {}
        os.sched_setaffinity(0, set(os.sched_getaffinity(0)) | set(range(os.cpu_count() or 1)))
        rates["floor token.get"] = {
            n: round(throughput(floor_path, n, seconds, "token.get", {"name": "tok"})) for n in CONNECTIONS
        }
        rate_rows = VAULTD_RATE_ROWS + (SOURCED_RATE_ROWS if upstream is not None else [])
        for label, method, params, connections in rate_rows:
            started = time.perf_counter()
            rates[label] = {n: round(throughput(daemon.path, n, seconds, method, params)) for n in connections}
            if label.endswith(SOURCED):
                sourced_seconds += time.perf_counter() - started
        if upstream is not None:  # the agent pinned, as vaultd is; the client on every core, as for vaultd
            started = time.perf_counter()
            (root / "load").mkdir(mode=0o700)
            load_daemon = Daemon(root / "load", cpu)  # for the upstream load below; idle until then
            load_daemon.spawn()  # it starts while the agent does
            bao = OpenBaoAgent(root / "openbao-agent-rates", upstream, cpu)
            waited = time.perf_counter()
            load_daemon.ready()
            waited = time.perf_counter() - waited
            sourced_seconds += waited
            bao_seconds -= waited
            rates[LABEL] = {n: round(openbao_agent.throughput(bao.socket_path, n, seconds)) for n in CONNECTIONS}
            results["openbao_rss_mib"] = {
                "OpenBao Agent": round(rss_mib(bao.pid()), 1),
                "bao server -dev": round(rss_mib(upstream.proc.pid), 1),
                "vaultd (2 sourced from it)": round(rss_mib(daemon.pid()), 1),
            }
            bao_seconds += time.perf_counter() - started
            # The upstream's load from one host: a vaultd of its own, while an engine reads through this agent.
            started = time.perf_counter()
            agent_runs: list[sourced.AgentRun] = []
            bao_reads = bao
            load = sourced.vaultd_load(
                load_daemon,
                load_daemon.pid(),
                upstream,
                SHORT_LOAD_COUNTS if args.short else LOAD_COUNTS,
                SHORT_LOAD_WINDOW if args.short else LOAD_WINDOW,
                rss_mib,
                during=lambda window: agent_runs.append(
                    sourced.paced_reads(bao_reads, upstream, AGENT_READS_PER_S, window)
                ),
                **({"settle": SHORT_LOAD_SETTLE} if args.short else {}),
            )
            agent_load = sourced.agent_load(upstream, agent_runs, AGENT_READS_PER_S)
            results["openbao_load"] = {"vaultd": load, "agent": agent_load}
            assert load_daemon.proc is not None
            load_daemon.proc.terminate()  # reaped in finally: its exit need not hold up the rows
            sourced_seconds += time.perf_counter() - started
            started = time.perf_counter()
            bao.stop()  # not idle beside the exe rows on their core
            bao = None
            bao_seconds += time.perf_counter() - started
            results["openbao_rows_s"] = round(bao_seconds, 1)
            results["sourced_rows_s"] = round(sourced_seconds, 1)
        results["requests_per_s"] = rates

        cached = Client(daemon.path)
        cached.token("tok")
        results["cached_token_us"] = round(per_call_us(lambda: cached.token("tok"), count * 20), 3)
        cached.close()

        results["exe_rule"] = {}
        for placement, server_cpu, engine_cpus in placements.placements(cpus, []):  # as the latency rows
            placements.pin_threads(daemon.pid(), set(cpus) if server_cpu is None else {server_cpu})
            os.sched_setaffinity(0, engine_cpus)
            results["exe_rule"][placement] = rule_rows(daemon.path, daemon.pid(), count, args.starts, cpu_seconds)
        placements.pin_threads(daemon.pid(), {cpu})
        os.sched_setaffinity(0, {cpu})
        results["exe_check_ns"] = check_rows(count)
        results["accept_us"] = accept_rows(count)
        if upstream is not None and not args.short:  # last: the server stays sealed
            bao = OpenBaoAgent(root / "openbao-agent-sealed", upstream)
            results["openbao_sealed_read"] = sealed_read(upstream, bao)
            with Client(daemon.path, cache=False) as client:  # the same record, sourced: from memory
                p50, p99 = summary(timed(vaultd_call(client, "sbinance", "sign"), count))
                described = client.call("status", {})["credentials"]
            # DEGRADED once a read came due since the seal (every 60 s, +-10%; then backing off from 1 s)
            states = {c["name"]: c["state"] for c in described if c["name"] in ("sbinance", "sstatic")}
            results["sourced_sealed"] = {"p50": round(p50, 1), "p99": round(p99, 1), "states": states}
    finally:
        if agent is not None:
            agent.stop()
        if keyring is not None:
            keyring.stop()
        if setup is not None:
            setup.join()  # its vaultctl runs end within 60 s
        if bao is not None:
            bao.stop()
        if load_daemon is not None:
            load_daemon.stop()
        if upstream is not None:
            openbao_agent.stop(upstream.proc)
        daemon.stop()
        for proc in (floor, exchange):
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


#: A scraper in a process of its own: ``GET URL`` once a second for SECONDS, then its scrape times (ms) as JSON.
SCRAPER = """
import json, sys, time, urllib.request
url, seconds = sys.argv[1], float(sys.argv[2])
print("ready", flush=True)  # started and imported: what follows is scraping alone
sys.stdin.readline()
took, end = [], time.monotonic() + seconds
while time.monotonic() < end:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as answer:
        answer.read()
    took.append((time.perf_counter() - started) * 1000)
    time.sleep(max(0.0, 1.0 - (time.perf_counter() - started)))
print(json.dumps(took))
"""
SCRAPED = "vaultd token.get static, scraped at 1 Hz"
NOT_SCRAPED = "vaultd token.get static, metrics on, no scraper"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def measure_scraped(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """``token.get`` on one connection over windows of wall time, alternately with a scraper at 1 Hz
    and without (daemon and client on one core: the placement where the daemon's scrape work costs
    most; the scraper itself on the other core, as a Prometheus elsewhere, and started before the
    window so that its interpreter's start-up is not counted against the daemon)."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    window, rounds = (2.0, 1) if args.short else (10.0, 3)
    root = Path(tempfile.mkdtemp(prefix="vd-suite-"))
    url = f"http://127.0.0.1:{free_port()}/metrics"
    daemon = Daemon(root, cpu, ("--metrics", url.removeprefix("http://").removesuffix("/metrics")))
    affinity = os.sched_getaffinity(0)
    scraper_cpus = (affinity - {cpu}) or {cpu}
    per_round: dict[str, list[Sample]] = {NOT_SCRAPED: [], SCRAPED: []}
    scrape_ms: list[float] = []
    try:
        os.sched_setaffinity(0, {cpu})
        daemon.start()
        with Client(daemon.path, timeout=60, cache=False) as client:
            client.call("vault.init", {"passphrase": PASS, "kdf_profile": "min"}, timeout=60)
            client.unlock(PASS)
            add(client, "tok", "static", {"token": "f" * 200})
            timed(lambda: client.token("tok"), 200)  # warm up
            for _ in range(rounds):
                for label in (NOT_SCRAPED, SCRAPED):
                    scraper = None
                    if label == SCRAPED:  # on the other core where there is one, as Prometheus would be
                        scraper = subprocess.Popen(
                            [sys.executable, "-c", SCRAPER, url, str(window)],
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            text=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, scraper_cpus),  # noqa: PLW1509
                        )
                        assert scraper.stdin is not None and scraper.stdout is not None
                        assert scraper.stdout.readline() == "ready\n"  # its start-up is not in the window
                        scraper.stdin.write("go\n")
                        scraper.stdin.flush()
                    samples, end = [], time.perf_counter() + window
                    while time.perf_counter() < end:
                        started = time.perf_counter_ns()
                        client.token("tok")
                        samples.append((time.perf_counter_ns() - started) / 1000)
                    per_round[label].append(summary(samples))
                    if scraper is not None:
                        out, _ = scraper.communicate(timeout=60)
                        scrape_ms.extend(json.loads(out))
    finally:
        os.sched_setaffinity(0, affinity)
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
    results["scraped_us"] = {
        label: {
            "p50": round(statistics.median(p50 for p50, _ in rows), 1),
            "p99": round(statistics.median(p99 for _, p99 in rows), 1),
            "p50 per window": [round(p50, 1) for p50, _ in rows],
        }
        for label, rows in per_round.items()
    }
    results["scrape_ms"] = {
        "scrapes": len(scrape_ms),
        "median": round(statistics.median(scrape_ms), 2),
        "max": round(max(scrape_ms), 2),
        "window_s": window,
    }


def measure_unlock(profiles: list[str], results: dict[str, Any]) -> None:
    unlock: dict[str, float] = {}
    for profile in profiles:
        root = Path(tempfile.mkdtemp(prefix="vd-suite-"))
        daemon = Daemon(root)
        try:
            daemon.start()
            with Client(daemon.path, timeout=120, slow_timeout=300) as admin:
                admin.call("vault.init", {"passphrase": PASS, "kdf_profile": profile}, timeout=300)
                started = time.perf_counter()
                admin.unlock(PASS)
                unlock[profile] = round((time.perf_counter() - started) * 1000, 1)
        finally:
            daemon.stop()
            shutil.rmtree(root, ignore_errors=True)
    results["unlock_ms"] = unlock


def measure_idle(count: int, idle_seconds: float, results: dict[str, Any]) -> None:
    root = Path(tempfile.mkdtemp(prefix="vd-suite-"))
    daemon = Daemon(root)
    try:
        bulk_vault(root / "data" / "vaultd", count)
        daemon.start()
        before = rss_mib(daemon.pid())
        with Client(daemon.path, timeout=120, slow_timeout=300) as admin:
            admin.unlock(PASS)
            admin.token("c0")
        time.sleep(1)  # let the renewer settle (static tokens: nothing to renew)
        results["rss_idle_mib"] = {
            "locked": round(before, 1),
            f"unlocked, {count:,} credentials": round(rss_mib(daemon.pid()), 1),
        }
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
    cpu = trio.run(idle_renewer, count, idle_seconds, clock=trio.testing.MockClock(autojump_threshold=0))
    results["idle_cpu_s_per_hour"] = {f"{count:,} credentials": round(cpu * 3600 / idle_seconds, 4)}


def ratios(results: dict[str, Any]) -> dict[str, float]:
    latency, rates = results["latency_us"]["same core"], results["requests_per_s"]
    out = {
        "64-connection throughput / floor": rates["vaultd token.get static"][64] / rates["floor token.get"][64],
        "cached token() us": results["cached_token_us"],
        "import ms over bare python": results["import_ms_over_bare"],
        "start to READY ms": results["start_to_ready_ms"],
    }
    if "ssh-agent SIGN_REQUEST Ed25519" in latency:
        out["Ed25519 sign p50 / ssh-agent sign p50"] = (
            latency["vaultd token.sign Ed25519"]["p50"] / latency["ssh-agent SIGN_REQUEST Ed25519"]["p50"]
        )
    if LABEL in latency:
        out["OpenBao Agent KV read p50 / floor p50"] = latency[LABEL]["p50"] / latency["floor token.get"]["p50"]
        sourced_get = latency[SOURCED_ROWS[0][0]]["p50"]
        out["OpenBao Agent KV read p50 / sourced token.get p50"] = latency[LABEL]["p50"] / sourced_get
        out["OpenBao Agent 64-connection throughput / floor"] = rates[LABEL][64] / rates["floor token.get"][64]
    return {k: round(v, 3) for k, v in out.items()}


def render(results: dict[str, Any]) -> str:
    lines = [f"vaultd benchmark suite ({results['mode']}), {results['machine']}", ""]
    lines.extend(placements.render_latency(results["latency_us"], results["latency_absent"]))
    server_cpu = results["server_cpu_us_per_token_get"]
    lines.append(
        f"  server CPU per token.get, same core (us)       floor {server_cpu['floor']:.1f}, "
        f"vaultd {server_cpu['vaultd']:.1f} ({server_cpu['vaultd'] / server_cpu['floor']:.2f}x)"
    )
    if "openbao_cpu_us_per_read" in results:
        bao_cpu = results["openbao_cpu_us_per_read"]
        lines.append(
            f"  CPU per KV read via OpenBao Agent (us)         agent {bao_cpu['agent']:.1f}, "
            f"server {bao_cpu['server']:.1f}, this client {bao_cpu['client']:.1f} "
            f"(with httpx {bao_cpu['client, httpx']:.1f})"
        )
    if "scraped_us" in results:
        lines.append("")
        scrapes = results["scrape_ms"]
        lines.append(
            f"token.get on a daemon serving metrics, alternating {scrapes['window_s']:.0f} s windows, same core (us)"
        )
        lines.append(f"  {'':48} {'p50':>9} {'p99':>9}   p50 per window")
        for label, figure in results["scraped_us"].items():
            windows = ", ".join(f"{p50:.1f}" for p50 in figure["p50 per window"])
            lines.append(f"  {label:48} {figure['p50']:9.1f} {figure['p99']:9.1f}   {windows}")
        lines.append(
            f"  one scrape, as the scraper saw it: median {scrapes['median']:.2f} ms, max {scrapes['max']:.2f} ms "
            f"({scrapes['scrapes']} scrapes)"
        )
    if "ccxt_adapter_us" in results:
        import ccxt_adapter

        lines.append("")
        lines.append("ccxt sign() of a create-order request: with the secret in process, and through the adapter")
        lines.extend(ccxt_adapter.render([tuple(row) for row in results["ccxt_adapter_us"]]))
    lines.append("")
    lines.append("an exe rule, per request: one connection, same daemon, alternating (us)")
    lines.append(f"  {'':38} {'placement':>10} {'p50':>9} {'p99':>9}   server CPU per call")
    for placement, rows in results["exe_rule"].items():
        for label, figure in rows.items():
            p50, p99, server = figure["p50"], figure["p99"], figure["server_cpu_us"]
            lines.append(f"  {label:38} {placement:>10} {p50:9.1f} {p99:9.1f}   {server:.1f}")
    checks = results["exe_check_ns"]
    lines.append(
        f"  the policy's decision in process (ns)          rule by uid {checks['rule by uid']:.0f}, "
        f"rule by exe {checks['rule by exe']:.0f} (of which exe_holds {checks['of which exe_holds()']:.0f})"
    )
    lines.append("at accept, peer_of (us; every connection pays it)  whole     of which the exe check")
    for label, figure in results["accept_us"].items():
        lines.append(f"  peer with {label:38} {figure['peer_of_us']:9.1f} {figure['exe_check_us']:9.1f}")
    lines.append("")
    lines.append("requests per second, asyncio client, one connection per client: " + ", ".join(map(str, CONNECTIONS)))
    floor_rate = results["requests_per_s"]["floor token.get"][CONNECTIONS[-1]]
    lines.append(f"  {'':48} " + " ".join(f"{n:>9}" for n in CONNECTIONS) + f"   {CONNECTIONS[-1]}: / floor")
    for label, rate in results["requests_per_s"].items():
        lines.append(
            f"  {label:48} "
            + " ".join(f"{rate[n]:>9,}" if n in rate else f"{'-':>9}" for n in CONNECTIONS)
            + f"   {rate[CONNECTIONS[-1]] / floor_rate:7.2f}x"
        )
    if "openbao_rss_mib" in results:
        lines.append(
            "  RSS after those rows (MiB)                     "
            + ", ".join(f"{name} {mib:.1f}" for name, mib in results["openbao_rss_mib"].items())
        )
    if "openbao_sealed_read" in results:
        sealed = results["openbao_sealed_read"]
        lines.append(
            f"  a read through OpenBao Agent, server sealed    blocked {sealed['blocked_s']:.1f} s: {sealed['got']}"
        )
    if "sourced_sealed" in results:
        sealed = results["sourced_sealed"]
        lines.append(
            f"  {'vaultd token.sign HMAC, sourced, server sealed':48} p50 {sealed['p50']:.1f} us, "
            f"p99 {sealed['p99']:.1f} us (from memory); states: "
            + ", ".join(f"{name} {state}" for name, state in sealed["states"].items())
        )
    if "openbao_rows_s" in results:
        lines.append(
            f"  the OpenBao rows took {results['openbao_rows_s']:.1f} s of this run "
            "(server start and configuration, agent starts, rows)"
        )
    if "sourced_rows_s" in results:
        lines.append(
            f"  the sourced rows and the upstream load took {results['sourced_rows_s']:.1f} s "
            "(vaultctl, rows, the load's vaultd and windows)"
        )
    if "openbao_load" in results:
        lines.append("")
        lines.extend(render_load(results["openbao_load"]))
    lines.append("")
    lines.append(f"  cached token()                                  {results['cached_token_us']:9.3f} us per call")
    lines.append(f"  import vaultd_client over bare python           {results['import_ms_over_bare']:9.1f} ms")
    lines.append(f"  start to READY (median)                         {results['start_to_ready_ms']:9.1f} ms")
    for profile, ms in results["unlock_ms"].items():
        lines.append(f"  unlock, KDF profile {profile:28} {ms:9.1f} ms")
    for label, mib in results["rss_idle_mib"].items():
        lines.append(f"  RSS idle, {label:38} {mib:9.1f} MiB")
    for label, cpu in results["idle_cpu_s_per_hour"].items():
        lines.append(f"  CPU per hour idle, {label:29} {cpu:9.4f} s (renewer, accelerated clock)")
    lines.append("")
    lines.extend(placements.render_targets(results["latency_targets"], list(results["latency_us"])))
    lines.append("")
    lines.append("other targets (ratios from this run; latency ratios of the same-core placement)")
    for name, value in results["ratios"].items():
        lines.append(
            f"  {name:48} {value:9.3f}   " + (f"target {TARGETS[name]}" if name in TARGETS else "a peer: no target")
        )
    lines.extend(f"left out: {reason}" for reason in results["left out"])
    return "\n".join(lines)


def render_load(load: dict[str, Any]) -> list[str]:
    """The upstream's load from one host (``sourced.vaultd_load`` and ``sourced.agent_load``)."""
    vaultd, agent = load["vaultd"], load["agent"]
    lines = [
        "OpenBao requests from one host, counted in OpenBao's audit log (by the role of the caller's token)",
        f"  {'':48} {'window':>7} {'requests':>9} {'per s':>8}   per hour at refresh 60 s",
    ]
    for n, row in vaultd["sourced"].items():
        label = f"vaultd, {n} credential{'s' if n != '1' else ''} sourced, refresh 1 s"
        every = row["one_record_read_every_s"]
        lines.append(
            f"  {label:48} {row['window_s']:6.1f}s {row['reads']:>9,} {row['reads_per_s']:8.1f}   "
            f"{row['reads_per_hour_at_60s']:>9,}   (one record read every "
            + (f"{every:.2f} s" if every is not None else "-")
            + f"; RSS {row['rss_mib']:.1f} MiB)"
        )
    other = {kind: n for row in vaultd["sourced"].values() for kind, n in row["other"].items()}
    every, logins = vaultd["renewal_every_s"], vaultd["logins"]
    lines.append(
        f"  its own token, over {vaultd['life_s']:.1f} s: {logins} login{'s' if logins != 1 else ''}, "
        f"{vaultd['renewals']} renew-self "
        + (
            f"every {every:.2f} s at a {vaultd['token_ttl_s']} s TTL ({every / vaultd['token_ttl_s']:.2f} of it): "
            f"{vaultd['renewals_per_hour_at_ttl_1h']:.2f} an hour at a 1 h TTL"
            if every is not None
            else f"(a {vaultd['token_ttl_s']} s TTL; at 2/3 of it less up to 10%: about 1.6 an hour at a 1 h TTL)"
        )
    )
    lines.append(
        f"  its reads over that time, besides each put's own: {vaultd['reads_life']:,} in the audit log, "
        f"{vaultd['reads_life_by_vaultd']:,} by vaultd's count; other requests in the windows: "
        + (", ".join(f"{kind} {n}" for kind, n in other.items()) if other else "none")
    )
    label = f"OpenBao Agent, {agent['paced_at_per_s']:.0f} engine reads/s ({agent['engine_reads']:,} reads)"
    lines.append(
        f"  {label:48} {agent['window_s']:6.1f}s {agent['server_requests']:>9,} "
        f"{agent['server_requests'] / agent['window_s']:8.1f}   {agent['requests_per_hour']:>9,}   "
        f"({agent['per_engine_read']:.3f} per engine read, at any refresh"
        + (f"; other: {agent['other']}" if agent["other"] else "")
        + ")"
    )
    return lines


def plot(results: dict[str, Any], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install '.[bench]')"
    figure, axes = plt.subplots(figsize=(7, 4))
    for label, rate in results["requests_per_s"].items():
        measured = [n for n in CONNECTIONS if n in rate]
        latencies = [n / rate[n] * 1e6 for n in measured]  # Little's law: mean latency per call
        axes.plot(measured, latencies, marker="o", label=label)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("concurrent connections")
    axes.set_ylabel("mean latency per call (us)")
    axes.set_title("latency against connections")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return None


def measure_ccxt_adapter(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """ccxt's own ``sign()`` with the secret in process beside the adapter's (``ccxt_adapter``)."""
    try:
        import ccxt_adapter
    except ImportError as exc:
        results["left out"].append(f"ccxt adapter: {exc}")
        return
    results["ccxt_adapter_us"] = [list(row) for row in ccxt_adapter.measure(200 if args.short else 3000)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="a smoke run: every row, few samples (CI)")
    parser.add_argument("--out", type=Path, help="also write bench.txt, bench.json and bench.png here")
    args = parser.parse_args()
    args.count, args.seconds, args.starts = (200, 0.3, 2) if args.short else (5000, 3.0, 7)
    profiles = ["min", "interactive"] if args.short else ["min", "interactive", "moderate"]
    idle_count, idle_seconds = (1000, 600.0) if args.short else (10_000, 1800.0)
    results: dict[str, Any] = {"mode": "short" if args.short else "full", "left out": []}
    results["machine"] = f"{os.cpu_count()} CPUs, {os.uname().machine}, Python {sys.version.split()[0]}"
    measure_vaultd(args, results)
    measure_scraped(args, results)
    measure_ccxt_adapter(args, results)
    bare, imported = import_ms(3 if args.short else 15)
    results["import_ms_over_bare"] = round(imported - bare, 1)
    measure_unlock(profiles, results)
    measure_idle(idle_count, idle_seconds, results)
    results["ratios"] = ratios(results)
    text = render(results)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench.txt").write_text(text + "\n")
        (args.out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
        missing = plot(results, args.out / "bench.png")
        if missing:
            print(missing)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
