"""Benchmark: the renewer with 10,000 credentials under an accelerated clock, against a polling baseline.

    python tests/benchmarks/renewal_scheduler.py            # 10,000 credentials, 1 virtual hour at 120x
    python tests/benchmarks/renewal_scheduler.py --short    # a smoke run (CI)

Each credential mints tokens locally (lifetimes spread from 60 s to 1 h), so what is measured
is the scheduler, not HTTP. Trio's MockClock runs virtual time ``--rate`` times faster than real
time. Printed, side by side: renewals done, how many fell outside their jitter window, the worst
lateness, and CPU seconds; then an idle stretch (every token fresh, nothing due for 30 virtual
minutes) for vaultd's renewer and for a baseline that polls every credential once a second.
Figures, not assertions: compare the columns.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import trio
import trio.testing

from vaultd._credentials import Credential
from vaultd._providers import FetchContext, Issued
from vaultd._renewal import Budget, RenewalPolicy
from vaultd._renewer import Renewer
from vaultd._secret import Secret
from vaultd._watch import WatchHub

BASE = 1_800_000_000.0


@dataclass
class LocalProvider:
    """Mints a token of a fixed lifetime and records when each fetch happened (virtual seconds)."""

    kind: ClassVar[str] = "bench"
    renewable: ClassVar[bool] = True
    FIELDS: ClassVar[frozenset[str]] = frozenset()
    lifetime: float
    fetched_at: list[float] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {}

    def warnings(self, now: float) -> list[str]:
        return []

    async def fetch(self, ctx: FetchContext) -> Issued:
        now = ctx.now()
        self.fetched_at.append(now - BASE)
        return Issued(Secret(b"bench-token"), now, now + self.lifetime)

    def wipe(self) -> None:
        pass


def window(policy: RenewalPolicy, issued: float, lifetime: float) -> tuple[float, float]:
    """When a renewal of a token issued at ``issued`` may happen, jitter included."""
    earliest = policy.renew_at(issued, issued + lifetime, 0.999999)
    latest = policy.renew_at(issued, issued + lifetime, 0.0)
    return earliest, latest


async def run_renewer(count: int, virtual_seconds: float, lifetimes: list[float]) -> dict[str, Any]:
    providers = [LocalProvider(lifetime) for lifetime in lifetimes]
    credentials = {
        f"c{i}": Credential(f"c{i}", provider, 0.0, 0.0, budget=Budget(capacity=1e9, per_minute=1e9))
        for i, provider in enumerate(providers)
    }
    policy = RenewalPolicy()

    async def persist() -> None:
        return None

    renewer = Renewer(
        lambda: credentials,
        wall=lambda: BASE + trio.current_time(),
        persist=persist,
        hub=WatchHub(),
        policy=policy,
        rng=random.Random(1),
    )
    cpu0 = time.process_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(renewer.run)
        await trio.sleep(virtual_seconds)
        cpu = time.process_time() - cpu0
        nursery.cancel_scope.cancel()
    outside = 0
    worst_late = 0.0
    renewals = 0
    expired_first = 0
    for provider in providers:
        times = provider.fetched_at
        for previous, current in itertools.pairwise(times):
            renewals += 1
            earliest, latest = window(policy, previous, provider.lifetime)
            if not earliest - 1e-6 <= current <= latest + 1.0:
                outside += 1  # early at all, or late by more than a virtual second
            worst_late = max(worst_late, current - latest)
            expired_first += current >= previous + provider.lifetime
    return {
        "renewals": renewals,
        "outside": outside,
        "worst_late": max(worst_late, 0.0),
        "expired_first": expired_first,
        "cpu": cpu,
    }


async def idle_renewer(count: int, idle_seconds: float) -> float:
    """CPU seconds over ``idle_seconds`` of virtual time while nothing is due."""
    providers = [LocalProvider(3600.0) for _ in range(count)]
    credentials = {f"c{i}": Credential(f"c{i}", p, 0.0, 0.0) for i, p in enumerate(providers)}

    async def persist() -> None:
        return None

    renewer = Renewer(lambda: credentials, wall=lambda: BASE + trio.current_time(), persist=persist, hub=WatchHub())
    async with trio.open_nursery() as nursery:
        await nursery.start(renewer.run)
        await trio.sleep(1)  # every first token fetched; the next renewal is 36 minutes away at the earliest
        cpu0 = time.process_time()
        await trio.sleep(idle_seconds)
        cpu = time.process_time() - cpu0
        nursery.cancel_scope.cancel()
    return cpu


async def idle_polling_baseline(count: int, idle_seconds: float) -> float:
    """The same idle stretch for a scheduler that wakes every second and scans every credential."""
    expires = [BASE + 3600.0] * count
    renew_at = [BASE + 2400.0] * count
    cpu0 = time.process_time()
    end = trio.current_time() + idle_seconds
    while trio.current_time() < end:
        now = BASE + trio.current_time()
        due = sum(1 for r, e in zip(renew_at, expires, strict=True) if now >= r or now >= e)
        assert due == 0
        await trio.sleep(1)
    return time.process_time() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--credentials", type=int, default=10_000)
    parser.add_argument("--hours", type=float, default=1.0, help="virtual hours of renewals")
    parser.add_argument(
        "--rate",
        type=float,
        default=120.0,
        help="virtual seconds per real second (too fast for the CPU and lateness is the benchmark's, not vaultd's)",
    )
    parser.add_argument("--short", action="store_true", help="1,000 credentials, 20 virtual minutes (CI)")
    args = parser.parse_args()
    if args.short:
        args.credentials, args.hours, args.rate = 1000, 1 / 3, 600.0
    logging.basicConfig(level=logging.ERROR)  # per-credential warnings are counted, not printed
    rng = random.Random(42)
    lifetimes = [rng.uniform(60, 3600) for _ in range(args.credentials)]
    idle = 1800.0 if not args.short else 300.0

    def timed(fn: Any, *fn_args: Any) -> Any:
        clock = trio.testing.MockClock(rate=args.rate)
        return trio.run(fn, *fn_args, clock=clock)

    started = time.perf_counter()
    busy = timed(run_renewer, args.credentials, args.hours * 3600, lifetimes)
    idle_cpu = timed(idle_renewer, args.credentials, idle)
    poll_cpu = timed(idle_polling_baseline, args.credentials, idle)
    print(f"renewal scheduler: {args.credentials} credentials, lifetimes 60 s to 1 h, "
          f"{args.hours * 60:.0f} virtual minutes at {args.rate:.0f}x")  # fmt: skip
    print(f"  renewals done                      {busy['renewals']:>12,}")
    print(f"  renewals early, or over 1 s late   {busy['outside']:>12,}")
    print(f"  worst lateness (virtual seconds)   {busy['worst_late']:>12.3f}")
    print(f"  tokens that expired before renewal {busy['expired_first']:>12,}")
    print(f"  CPU seconds, renewing              {busy['cpu']:>12.3f}")
    print(f"idle, {idle / 60:.0f} virtual minutes with nothing due ({idle / args.rate:.1f} s real):")
    print(f"  {'':34} {'vaultd':>12} {'polling 1 s':>12}")
    print(f"  {'CPU seconds':34} {idle_cpu:>12.4f} {poll_cpu:>12.4f}")
    print(f"total wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
