"""What an ``exe`` rule costs: per request, beside a rule by uid on the same daemon; and at accept.

Per request (``rule_rows``): one connection asks ``token.get`` under a policy whose one rule
matches by uid, then under one whose rule matches this process's exe (which re-checks, before
each decision, that the process has not exec'd: one ``pread``), alternating which goes first,
on the same daemon, in the same run. Both the client's p50/p99 and the server's CPU per call
(from /proc) are given: the difference is a microsecond at most, under the p50's spread.

Per decision, in process (``check_rows``): ``Access.check`` under each rule, for a real peer
(this process, through a socketpair) — the figure the end-to-end rows are too noisy to show.

At accept (``accept_rows``): ``peer_of`` on a connection from a live peer holding few and many
descriptors, and within it ``exe_at_connect`` (pin, readlink, sock_diag, the descriptor scan).
Every connection pays this, exe rule or not; a peer with more descriptors costs more (the scan
stops at ``MAX_FDS_SCANNED``).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sign_vs_ssh_agent import PASS, summary, timed

from vaultd._exe import exe_at_connect
from vaultd._peer import peer_of
from vaultd._policy import Access, Policy
from vaultd_client import Client

#: A peer that opens ``argv[2]`` descriptors, connects to ``argv[1]`` and waits for stdin's end.
PEER = r"""
import os, socket, sys
held = [os.open("/dev/null", os.O_RDONLY) for _ in range(int(sys.argv[2]))]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(sys.argv[1])
sys.stdin.buffer.read()
"""


def rule_rows(path: Path, pid: int, count: int, rounds: int, cpu_seconds: Callable[[int], float]) -> dict[str, Any]:
    """p50, p99 (us, median over ``rounds``) and server CPU per call (us) of ``token.get`` by rule."""
    rules = {
        "token.get, rule by uid": {"credentials": ["tok"], "methods": ["get"]},
        "token.get, rule by exe": {"exe": os.readlink("/proc/self/exe"), "credentials": ["tok"], "methods": ["get"]},
    }
    samples: dict[str, list[tuple[float, float]]] = {label: [] for label in rules}
    spent = dict.fromkeys(rules, 0.0)
    with Client(path, timeout=60, cache=False) as admin:
        try:
            for round_ in range(rounds):
                order = list(rules) if round_ % 2 == 0 else list(rules)[::-1]
                for label in order:
                    admin.call("policy.set", {"passphrase": PASS, "policy": {"rules": [rules[label]]}}, timeout=60)
                    with Client(path, cache=False) as client:
                        before = cpu_seconds(pid)
                        samples[label].append(summary(timed(lambda client=client: client.token("tok"), count)))
                        spent[label] += cpu_seconds(pid) - before
        finally:
            admin.call("policy.set", {"passphrase": PASS, "policy": {"rules": []}}, timeout=60)
    calls = rounds * (count + min(200, count))  # timed() warms up with up to 200 calls
    return {
        label: {
            "p50": round(statistics.median(s[0] for s in samples[label]), 1),
            "p99": round(statistics.median(s[1] for s in samples[label]), 1),
            "server_cpu_us": round(spent[label] / calls * 1e6, 1),
        }
        for label in rules
    }


def check_rows(count: int) -> dict[str, float]:
    """Nanoseconds per ``Access.check`` (a cached decision) under a rule by uid and one by exe."""
    exe = os.readlink("/proc/self/exe")
    policies = {
        "rule by uid": {"credentials": ["tok"], "methods": ["get"]},
        "rule by exe": {"exe": exe, "credentials": ["tok"], "methods": ["get"]},
    }
    out: dict[str, float] = {}
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        peer = peer_of(a)
        try:
            assert peer.exe == exe and peer.exe_holds()
            for label, rule in policies.items():
                access = Access(Policy.from_config({"rules": [rule]}), peer, os.getuid())
                assert access.check("get", "tok").allowed
                out[label] = round(_per_call_ns(lambda access=access: access.check("get", "tok"), count * 100), 1)
            out["of which exe_holds()"] = round(_per_call_ns(peer.exe_holds, count * 100), 1)
        finally:
            peer.close()
    return out


def accept_rows(count: int, descriptors: tuple[int, ...] = (16, 1000)) -> dict[str, Any]:
    """Microseconds per ``peer_of`` and per ``exe_at_connect`` on a live peer with N descriptors open."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vd-exe-") as folder:
        listen_path = str(Path(folder) / "peer.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(listen_path)
            listener.listen(1)
            for held in descriptors:
                peer = subprocess.Popen([sys.executable, "-c", PEER, listen_path, str(held)], stdin=subprocess.PIPE)
                try:
                    accepted, _ = listener.accept()
                    with accepted:
                        assert peer_of(accepted).exe is not None  # the full path, not a refusal's shortcut

                        def whole(sock: socket.socket = accepted) -> None:
                            peer_of(sock).close()

                        def exe_only(sock: socket.socket = accepted, pid: int = peer.pid) -> None:
                            _, mark = exe_at_connect(sock.fileno(), pid)
                            assert mark is not None
                            mark.close()

                        out[f"{held} descriptors"] = {
                            "peer_of_us": round(_median_us(whole, count), 1),
                            "exe_check_us": round(_median_us(exe_only, count), 1),
                        }
                finally:
                    assert peer.stdin is not None
                    peer.stdin.close()
                    peer.wait(timeout=30)
    return out


def _median_us(call: Callable[[], object], count: int) -> float:
    for _ in range(min(50, count)):
        call()
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return statistics.median(samples)


def _per_call_ns(call: Callable[[], object], count: int) -> float:
    """The best of five runs of ``count`` calls, per call (scheduling noise only ever adds)."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter_ns()
        for _ in range(count):
            call()
        best = min(best, (time.perf_counter_ns() - started) / count)
    return best
