"""Logins and the OAuth details real servers use, against the fake exchange on trio's autojump clock.

The device grant's polling (interval, ``slow_down``), an awaiting-login credential making no
call, the loopback listener's state check and time limit, token_type DPoP refused,
``refresh_token_expires_in`` and ``error_description`` kept, and the expiry margin; what a
security review found: the listener answers only the daemon's uid, the browser gets a one-time
``/start/`` link, a failed login keeps the working refresh token, a new login's refresh-token
expiry, polls at least 5 s apart, one redemption per login, a slow exchange waited for, a peer
that resets. The same flows against a real OpenID provider are in tests/integration/test_oidc_login.py.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import socket
import struct
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from vaultd._errors import RpcError
from vaultd._fake_exchange import FakeExchange
from vaultd._providers import ConfigError, FetchContext, UpstreamError
from vaultd._providers._oauth_client import ClientKey, Endpoints, _endpoints, _metadata_urls
from vaultd._providers.oauth2 import OAuth2Provider
from vaultd._secret import Secret
from vaultd._vault import Vault
from vaultd._vaultfile import decode
from vaultd_protocol import ErrorCode

from ..integration.test_foreign_uid import _require_root
from .renewal_tools import PASS, Wall, add, inline, open_vault, refused, state


def login_config(fx: FakeExchange, **changes: Any) -> dict[str, Any]:
    config = {
        "token_url": fx.url + "/oauth/token",
        "authorization_endpoint": fx.url + "/oauth/authorize",
        "device_authorization_endpoint": fx.url + "/oauth/device",
        "grant_type": "device_code",
        "client_id": "fake-client",
        "client_secret": "fake-secret",
    }
    return {**config, **changes}


async def test_a_credential_awaiting_login_makes_no_call_and_says_so(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange))
    await trio.sleep(3600)
    described = state(vault, "ex")
    assert described["state"] == "NEEDS_REAUTH" and "awaiting login" in described["last_error"]
    assert "vaultctl login ex" in described["last_error"]
    assert exchange.calls.get("/oauth/token", 0) == 0
    error = await refused(vault.get("ex", 0))
    assert error.code is ErrorCode.NEEDS_REAUTH
    assert "awaits its first login" in str(error) and "refused upstream" not in str(error), "nothing was refused"


async def test_device_login_polls_at_the_interval_and_slows_down(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    exchange.behaviour.device_interval = 5
    exchange.behaviour.device_script = ["authorization_pending", "slow_down", "authorization_pending", "ok"]
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange))
    started = await vault.login(Secret(PASS), "ex", device=True, lifetime=300)
    assert started["user_code"] == "FAKE-CODE" and started["verification_uri"].endswith("/device")
    t0 = trio.current_time()
    outcome = await vault.login_wait(Secret(PASS), started["login_id"], 90)
    assert outcome["outcome"] == "ok", outcome
    gaps = [round(b - a) for a, b in zip([t0, *exchange.device_polls], exchange.device_polls, strict=False)]
    assert gaps == [5, 5, 10, 10], "5 s, then 10 s after slow_down, for every later poll"
    assert outcome["credential"]["state"] == "FRESH"
    served = await vault.get("ex", 0)
    assert served["token"] == exchange.issued_access[-1]


@pytest.mark.parametrize(
    ("answer", "said"),
    [("expired_token", "expired_token"), ("access_denied", "access_denied: fake: access_denied")],
)
async def test_device_login_ends_on_expiry_or_denial(
    nursery: trio.Nursery,
    tmp_path: Path,
    exchange: FakeExchange,
    wall: Wall,
    autojump_clock: Any,
    answer: str,
    said: str,
) -> None:
    exchange.behaviour.device_script = ["authorization_pending", answer]
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange))
    started = await vault.login(Secret(PASS), "ex", device=True, lifetime=300)
    outcome = await vault.login_wait(Secret(PASS), started["login_id"], 90)
    assert outcome["outcome"] == "failed" and said in outcome["error"]
    assert len(exchange.device_polls) == 2, "no poll after the final answer"
    assert state(vault, "ex")["state"] == "NEEDS_REAUTH"


async def test_a_device_login_that_nobody_completes_ends_at_its_time(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    exchange.behaviour.device_script = ["authorization_pending"] * 1000
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange))
    started = await vault.login(Secret(PASS), "ex", device=True, lifetime=60)
    first = await vault.login_wait(Secret(PASS), started["login_id"], 30)
    assert first["outcome"] == "pending"
    outcome = await vault.login_wait(Secret(PASS), started["login_id"], 90)
    assert outcome["outcome"] == "failed" and "time ran out" in outcome["error"]
    polls = len(exchange.device_polls)
    await trio.sleep(600)
    assert len(exchange.device_polls) == polls


async def test_a_second_login_replaces_the_first(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    exchange.behaviour.device_script = ["authorization_pending"] * 3
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange))
    first = await vault.login(Secret(PASS), "ex", device=True, lifetime=300)
    second = await vault.login(Secret(PASS), "ex", device=True, lifetime=300)
    replaced = await vault.login_wait(Secret(PASS), first["login_id"], 1)
    assert replaced["outcome"] == "failed" and "replaced by a newer login" in replaced["error"]
    assert (await vault.login_wait(Secret(PASS), second["login_id"], 90))["outcome"] == "ok"


async def test_the_loopback_listener_refuses_a_wrong_state_and_closes_at_its_time(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange, grant_type="authorization_code"))
    started = await vault.login(Secret(PASS), "ex", device=False, lifetime=120)
    redirect = started["redirect_uri"]
    assert redirect.startswith("http://127.0.0.1:") and redirect.endswith("/callback")
    url = authorization(started)
    assert url.params["code_challenge_method"] == "S256" and url.params["redirect_uri"] == redirect
    async with httpx.AsyncClient() as browser:
        wrong = await browser.get(redirect, params={"code": "fake-code-123", "state": "not-the-state"})
        assert wrong.status_code == 400 and "state" in wrong.text and "fake-code-123" not in wrong.text
        assert (await vault.login_wait(Secret(PASS), started["login_id"], 1))["outcome"] == "pending"
        await trio.sleep(121)
        ended = await vault.login_wait(Secret(PASS), started["login_id"], 1)
        assert ended["outcome"] == "failed" and "time ran out" in ended["error"]
        with pytest.raises(httpx.ConnectError):
            await browser.get(redirect, params={"code": "x", "state": url.params["state"]})


async def test_an_error_redirect_ends_the_login_with_its_description(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange, grant_type="authorization_code"))
    started = await vault.login(Secret(PASS), "ex", device=False, lifetime=120)
    state_value = authorization(started).params["state"]
    async with httpx.AsyncClient() as browser:
        page = await browser.get(
            started["redirect_uri"],
            params={"error": "access_denied", "error_description": "the user said no", "state": state_value},
        )
    assert page.status_code == 200 and "close this tab" in page.text
    ended = await vault.login_wait(Secret(PASS), started["login_id"], 1)
    assert ended["outcome"] == "failed" and ended["error"].endswith("access_denied: the user said no")


async def test_dpop_tokens_are_refused_with_a_clear_error(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    exchange.behaviour.token_type = "DPoP"
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange))
    started = await vault.login(Secret(PASS), "ex", device=True, lifetime=300)
    outcome = await vault.login_wait(Secret(PASS), started["login_id"], 90)
    assert outcome["outcome"] == "failed" and "DPoP" in outcome["error"] and "not support" in outcome["error"]
    described = state(vault, "ex")
    assert described["state"] == "NEEDS_REAUTH" and "DPoP" in described["last_error"]
    with pytest.raises(RpcError):
        await vault.get("ex", 0)


async def test_refresh_token_expires_in_and_error_description(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    exchange.behaviour.refresh_token_expires_in = 7 * 86400
    exchange.behaviour.expires_in = 600
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange))
    started = await vault.login(Secret(PASS), "ex", device=True, lifetime=300)
    assert (await vault.login_wait(Secret(PASS), started["login_id"], 90))["outcome"] == "ok"
    described = state(vault, "ex")
    assert described["refresh_token_expires_at"] == pytest.approx(wall() + 7 * 86400, abs=30)
    exchange.behaviour.fault = "invalid_grant"
    await trio.sleep(600)
    described = state(vault, "ex")
    assert described["state"] == "NEEDS_REAUTH"
    assert described["last_error"].endswith("invalid_grant: refresh token revoked")


async def test_the_expiry_margin_is_taken_off_every_token(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    exchange.behaviour.expires_in = 60
    vault = await open_vault(nursery, tmp_path, wall)
    await add(
        vault,
        "one",
        {**login_config(exchange, grant_type="refresh_token"), "refresh_token": exchange.new_refresh_token()},
    )
    await add(
        vault,
        "five",
        {
            **login_config(exchange, grant_type="refresh_token"),
            "refresh_token": exchange.new_refresh_token(),
            "expiry_margin": 5,
        },
    )
    assert (await vault.get("one", 0))["ttl"] == pytest.approx(59)
    assert (await vault.get("five", 0))["ttl"] == pytest.approx(55)


def test_issuer_and_endpoints_follow_the_token_url_rule() -> None:
    base = {"grant_type": "authorization_code", "client_id": "desk"}
    with pytest.raises(ConfigError, match="'issuer' must use https"):
        OAuth2Provider.from_config({**base, "issuer": "http://id.example"})
    with pytest.raises(ConfigError, match="'authorization_endpoint' must use https"):
        OAuth2Provider.from_config(
            {**base, "token_url": "https://id.example/token", "authorization_endpoint": "http://id.example/a"}
        )
    with pytest.raises(ConfigError, match="'token_url' is required"):
        OAuth2Provider.from_config(base)
    with pytest.raises(ConfigError, match="'expiry_margin' must be between 0 and 300"):
        OAuth2Provider.from_config({**base, "issuer": "https://id.example", "expiry_margin": -1})


def test_discovery_urls_and_the_issuer_check() -> None:
    assert _metadata_urls("https://id.example/tenant") == [
        "https://id.example/tenant/.well-known/openid-configuration",
        "https://id.example/.well-known/oauth-authorization-server/tenant",
    ]
    document = {"issuer": "https://evil.example", "token_endpoint": "https://evil.example/token"}
    with pytest.raises(UpstreamError, match=r"names another issuer, 'https://evil\.example'") as info:
        _endpoints(document, "https://id.example")
    assert info.value.reauth
    document = {"issuer": "https://id.example", "token_endpoint": "http://id.example/token"}
    with pytest.raises(UpstreamError, match="must use https"):
        _endpoints(document, "https://id.example")


async def test_an_auth_method_the_server_does_not_list_is_refused(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    provider = OAuth2Provider.from_config({**login_config(exchange), "client_auth": "post"})
    provider._endpoints = Endpoints(exchange.url + "/oauth/token", None, None, ("client_secret_basic",))
    async with httpx.AsyncClient() as http:
        with pytest.raises(UpstreamError, match="does not support client_auth 'post'") as info:
            await provider.endpoints(FetchContext(wall, http))
    assert info.value.reauth


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_private_key_jwt_assertions_verify_with_the_public_key(kind: str) -> None:
    key: Any = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    client_key = ClientKey(Secret(pem.decode()), "k1")
    assertion = client_key.assertion("desk", "https://id.example/token", 1_800_000_000.5)
    head, body, signature = assertion.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=="))
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    assert header == {"alg": "ES256" if kind == "ec" else "RS256", "typ": "JWT", "kid": "k1"}
    assert claims["iss"] == claims["sub"] == "desk" and claims["aud"] == "https://id.example/token"
    assert claims["exp"] - claims["iat"] == 60 and len(claims["jti"]) >= 32
    raw = base64.urlsafe_b64decode(signature + "==")
    signed = f"{head}.{body}".encode()
    if kind == "ec":
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        key.public_key().verify(der, signed, ec.ECDSA(hashes.SHA256()))
    else:
        key.public_key().verify(raw, signed, padding.PKCS1v15(), hashes.SHA256())
    other = ClientKey(Secret(pem.decode()), None).assertion("desk", "https://id.example/token", 1_800_000_000)
    assert json.loads(base64.urlsafe_b64decode(other.split(".")[1] + "=="))["jti"] != claims["jti"]


async def test_a_lock_ends_a_login_and_closes_its_listener(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange, grant_type="authorization_code"))
    started = await vault.login(Secret(PASS), "ex", device=False, lifetime=300)
    vault.lock()
    await trio.sleep(1)
    async with httpx.AsyncClient() as browser:
        with pytest.raises(httpx.ConnectError):
            await browser.get(started["redirect_uri"])
    await vault.unlock(Secret(PASS))
    error = await refused(vault.login_wait(Secret(PASS), started["login_id"], 1))
    assert error.code is ErrorCode.INVALID_PARAMS


async def test_a_new_login_ends_a_restored_copys_hold(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    """A restored copy is held so that it cannot race the live vault with the same refresh token; a
    login of its own is a new grant, so the hold ends with it, sealed (it stays ended after a lock)."""
    (tmp_path / "live").mkdir()
    live = await open_vault(nursery, tmp_path / "live", wall)
    await add(live, "ex", login_config(exchange))
    started = await live.login(Secret(PASS), "ex", device=True, lifetime=300)
    assert (await live.login_wait(Secret(PASS), started["login_id"], 90))["outcome"] == "ok"
    await live.backup_to(Secret(PASS), tmp_path / "copy")
    live.lock()
    (tmp_path / "new").mkdir()
    new = Vault(tmp_path / "new", nursery=nursery, clock=wall, blocking=inline)
    await new.restore_from(Secret(PASS), tmp_path / "copy")
    await new.unlock(Secret(PASS))
    assert state(new, "ex")["state"] == "ON_HOLD"

    started = await new.login(Secret(PASS), "ex", device=True, lifetime=300)
    outcome = await new.login_wait(Secret(PASS), started["login_id"], 90)
    assert outcome["outcome"] == "ok" and outcome["credential"]["hold"] is None
    assert (await new.get("ex", 0))["token"] == exchange.issued_access[-1]
    new.lock()
    await new.unlock(Secret(PASS))
    assert state(new, "ex")["hold"] is None, "the end of the hold was sealed"
    assert (await new.get("ex", 0))["token"] == exchange.issued_access[-1]


def authorization(started: dict[str, Any]) -> httpx.URL:
    """The authorization request a browser login sends the operator to (``url`` redirects there)."""
    return httpx.URL(started["authorization_url"])


def vault_refresh_token(vault: Vault, name: str) -> str:
    _, _, body = decode(vault.path.read_bytes(), Secret(PASS))
    token: str = body["credentials"][name]["config"]["refresh_token"]
    return token


async def test_the_url_to_open_is_a_one_time_loopback_link_that_hides_state_and_challenge(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    """The URL vaultctl hands a browser goes on that program's command line, which every local user
    can read: it must not carry the login's state or PKCE challenge (login CSRF otherwise)."""
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange, grant_type="authorization_code"))
    started = await vault.login(Secret(PASS), "ex", device=False, lifetime=120)
    full = httpx.URL(started["authorization_url"])
    assert full.params["state"] and full.params["code_challenge"]
    url = httpx.URL(started["url"])
    origin = started["redirect_uri"].removesuffix("/callback")
    assert str(url).startswith(origin + "/start/") and not url.query
    assert full.params["state"] not in str(url) and full.params["code_challenge"] not in str(url)
    async with httpx.AsyncClient() as browser:
        first = await browser.get(str(url))
        assert first.status_code == 302 and first.headers["location"] == started["authorization_url"]
        again = await browser.get(str(url))
        assert again.status_code == 404 and full.params["state"] not in again.text
        page = await browser.get(started["redirect_uri"], params={"code": "fake-code-1", "state": full.params["state"]})
    assert page.status_code == 200 and "logged in" in page.text
    assert (await vault.login_wait(Secret(PASS), started["login_id"], 1))["outcome"] == "ok"


