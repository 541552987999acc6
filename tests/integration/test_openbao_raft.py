"""A three-node OpenBao raft cluster loses its leader while engines fetch and sign through vaultd.

vaultd talks to a standby (an operator would give it a load balancer's address; a standby is
the interesting case: it serves reads, forwards writes, and redirects to the dead leader during
the election). Engines must see no error, and a key never goes back to an older version.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from ..daemon_process import DaemonProcess
from ..openbao import BaoRaftCluster
from .openbao_desk import ROLE, Engines, add_upstream, configure, described, sign_record, source, wait_for


@pytest.fixture
def cluster() -> Iterator[BaoRaftCluster]:
    with BaoRaftCluster() as bao:
        yield bao


def test_killing_the_leader_while_engines_fetch_and_sign(daemon: DaemonProcess, cluster: BaoRaftCluster) -> None:
    role_id = configure(cluster, enable=False)
    cluster.kv_put("desk/binance", sign_record("fake-key-1"))
    cluster.kv_put("desk/static", {"token": "fake-token-1"})
    wrapped = cluster.wrapped_secret_id(ROLE)
    cluster.wait_for_standbys(time.monotonic() + 20)  # the standby has the records and the secret_id
    standby = cluster.standbys()[0]
    daemon.start()
    daemon.ctl("init", "--kdf-profile", "min", *daemon.pw())
    daemon.ctl("unlock", *daemon.pw())
    add_upstream(daemon, cluster, standby.address, role_id, wrapped=wrapped)
    source(daemon, "st", "static", "desk/static")
    source(daemon, "binance", "sign", "desk/binance")
    daemon.secrets.update({"fake-token-1", "fake-secret-of-fake-key-1", "fake-secret-of-fake-key-2"})
    daemon.secrets.add("fake-secret-of-fake-key-3")
    with Engines(daemon) as engines:
        cluster.kv_put("desk/binance", sign_record("fake-key-2"))
        wait_for(lambda: engines.serving("fake-key-2"), "version 2 through the standby")
        killed = cluster.kill_leader()
        assert killed is not standby
        new_leader = cluster.wait_for_leader(time.monotonic() + 30, excluding=killed)
        cluster.wait_for_standbys(time.monotonic() + 20)
        cluster.kv_put("desk/binance", sign_record("fake-key-3"))
        wait_for(lambda: engines.serving("fake-key-3"), "version 3 after the election", timeout=30)
        time.sleep(2)
    assert engines.errors == [], "no engine saw an error while the cluster lost its leader"
    assert all(keys == ["fake-key-1", "fake-key-2", "fake-key-3"] for keys in engines.keys), "versions only go up"
    assert described(daemon, "binance")["source"]["version"] == 3
    assert described(daemon, "bao")["state"] == "FRESH", f"the session survived (new leader {new_leader.name})"
