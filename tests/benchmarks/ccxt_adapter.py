"""Benchmark: what vaultd_client.ccxt adds to a ccxt ``sign()``, beside ccxt's own in-process sign.

    python tests/benchmarks/ccxt_adapter.py            # 5,000 calls a row
    python tests/benchmarks/ccxt_adapter.py --short    # a smoke run

Per venue, in one run (p50 and p99, microseconds, sequential calls from this process):

* ``ccxt``: ccxt's own ``sign()`` of a create-order request with the secret in the process;
* ``adapter``: the adapter's ``sign()`` of the same request with the daemon's round trip left
  out (a client answering a ready ``Signed`` at once): ccxt building the request with the
  placeholder, the venue entry stripping it, the answer put together. ``adapter - ccxt`` is the
  adapter's own overhead (its target: at most ~10 us);
* ``round trip``: ``Client.sign`` of that request to a real vaultd (throwaway vault, MIN KDF);
* ``adapter+daemon``: the adapter's ``sign()`` with that real round trip.

The four take turns call by call, so that the machine's drift falls on all of them alike.

:func:`measure` returns the rows for the suite to report. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import ccxt

import vaultd_client.ccxt
from tests.daemon_process import DaemonProcess
from tests.integration import ccxt_venues as v
from vaultd_client import Client, Signed

#: venue -> (credential, ccxt config with the secret in process, the private call to sign)
VENUES: dict[str, tuple[dict[str, str], dict[str, str], tuple[str, list[str], str, dict[str, Any]]]] = {
    "binance": (
        {"scheme": "binance-hmac", "api_key": v.API_KEY, "secret": v.HMAC_SECRET},
        {"apiKey": v.API_KEY, "secret": v.HMAC_SECRET},
        ("order", ["private"], "POST", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.01",
                                        "price": "30000", "timeInForce": "GTC", "newClientOrderId": "c1"}),
    ),
    "okx": (
        {"scheme": "okx", "api_key": v.API_KEY, "secret": v.HMAC_SECRET, "passphrase": v.OKX_PASSPHRASE},
        {"apiKey": v.API_KEY, "secret": v.HMAC_SECRET, "password": v.OKX_PASSPHRASE},
        ("trade/order", ["private"], "POST", {"instId": "BTC-USDT", "tdMode": "cash", "side": "buy",
                                              "ordType": "limit", "sz": "0.01", "px": "30000", "clOrdId": "c1"}),
    ),
    "bybit": (
        {"scheme": "bybit", "api_key": v.API_KEY, "secret": v.HMAC_SECRET},
        {"apiKey": v.API_KEY, "secret": v.HMAC_SECRET},
        ("v5/order/create", ["private"], "POST", {"category": "spot", "symbol": "BTCUSDT", "side": "Buy",
                                                  "orderType": "Limit", "qty": "0.01", "price": "30000"}),
    ),
    "kraken": (
        {"scheme": "kraken", "api_key": v.API_KEY, "secret": v.KRAKEN_SECRET},
        {"apiKey": v.API_KEY, "secret": v.KRAKEN_SECRET},
        ("AddOrder", ["private"], "POST", {"pair": "XXBTZUSD", "type": "buy", "ordertype": "limit",
                                           "volume": "0.01", "price": "30000"}),
    ),
}  # fmt: skip


class _Answered(Client):
    """A client whose ``sign`` answers one ready result at once: the adapter's work alone."""

    def __init__(self, signed: Signed) -> None:
        super().__init__("/nonexistent/vaultd.sock")
        self._signed = signed

    def sign(self, name: str, method: str, url: str, **kwargs: Any) -> Signed:  # type: ignore[override]
        return self._signed