_OTHER_USERS_BROWSER = textwrap.dedent(
    """
    import socket, sys
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as conn:
        conn.sendall(f"GET {sys.argv[2]} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n".encode())
        got = b""
        try:
            while chunk := conn.recv(65536):
                got += chunk
        except OSError:
            pass
    print(got.split(b"\\r\\n")[0].decode() or "nothing", flush=True)
    """
)


async def test_the_redirect_listener_answers_only_the_daemons_own_user(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, caplog: pytest.LogCaptureFixture
) -> None:
    """Another local user who learnt the state (and logged in as themselves) cannot hand the daemon
    their code: the listener closes connections from other uids before reading them. Positive
    control: the same request from the daemon's own uid completes the login."""
    _require_root()
    script = Path("/tmp") / f"vaultd-login-browser-{os.getpid()}.py"
    script.write_text(_OTHER_USERS_BROWSER)
    script.chmod(0o644)
    try:
        vault = await open_vault(nursery, tmp_path, wall)
        await add(vault, "ex", login_config(exchange, grant_type="authorization_code"))
        started = await vault.login(Secret(PASS), "ex", device=False, lifetime=120)
        port = str(httpx.URL(started["redirect_uri"]).port)
        target = f"/callback?code=fake-attacker-code&state={authorization(started).params['state']}"
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        for argv in ([*nobody, "/usr/bin/python3", str(script), port, path_of(started["url"])],
                     [*nobody, "/usr/bin/python3", str(script), port, target]):  # fmt: skip
            other = await trio.run_process(argv, capture_stdout=True)
            assert other.stdout.decode().strip() == "nothing", "another uid got an answer"
        assert (await vault.login_wait(Secret(PASS), started["login_id"], 0))["outcome"] == "pending"
        assert "fake-attacker-code" not in exchange.redeemed_codes
        assert "closed 1 connections not from its own user (this one: uid 65534)" in caplog.text
        assert "closed 2 connections not from its own user (this one: uid 65534)" in caplog.text
        own = await trio.run_process(["/usr/bin/python3", str(script), port, target], capture_stdout=True)
        assert own.stdout.decode().strip() == "HTTP/1.1 200 OK"
        assert (await vault.login_wait(Secret(PASS), started["login_id"], 10))["outcome"] == "ok"
    finally:
        script.unlink()


