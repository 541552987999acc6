"""Prometheus metrics from a real daemon: scraped over TCP and a Unix socket, read with the official parser.

Each test runs ``vaultd --metrics ...`` as an operator would, scrapes ``GET /metrics`` with httpx,
and parses the text with ``prometheus_client``'s own parser: what a Prometheus server would see.
"""

from __future__ import annotations

import os
import re
import select
import socket
import stat
import subprocess
import time
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from vaultd._metrics_server import MAX_SCRAPERS, READ_TIMEOUT

from ..daemon_process import BIN, DaemonProcess, FakeExchangeProcess
from ..polling import wait_for
from .test_renewal_e2e import add_oauth

ALERTS = Path(__file__).parents[2] / "systemd" / "vaultd-alerts.yml"

#: sample name -> [(labels, value)]
Samples = dict[str, list[tuple[dict[str, str], float]]]


def tcp_url(daemon: DaemonProcess) -> str:
    """The URL the daemon logged for ``--metrics 127.0.0.1:0`` (a free port it chose)."""
    found = wait_for(lambda: re.search(r"metrics at (http://127\.0\.0\.1:\d+/metrics)", daemon.log), what="the URL")
    return str(found.group(1))


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def scrape(url: str, transport: httpx.HTTPTransport | None = None) -> Samples:
    with httpx.Client(transport=transport, timeout=10) as client:
        answer = client.get(url)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return parse(answer.text)


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of the one sample of ``name`` whose labels include ``labels``, or None if none."""
    found = [v for have, v in samples.get(name, []) if labels.items() <= have.items()]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else None


def test_a_scrape_follows_requests_credential_states_and_the_lock(
    daemon: DaemonProcess, fake_exchange: FakeExchangeProcess
) -> None:
    daemon.start("--metrics", "127.0.0.1:0")
    url = tcp_url(daemon)
    daemon.ready()
    add_oauth(daemon, fake_exchange, "live")
    with daemon.client() as engine:
        assert engine.token("live").value.startswith("fake-at-")
        before = scrape(url)
        engine.token("ex")
        after = scrape(url)
        # A token.get moves the request counter and the latency histogram by one, labelled by its method.
        ok = {"method": "token.get", "outcome": "ok"}
        assert value(after, "vaultd_requests_total", **ok) == (value(before, "vaultd_requests_total", **ok) or 0) + 1
        count = "vaultd_request_duration_seconds_count"
        assert value(after, count, method="token.get") == (value(before, count, method="token.get") or 0) + 1
        inf = value(after, "vaultd_request_duration_seconds_bucket", method="token.get", le="+Inf")
        assert inf == value(after, count, method="token.get")
        # The open engine connection shows under its uid; status carries the same counts.
        assert (value(after, "vaultd_connections", uid=str(os.getuid())) or 0) >= 1
        status = engine.status()
        assert status["connections"] >= 1 and status["requests_total"] >= 3
    assert value(after, "vaultd_vault_unlocked") == 1
    assert value(after, "vaultd_vault_state", state="UNLOCKED") == 1
    assert (value(after, "vaultd_vault_generation") or 0) >= 1
    assert value(after, "vaultd_credential_state", credential="ex", kind="static", state="FRESH") == 1
    assert value(after, "vaultd_credential_state", credential="live", kind="oauth2", state="FRESH") == 1
    assert 800 < (value(after, "vaultd_credential_expires_in_seconds", credential="live") or 0) <= 900
    assert (value(after, "vaultd_renewals_total", credential="live") or 0) >= 1
    assert (value(after, "vaultd_upstream_request_duration_seconds_count", host="127.0.0.1") or 0) >= 1

    # The provider refuses the refresh token: the state gauge and the failure counter say so.
    fake_exchange.control(fault="invalid_grant")
    daemon.ctl("renew", "live", *daemon.pw(), check=False)
    reauth = wait_for(
        lambda: (
            (s := scrape(url)) and value(s, "vaultd_credential_state", credential="live", state="NEEDS_REAUTH") and s
        ),
        what="NEEDS_REAUTH in the state gauge",
    )
    assert value(reauth, "vaultd_credential_state", credential="live", state="FRESH") == 0
    assert value(reauth, "vaultd_renewal_failures_total", credential="live", reason="invalid_grant") == 1
    # A refused call is counted under its error's name.
    assert daemon.ctl("get", "live", check=False).returncode == 1
    refused = scrape(url)
    assert (value(refused, "vaultd_requests_total", method="token.get", outcome="NEEDS_REAUTH") or 0) >= 1

    daemon.ctl("lock")
    locked = scrape(url)
    assert value(locked, "vaultd_vault_unlocked") == 0
    assert value(locked, "vaultd_vault_state", state="LOCKED") == 1
    assert "vaultd_credential_state" not in locked, "nothing about credentials while locked"
    texts = httpx.get(url, timeout=10).text
    assert "fake-at-" not in texts and "fake-secret" not in texts and "fake-rt" not in texts


def test_unix_socket_metrics_are_private_and_survive_scrapers_that_misbehave(
    daemon: DaemonProcess, short_tmp: Path
) -> None:
    path = short_tmp / "metrics" / "m.sock"
    daemon.start("--metrics", f"unix:{path}")
    daemon.ready()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    transport = httpx.HTTPTransport(uds=str(path))
    first = scrape("http://vaultd/metrics", transport)
    assert value(first, "vaultd_vault_unlocked") == 1

    silent = socket.socket(socket.AF_UNIX)
    silent.connect(str(path))  # connects and never sends
    garbage = socket.socket(socket.AF_UNIX)
    garbage.connect(str(path))
    garbage.sendall(b"\x00\xffNOT HTTP AT ALL\r\n\r\n" * 10)
    half = socket.socket(socket.AF_UNIX)
    half.connect(str(path))
    half.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # half a head, then the peer dies
    half.close()
    started = time.monotonic()
    second = scrape("http://vaultd/metrics", transport)
    with daemon.client() as engine:
        assert engine.token("ex").value == "fake-token-e2e-1"
    assert time.monotonic() - started < READ_TIMEOUT, "neither waited for the silent scraper"
    assert value(second, "vaultd_vault_unlocked") == 1
    assert garbage.recv(100) == b"", "garbage gets the connection closed"
    with httpx.Client(transport=transport, timeout=10) as client:
        assert client.get("http://vaultd/other").status_code == 404
        assert client.post("http://vaultd/metrics").status_code == 405
    silent.close()
    garbage.close()

    # Scrapers that hold every slot: the next scrape is refused, the daemon serves on, and the
    # slots free themselves once the silent ones time out.
    hogs: list[socket.socket] = []
    try:
        # Once the daemon has taken them from the backlog, a scrape beyond the cap is closed unanswered.
        # A hog the daemon refused (the silent scraper's slot not yet given back) is replaced.
        def refused_at_the_cap() -> bool:
            hogs[:] = [hog for hog in hogs if not _closed_by_peer(hog)]
            while len(hogs) < MAX_SCRAPERS:
                hogs.append(socket.socket(socket.AF_UNIX))
                hogs[-1].connect(str(path))
            return not _scrapes(transport)

        wait_for(refused_at_the_cap, timeout=20, what="a scrape refused at the cap")
        with daemon.client() as engine:
            assert engine.token("ex").value == "fake-token-e2e-1"
        wait_for(lambda: _scrapes(transport), timeout=READ_TIMEOUT + 5, what="a slot again")
    finally:
        for hog in hogs:
            hog.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the daemon closed this connection (it never sends a hog anything else)."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""


def _scrapes(transport: httpx.HTTPTransport) -> bool:
    try:
        with httpx.Client(transport=transport, timeout=10) as client:
            return client.get("http://vaultd/metrics").status_code == 200
    except httpx.TransportError:
        return False


def test_an_address_other_hosts_reach_needs_the_flag(daemon: DaemonProcess, short_tmp: Path) -> None:
    proc = subprocess.run(
        [BIN / "vaultd", "--metrics", "0.0.0.0:0"], env=daemon.env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert "--metrics-allow-remote" in proc.stderr and "not a loopback address" in proc.stderr
    bad = subprocess.run(
        [BIN / "vaultd", "--metrics", "127.0.0.1"], env=daemon.env, capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr


def test_the_settings_file_names_the_address_and_the_flag_overrides_it(short_tmp: Path) -> None:
    config = short_tmp / "config"
    (config / "vaultd").mkdir(parents=True)
    settings = config / "vaultd" / "vaultd.toml"
    settings.write_text('metrics = "0.0.0.0:0"\n')
    daemon = DaemonProcess(short_tmp, XDG_CONFIG_HOME=str(config))
    refused = subprocess.run([BIN / "vaultd"], env=daemon.env, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2
    assert "--metrics-allow-remote" in refused.stderr and str(settings) in refused.stderr
    settings.write_text('metrics = "127.0.0.1:0"\n')
    daemon.start()
    try:
        assert value(scrape(tcp_url(daemon)), "vaultd_vault_unlocked") == 0
    finally:
        assert daemon.stop() == 0
    daemon.log_path.unlink()
    daemon.start("--metrics", "off")
    try:
        assert "metrics at" not in daemon.log
    finally:
        assert daemon.stop() == 0


def test_every_metric_the_alert_rules_use_is_in_a_real_scrape(
    daemon: DaemonProcess, fake_exchange: FakeExchangeProcess
) -> None:
    daemon.start("--metrics", "127.0.0.1:0")
    url = tcp_url(daemon)
    daemon.ready()
    add_oauth(daemon, fake_exchange, "live")
    text = httpx.get(url, timeout=10).text
    exposed = set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        exposed.update(family.name + suffix for suffix in suffixes)
        exposed.update(sample.name for sample in family.samples)
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    named = {rule["alert"] for rule in alerts}
    assert {"VaultdCredentialNeedsReauth", "VaultdRefreshTokenExpiring", "VaultdCredentialDegraded",
            "VaultdVaultLocked", "VaultdAuditLinesDropped"} <= named  # fmt: skip
    for rule in alerts:
        used = set(re.findall(r"\bvaultd_[a-z_]+", rule["expr"]))
        assert used, rule["alert"]
        assert used <= exposed, f"{rule['alert']} uses {sorted(used - exposed)}, which no scrape shows"
        assert rule["annotations"]["summary"] and rule["labels"]["severity"]
