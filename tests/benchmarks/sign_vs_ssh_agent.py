"""Benchmark: token.sign (HMAC and Ed25519) beside token.get and OpenSSH ssh-agent's Ed25519 sign.

    python tests/benchmarks/sign_vs_ssh_agent.py            # 5,000 round trips each
    python tests/benchmarks/sign_vs_ssh_agent.py --short    # a smoke run (CI)

One run starts a real vaultd (a throwaway vault, MIN KDF) and a real ssh-agent (started and
stopped by its pid), then times sequential round trips over one connection each, from the
same process: vaultd with the sync client, ssh-agent with its binary protocol (RFC draft
"SSH Agent Protocol": SSH_AGENTC_SIGN_REQUEST and REQUEST_IDENTITIES). Figures, not assertions.
The issue's target: vaultd's Ed25519 sign p50 at most a quarter of ssh-agent's.

A round trip between two processes costs very different amounts depending on where the
scheduler puts them: on one core the hand-over is a context switch; on two, each side waits
for the other to be woken. So every row is measured twice, with the server and this client
pinned to the same core, then to two different cores (``--placement`` picks one).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from vaultd_client import Client

PASS = "fake benchmark passphrase"


def timed(call: Callable[[], object], count: int) -> list[float]:
    for _ in range(min(200, count)):
        call()  # warm up
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


def pinned(cpu: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child to ``cpu`` (None: leave it to the scheduler)."""
    return None if cpu is None else lambda: os.sched_setaffinity(0, {cpu})


def start_vaultd(root: Path, cpu: int | None = None) -> tuple[subprocess.Popen[bytes], Path, dict[str, str]]:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(root / "run"), "XDG_DATA_HOME": str(root / "data")}
    env["XDG_STATE_HOME"] = str(root / "state")
    env.pop("VAULTD_SOCKET", None)
    (root / "run").mkdir(mode=0o700)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaultd", "--log-level", "warning"],
        env=env,
        preexec_fn=pinned(cpu),  # noqa: PLW1509 - sched_setaffinity only
    )
    path = root / "run" / "vaultd" / "vaultd.sock"
    for _ in range(400):
        if path.exists():
            break
        time.sleep(0.025)
    return proc, path, env


def add(client: Client, name: str, kind: str, config: dict[str, object]) -> None:
    client.call("credential.put", {"passphrase": PASS, "name": name, "kind": kind, "config": config}, timeout=60)


class SshAgent:
    """A real ssh-agent holding one fresh Ed25519 key, spoken to in its own wire format."""

    def __init__(self, root: Path, cpu: int | None = None) -> None:
        self.socket_path = str(root / "agent.sock")
        self.proc = subprocess.Popen(
            ["ssh-agent", "-D", "-a", self.socket_path],
            stdout=subprocess.DEVNULL,
            preexec_fn=pinned(cpu),  # noqa: PLW1509 - sched_setaffinity only
        )
        key = root / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        for _ in range(400):
            if os.path.exists(self.socket_path):
                break
            time.sleep(0.025)
        env = {**os.environ, "SSH_AUTH_SOCK": self.socket_path}
        subprocess.run(["ssh-add", "-q", str(key)], env=env, check=True, stderr=subprocess.DEVNULL)
        self.blob = base64.b64decode(key.with_suffix(".pub").read_text().split()[1])
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.socket_path)

    def _call(self, message: bytes) -> bytes:
        self.sock.sendall(struct.pack(">I", len(message)) + message)
        header = self._read(4)
        return self._read(struct.unpack(">I", header)[0])

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("ssh-agent closed")
            data += chunk
        return data

    def sign(self, data: bytes) -> bytes:
        message = bytes([13]) + _string(self.blob) + _string(data) + struct.pack(">I", 0)
        answer = self._call(message)
        assert answer[0] == 14, "SSH_AGENT_SIGN_RESPONSE"
        return answer

    def identities(self) -> bytes:
        answer = self._call(bytes([11]))
        assert answer[0] == 12, "SSH_AGENT_IDENTITIES_ANSWER"
        return answer

    def stop(self) -> None:
        self.sock.close()
        os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=10)


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