def path_of(url: str) -> str:
    parsed = httpx.URL(url)
    return parsed.raw_path.decode()


@pytest.mark.parametrize(("bad", "said"), [("dpop", "DPoP"), ("no_expires_in", "no usable expires_in")])
async def test_a_failed_login_leaves_the_working_refresh_token_in_use(
    nursery: trio.Nursery,
    tmp_path: Path,
    exchange: FakeExchange,
    wall: Wall,
    autojump_clock: Any,
    bad: str,
    said: str,
) -> None:
    """A login whose answer is refused (a DPoP-bound token; no expires_in) must not swap its refresh
    token in: the next renewal presents the refresh token the vault file holds, of the working grant."""
    exchange.behaviour.expires_in = 600
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange))
    started = await vault.login(Secret(PASS), "ex", device=True, lifetime=300)
    assert (await vault.login_wait(Secret(PASS), started["login_id"], 90))["outcome"] == "ok"
    working = vault_refresh_token(vault, "ex")
    if bad == "dpop":
        exchange.behaviour.token_type = "DPoP"
    else:
        exchange.behaviour.fault, exchange.behaviour.times = bad, 2  # the device authorization, then the poll
    started = await vault.login(Secret(PASS), "ex", device=True, lifetime=300)
    failed = await vault.login_wait(Secret(PASS), started["login_id"], 90)
    assert failed["outcome"] == "failed" and said in failed["error"]
    exchange.behaviour.token_type = "Bearer"
    await trio.sleep(1200)
    assert state(vault, "ex")["state"] == "FRESH"
    assert vault_refresh_token(vault, "ex") == exchange.current_refresh_token(working) != working, (
        "the renewal rotated the working grant's refresh token, not the failed login's"
    )