def timed(calls: dict[str, Callable[[], object]], count: int) -> dict[str, tuple[float, float]]:
    """p50 and p99 (us) of each call, the calls taking turns so that drift and neighbours' load
    fall on every row alike."""
    for _ in range(min(200, count)):
        for call in calls.values():
            call()  # warm up
    samples: dict[str, list[float]] = {what: [] for what in calls}
    for _ in range(count):
        for what, call in calls.items():
            start = time.perf_counter_ns()
            call()
            samples[what].append((time.perf_counter_ns() - start) / 1000)
    result = {}
    for what, values in samples.items():
        values.sort()
        result[what] = (statistics.median(values), values[int(len(values) * 0.99) - 1])
    return result


def _venue_rows(
    venue: str, in_process: dict[str, str], call: tuple[str, list[str], str, dict[str, Any]], client: Client, count: int
) -> list[tuple[str, str, float, float]]:
    path, api, method, params = call
    native = getattr(ccxt, venue)(in_process)
    real = vaultd_client.ccxt.exchange(venue, venue, client=client)
    unsigned = real._vaultd_signer.unsigned(path, api, method, dict(params), None, None)[1]
    assert unsigned is not None
    ready = client.sign(venue, unsigned.method, unsigned.url, body=unsigned.body)
    alone = vaultd_client.ccxt.exchange(venue, venue, client=_Answered(ready))
    calls: dict[str, Callable[[], object]] = {
        "ccxt": lambda: native.sign(path, api, method, dict(params)),
        "adapter": lambda: alone.sign(path, api, method, dict(params)),
        "round trip": lambda: client.sign(venue, unsigned.method, unsigned.url, body=unsigned.body),
        "adapter+daemon": lambda: real.sign(path, api, method, dict(params)),
    }
    return [(venue, what, p50, p99) for what, (p50, p99) in timed(calls, count).items()]


def measure(count: int = 5000) -> list[tuple[str, str, float, float]]:
    """Rows of (venue, what, p50 us, p99 us): ccxt, adapter, round trip, adapter+daemon."""
    root = Path(tempfile.mkdtemp(prefix="vd-", dir="/tmp"))
    daemon = DaemonProcess(root)
    rows = []
    try:
        daemon.start()
        daemon.ctl("init", "--kdf-profile", "min", *daemon.pw())
        daemon.ctl("unlock", *daemon.pw())
        with Client(daemon.socket_path) as client:
            for venue, (credential, in_process, call) in VENUES.items():
                daemon.ctl("add", venue, "--kind", "sign", *daemon.pw(), stdin=json.dumps(credential))
                rows += _venue_rows(venue, in_process, call, client, count)
    finally:
        if daemon.proc is not None:
            daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
    return rows


#: The adapter's target: what it adds to a ccxt ``sign()`` beyond the daemon's round trip, p50.
TARGET_US = 10.0


def render(rows: list[tuple[str, str, float, float]]) -> list[str]:
    """The rows side by side, and per venue what the adapter adds, judged against :data:`TARGET_US`."""
    lines = [f"  {'venue':<10} {'what':<16} {'p50 us':>9} {'p99 us':>9}"]
    lines += [f"  {venue:<10} {what:<16} {p50:>9.1f} {p99:>9.1f}" for venue, what, p50, p99 in rows]
    by = {(venue, what): p50 for venue, what, p50, _ in rows}
    for venue in dict.fromkeys(venue for venue, *_ in rows):
        overhead = by[venue, "adapter"] - by[venue, "ccxt"]
        beyond = by[venue, "adapter+daemon"] - by[venue, "round trip"] - by[venue, "ccxt"]
        verdict = "met" if beyond <= TARGET_US else f"MISSED by {beyond - TARGET_US:.1f} us"
        lines.append(
            f"  {venue}: adapter+daemon - round trip - ccxt = {beyond:+.1f} us (target <= {TARGET_US:.0f}: {verdict});"
            f" adapter alone - ccxt = {overhead:+.1f} us"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="200 calls a row (a smoke run)")
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args()
    print("\n".join(render(measure(200 if args.short else args.count))))


if __name__ == "__main__":
    main()