PLACEMENTS = {"same core": (0, 0), "two cores": (0, 1)}  # (this client's CPU, the server's CPU)


def measure(count: int, client_cpu: int, server_cpu: int) -> list[tuple[str, float, float]]:
    """Every row once, with this process on ``client_cpu`` and the servers on ``server_cpu``."""
    os.sched_setaffinity(0, {client_cpu})
    root = Path(tempfile.mkdtemp(prefix="vd-bench-"))
    daemon, path, _ = start_vaultd(root, server_cpu)
    agent: SshAgent | None = None
    rows: list[tuple[str, float, float]] = []
    try:
        client = Client(path, timeout=60, cache=False)  # round trips, not the in-process cache
        client.call("vault.init", {"passphrase": PASS, "kdf_profile": "min"}, timeout=60)
        client.unlock(PASS)
        add(client, "tok", "static", {"token": "fake-bench-token"})
        add(client, "hmac", "sign", {"scheme": "binance-hmac", "api_key": "fake-key", "secret": "fake-secret"})
        pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        add(client, "ed", "sign", {"scheme": "binance-ed25519", "api_key": "fake-key", "private_key": pem.decode()})
        url = "https://api.binance.com/api/v3/order?symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.01"
        rows.append(("vaultd token.get (static)", *summary(timed(lambda: client.token("tok"), count))))
        rows.append(("vaultd token.sign HMAC-SHA256", *summary(timed(lambda: client.sign("hmac", "POST", url), count))))
        rows.append(("vaultd token.sign Ed25519", *summary(timed(lambda: client.sign("ed", "POST", url), count))))
        if shutil.which("ssh-agent") and shutil.which("ssh-keygen") and shutil.which("ssh-add"):
            agent = SshAgent(root, server_cpu)
            payload = url.encode()
            rows.append(("ssh-agent REQUEST_IDENTITIES", *summary(timed(agent.identities, count))))
            rows.append(("ssh-agent SIGN_REQUEST Ed25519", *summary(timed(lambda: agent.sign(payload), count))))
        client.close()
    finally:
        if agent is not None:
            agent.stop()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=20)
        shutil.rmtree(root, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--short", action="store_true", help="300 round trips each (CI)")
    parser.add_argument("--placement", choices=[*PLACEMENTS, "both"], default="both")
    args = parser.parse_args()
    count = 300 if args.short else args.count
    cpus = sorted(os.sched_getaffinity(0))
    if not (shutil.which("ssh-agent") and shutil.which("ssh-keygen") and shutil.which("ssh-add")):
        print("left out: ssh-agent, ssh-keygen or ssh-add is not installed")
    report: dict[str, dict[str, dict[str, float]]] = {}
    for placement, (client_index, server_index) in PLACEMENTS.items():
        if args.placement not in (placement, "both"):
            continue
        if server_index >= len(cpus):
            print(f"left out: {placement} (this process may run on one CPU only)")
            continue
        rows = measure(count, cpus[client_index], cpus[server_index])
        print(f"round trips, {count} each, one connection, sequential, {placement} (microseconds)")
        print(f"  {'':34} {'p50':>9} {'p99':>9}")
        for label, p50, p99 in rows:
            print(f"  {label:34} {p50:9.1f} {p99:9.1f}")
        by_label = {label: p50 for label, p50, _ in rows}
        if "ssh-agent SIGN_REQUEST Ed25519" in by_label:
            ratio = by_label["vaultd token.sign Ed25519"] / by_label["ssh-agent SIGN_REQUEST Ed25519"]
            print(f"vaultd Ed25519 sign p50 / ssh-agent's, {placement}: {ratio:.2f} (target: at most 0.25)")
        report[placement] = {label: {"p50_us": round(p50, 1), "p99_us": round(p99, 1)} for label, p50, p99 in rows}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