async def test_a_new_login_without_refresh_token_expires_in_drops_the_old_expiry(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    exchange.behaviour.expires_in = 600
    exchange.behaviour.refresh_token_expires_in = 86400
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange, grant_type="authorization_code"))
    started = await vault.login(Secret(PASS), "ex", device=False, lifetime=300)
    async with httpx.AsyncClient() as browser:
        params = {"code": "fake-code-1", "state": authorization(started).params["state"]}
        assert (await browser.get(started["redirect_uri"], params=params)).status_code == 200
    assert state(vault, "ex")["refresh_token_expires_at"] == pytest.approx(wall() + 86400, abs=30)
    exchange.behaviour.refresh_token_expires_in = 0  # the next grant's refresh token has no known end
    started = await vault.login(Secret(PASS), "ex", device=True, lifetime=300)
    assert (await vault.login_wait(Secret(PASS), started["login_id"], 90))["outcome"] == "ok"
    assert state(vault, "ex")["refresh_token_expires_at"] is None
    await trio.sleep(2 * 86400)
    described = state(vault, "ex")
    assert described["state"] == "FRESH", described["last_error"]


async def test_device_polling_is_never_faster_than_every_5_seconds(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    exchange.behaviour.device_interval = 0.001
    exchange.behaviour.device_script = ["authorization_pending"] * 3
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange))
    started = await vault.login(Secret(PASS), "ex", device=True, lifetime=300)
    t0 = trio.current_time()
    assert (await vault.login_wait(Secret(PASS), started["login_id"], 90))["outcome"] == "ok"
    gaps = [round(b - a, 3) for a, b in zip([t0, *exchange.device_polls], exchange.device_polls, strict=False)]
    assert gaps == [5, 5, 5, 5]


