"""A client that shares no code with ours fetches tokens from a real daemon: SPEC.md suffices.

``tests/foreign/fetch_token.mjs`` is a Node.js program (standard library only, its own
MessagePack codec) written from SPEC.md alone. It is checked against the committed conformance
vectors, then run against a real ``vaultd``: the right token, the daemon's error codes, and a
socket path another user could have changed is refused before a byte is sent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ..daemon_process import DaemonProcess
from ..squatter import start_squatter

ROOT = Path(__file__).parents[2]
PROGRAM = ROOT / "tests" / "foreign" / "fetch_token.mjs"
VECTORS_PATH = ROOT / "protocol" / "conformance" / "vectors.json"
TOKEN = "fake-token-foreign-client-1"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Node.js on PATH: this test runs a client written in another language")
        pytest.skip("needs Node.js (node on PATH) to run the foreign client (CI installs it)")
    return node


def run_node(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_node(), str(PROGRAM), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(env) if env is not None else None,
        check=False,
    )


def fetched(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def refused(proc: subprocess.CompletedProcess[str]) -> tuple[int, str]:
    """The daemon's error code and name, from the foreign client's one line on stderr."""
    assert proc.returncode == 1 and proc.stdout == "", (proc.returncode, proc.stdout, proc.stderr)
    match = re.fullmatch(r"error (\d+) ([A-Z_]+): .*\n", proc.stderr)
    assert match, proc.stderr
    return int(match.group(1)), match.group(2)


def test_the_foreign_codec_agrees_with_every_conformance_vector() -> None:
    vectors = json.loads(VECTORS_PATH.read_text())
    requests = len(vectors["calls"]) + sum(1 for e in vectors["errors"] if e["params"] is not None)
    responses = len(vectors["calls"]) + len(vectors["errors"]) + len(vectors["error_variants"])
    messages = requests + responses + len(vectors["notifications"])
    proc = run_node("--selftest", str(VECTORS_PATH))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == f"selftest: {messages} messages decoded, {requests} requests encoded, 0 problems\n"


def test_the_foreign_client_fetches_tokens_and_hears_the_daemons_errors(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready(TOKEN)
    later = '{"token": "fake-api-key-foreign-2", "not_after": "2099-01-01T00:00:00Z", "type": "api-key"}'
    daemon.ctl("add", "ex2", "--kind", "static", *daemon.pw(), stdin=later)

    # No --socket and no VAULTD_SOCKET: the path comes from XDG_RUNTIME_DIR, as SPEC.md says.
    assert "VAULTD_SOCKET" not in daemon.env
    got = fetched(run_node("ex", env=daemon.env))
    assert got == {
        "name": "ex",
        "token": TOKEN,
        "type": "bearer",
        "expires_at": None,
        "ttl": None,
        "headers": {"Authorization": f"Bearer {TOKEN}"},
        "extra": {},
    }
    vectors = json.loads(VECTORS_PATH.read_text())
    token_get = next(c for c in vectors["calls"] if c["method"] == "token.get")
    assert got.keys() == token_get["result"].keys(), "the daemon's result has the shape the vectors show"
    with daemon.client() as ours:
        assert ours.token("ex").value == got["token"]

    env = {**daemon.env, "VAULTD_SOCKET": str(daemon.socket_path), "XDG_RUNTIME_DIR": "/nonexistent"}
    before = time.time()
    got = fetched(run_node("ex2", "--min-ttl", "2.5", env=env))
    assert (got["token"], got["type"], got["headers"]) == ("fake-api-key-foreign-2", "api-key", {})
    assert got["expires_at"] == 4070908800.0 and 0 < got["ttl"] <= 4070908800.0 - before

    assert refused(run_node("nope", env=daemon.env)) == (20, "UNKNOWN_CREDENTIAL")
    assert refused(run_node("x" * 65, env=daemon.env)) == (4, "INVALID_PARAMS")
    daemon.ctl("lock")
    assert refused(run_node("ex", env=daemon.env)) == (12, "LOCKED")
    assert TOKEN not in daemon.log


def test_the_foreign_client_refuses_a_socket_another_user_could_have_replaced(daemon: DaemonProcess) -> None:
    """Node cannot read SO_PEERCRED, so it checks the path (SPEC.md section 1) before connecting."""
    daemon.start()
    daemon.ready(TOKEN)
    assert fetched(run_node("ex", env=daemon.env))["token"] == TOKEN, "positive control"
    folder = daemon.socket_path.parent
    folder.chmod(0o777)
    try:
        proc = run_node("ex", env=daemon.env)
    finally:
        folder.chmod(0o700)
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr == f"refusing to talk to {daemon.socket_path}: {folder} could be changed by another user\n"
    assert fetched(run_node("ex", env=daemon.env))["token"] == TOKEN, "the daemon still serves"

    gone = run_node("ex", "--socket", str(daemon.root / "nothing" / "vaultd.sock"))
    assert gone.returncode == 3 and "vaultd is not reachable" in gone.stderr


SQUATTER = r"""
import os, socket, sys
path, ready = sys.argv[1], sys.argv[2]
os.makedirs(os.path.dirname(path), exist_ok=True)
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
server.listen(1)
open(ready, "w").close()
conn, _ = server.accept()
conn.settimeout(10)
print(len(conn.recv(65536)), flush=True)
"""


def test_the_foreign_client_never_talks_to_another_users_socket(short_tmp: Path) -> None:
    """Another user bound the path first (as in /tmp without XDG_RUNTIME_DIR): nothing is sent."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI must run as root: this test switches uid with setpriv")
        pytest.skip("needs root to switch uid with setpriv (CI runs it as root)")
    short_tmp.chmod(0o1777)  # like /tmp: anyone may create a folder in it, none may replace another's

    squatter, path = start_squatter(short_tmp, SQUATTER, "ours", as_nobody=False)
    control = run_node("ex", "--socket", str(path))
    out, _ = squatter.communicate(timeout=10)
    assert control.returncode == 3 and int(out) > 0, "positive control: the same listener, ours, hears the client"

    squatter, path = start_squatter(short_tmp, SQUATTER, "theirs", as_nobody=True)
    try:
        proc = run_node("ex", "--socket", str(path))
    finally:
        squatter.kill()  # it never got a connection: it is still waiting in accept()
        out, _ = squatter.communicate(timeout=10)
    assert proc.returncode == 3 and "refusing to talk to" in proc.stderr and "owner 65534" in proc.stderr
    assert out == "", "the squatter accepted a connection"
