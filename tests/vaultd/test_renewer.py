"""Renewal against a real HTTP token endpoint on 127.0.0.1, on trio's autojump clock.

The fake exchange runs in the same trio run as the vault, so virtual time drives both: an
hour of renewals takes milliseconds, and nothing sleeps for real. The wall clock the vault
sees is tied to trio's clock, with an offset a test can move to play a suspended laptop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from vaultd._fake_exchange import FakeExchange
from vaultd._secret import Secret
from vaultd._vaultfile import decode
from vaultd_protocol import ErrorCode

from .renewal_tools import PASS, Wall, add, open_vault, refused, state


def oauth(fx: FakeExchange, **changes: Any) -> dict[str, Any]:
    config = {
        "token_url": fx.url + "/oauth/token",
        "grant_type": "refresh_token",
        "client_id": "fake-client",
        "client_secret": "fake-secret",
        "refresh_token": fx.new_refresh_token(),
    }
    return {**config, **changes}


async def test_tokens_renew_before_they_expire_and_watchers_hear_each_one(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    exchange.behaviour.expires_in = 90
    vault = await open_vault(nursery, tmp_path, wall)
    heard: list[tuple[str, dict[str, Any]]] = []
    vault.hub.subscribe(["ex"], lambda method, params: heard.append((method, params)) is None)
    await add(vault, "ex", oauth(exchange))
    first = await vault.get("ex", 0)
    assert first["token"] in exchange.issued_access and first["ttl"] == pytest.approx(89), "90 s less expiry_margin"
    start = trio.current_time()
    await trio.sleep(600)
    calls = exchange.calls["/oauth/token"]
    assert 600 / 60 <= calls <= 600 / 54 + 2, "renewed every 54-60 s (2/3 of 90 s, less jitter)"
    served = await vault.get("ex", 0)
    assert served["token"] == exchange.issued_access[-1] and served["ttl"] > 0
    assert [m for m, _ in heard] == ["token.updated"] * len(exchange.issued_access)
    assert [p["token"] for _, p in heard] == exchange.issued_access
    assert trio.current_time() - start == pytest.approx(600)
    assert state(vault, "ex")["state"] == "FRESH"


async def test_an_endpoint_down_longer_than_the_token_lives(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    exchange.behaviour.expires_in = 60
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", oauth(exchange))
    first = await vault.get("ex", 0)
    exchange.behaviour.fault = "down"
    await trio.sleep(45)  # past the renewal point (40 s): failing, the old token still valid
    described = state(vault, "ex")
    assert described["state"] == "DEGRADED" and "HTTP 500" in described["last_error"]
    assert (await vault.get("ex", 0))["token"] == first["token"], "a valid token is still served"
    await trio.sleep(20)  # past expiry
    assert state(vault, "ex")["state"] == "EXPIRED"
    error = await refused(vault.get("ex", 0))
    assert error.code is ErrorCode.RENEWAL_FAILED and "HTTP 500" in str(error)
    calls_while_down = exchange.calls["/oauth/token"]
    await trio.sleep(3600)
    calls_in_an_hour = exchange.calls["/oauth/token"] - calls_while_down
    assert calls_in_an_hour <= 3600 / 60 + 2, "backoff grows to minutes: no retry storm"
    exchange.behaviour.fault = ""
    await trio.sleep(301)  # the longest backoff: it recovers by itself
    assert state(vault, "ex")["state"] == "FRESH"
    recovered = await vault.get("ex", 0)
    assert recovered["token"] == exchange.issued_access[-1] and recovered["ttl"] > 0


async def test_a_slow_endpoint_times_out_and_is_retried(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    exchange.behaviour.expires_in = 600
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", oauth(exchange, timeout=5))
    await vault.get("ex", 0)
    exchange.behaviour.fault, exchange.behaviour.delay = "slow", 60
    await trio.sleep(400)
    assert state(vault, "ex")["state"] == "DEGRADED"
    assert "no answer within 5 s" in state(vault, "ex")["last_error"]


async def test_invalid_grant_means_needs_reauth_after_exactly_one_call(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    exchange.behaviour.fault = "invalid_grant"
    await add(vault, "ex", oauth(exchange))
    error = await refused(vault.get("ex", 0))
    assert error.code is ErrorCode.NEEDS_REAUTH and "invalid_grant" in str(error)
    await trio.sleep(86400)
    assert exchange.calls["/oauth/token"] == 1, "no retry loop"
    described = state(vault, "ex")
    assert described["state"] == "NEEDS_REAUTH" and described["next_renewal"] is None
    assert "invalid_grant" in described["last_error"]
    exchange.behaviour.fault = ""
    renewed = await vault.renew(Secret(PASS), "ex")  # the operator forces one attempt
    assert exchange.calls["/oauth/token"] == 2 and renewed["state"] == "FRESH"


async def test_fifty_concurrent_gets_of_an_expired_token_make_one_call(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", oauth(exchange))
    await vault.get("ex", 0)
    wall.offset += 7200  # the laptop slept for two hours: the token expired meanwhile
    before = exchange.calls["/oauth/token"]
    results: list[dict[str, Any]] = []

    async def get() -> None:
        results.append(await vault.get("ex", 0))

    async with trio.open_nursery() as engines:
        for _ in range(50):
            engines.start_soon(get)
    assert exchange.calls["/oauth/token"] - before == 1
    assert {r["token"] for r in results} == {exchange.issued_access[-1]}


async def test_a_wall_clock_jump_never_serves_an_expired_token(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "static", {"token": "fake-static", "not_after": wall() + 100}, kind="static")
    await add(vault, "ex", oauth(exchange))
    stale = await vault.get("ex", 0)
    wall.offset += 3600  # suspended: trio's clock did not move, the wall clock did
    fresh = await vault.get("ex", 0)
    assert fresh["token"] != stale["token"] and fresh["ttl"] == pytest.approx(899)  # less expiry_margin
    error = await refused(vault.get("static", 0))
    assert error.code is ErrorCode.TOKEN_EXPIRED


async def test_min_ttl_renews_now_and_waits(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", oauth(exchange))
    first = await vault.get("ex", 0)
    await trio.sleep(300)
    assert (await vault.get("ex", 0))["token"] == first["token"]
    wanted = await vault.get("ex", min_ttl=800)  # 600 s left: renew now
    assert wanted["token"] != first["token"] and wanted["ttl"] >= 800
    calls = exchange.calls["/oauth/token"]
    for _ in range(50):  # no token lives that long: refused at once, without an upstream call
        error = await refused(vault.get("ex", min_ttl=5000))
    assert error.code is ErrorCode.TOKEN_EXPIRED and "its tokens live 899 s" in str(error)  # less expiry_margin
    assert exchange.calls["/oauth/token"] == calls


@pytest.mark.parametrize(
    ("fault", "words"),
    [("no_expires_in", "no usable expires_in"), ("not_json", "not JSON"), ("huge", "larger than 1048576 bytes")],
)
async def test_malformed_answers_give_a_clear_error(
    nursery: trio.Nursery,
    tmp_path: Path,
    exchange: FakeExchange,
    wall: Wall,
    autojump_clock: Any,
    fault: str,
    words: str,
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    exchange.behaviour.fault = fault
    await add(vault, "ex", oauth(exchange, grant_type="client_credentials"))
    error = await refused(vault.get("ex", 0))
    assert error.code is ErrorCode.RENEWAL_FAILED and words in str(error)
    assert words in state(vault, "ex")["last_error"]
    exchange.behaviour.fault = ""
    await trio.sleep(2)  # the first backoff is 1 to 2 s
    assert (await vault.get("ex", 0))["ttl"] > 0


async def test_rotated_refresh_tokens_are_on_disk_before_they_are_used(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    exchange.behaviour.expires_in = 60
    vault = await open_vault(nursery, tmp_path, wall)
    config = oauth(exchange)
    first_rt = config["refresh_token"]
    await add(vault, "ex", config)
    heard: list[str] = []

    def on_update(method: str, params: dict[str, Any]) -> bool:
        # At the moment a token is pushed, the vault file must already hold the new RT.
        _, _, body = decode(vault.path.read_bytes(), Secret(PASS))
        heard.append(body["credentials"]["ex"]["config"]["refresh_token"])
        return True

    vault.hub.subscribe(["ex"], on_update)
    await trio.sleep(300)
    assert len(heard) >= 5
    assert heard[-1] == exchange.current_refresh_token(first_rt), "the file holds the newest refresh token"
    assert len(set(heard)) == len(heard), "every renewal rotated, and each was saved before use"
    assert not exchange.family_revoked(first_rt)


async def test_a_rotation_that_cannot_be_saved_is_not_served(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    config = oauth(exchange)
    await add(vault, "ex", config)
    first = await vault.get("ex", 0)
    vault.backup.unlink()
    vault.backup.mkdir()  # the next vault write fails for real
    wall.offset += 1000  # expired: the next get must renew
    error = await refused(vault.get("ex", 0))
    assert error.code is ErrorCode.RENEWAL_FAILED and "could not be saved" in str(error)
    assert exchange.issued_access[-1] != first["token"], "a token was issued upstream but not served"
    vault.backup.rmdir()
    await trio.sleep(2)
    served = await vault.get("ex", 0)
    assert served["token"] == exchange.issued_access[-1]
    assert not exchange.family_revoked(config["refresh_token"]), "the unsaved RT was used, not the old one"


async def test_a_dropped_answer_within_the_reuse_grace_recovers(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    exchange.behaviour.reuse_grace = 30
    vault = await open_vault(nursery, tmp_path, wall)
    config = oauth(exchange)
    await add(vault, "ex", config)
    await vault.get("ex", 0)
    exchange.behaviour.fault, exchange.behaviour.times = "drop", 1  # rotates, then hangs up
    await trio.sleep(603)  # the renewal at 600 s is dropped, its retry 1-2 s later is not
    assert state(vault, "ex")["state"] == "FRESH"
    assert not exchange.family_revoked(config["refresh_token"])


async def test_a_dropped_answer_without_grace_needs_reauth_after_one_more_call(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", oauth(exchange))
    await vault.get("ex", 0)
    exchange.behaviour.fault, exchange.behaviour.times = "drop", 1
    await exchange.fault_spent.wait()  # the renewal (510 to 600 s) rotated and lost the answer
    calls = exchange.calls["/oauth/token"]
    await trio.sleep(3600)
    assert exchange.calls["/oauth/token"] == calls + 1, "one more attempt, then no loop"
    assert state(vault, "ex")["state"] == "NEEDS_REAUTH"


async def test_a_three_second_token_renews_at_about_two_seconds_without_looping(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    exchange.behaviour.expires_in = 4  # lives 3 s after the 1 s expiry_margin
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", oauth(exchange))
    await vault.get("ex", 0)
    before = exchange.calls["/oauth/token"]
    await trio.sleep(60)
    calls = exchange.calls["/oauth/token"] - before
    assert 60 / 2 <= calls <= 60 / 1.7 + 1


async def test_the_call_budget_caps_a_storm(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    exchange.behaviour.fault = "down"
    await add(vault, "ex", oauth(exchange, grant_type="client_credentials"))
    async with trio.open_nursery() as engines:  # engines hammering an endpoint that is down
        for _ in range(100):
            engines.start_soon(lambda: refused(vault.get("ex", 0)))
            await trio.sleep(0.1)
    assert exchange.calls["/oauth/token"] <= 20 + 10 * 30 / 60 + 1, "capacity 20, then 30 a minute"


async def test_deribit_dialect(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    url = exchange.url + "/api/v2/public/auth"
    await add(vault, "cc", {"token_url": url, "dialect": "deribit", "grant_type": "client_credentials",
                            "client_id": "fake-client", "client_secret": "fake-secret"})  # fmt: skip
    assert (await vault.get("cc", 0))["headers"]["Authorization"].startswith("Bearer fake-at-")
    await add(vault, "rt", {"token_url": url, "dialect": "deribit", "grant_type": "refresh_token",
                            "refresh_token": exchange.new_refresh_token()})  # fmt: skip
    assert (await vault.get("rt", 0))["ttl"] == pytest.approx(899)  # less expiry_margin
    await add(vault, "bad", {"token_url": url, "dialect": "deribit", "grant_type": "client_credentials",
                             "client_id": "fake-client", "client_secret": "wrong"})  # fmt: skip
    error = await refused(vault.get("bad", 0))
    assert error.code is ErrorCode.NEEDS_REAUTH and "13004" in str(error)


async def test_client_secret_in_the_form_body(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", oauth(exchange, client_auth="post"))
    assert (await vault.get("ex", 0))["ttl"] > 0


async def test_refresh_token_expiry_warns_ahead_then_needs_reauth_without_a_call(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", oauth(exchange, refresh_token_expires_at=wall() + 3 * 86400))
    await vault.get("ex", 0)
    assert state(vault, "ex")["warnings"] == []
    wall.offset += 2 * 86400
    assert "expires in 24 h" in state(vault, "ex")["warnings"][0]
    wall.offset += 86400
    calls = exchange.calls["/oauth/token"]
    error = await refused(vault.get("ex", 0))
    assert error.code is ErrorCode.NEEDS_REAUTH and "refresh_token_expires_at" in str(error)
    assert exchange.calls["/oauth/token"] == calls


async def test_lock_ends_renewals_and_tells_watchers(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    heard: list[str] = []
    await add(vault, "ex", oauth(exchange))
    vault.hub.subscribe(["ex"], lambda method, params: heard.append(method) is None)
    await vault.get("ex", 0)
    vault.lock()
    calls = exchange.calls["/oauth/token"]
    await trio.sleep(7200)
    assert exchange.calls["/oauth/token"] == calls, "no renewal while locked"
    assert heard[-1] == "vault.locked"


async def test_jwt_credentials_are_minted_and_renewed_locally(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, autojump_clock: Any
) -> None:
    import base64
    import json as json_module

    import nacl.signing

    seed = bytes(range(32))
    vault = await open_vault(nursery, tmp_path, wall)
    config = {"alg": "EdDSA", "private_key": base64.b64encode(seed).decode(), "claims": {"sub": "engine-1"}}
    await add(vault, "signer", config, kind="jwt")
    first = await vault.get("signer", 0)
    header, payload, signature = first["token"].split(".")
    verify = nacl.signing.SigningKey(seed).verify_key
    verify.verify(f"{header}.{payload}".encode(), base64.urlsafe_b64decode(signature + "=="))
    claims = json_module.loads(base64.urlsafe_b64decode(payload + "=="))
    assert claims["sub"] == "engine-1" and claims["exp"] - claims["iat"] == 120
    await trio.sleep(100)  # renewed at about 80 s
    assert (await vault.get("signer", 0))["token"] != first["token"]


async def test_a_rotation_in_a_malformed_answer_is_kept_and_the_family_survives(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    config = oauth(exchange)
    await add(vault, "ex", config)
    await vault.get("ex", 0)
    exchange.behaviour.fault, exchange.behaviour.times = "no_expires_in", 1  # rotates, answers badly
    wall.offset += 1000
    await refused(vault.get("ex", 0))
    _, _, body = decode(vault.path.read_bytes(), Secret(PASS))
    assert body["credentials"]["ex"]["config"]["refresh_token"] == exchange.current_refresh_token(
        config["refresh_token"]
    ), "the rotated refresh token was saved although the answer was unusable"
    await trio.sleep(3)  # the retry presents the new refresh token
    assert state(vault, "ex")["state"] == "FRESH"
    assert not exchange.family_revoked(config["refresh_token"])


async def test_gets_never_bypass_the_backoff(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", oauth(exchange))
    await vault.get("ex", 0)
    exchange.behaviour.fault = "down"
    wall.offset += 1000  # expired
    for _ in range(600):  # an engine asking once a second for ten minutes
        error = await refused(vault.get("ex", 0))
        await trio.sleep(1)
    assert error.code is ErrorCode.RENEWAL_FAILED and "next attempt in" in str(error)
    # 600 gets; the backoff (1 s doubling to 5 min, full jitter, seeded) allows a few dozen at most.
    assert exchange.calls["/oauth/token"] <= 40, "the backoff decides, not the engine's loop"


async def test_after_a_suspend_watchers_hear_the_renewal_without_anyone_asking(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", oauth(exchange))
    first = await vault.get("ex", 0)
    heard: list[str] = []
    vault.hub.subscribe(["ex"], lambda method, params: heard.append(params.get("token", method)) is None)
    wall.offset += 7200  # the laptop slept two hours; trio's monotonic clock did not move
    await trio.sleep(31)  # at most one heartbeat later
    assert heard and heard[-1] != first["token"] and heard[-1] == exchange.issued_access[-1]
    assert state(vault, "ex")["state"] == "FRESH"


async def test_a_token_that_arrives_already_expired_is_not_served_nor_pushed(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    exchange.behaviour.expires_in = 2
    vault = await open_vault(nursery, tmp_path, wall, fetch_timeout=60)
    await add(vault, "ex", oauth(exchange, timeout=30))
    await vault.get("ex", 0)
    pushed: list[float] = []
    vault.hub.subscribe(
        ["ex"], lambda method, params: method != "token.updated" or pushed.append(params["ttl"]) is None
    )
    exchange.behaviour.fault, exchange.behaviour.delay, exchange.behaviour.times = "late", 5, 1
    await trio.sleep(10)
    assert exchange.behaviour.fault == "", "the late answer was given"
    assert pushed and all(ttl > 0 for ttl in pushed), "only live tokens are pushed"


async def test_a_caller_that_gives_up_does_not_orphan_the_renewal(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall, get_wait=1)
    await add(vault, "ex", oauth(exchange, timeout=30))
    await vault.get("ex", 0)
    exchange.behaviour.fault, exchange.behaviour.delay, exchange.behaviour.times = "slow", 5, 1
    wall.offset += 1000
    error = await refused(vault.get("ex", 0))  # gives up after 1 s; the attempt goes on
    assert "still being renewed" in str(error)
    await trio.sleep(10)
    described = state(vault, "ex")
    assert described["state"] == "FRESH" and described["next_renewal"] is not None


async def test_a_lock_ends_every_subscription(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", oauth(exchange))
    heard: list[str] = []
    vault.hub.subscribe(["ex"], lambda method, params: heard.append(method) is None)
    await vault.get("ex", 0)
    vault.lock()
    await vault.unlock(Secret(PASS))
    await vault.get("ex", 0)
    await trio.sleep(3600)
    assert heard.count("vault.locked") == 1 and heard[-1] == "vault.locked", "no event after the lock"
    assert vault.hub.watchers("ex") == 0