async def test_a_second_identical_redirect_does_not_spend_the_code_again(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    """A browser that sends the redirect twice (a reload, a retry): the first completes the login,
    the second is told the login is being completed and redeems nothing."""
    exchange.behaviour.fault, exchange.behaviour.times, exchange.behaviour.delay = "late", 1, 5
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange, grant_type="authorization_code"))
    started = await vault.login(Secret(PASS), "ex", device=False, lifetime=300)
    params = {"code": "fake-code-1", "state": authorization(started).params["state"]}
    pages: list[httpx.Response] = []
    async with httpx.AsyncClient(timeout=60) as browser:

        async def redirect() -> None:
            pages.append(await browser.get(started["redirect_uri"], params=params))

        async with trio.open_nursery() as both:
            both.start_soon(redirect)
            await trio.sleep(1)
            both.start_soon(redirect)
    assert [p.status_code for p in pages] == [409, 200], [p.text for p in pages]
    assert "already being completed" in pages[0].text and "logged in" in pages[1].text
    assert exchange.calls["/oauth/token"] == 1
    assert (await vault.login_wait(Secret(PASS), started["login_id"], 1))["outcome"] == "ok"


async def test_a_slow_code_exchange_is_waited_for_and_the_browser_told(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    """The token endpoint takes 45 s (the credential allows 120): the browser's request stays open
    and hears the outcome; the login is not cut off with its code spent."""
    exchange.behaviour.fault, exchange.behaviour.times, exchange.behaviour.delay = "slow", 1, 45
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange, grant_type="authorization_code", timeout=120))
    started = await vault.login(Secret(PASS), "ex", device=False, lifetime=300)
    params = {"code": "fake-code-1", "state": authorization(started).params["state"]}
    async with httpx.AsyncClient(timeout=150) as browser:
        page = await browser.get(started["redirect_uri"], params=params)
    assert page.status_code == 200 and "logged in" in page.text
    outcome = await vault.login_wait(Secret(PASS), started["login_id"], 1)
    assert outcome["outcome"] == "ok" and outcome["credential"]["state"] == "FRESH"


