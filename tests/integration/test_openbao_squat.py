"""Another local user on OpenBao's loopback port gets nothing (needs root for setpriv).

Over ``http://127.0.0.1:PORT`` nothing proves who answers: while OpenBao is down, any user may
bind its port and wait for the token and the AppRole secret_id. The client asks the kernel who
owns the listening socket before each call (``vaultd/_loopback.py``). The squatter here is a
real process of uid 65534, running the system python3 on a script in a world-readable file; the
positive control is the same squatter, trusted by ``listener_uids``, receiving the request.
"""

from __future__ import annotations

import os
import select
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from vaultd import _bao
from vaultd._bao import BaoClient, BaoUnavailable
from vaultd._loopback import listener_uids
from vaultd._secret import Secret

from ..openbao import free_port
from ..polling import wait_for
from .test_foreign_uid import _require_root

NOBODY = 65534
SQUATTER = textwrap.dedent(
    """
    import socket, sys
    address = sys.argv[2]
    server = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
    server.bind((address, int(sys.argv[1])))
    server.listen()
    print("listening", flush=True)
    while True:
        conn, _ = server.accept()
        data = conn.recv(65536)
        print("got", len(data), data.split(b" ")[0].decode(), flush=True)
        conn.close()
    """
)


@pytest.fixture(params=["127.0.0.1", "::ffff:127.0.0.1"], ids=["ipv4", "ipv4-mapped"])
def squatter(request: pytest.FixtureRequest) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    _require_root()
    script = Path("/tmp") / f"vaultd-squatter-{os.getpid()}.py"
    script.write_text(SQUATTER)
    script.chmod(0o644)
    port = free_port()
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "/usr/bin/python3", str(script)]
    proc = subprocess.Popen([*argv, str(port), request.param], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
        yield port, proc
    finally:
        proc.kill()
        proc.wait()
        script.unlink()


async def test_a_token_is_never_sent_to_another_users_listener(squatter: tuple[int, subprocess.Popen[str]]) -> None:
    port, proc = squatter
    assert listener_uids(port) == {NOBODY}
    async with BaoClient(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(BaoUnavailable, match=f"belongs to uid {NOBODY}") as info:
            await client.login_approle("approle", Secret("fake-role-id"), Secret("fake-secret-id"))
        assert "fake-secret-id" not in str(info.value)
        with pytest.raises(BaoUnavailable, match="nothing sent"):
            await client.kv_read(Secret("s.fake-token"), "secret", "desk/x")
    # Positive control: trusted (an OpenBao running as that user), the same listener gets the call.
    async with BaoClient(f"http://127.0.0.1:{port}", listener_uids=frozenset({os.getuid(), NOBODY})) as client:
        with pytest.raises(BaoUnavailable):
            await client.kv_read(Secret("s.fake-token"), "secret", "desk/x")  # the squatter answers nothing
    assert proc.stdout is not None
    line = wait_for(proc.stdout.readline, "the squatter to see the one call it was trusted with")
    # Its first request is the trusted GET: the login (a POST) and the untrusted read never came.
    assert line.startswith("got ") and line.split()[2] == "GET"


async def test_a_listener_that_appears_after_the_check_gets_nothing_either(
    squatter: tuple[int, subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: a socket that listens only for a moment, after the check of the listeners and
    before the connection. Played by making that check see none (a stand-in for the timing); the
    check of the socket that accepted the connection must still refuse."""
    port, proc = squatter
    monkeypatch.setattr(_bao, "listener_uids", lambda port: set())
    async with BaoClient(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(BaoUnavailable, match=f"accepted it belongs to uid {NOBODY}"):
            await client.login_approle("approle", Secret("fake-role-id"), Secret("fake-secret-id"))
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10.0)  # the connection waits in its backlog
    assert ready, "the squatter never accepted the connection"
    assert proc.stdout.readline().split()[:2] == ["got", "0"], "it accepted the connection, and read not one byte"
