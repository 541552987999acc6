"""The benchmark scripts run and print their figures (a smoke run; no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[1] / "benchmarks"


def test_the_renewal_scheduler_benchmark_runs_and_prints_its_table() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "renewal_scheduler.py"), "--short"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for row in ("renewals done", "worst lateness", "CPU seconds, renewing", "polling 1 s"):
        assert row in proc.stdout


def test_the_signing_benchmark_runs_beside_ssh_agent() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "sign_vs_ssh_agent.py"), "--short"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for row in ("vaultd token.get (static)", "vaultd token.sign HMAC-SHA256", "vaultd token.sign Ed25519"):
        assert row in proc.stdout
    assert "ssh-agent SIGN_REQUEST Ed25519" in proc.stdout or "left out: ssh-agent" in proc.stdout