async def test_a_browser_that_resets_its_connection_mid_request_ends_nothing(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    """A peer that leaves with a reset (RST) halfway through its request: that connection ends, the
    login and the vault go on, and the real redirect still completes the login."""
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange, grant_type="authorization_code"))
    started = await vault.login(Secret(PASS), "ex", device=False, lifetime=120)
    port = httpx.URL(started["redirect_uri"]).port
    for _ in range(3):
        peer = trio.socket.socket()
        await peer.connect(("127.0.0.1", port))
        await peer.send(b"GET /callback?state=")
        await trio.sleep(0.5)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()  # linger 0: the kernel sends RST
        await trio.sleep(0.5)
    assert (await vault.login_wait(Secret(PASS), started["login_id"], 0))["outcome"] == "pending"
    async with httpx.AsyncClient() as browser:
        params = {"code": "fake-code-1", "state": authorization(started).params["state"]}
        page = await browser.get(started["redirect_uri"], params=params)
    assert page.status_code == 200 and "logged in" in page.text
    assert state(vault, "ex")["state"] == "FRESH"


def test_vaultctl_hands_a_browser_only_the_one_time_link(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever the daemon answers, vaultctl puts no authorization request on a browser's command
    line, and prints the one-time link for the operator to open."""
    import webbrowser

    from vaultd.ctl.login import _open_browser, _show

    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, new=0: opened.append(url) or True)
    assert not _open_browser("https://id.example/authorize?state=fake-state&code_challenge=fake-challenge")
    assert not _open_browser("http://127.0.0.1:4000/callback?state=fake-state")
    assert not _open_browser("http://127.0.0.1:4000/start/fake-nonce?state=fake-state")
    assert _open_browser("http://127.0.0.1:4000/start/fake-nonce")
    assert opened == ["http://127.0.0.1:4000/start/fake-nonce"]
    started = {
        "login_id": "fake-login",
        "name": "ex",
        "mode": "browser",
        "url": "http://127.0.0.1:4000/start/fake-nonce",
        "authorization_url": "https://id.example/authorize?state=fake-state&code_challenge=fake-challenge",
        "redirect_uri": "http://127.0.0.1:4000/callback",
        "expires_in": 300.0,
    }
    _show(started, argparse.Namespace(json=False))
    out = capsys.readouterr().out
    assert "http://127.0.0.1:4000/start/fake-nonce" in out and "fake-state" not in out


async def test_a_renewal_in_flight_during_the_redemption_does_not_undo_the_login(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    """The token endpoint is slow (5 s) and a renewal with the old grant begins while the login's
    code is being redeemed: the login's refresh token is adopted after that renewal ends, so the
    renewal's rotated token of the old grant does not replace it."""
    exchange.behaviour.expires_in = 60
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange, grant_type="authorization_code"))
    started = await vault.login(Secret(PASS), "ex", device=False, lifetime=300)
    async with httpx.AsyncClient(timeout=60) as browser:
        params = {"code": "fake-code-1", "state": authorization(started).params["state"]}
        assert (await browser.get(started["redirect_uri"], params=params)).status_code == 200
        old_grant = vault_refresh_token(vault, "ex")
        renewal_at = state(vault, "ex")["next_renewal"]
        await trio.sleep(renewal_at - wall() - 2)  # the redemption begins 2 s before the renewal
        exchange.behaviour.fault, exchange.behaviour.delay = "slow", 5
        started = await vault.login(Secret(PASS), "ex", device=False, lifetime=300)
        params = {"code": "fake-code-2", "state": authorization(started).params["state"]}
        page = await browser.get(started["redirect_uri"], params=params)
    assert page.status_code == 200 and "logged in" in page.text
    exchange.behaviour.fault = ""
    assert exchange.calls["/oauth/token"] == 3, "the first login, the renewal, the second login"
    assert vault_refresh_token(vault, "ex") != exchange.current_refresh_token(old_grant), (
        "the vault holds the new login's grant, not the old one's rotated token"
    )
    await trio.sleep(600)
    assert state(vault, "ex")["state"] == "FRESH"
    assert vault_refresh_token(vault, "ex") != exchange.current_refresh_token(old_grant)


