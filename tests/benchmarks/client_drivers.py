"""Benchmark: the client library, each figure beside its floor measured in the same run.

    python tests/benchmarks/client_drivers.py            # full run
    python tests/benchmarks/client_drivers.py --short    # a smoke run (CI)

Rows:
- a cached ``token()`` per call, on each driver (target: 2 us or less);
- an uncached ``token.get`` round trip, p50 and p99, against a real vaultd and against the
  floor (``floor_server.py``: bare trio MessagePack-RPC answering a fixed 200-byte token),
  with the same sync client;
- the asyncio client with 64 concurrent calls on one connection, against both;
- ``python -c "import vaultd_client"`` over ``python -c pass`` (target: 30 ms or less).
Figures, not assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio
from sign_vs_ssh_agent import PASS, add, pinned, start_vaultd, summary, timed

from vaultd_client import AsyncClient, Client, TrioClient

HERE = Path(__file__).parent


def per_call_us(call: Callable[[], object], count: int) -> float:
    call()
    start = time.perf_counter_ns()
    for _ in range(count):
        call()
    return (time.perf_counter_ns() - start) / count / 1000


async def async_per_call_us(client: AsyncClient | TrioClient, count: int) -> float:
    await client.token("tok")
    start = time.perf_counter_ns()
    for _ in range(count):
        await client.token("tok")
    return (time.perf_counter_ns() - start) / count / 1000


def concurrent_64(path: Path, rounds: int) -> tuple[float, float]:
    """(calls per second, p50 latency in us) for 64 concurrent asyncio calls on one connection."""

    async def run() -> tuple[float, float]:
        latencies: list[float] = []
        async with AsyncClient(path, cache=False) as client:

            async def one() -> None:
                start = time.perf_counter_ns()
                await client.token("tok")
                latencies.append((time.perf_counter_ns() - start) / 1000)

            await asyncio.gather(*(one() for _ in range(64)))  # warm up
            latencies.clear()
            start = time.perf_counter()
            for _ in range(rounds):
                await asyncio.gather(*(one() for _ in range(64)))
            elapsed = time.perf_counter() - start
        return rounds * 64 / elapsed, statistics.median(latencies)

    return asyncio.run(run())


def import_ms(runs: int) -> tuple[float, float]:
    """Median wall time of ``python -c pass`` and of ``python -c "import vaultd_client"`` (ms)."""

    def median_ms(code: str) -> float:
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            samples.append((time.perf_counter() - start) * 1000)
        return statistics.median(samples)

    return median_ms("pass"), median_ms("import vaultd_client")


def start_floor(root: Path, cpu: int | None = None) -> tuple[subprocess.Popen[bytes], Path]:
    path = root / "floor.sock"
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "floor_server.py"), str(path)],
        preexec_fn=pinned(cpu),  # noqa: PLW1509 - sched_setaffinity only
    )
    for _ in range(400):
        if path.exists():
            break
        time.sleep(0.025)
    return proc, path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="a few hundred calls each (CI)")
    args = parser.parse_args()
    count, rounds, runs = (300, 10, 3) if args.short else (5000, 300, 15)
    root = Path(tempfile.mkdtemp(prefix="vd-bench-"))
    daemon, path, _ = start_vaultd(root)
    floor, floor_path = start_floor(root)
    rows: dict[str, dict[str, float]] = {}
    try:
        with Client(path, timeout=60) as admin:
            admin.call("vault.init", {"passphrase": PASS, "kdf_profile": "min"}, timeout=60)
            admin.unlock(PASS)
            add(admin, "tok", "static", {"token": "f" * 200})

        cached = Client(path)
        rows["cached token(), sync"] = {"us": per_call_us(lambda: cached.token("tok"), count * 20)}

        async def on_asyncio() -> float:
            async with AsyncClient(path) as client:
                return await async_per_call_us(client, count * 20)

        async def on_trio() -> float:
            async with TrioClient(path) as client:
                return await async_per_call_us(client, count * 20)

        rows["cached token(), asyncio"] = {"us": asyncio.run(on_asyncio())}
        rows["cached token(), trio"] = {"us": trio.run(on_trio)}

        for label, target in (("floor", floor_path), ("vaultd", path)):
            with Client(target, cache=False) as client:
                p50, p99 = summary(timed(lambda client=client: client.token("tok"), count))
            rows[f"round trip, {label}"] = {"p50_us": p50, "p99_us": p99}
        for label, target in (("floor", floor_path), ("vaultd", path)):
            rate, p50 = concurrent_64(target, rounds)
            rows[f"asyncio 64 concurrent, {label}"] = {"calls_per_s": rate, "p50_us": p50}
        bare, imported = import_ms(runs)
        rows["import vaultd_client"] = {"ms_over_bare": imported - bare, "bare_ms": bare}
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=20)
        floor.kill()
        floor.wait(timeout=20)
        shutil.rmtree(root, ignore_errors=True)

    print("client figures (one run, this machine)")
    for name in ("sync", "asyncio", "trio"):
        print(f"  cached token(), {name:8} {rows[f'cached token(), {name}']['us']:8.2f} us per call   (target <= 2)")
    floor_rt, vaultd_rt = rows["round trip, floor"], rows["round trip, vaultd"]
    ratio = vaultd_rt["p50_us"] / floor_rt["p50_us"]
    print(f"  round trip p50: vaultd {vaultd_rt['p50_us']:.1f} us, floor {floor_rt['p50_us']:.1f} us -> {ratio:.2f}x"
          f"   (p99 {vaultd_rt['p99_us']:.1f} / {floor_rt['p99_us']:.1f})")  # fmt: skip
    floor_64, vaultd_64 = rows["asyncio 64 concurrent, floor"], rows["asyncio 64 concurrent, vaultd"]
    print(f"  asyncio, 64 concurrent on one connection: vaultd {vaultd_64['calls_per_s']:.0f}/s, "
          f"floor {floor_64['calls_per_s']:.0f}/s -> {vaultd_64['calls_per_s'] / floor_64['calls_per_s']:.2f}x; "
          f"p50 {vaultd_64['p50_us']:.0f} / {floor_64['p50_us']:.0f} us")  # fmt: skip
    imported = rows["import vaultd_client"]
    print(f"  import vaultd_client: {imported['ms_over_bare']:.1f} ms over bare python "
          f"({imported['bare_ms']:.1f} ms)   (target <= 30)")  # fmt: skip
    print(json.dumps({k: {m: round(v, 2) for m, v in row.items()} for k, row in rows.items()}))


if __name__ == "__main__":
    main()
