"""The keepalive kind: Binance listen keys and IBKR tickles against the fake exchange, on autojump time.

Calls are counted at the fake exchange over virtual hours; the vault tests register the
kind for their own duration (the package registers it for real elsewhere).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from vaultd._fake_exchange import FakeExchange
from vaultd._providers import ConfigError, FetchContext, UpstreamError
from vaultd._providers.keepalive import KeepaliveProvider
from vaultd._secret import Secret
from vaultd._vault import Vault
from vaultd._vaultfile import decode
from vaultd_protocol import ErrorCode

from .renewal_tools import PASS, Wall, add, open_vault, refused, state

LISTEN = "/api/v3/userDataStream"
TICKLE = "/v1/api/tickle"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
async def vault(nursery: trio.Nursery, tmp_path: Path, wall: Wall) -> Vault:
    return await open_vault(nursery, tmp_path, wall)


def binance(fx: FakeExchange, **changes: Any) -> dict[str, Any]:
    return {"style": "binance-listenkey", "base_url": fx.url, "api_key": "fake-client", **changes}


def ibkr(fx: FakeExchange, **changes: Any) -> dict[str, Any]:
    return {"style": "ibkr-tickle", "base_url": fx.url, **changes}


def ctx(wall: Wall, http: httpx.AsyncClient | None) -> FetchContext:
    return FetchContext(wall, http)


# -- Binance listen keys -------------------------------------------------------------------------


async def test_a_listen_key_is_created_then_kept_alive_at_the_interval(
    vault: Vault, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    await add(vault, "bn", binance(exchange), kind="keepalive")
    first = await vault.get("bn", 0)
    assert first["token"] in exchange.listen_keys and first["type"] == "listen-key"
    assert first["headers"] == {} and first["extra"] == {"created": True}
    assert first["ttl"] == pytest.approx(2700), "1.5 x the interval: the renewer calls at 2/3 of it"
    assert exchange.listen_key_calls == {"POST": 1}
    await trio.sleep(3600)
    puts = exchange.listen_key_calls["PUT"]
    assert 3600 / 1800 <= puts <= 3600 / 1530, "every 1530 to 1800 s (the interval, less jitter)"
    assert exchange.listen_key_calls["POST"] == 1, "the same key all along"
    served = await vault.get("bn", 0)
    assert served["token"] == first["token"] and served["extra"] == {"created": False}
    assert state(vault, "bn")["state"] == "FRESH"


async def test_the_listen_key_is_not_written_to_the_vault_file(
    vault: Vault, exchange: FakeExchange, autojump_clock: Any
) -> None:
    await add(vault, "bn", binance(exchange), kind="keepalive")
    key = (await vault.get("bn", 0))["token"]
    _, _, body = decode(vault.path.read_bytes(), Secret(PASS))
    config = body["credentials"]["bn"]["config"]
    assert config["api_key"] == "fake-client" and key not in repr(body)


async def test_a_vanished_key_is_recreated_within_one_fetch(
    vault: Vault, exchange: FakeExchange, autojump_clock: Any
) -> None:
    await add(vault, "bn", binance(exchange), kind="keepalive")
    old = (await vault.get("bn", 0))["token"]
    exchange.listen_keys.discard(old)  # closed upstream (a DELETE elsewhere, an outage)
    await trio.sleep(1800)
    assert exchange.listen_key_calls == {"POST": 2, "PUT": 1}, "the PUT heard -1125, then one POST"
    new = await vault.get("bn", 0)
    assert new["token"] != old and new["token"] in exchange.listen_keys
    assert new["extra"] == {"created": True}
    assert state(vault, "bn")["state"] == "FRESH" and state(vault, "bn")["last_error"] is None


async def test_a_key_left_an_hour_without_keepalive_expires_and_is_recreated(
    exchange: FakeExchange, wall: Wall, http: httpx.AsyncClient, autojump_clock: Any
) -> None:
    provider = KeepaliveProvider.from_config(binance(exchange))
    first = await provider.fetch(ctx(wall, http))
    await trio.sleep(3000)
    kept = await provider.fetch(ctx(wall, http))
    assert kept.token == first.token and kept.extra == {"created": False}
    await trio.sleep(3601)  # nobody kept it alive: the fake forgets it, as Binance does
    again = await provider.fetch(ctx(wall, http))
    assert again.token != first.token and again.extra == {"created": True}
    assert exchange.listen_keys == {again.token.reveal_str()}
    assert exchange.listen_key_calls == {"POST": 2, "PUT": 2}


async def test_a_bad_api_key_needs_reauth_after_one_call(
    vault: Vault, exchange: FakeExchange, autojump_clock: Any
) -> None:
    await add(vault, "bn", binance(exchange, api_key="fake-wrong"), kind="keepalive")
    error = await refused(vault.get("bn", 0))
    assert error.code is ErrorCode.NEEDS_REAUTH and "code -2015" in str(error)
    await trio.sleep(86400)
    assert exchange.listen_key_calls == {"POST": 1}, "no retry loop"
    described = state(vault, "bn")
    assert described["state"] == "NEEDS_REAUTH" and "refused the API key" in described["last_error"]
    assert "fake-wrong" not in repr(described)


async def test_a_failing_exchange_degrades_then_recovers_with_the_same_key(
    vault: Vault, exchange: FakeExchange, autojump_clock: Any
) -> None:
    await add(vault, "bn", binance(exchange), kind="keepalive")
    first = await vault.get("bn", 0)
    exchange.behaviour.fault = "down"
    await trio.sleep(1805)  # past the keepalive: failing, the key still valid
    described = state(vault, "bn")
    assert described["state"] == "DEGRADED" and "HTTP 500" in described["last_error"]
    assert (await vault.get("bn", 0))["token"] == first["token"]
    exchange.behaviour.fault = ""
    await trio.sleep(300)  # within the longest backoff
    assert state(vault, "bn")["state"] == "FRESH"
    assert (await vault.get("bn", 0))["token"] == first["token"]
    assert exchange.listen_key_calls["POST"] == 1, "kept alive, not recreated"


async def test_futures_path_and_a_restart_make_a_new_key(
    exchange: FakeExchange, wall: Wall, http: httpx.AsyncClient, autojump_clock: Any
) -> None:
    provider = KeepaliveProvider.from_config(binance(exchange, path="/fapi/v1/listenKey", interval=600))
    first = await provider.fetch(ctx(wall, http))
    assert first.expires_at == pytest.approx(wall() + 900)
    assert exchange.calls["/fapi/v1/listenKey"] == 1
    restarted = KeepaliveProvider.from_record(provider.to_record())  # the record holds no key
    second = await restarted.fetch(ctx(wall, http))
    assert second.token != first.token and exchange.listen_key_calls == {"POST": 2}


# -- IBKR tickles --------------------------------------------------------------------------------


async def test_the_gateway_is_tickled_every_interval(vault: Vault, exchange: FakeExchange, autojump_clock: Any) -> None:
    await add(vault, "ib", ibkr(exchange), kind="keepalive")
    first = await vault.get("ib", 0)
    assert first["token"] == "fake-session-1" and first["type"] == "session" and first["headers"] == {}
    assert first["ttl"] == pytest.approx(90)
    before = exchange.calls[TICKLE]
    await trio.sleep(600)
    tickles = exchange.calls[TICKLE] - before
    assert 600 / 60 <= tickles <= 600 / 51 + 1, "every 51 to 60 s"
    assert state(vault, "ib")["state"] == "FRESH"


async def test_an_unauthenticated_gateway_needs_reauth(
    vault: Vault, exchange: FakeExchange, autojump_clock: Any
) -> None:
    await add(vault, "ib", ibkr(exchange), kind="keepalive")
    await vault.get("ib", 0)
    exchange.tickle_authenticated = False
    await trio.sleep(120)
    described = state(vault, "ib")
    assert described["state"] == "NEEDS_REAUTH" and "log in to the Client Portal gateway" in described["last_error"]
    error = await refused(vault.get("ib", 0))
    assert error.code is ErrorCode.NEEDS_REAUTH
    calls = exchange.calls[TICKLE]
    await trio.sleep(3600)
    assert exchange.calls[TICKLE] == calls, "no retry loop"
    exchange.tickle_authenticated = True  # the operator logged in again
    assert (await vault.renew(Secret(PASS), "ib"))["state"] == "FRESH"


async def test_verify_tls_off_uses_a_client_of_its_own(exchange: FakeExchange, wall: Wall) -> None:
    provider = KeepaliveProvider.from_config(ibkr(exchange, verify_tls=False))
    issued = await provider.fetch(ctx(wall, None))  # no shared client: it made its own
    assert issued.token.reveal_str() == "fake-session-1"
    with pytest.raises(UpstreamError, match="no HTTP client"):
        await KeepaliveProvider.from_config(ibkr(exchange)).fetch(ctx(wall, None))


async def test_a_malformed_tickle_answer_is_retried_not_reauth(
    exchange: FakeExchange, wall: Wall, http: httpx.AsyncClient
) -> None:
    exchange.behaviour.fault = "not_json"
    with pytest.raises(UpstreamError, match="not JSON") as info:
        await KeepaliveProvider.from_config(ibkr(exchange)).fetch(ctx(wall, http))
    assert not info.value.reauth


# -- configuration -------------------------------------------------------------------------------

URL = "https://api.binance.com"
KEY = "fake-secret-key"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"base_url": URL, "api_key": KEY}, "'style'"),
        ({"style": "ftx", "base_url": URL, "api_key": KEY}, "'style'"),
        ({"style": "binance-listenkey", "api_key": KEY}, "'base_url'"),
        ({"style": "binance-listenkey", "base_url": "http://example.com", "api_key": KEY}, "'base_url'"),
        ({"style": "binance-listenkey", "base_url": URL + "?a=1", "api_key": KEY}, "'base_url'"),
        ({"style": "binance-listenkey", "base_url": URL}, "'api_key'"),
        ({"style": "binance-listenkey", "base_url": URL, "api_key": " " + KEY}, "'api_key'"),
        ({"style": "binance-listenkey", "base_url": URL, "api_key": KEY, "path": "api/v3"}, "'path'"),
        ({"style": "binance-listenkey", "base_url": URL, "api_key": KEY, "path": "/a?b=1"}, "'path'"),
        ({"style": "binance-listenkey", "base_url": URL, "api_key": KEY, "interval": 3000}, "'interval'"),
        ({"style": "binance-listenkey", "base_url": URL, "api_key": KEY, "interval": "30m"}, "'interval'"),
        ({"style": "binance-listenkey", "base_url": URL, "api_key": KEY, "timeout": 0}, "'timeout'"),
        ({"style": "binance-listenkey", "base_url": URL, "api_key": KEY, "verify_tls": False}, "'verify_tls'"),
        ({"style": "binance-listenkey", "base_url": URL, "api_key": KEY, "colour": 1}, "unknown field"),
        ({"style": "ibkr-tickle", "base_url": "https://localhost:5000", "api_key": KEY}, "'api_key'"),
        ({"style": "ibkr-tickle", "base_url": "https://localhost:5000", "path": "/x"}, "'path'"),
        ({"style": "ibkr-tickle", "base_url": "https://localhost:5000", "interval": 300}, "'interval'"),
        ({"style": "ibkr-tickle", "base_url": "https://localhost:5000", "interval": 5}, "'interval'"),
        ({"style": "ibkr-tickle", "base_url": "https://localhost:5000", "verify_tls": "no"}, "'verify_tls'"),
        ({"style": "ibkr-tickle", "base_url": "https://gw.example.com", "verify_tls": False}, "'verify_tls'"),
    ],
)
def test_config_refusals_name_the_field(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        KeepaliveProvider.from_config(config)
    assert KEY not in str(info.value)


def test_defaults_describe_and_repr_never_show_the_api_key() -> None:
    provider = KeepaliveProvider.from_config(
        {"style": "binance-listenkey", "base_url": URL + "/", "api_key": "fake-secret-key"}
    )
    described = provider.describe()
    assert described == {"style": "binance-listenkey", "base_url": URL, "path": LISTEN,
                         "interval": 1800.0, "verify_tls": True, "timeout": 10.0}  # fmt: skip
    assert "fake-secret-key" not in repr(provider) + repr(described)
    assert provider.to_record()["api_key"] == "fake-secret-key"
    assert set(provider.to_record()) <= KeepaliveProvider.FIELDS
    assert provider.warnings(0.0) == []
    local = KeepaliveProvider.from_config({"style": "ibkr-tickle", "base_url": "https://localhost:5000",
                                           "verify_tls": False})  # fmt: skip
    assert local.describe() == {"style": "ibkr-tickle", "base_url": "https://localhost:5000",
                                "interval": 60.0, "verify_tls": False, "timeout": 10.0}  # fmt: skip
    assert KeepaliveProvider.from_record(local.to_record()).describe() == local.describe()
    provider.wipe()
    assert provider.to_record()["api_key"] == "", "wiped"