async def test_a_credential_removed_during_its_login_spends_no_code(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    """The operator removes (or replaces) the credential, then the browser comes back: the code is
    not redeemed (with a client secret that may be gone), and the login says what happened."""
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange, grant_type="authorization_code"))
    started = await vault.login(Secret(PASS), "ex", device=False, lifetime=300)
    params = {"code": "fake-code-1", "state": authorization(started).params["state"]}
    await vault.remove(Secret(PASS), "ex")
    async with httpx.AsyncClient(timeout=60) as browser:
        with contextlib.suppress(httpx.TransportError):  # the listener may be closed already
            await browser.get(started["redirect_uri"], params=params)
    outcome = await vault.login_wait(Secret(PASS), started["login_id"], 1)
    assert outcome["outcome"] == "failed" and "replaced or removed" in outcome["error"], outcome
    assert exchange.calls.get("/oauth/token", 0) == 0, "the code was not spent"


async def test_a_device_code_credential_logs_in_with_a_device_code_by_default(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    """Its grant_type names the way in: 'vaultctl login NAME' (no --device) is not a browser login."""
    exchange.behaviour.device_script = ["ok"]
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange, grant_type="device_code"))
    started = await vault.login(Secret(PASS), "ex", device=False, lifetime=300)
    assert started["mode"] == "device" and started["user_code"] == "FAKE-CODE"
    assert (await vault.login_wait(Secret(PASS), started["login_id"], 90))["outcome"] == "ok"


