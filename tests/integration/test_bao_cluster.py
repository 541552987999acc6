"""vaultd._bao against a three-node OpenBao raft cluster: standbys, redirects, and a leader that dies.

One cluster serves the module (about 5 s to form). What a standby answers is written up in
tests/openbao.py (BaoRaftCluster); these tests hold vaultd._bao to it: a standby serves reads
and forwards writes; a 307 from a standby is never followed and is BaoUnavailable; while the
leader is dead, a read on a standby is served or transient, never a hard error.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from vaultd._bao import BaoClient, BaoError, BaoUnavailable, KvVersion
from vaultd._secret import Secret

from ..openbao import BaoNode, BaoRaftCluster

POLICY = """
path "secret/data/desk/*" { capabilities = ["read"] }
path "transit/sign/*" { capabilities = ["update"] }
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[BaoRaftCluster]:
    with BaoRaftCluster() as bao:
        bao.write_policy("desk", POLICY)
        bao.kv_put("desk/binance", {"api_key": "fake-key"})
        bao.transit_key("desk-ed25519", "ed25519")
        bao.wait_for_standbys(time.monotonic() + 10)
        yield bao


@pytest.fixture
def credentials(cluster: BaoRaftCluster) -> tuple[Secret, Secret]:
    role_id, secret_id = cluster.approle("desk", policies=["desk"])
    cluster.wait_for_standbys(time.monotonic() + 10)  # a standby refuses a secret id it has not seen yet
    return Secret(role_id), Secret(secret_id)


@pytest.fixture
async def standby(cluster: BaoRaftCluster) -> AsyncIterator[BaoClient]:
    async with BaoClient(cluster.standbys()[0].address) as client:
        yield client


def host(node: BaoNode) -> str:
    return node.address.removeprefix("http://")


async def test_a_standby_serves_reads_and_forwards_logins_and_renewals(
    cluster: BaoRaftCluster, standby: BaoClient, credentials: tuple[Secret, Secret]
) -> None:
    token = await standby.login_approle("approle", *credentials)
    renewed = await standby.renew_self(token.token, increment=300)
    assert renewed.ttl == 300
    record = await standby.kv_read(token.token, "secret", "desk/binance")
    assert record.data == {"api_key": "fake-key"}
    assert len(await standby.transit_sign(token.token, "desk-ed25519", b"payload")) == 64
    # The standby served the read itself; it tried the login, could not write, and forwarded it.
    leader, node = cluster.leader(), next(node for node in cluster.nodes if node.address == standby.address)
    assert leader is not None
    mine = cluster.audit_hash(token.token.reveal_str())
    reads = [e for e in cluster.audit_entries("secret/data/desk/") if e["auth"].get("client_token") == mine]
    assert len(reads) == 1 and reads[0] in cluster.audit_entries(files=[node.audit_path])
    attempts = cluster.audit_entries("auth/approle/login", files=[node.audit_path])
    assert "cannot write to readonly storage" in attempts[-1]["error"]
    accessor = cluster.audit_hash(token.accessor)
    logins = [e for e in cluster.audit_entries("auth/approle/login", errors=False) if e["auth"]["accessor"] == accessor]
    assert len(logins) == 1 and logins[0] in cluster.audit_entries(files=[leader.audit_path])


async def test_a_redirect_from_a_standby_is_not_followed(
    cluster: BaoRaftCluster, credentials: tuple[Secret, Secret]
) -> None:
    """X-Vault-No-Request-Forwarding makes a standby redirect a write as it does during an election."""
    leader, node = cluster.leader(), cluster.standbys()[0]
    assert leader is not None
    async with BaoClient(cluster.leader_address()) as client:
        token = await client.login_approle("approle", *credentials)
    headers = {"X-Vault-No-Request-Forwarding": "true"}
    async with httpx.AsyncClient(headers=headers) as http, BaoClient(node.address, http=http) as client:
        with pytest.raises(BaoUnavailable) as caught:
            await client.renew_self(token.token, increment=120)
    assert caught.value.status == 307
    assert str(caught.value) == (
        f"OpenBao {host(node)}: token renewal: redirected to {host(leader)} (a standby during an election?), HTTP 307"
    )
    mine = cluster.audit_hash(token.token.reveal_str())
    renewals = [e for e in cluster.audit_entries("auth/token/renew-self") if e["auth"].get("client_token") == mine]
    assert renewals == [], "the redirect was followed"


async def test_while_the_leader_is_dead_writes_are_redirected_and_reads_are_never_a_hard_error(
    cluster: BaoRaftCluster, credentials: tuple[Secret, Secret]
) -> None:
    async with BaoClient(cluster.leader_address()) as client:
        token = await client.login_approle("approle", *credentials)
    dead = cluster.kill_leader()
    node = cluster.standbys()[0]
    try:
        async with BaoClient(node.address) as client:
            # The standby has not noticed yet (1 s heartbeats): it cannot forward, so it redirects to
            # the dead leader. (Had it noticed, it would answer 500 "active cluster node not found".)
            with pytest.raises(BaoUnavailable) as caught:
                await client.login_approle("approle", *credentials)
            if caught.value.status == 307:
                assert f"redirected to {host(dead)} (a standby during an election?)" in str(caught.value)
            for secret in credentials:
                assert secret.reveal_str() not in str(caught.value)
            # Reads go on (served by the standby), after perhaps a moment of KV "not ready".
            try:
                record = await client.kv_read(token.token, "secret", "desk/binance")
                assert isinstance(record, KvVersion)
            except BaoError as error:
                assert isinstance(error, BaoUnavailable), error
        new = cluster.wait_for_leader(time.monotonic() + 30, excluding=dead)
        cluster.wait_for_standbys(time.monotonic() + 30)
        async with BaoClient(new.address) as client:
            assert (await client.renew_self(token.token)).ttl > 0
    finally:
        cluster.restart_node(dead)
    async with BaoClient(dead.address) as client:
        assert (await client.kv_read(token.token, "secret", "desk/binance")).version == 1
