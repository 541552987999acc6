"""Sourced credentials and the upstream's session, on trio's virtual clock.

OpenBao is played by ``bao_standin`` (the real server cannot run under the autojump clock:
see its docstring); ``tests/integration/test_openbao_*.py`` run the same paths against the
real binary. What is asserted is what an engine or an operator sees: what ``token.get`` and
``token.sign`` answer, ``status``, watch events, and how many calls reach OpenBao.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import trio

from vaultd._errors import RpcError
from vaultd._secret import Secret
from vaultd._vault import Vault
from vaultd._vaultfile import decode
from vaultd_protocol import ErrorCode

from .bao_standin import ROLE_ID, StandInBao, serving, upstream_config
from .renewal_tools import PASS, Wall, open_vault, refused, state

SIGN = {"scheme": "binance-hmac", "api_key": "fake-key-1", "secret": "fake-secret-1"}
BINANCE_ORDER = {"method": "GET", "url": "https://api.binance.com/api/v3/account", "body": b"", "timestamp": None}


@pytest.fixture
def bao(monkeypatch: pytest.MonkeyPatch) -> Any:
    with serving(monkeypatch, StandInBao()) as server:
        yield server


async def sourced_vault(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, *, refresh: float = 60, **upstream: Any
) -> Vault:
    vault = await open_vault(nursery, tmp_path, wall)
    await vault.put_upstream(Secret(PASS), "bao", "openbao", upstream_config(**upstream), replace=False)
    bao.put("desk/static", {"token": "fake-token-v1"})
    bao.put("desk/binance", SIGN)
    for name, kind, path in (("st", "static", "desk/static"), ("binance", "sign", "desk/binance")):
        source = {"upstream": "bao", "path": path, "refresh": refresh}
        await vault.put(Secret(PASS), name, kind, None, replace=False, source=source)
    return vault


def sign(vault: Vault) -> Any:
    return vault.sign("binance", dict(BINANCE_ORDER))


def sourced(vault: Vault, name: str) -> dict[str, Any]:
    source: dict[str, Any] = state(vault, name)["source"]
    return source


async def test_a_new_version_is_served_within_one_refresh_and_watchers_hear_it(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await sourced_vault(nursery, tmp_path, wall, bao)
    heard: list[tuple[str, dict[str, Any]]] = []
    both = trio.Event()

    def hear(method: str, params: dict[str, Any]) -> bool:
        heard.append((method, params))
        if {p["name"] for m, p in heard if m == "token.updated"} == {"st", "binance"}:
            both.set()
        return True

    vault.hub.subscribe(["st", "binance"], hear)
    assert (await vault.get("st", 0))["token"] == "fake-token-v1"
    start = trio.current_time()
    bao.put("desk/static", {"token": "fake-token-v2"})
    bao.put("desk/binance", {**SIGN, "api_key": "fake-key-2"})
    await both.wait()
    assert trio.current_time() - start <= 60 * 1.1, "within refresh plus jitter"
    assert (await vault.get("st", 0))["token"] == "fake-token-v2"
    assert (await sign(vault))["headers"]["X-MBX-APIKEY"] == "fake-key-2"
    assert ("token.updated", {"name": "binance", "version": 2}) in heard
    assert [p["token"] for m, p in heard if m == "token.updated" and p["name"] == "st"] == ["fake-token-v2"]
    # Written before it was served: the file holds version 2 of both.
    _, _, body = decode((tmp_path / "vault").read_bytes(), Secret(PASS))
    assert {n: c["source"]["version"] for n, c in body["credentials"].items()} == {"st": 2, "binance": 2}
    assert body["credentials"]["st"]["config"]["token"] == "fake-token-v2"


async def test_reads_spread_over_refresh_plus_or_minus_ten_percent_one_at_a_time(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await sourced_vault(nursery, tmp_path, wall, bao, refresh=10)
    for n in range(20):
        bao.put(f"desk/s{n}", {"token": f"fake-{n}"})
        source = {"upstream": "bao", "path": f"desk/s{n}", "refresh": 10}
        await vault.put(Secret(PASS), f"s{n}", "static", None, replace=False, source=source)
    bao.calls.clear()
    await trio.sleep(600)
    reads = [at for name, at in bao.calls if name == "read"]
    per_credential = len(reads) / 22
    assert 600 / 11 - 1 <= per_credential <= 600 / 9 + 1, "one read per credential every 9 to 11 s"
    assert all(state(vault, f"s{n}")["state"] == "FRESH" for n in range(20))


async def test_a_lower_version_from_a_lagging_standby_is_ignored(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await sourced_vault(nursery, tmp_path, wall, bao, refresh=5)
    bao.put("desk/static", {"token": "fake-token-v2"})
    await trio.sleep(6)
    assert (await vault.get("st", 0))["token"] == "fake-token-v2"
    bao.lag_to = 1  # a standby that has not seen version 2 yet answers the reads
    await trio.sleep(60)
    assert (await vault.get("st", 0))["token"] == "fake-token-v2", "versions only go up"
    assert sourced(vault, "st")["version"] == 2
    assert state(vault, "st")["state"] == "DEGRADED" and "older than the 2 held" in sourced(vault, "st")["last_error"]
    bao.lag_to = None  # the standby caught up
    await trio.sleep(6)
    assert state(vault, "st")["state"] == "FRESH"


async def test_an_openbao_rebuilt_with_versions_from_1_again_is_not_taken_for_the_copy(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await sourced_vault(nursery, tmp_path, wall, bao, refresh=5)
    bao.rebuild()
    bao.put("desk/static", {"token": "fake-token-other"})  # version 1 again, another record
    await trio.sleep(6)
    assert (await vault.get("st", 0))["token"] == "fake-token-v1", "not served as if it were the copy held"
    described = state(vault, "st")
    assert described["state"] == "DEGRADED" and "another record" in described["source"]["last_error"]
    assert "vaultctl add st --kind static --from bao:desk/static --replace" in described["source"]["last_error"]


async def test_a_deleted_record_pulls_the_credential_and_a_new_version_brings_it_back(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await sourced_vault(nursery, tmp_path, wall, bao, refresh=5)
    heard: list[tuple[str, dict[str, Any]]] = []
    vault.hub.subscribe(["binance"], lambda method, params: heard.append((method, params)) is None)
    bao.delete("desk/static")
    bao.delete("desk/binance")
    await trio.sleep(6)
    assert (await refused(vault.get("st", 0))).code is ErrorCode.PULLED
    assert vault.get_now("st", 0) is None
    assert (await refused(sign(vault))).code is ErrorCode.PULLED
    assert state(vault, "st")["state"] == "PULLED" and "version 1 deleted" in sourced(vault, "st")["pulled"]
    assert heard[-1] == ("token.expired", {"name": "binance", "pulled": "version 1 deleted"})
    # It stays pulled across a lock and unlock (the vault recorded it), until a new version.
    vault.lock()
    await vault.unlock(Secret(PASS))
    assert (await refused(vault.get("st", 0))).code is ErrorCode.PULLED
    bao.put("desk/static", {"token": "fake-token-v2"})
    await trio.sleep(6)
    assert (await vault.get("st", 0))["token"] == "fake-token-v2"
    assert state(vault, "st")["state"] == "FRESH"


async def test_openbao_down_serves_the_last_copy_degraded_then_expired_after_max_stale(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await sourced_vault(nursery, tmp_path, wall, bao, refresh=30, max_stale=3600)
    bao.down = True
    await trio.sleep(40)
    assert (await vault.get("st", 0))["token"] == "fake-token-v1"
    assert (await sign(vault))["headers"]["X-MBX-APIKEY"] == "fake-key-1"
    described = state(vault, "st")
    assert described["state"] == "DEGRADED" and "connection refused" in described["source"]["last_error"]
    assert described["source"]["age"] >= 30
    # Retries back off, but never beyond the refresh interval.
    bao.calls.clear()
    await trio.sleep(300)
    reads = [at for name, at in bao.calls if name in ("read", "login", "renew")]
    gaps = [b - a for a, b in itertools.pairwise(reads)]
    assert max(gaps, default=0) <= 30 + 1e-6
    await trio.sleep(3600)
    assert (await refused(vault.get("st", 0))).code is ErrorCode.TOKEN_EXPIRED
    assert (await refused(sign(vault))).code is ErrorCode.TOKEN_EXPIRED
    assert state(vault, "binance")["state"] == "EXPIRED"
    # Back within one refresh of OpenBao coming back.
    bao.down = False
    await trio.sleep(31)
    assert (await vault.get("st", 0))["token"] == "fake-token-v1"
    assert state(vault, "st")["state"] == "FRESH"


async def test_openbao_down_for_an_hour_costs_about_the_calls_of_a_healthy_hour(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    bao.token_ttl = 300.0  # the session's token runs out early in the hour
    vault = await sourced_vault(nursery, tmp_path, wall, bao)
    for n in range(20):
        bao.put(f"desk/s{n}", {"token": f"fake-{n}"})
        source = {"upstream": "bao", "path": f"desk/s{n}"}
        await vault.put(Secret(PASS), f"s{n}", "static", None, replace=False, source=source)
    bao.down = True
    bao.calls.clear()
    await trio.sleep(3600)
    attempts = [name for name, _ in bao.calls if name in ("login", "renew", "read")]
    healthy = 22 * 3600 / 60  # one read a minute per credential
    # A login attempt where a read would have been, plus the first backoffs: never a storm (a
    # login per read per second would be 79,200).
    assert len(attempts) <= healthy * 1.5
    bao.down = False
    await trio.sleep(61)
    assert all(state(vault, f"s{n}")["state"] == "FRESH" for n in range(20)), "back within one refresh"


async def test_an_engine_never_waits_on_a_hanging_openbao(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await sourced_vault(nursery, tmp_path, wall, bao, refresh=5)
    bao.hang = trio.Event()
    await trio.sleep(6)  # a read is under way and hangs
    assert any(name == "read" for name, _ in bao.calls)
    before = trio.current_time()
    assert vault.get_now("st", 0) is not None, "answered from memory, at once"
    assert (await vault.get("st", 0))["token"] == "fake-token-v1"
    assert (await sign(vault))["headers"]["X-MBX-APIKEY"] == "fake-key-1"
    assert trio.current_time() == before
    bao.hang.set()


async def test_the_session_renews_at_two_thirds_of_its_ttl_and_logs_in_again_at_max_ttl(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    bao.token_ttl, bao.max_ttl = 60.0, 300.0
    await sourced_vault(nursery, tmp_path, wall, bao, refresh=3600)
    start = trio.current_time()
    await trio.sleep(1000)
    renewals = [at - start for name, at in bao.calls if name == "renew"]
    assert renewals and 60 * (2 / 3 - 0.1) - 1 <= renewals[0] <= 60 * 2 / 3 + 1
    # Each token lives at most 300 s: a renewal granting less than asked means a login, before
    # the token runs out (so reads never meet an expired token).
    assert 1000 // 300 <= bao.logins() - 1 <= 1000 // 200 + 1


async def test_a_revoked_token_costs_one_login_and_one_retry(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await sourced_vault(nursery, tmp_path, wall, bao, refresh=5)
    logins = bao.logins()
    bao.revoke_all()
    bao.put("desk/static", {"token": "fake-token-v2"})
    await trio.sleep(6)
    assert (await vault.get("st", 0))["token"] == "fake-token-v2"
    assert bao.logins() == logins + 1
    await trio.sleep(120)
    assert bao.logins() == logins + 1, "no loop"


async def test_a_refused_login_is_needs_reauth_after_one_call_and_copies_are_served(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await sourced_vault(nursery, tmp_path, wall, bao, refresh=5)
    logins = bao.logins()
    bao.refuse_login = True
    bao.revoke_all()
    await trio.sleep(3600)
    assert bao.logins() == logins + 1, "one login, then nothing until an operator acts"
    (upstream,) = vault.upstream_list()
    assert upstream["state"] == "NEEDS_REAUTH" and "login refused" in upstream["last_error"]
    assert (await vault.get("st", 0))["token"] == "fake-token-v1"
    assert state(vault, "st")["state"] == "DEGRADED"
    # The operator fixed OpenBao: 'vaultctl renew bao' logs in once.
    bao.refuse_login = False
    described = await vault.renew(Secret(PASS), "bao")
    assert described["state"] == "FRESH" and bao.logins() == logins + 2


async def test_a_restart_while_openbao_is_down_serves_from_the_seal(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await sourced_vault(nursery, tmp_path, wall, bao)
    vault.lock()
    bao.down = True
    again = Vault(tmp_path, nursery=nursery, clock=wall, blocking=vault._blocking)
    await again.unlock(Secret(PASS))
    assert (await again.get("st", 0))["token"] == "fake-token-v1"
    assert (await again.sign("binance", dict(BINANCE_ORDER)))["headers"]["X-MBX-APIKEY"] == "fake-key-1"
    (upstream,) = again.upstream_list()
    assert upstream["state"] != "FRESH" and "connection refused" in upstream["last_error"]


async def test_add_from_an_upstream_says_what_is_wrong(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await sourced_vault(nursery, tmp_path, wall, bao)

    async def add(path: str, upstream: str = "bao", kind: str = "static") -> RpcError:
        source = {"upstream": upstream, "path": path}
        return await refused(vault.put(Secret(PASS), "new", kind, None, replace=False, source=source))

    assert "no upstream named 'nope'" in str(await add("desk/static", "nope"))
    bao.put("desk/exec", {"command": ["/bin/echo", "fake"]})
    refused_exec = await add("desk/exec", kind="exec")
    assert refused_exec.code is ErrorCode.INVALID_PARAMS and "run commands on every host" in str(refused_exec)
    assert (await add("desk/missing")).code is ErrorCode.INVALID_PARAMS
    bao.put("desk/bad", {"token": "x", "colour": "blue"})
    error = await add("desk/bad")
    assert error.code is ErrorCode.INVALID_PARAMS and "colour" in str(error) and "blue" not in str(error)
    bao.put("desk/forged", {"token": "x", "\x1b[2J\nvaultd: CRITICAL: forged": 1})
    forged = str(await add("desk/forged"))
    assert "\x1b" not in forged and "\n" not in forged, "a field name from the record is shown escaped"
    bao.down = True
    assert (await add("desk/static")).code is ErrorCode.UPSTREAM_UNAVAILABLE
    both = vault.put(Secret(PASS), "new", "static", {"token": "x"}, replace=False, source={"upstream": "bao"})
    assert (await refused(both)).code is ErrorCode.INVALID_PARAMS
    assert [c["name"] for c in vault.describe()] == ["binance", "st"], "nothing was added"


async def test_upstream_add_checks_a_wrapped_secret_id_and_raises_an_alarm(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)

    def wrapped(token: str) -> dict[str, Any]:
        return upstream_config(auth={"role": "host-a", "role_id": ROLE_ID, "wrapped_secret_id": token})

    other = bao.wrap_secret_id("auth/approle/role/host-b/secret-id")
    error = await refused(vault.put_upstream(Secret(PASS), "bao", "openbao", wrapped(other), replace=False))
    assert error.code is ErrorCode.FORBIDDEN and str(error).startswith("ALARM:") and "host-b" in str(error)
    assert other in bao.wraps, "a token for another path is not unwrapped"
    good = bao.wrap_secret_id("auth/approle/role/host-a/secret-id")
    assert [a["upstream"] for a in vault.alarms] == ["bao"]
    described = await vault.put_upstream(Secret(PASS), "bao", "openbao", wrapped(good), replace=False)
    assert described["state"] == "FRESH" and bao.logins() == 1
    assert described["secret_id_accessor"] == "acc", "shown, to destroy it when it is retired"
    assert vault.alarms == [], "the operator acted: a good secret_id was delivered"
    replayed = await refused(vault.put_upstream(Secret(PASS), "bao", "openbao", wrapped(good), replace=True))
    assert replayed.code is ErrorCode.FORBIDDEN and "already unwrapped" in str(replayed)
    assert [a["upstream"] for a in vault.alarms] == ["bao"]
    assert good not in str(vault.alarms) and good not in str(replayed)
    # --replace with only a new wrapped secret_id keeps the address, role and role_id.
    fresh = bao.wrap_secret_id("auth/approle/role/host-a/secret-id")
    only_secret = {"auth": {"wrapped_secret_id": fresh}}
    replaced = await vault.put_upstream(Secret(PASS), "bao", "openbao", only_secret, replace=True)
    assert replaced["state"] == "FRESH" and replaced["address"] == "http://127.0.0.1:8200"
    await trio.sleep(1)
    assert bao.live_tokens() == 1, "the replaced upstream's token was revoked"


async def test_upstream_add_with_a_refused_login_saves_nothing_and_rm_refuses_while_in_use(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    bad = upstream_config(auth={"role": "host-a", "role_id": ROLE_ID, "secret_id": "fake-wrong"})
    error = await refused(vault.put_upstream(Secret(PASS), "bao", "openbao", bad, replace=False))
    assert error.code is ErrorCode.NEEDS_REAUTH and "nothing was saved" in str(error) and "fake-wrong" not in str(error)
    assert vault.upstream_list() == []
    (tmp_path / "b").mkdir()
    vault = await sourced_vault(nursery, tmp_path / "b", wall, bao)
    error = await refused(vault.remove_upstream(Secret(PASS), "bao"))
    assert error.code is ErrorCode.INVALID_PARAMS and "binance, st" in str(error)
    await vault.remove(Secret(PASS), "st")
    await vault.remove(Secret(PASS), "binance")
    await vault.remove_upstream(Secret(PASS), "bao")
    assert vault.upstream_list() == []
    # Credentials and upstreams share one namespace ('vaultctl renew NAME' means one of them).
    await vault.put(Secret(PASS), "bao", "static", {"token": "fake-t"}, replace=False)
    taken = await refused(vault.put_upstream(Secret(PASS), "bao", "openbao", upstream_config(), replace=False))
    assert taken.code is ErrorCode.ALREADY_EXISTS and "a credential is named 'bao'" in str(taken)


async def test_renew_reads_a_sourced_record_now_and_refuses_a_local_signing_key(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await sourced_vault(nursery, tmp_path, wall, bao, refresh=3600)
    bao.put("desk/binance", {**SIGN, "api_key": "fake-key-2"})
    described = await vault.renew(Secret(PASS), "binance")  # no waiting for the hour
    assert described["source"]["version"] == 2
    assert (await sign(vault))["headers"]["X-MBX-APIKEY"] == "fake-key-2"
    await vault.put(Secret(PASS), "local", "sign", dict(SIGN), replace=False)
    refused_renew = await refused(vault.renew(Secret(PASS), "local"))
    assert refused_renew.code is ErrorCode.INVALID_PARAMS and "no token to renew" in str(refused_renew)
    assert state(vault, "local")["last_error"] is None, "and no retry loop started"


async def test_after_an_unlock_every_copy_is_confirmed_within_seconds(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await sourced_vault(nursery, tmp_path, wall, bao, refresh=3600)
    vault.lock()
    bao.put("desk/static", {"token": "fake-token-v2"})
    await vault.unlock(Secret(PASS))
    await trio.sleep(5.5)
    assert (await vault.get("st", 0))["token"] == "fake-token-v2", "read within 5 s of the unlock, not in an hour"


async def test_engines_signing_faster_than_transit_answers_are_refused_not_queued(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await sourced_vault(nursery, tmp_path, wall, bao)
    backend = {"upstream": "bao", "transit_key": "desk"}
    await vault.put(
        Secret(PASS), "t", "sign", {"scheme": "binance-hmac", "api_key": "k", "backend": backend}, replace=False
    )
    assert (await vault.sign("t", dict(BINANCE_ORDER)))["url"].count("signature=") == 1
    bao.hang = trio.Event()
    errors: list[RpcError] = []

    async def one() -> None:
        try:
            await vault.sign("t", dict(BINANCE_ORDER))
        except RpcError as exc:
            errors.append(exc)

    async with trio.open_nursery() as signers:
        for _ in range(40):
            signers.start_soon(one)
        await trio.sleep(1)
        assert len(errors) == 40 - 8 and all(e.code is ErrorCode.UPSTREAM_UNAVAILABLE for e in errors)
        assert "already under way" in str(errors[0]), "8 per transit key (16 per upstream)"
        assert vault.get_now("st", 0) is not None, "other engines are answered from memory meanwhile"
        bao.hang.set()
    assert len(errors) == 32, "those under way finished once OpenBao answered"


async def test_a_record_may_not_name_a_transit_key(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await sourced_vault(nursery, tmp_path, wall, bao, refresh=5)
    bao.put("desk/t", {"scheme": "binance-hmac", "api_key": "k", "backend": {"upstream": "bao", "transit_key": "x"}})
    source = {"upstream": "bao", "path": "desk/t"}
    error = await refused(vault.put(Secret(PASS), "t", "sign", None, replace=False, source=source))
    assert error.code is ErrorCode.INVALID_PARAMS and "a record may not" in str(error)
    # Nor a later version of a record that did not: the copy stays, DEGRADED.
    bao.put("desk/binance", {**SIGN, "secret": None, "backend": {"upstream": "bao", "transit_key": "x"}})
    await trio.sleep(6)
    assert (await sign(vault))["headers"]["X-MBX-APIKEY"] == "fake-key-1"
    assert "names a transit key" in sourced(vault, "binance")["last_error"]


async def test_an_upstream_removed_while_a_record_is_read_is_not_sourced_from(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    await vault.put_upstream(Secret(PASS), "bao", "openbao", upstream_config(), replace=False)
    bao.put("desk/static", {"token": "fake-token-v1"})
    bao.hang = trio.Event()
    errors: list[RpcError] = []

    async def add() -> None:
        source = {"upstream": "bao", "path": "desk/static"}
        try:
            await vault.put(Secret(PASS), "st", "static", None, replace=False, source=source)
        except RpcError as exc:
            errors.append(exc)

    async with trio.open_nursery() as both:
        both.start_soon(add)
        await trio.sleep(1)  # the read hangs: the admin lock is free meanwhile
        await vault.remove_upstream(Secret(PASS), "bao")
        bao.hang.set()
    assert [e.code for e in errors] == [ErrorCode.INVALID_PARAMS] and "was removed" in str(errors[0])
    assert vault.describe() == []


async def test_a_sourced_signature_is_answered_at_once_and_refused_at_once_when_pulled(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await sourced_vault(nursery, tmp_path, wall, bao, refresh=5)
    assert vault.sign_now("binance", dict(BINANCE_ORDER)) is not None, "from memory, on the fast path"
    bao.delete("desk/binance")
    await trio.sleep(6)
    with pytest.raises(RpcError) as info:
        vault.sign_now("binance", dict(BINANCE_ORDER))
    assert info.value.code is ErrorCode.PULLED


async def test_one_transit_key_flooded_leaves_room_for_the_others(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await sourced_vault(nursery, tmp_path, wall, bao)
    for name, key in (("t1", "desk-1"), ("t2", "desk-2")):
        config = {"scheme": "binance-hmac", "api_key": "k", "backend": {"upstream": "bao", "transit_key": key}}
        await vault.put(Secret(PASS), name, "sign", config, replace=False)
    bao.hang = trio.Event()
    refusals: dict[str, int] = {"t1": 0, "t2": 0}

    async def one(name: str) -> None:
        try:
            await vault.sign(name, dict(BINANCE_ORDER))
        except RpcError:
            refusals[name] += 1

    async with trio.open_nursery() as signers:
        for _ in range(40):
            signers.start_soon(one, "t1")
        await trio.sleep(1)
        for _ in range(4):
            signers.start_soon(one, "t2")
        await trio.sleep(1)
        assert refusals == {"t1": 32, "t2": 0}, "the flooded key holds 8 of the 16: the other key still signs"
        bao.hang.set()


async def test_a_path_the_policy_denies_costs_one_login_however_often_the_token_renews(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    bao.token_ttl = 30.0
    vault = await sourced_vault(nursery, tmp_path, wall, bao)
    config = {"scheme": "binance-hmac", "api_key": "k", "backend": {"upstream": "bao", "transit_key": "denied"}}
    await vault.put(Secret(PASS), "t", "sign", config, replace=False)
    bao.denied.add("denied")
    logins = bao.logins()
    for _ in range(60):  # an engine signing in a loop for 10 minutes, through 20 renewals
        assert (await refused(vault.sign("t", dict(BINANCE_ORDER)))).code is ErrorCode.UPSTREAM_UNAVAILABLE
        await trio.sleep(10)
    assert bao.logins() - logins == 1


async def test_an_operator_who_leaves_during_upstream_add_leaves_nothing_half_done(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    """The peer dies mid-conversation: the server cancels its request (as here) while OpenBao
    is logging it in. Nothing is saved, and the next add works."""
    vault = await open_vault(nursery, tmp_path, wall)
    wrapped = bao.wrap_secret_id("auth/approle/role/host-a/secret-id")
    config = upstream_config(auth={"role": "host-a", "role_id": ROLE_ID, "wrapped_secret_id": wrapped})
    bao.hang_login = trio.Event()
    with trio.move_on_after(1) as left:
        await vault.put_upstream(Secret(PASS), "bao", "openbao", config, replace=False)
    assert left.cancelled_caught and vault.upstream_list() == []
    _, _, body = decode((tmp_path / "vault").read_bytes(), Secret(PASS))
    assert "upstreams" not in body, "nothing was written"
    bao.hang_login = None
    again = upstream_config(
        auth={
            "role": "host-a",
            "role_id": ROLE_ID,
            "wrapped_secret_id": bao.wrap_secret_id("auth/approle/role/host-a/secret-id"),
        }
    )
    assert (await vault.put_upstream(Secret(PASS), "bao", "openbao", again, replace=False))["state"] == "FRESH"