async def test_a_request_that_is_not_a_url_is_refused_and_the_login_goes_on(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    """'GET //[x/callback' made urlsplit raise, and the error ended the renewer and the daemon."""
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange, grant_type="authorization_code"))
    started = await vault.login(Secret(PASS), "ex", device=False, lifetime=300)
    port = httpx.URL(started["redirect_uri"]).port
    assert port is not None
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET //[x/callback HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = await stream.receive_some(4096)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    params = {"code": "fake-code-1", "state": authorization(started).params["state"]}
    async with httpx.AsyncClient(timeout=60) as browser:
        assert (await browser.get(started["redirect_uri"], params=params)).status_code == 200
    assert (await vault.login_wait(Secret(PASS), started["login_id"], 1))["outcome"] == "ok"


async def test_a_device_login_of_a_removed_credential_stops_polling(
    nursery: trio.Nursery, tmp_path: Path, exchange: FakeExchange, wall: Wall, autojump_clock: Any
) -> None:
    exchange.behaviour.device_script = ["authorization_pending"] * 50
    vault = await open_vault(nursery, tmp_path, wall)
    await add(vault, "ex", login_config(exchange))
    started = await vault.login(Secret(PASS), "ex", device=True, lifetime=300)
    await trio.sleep(12)  # two polls
    await vault.remove(Secret(PASS), "ex")
    polls = len(exchange.device_polls)
    outcome = await vault.login_wait(Secret(PASS), started["login_id"], 90)
    assert outcome["outcome"] == "failed" and "replaced or removed" in outcome["error"], outcome
    assert len(exchange.device_polls) == polls, "no poll after the removal"
