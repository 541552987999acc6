"""The metrics' parts in process: the address rules, failure reasons, and families read back with the real parser."""

from __future__ import annotations

from pathlib import Path
from time import perf_counter_ns
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from vaultd._metrics import MetricsAddress, MetricsError, VaultdCollector, configured_metrics, parse_address
from vaultd._providers import UpstreamError
from vaultd._stats import Stats, UpstreamStats, failure_reason
from vaultd_protocol import CredentialState, VaultState


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9477", MetricsAddress(host="127.0.0.1", port=9477)),
        ("localhost:0", MetricsAddress(host="127.0.0.1", port=0)),
        ("[::1]:9477", MetricsAddress(host="::1", port=9477)),
        ("127.0.0.5:80", MetricsAddress(host="127.0.0.5", port=80)),
        ("unix:/run/x/m.sock", MetricsAddress(path=Path("/run/x/m.sock"))),
    ],
)
def test_loopback_and_unix_addresses_are_taken(text: str, expected: MetricsAddress) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["0.0.0.0:9477", "[::]:9477", "192.168.1.5:9477", "metrics.example:9477"])
def test_an_address_others_can_reach_needs_allow_remote(text: str) -> None:
    with pytest.raises(MetricsError, match="--metrics-allow-remote"):
        parse_address(text)
    assert parse_address(text, allow_remote=True).port == 9477


@pytest.mark.parametrize("text", ["9477", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:x", "::1:9477", "unix:", ":80"])
def test_a_malformed_address_says_what_is_expected(text: str) -> None:
    with pytest.raises(MetricsError, match="unix:PATH or HOST:PORT"):
        parse_address(text)


def test_the_settings_file_gives_the_address_and_refuses_wrong_types(tmp_path: Path) -> None:
    settings = tmp_path / "vaultd.toml"
    assert configured_metrics(settings) == (None, False)
    settings.write_text('log_level = "info"\nmetrics = "unix:/tmp/m.sock"\nmetrics_allow_remote = true\n')
    assert configured_metrics(settings) == ("unix:/tmp/m.sock", True)
    settings.write_text("metrics = 9477\n")
    with pytest.raises(MetricsError, match="metrics must be a string"):
        configured_metrics(settings)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            UpstreamError("the token endpoint refused the credential: HTTP 400 invalid_grant", reauth=True),
            "invalid_grant",
        ),
        (UpstreamError("Binance refused the API key: HTTP 401", reauth=True), "refused"),
        (UpstreamError("the token endpoint answered HTTP 503 server_error"), "http_5xx"),
        (UpstreamError("the token endpoint answered HTTP 429"), "http_4xx"),
        (UpstreamError("host/path: no answer within 10 s", reason="timeout"), "timeout"),
        (UpstreamError("host/path: ConnectError", reason="network"), "network"),
        (UpstreamError("the token endpoint's answer has no access_token"), "other"),
        (UpstreamError("odd", reason="free text from somewhere"), "other"),
    ],
)
def test_failure_reasons_come_from_a_fixed_set(error: UpstreamError, reason: str) -> None:
    assert failure_reason(error) == reason


class _Vault:
    state = VaultState.UNLOCKED
    generation = 7

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"name": "deribit", "kind": "oauth2", "state": "NEEDS_REAUTH", "expires_at": None, "upstream_calls": 3,
             "settings": {"refresh_token_expires_at": 1_000_000.0 + 3600}},
            {"name": "ex", "kind": "static", "state": "FRESH", "expires_at": 1_000_000.0 + 60, "upstream_calls": 0,
             "settings": {}, "refresh_token_expires_at": None},
        ]  # fmt: skip


def scrape(collector: VaultdCollector) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_families_say_what_the_counters_and_the_vault_hold() -> None:
    stats, upstream = Stats(), UpstreamStats()
    stats.answered("token.get", "ok", perf_counter_ns() - 30_000)  # 30 us ago: past the 25 us bucket
    stats.answered("token.get", "FORBIDDEN", perf_counter_ns())
    stats.connected(1000)
    stats.connected(1000)
    stats.connected(2001)
    stats.disconnected(2001)
    upstream.failed("deribit", "invalid_grant")
    upstream.called("auth.example", 0.2)
    got = scrape(VaultdCollector(_Vault(), stats, upstream=upstream, clock=lambda: 1_000_000.0))

    def one(name: str, **labels: str) -> float | None:
        return got.get((name, frozenset(labels.items())))

    assert one("vaultd_requests_total", method="token.get", outcome="ok") == 1
    assert one("vaultd_requests_total", method="token.get", outcome="FORBIDDEN") == 1
    assert one("vaultd_request_duration_seconds_count", method="token.get") == 2
    assert one("vaultd_request_duration_seconds_bucket", method="token.get", le="+Inf") == 2
    assert (one("vaultd_request_duration_seconds_bucket", method="token.get", le="2.5e-05") or 0) <= 1
    assert (one("vaultd_request_duration_seconds_sum", method="token.get") or 0) >= 30e-6
    assert stats.requests_total == 2 and stats.open_connections == 2
    assert one("vaultd_connections", uid="1000") == 2 and one("vaultd_connections", uid="2001") is None
    # Every state the protocol knows gets a series per credential: a new member appears by itself.
    for member in CredentialState:
        expected = 1 if member is CredentialState.NEEDS_REAUTH else 0
        assert one("vaultd_credential_state", credential="deribit", kind="oauth2", state=member.value) == expected
    assert one("vaultd_credential_refresh_token_expires_in_seconds", credential="deribit", kind="oauth2") == 3600
    assert one("vaultd_credential_refresh_token_expires_in_seconds", credential="ex", kind="static") is None
    assert one("vaultd_credential_expires_in_seconds", credential="ex", kind="static") == 60
    assert one("vaultd_credential_expires_in_seconds", credential="deribit", kind="oauth2") is None
    assert one("vaultd_renewal_failures_total", credential="deribit", reason="invalid_grant") == 1
    assert one("vaultd_upstream_request_duration_seconds_bucket", host="auth.example", le="0.1") == 0
    assert one("vaultd_upstream_request_duration_seconds_bucket", host="auth.example", le="0.25") == 1
    assert one("vaultd_vault_generation") == 7 and one("vaultd_vault_unlocked") == 1
    assert one("vaultd_audit_lines_dropped_total") == 0


def test_alert_notices_are_counted_by_outcome() -> None:
    notifier = SimpleNamespace(delivered=5, failed=2, dropped=1)
    got = scrape(VaultdCollector(_Vault(), Stats(), notifier=notifier, clock=lambda: 1_000_000.0))
    assert {
        outcome: got.get(("vaultd_notices_total", frozenset({("outcome", outcome)})))
        for outcome in ("delivered", "failed", "dropped")
    } == {"delivered": 5, "failed": 2, "dropped": 1}
    assert not any(name == "vaultd_notices_total" for name, _ in scrape(VaultdCollector(_Vault(), Stats())))
