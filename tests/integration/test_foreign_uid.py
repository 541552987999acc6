"""Another user gets nothing, even through a world-writable socket (needs root for setpriv).

A process running as uid 65534 cannot read the virtualenv or the checkout, so it runs the
system python3 on a stdlib-only client copied to a world-readable file. Every refusal is
paired with a positive control: the same client, run as the daemon's own user, gets the
token, so the refusal cannot come from a client that never worked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vaultd_client import Client, ConnectionLost, UntrustedSocket

from ..daemon_process import BIN, DaemonProcess
from ..squatter import start_squatter

TOKEN = "fake-token-foreign-uid-check"

# Hand-encoded MessagePack: [0, 1, "token.get", [{"name": "ex"}]].
STDLIB_CLIENT = r"""
import socket, sys

def s(text):
    raw = text.encode()
    return bytes([0xA0 | len(raw)]) + raw

request = bytes([0x94, 0x00, 0x01]) + s("token.get") + bytes([0x91, 0x81]) + s("name") + s("ex")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(10)
try:
    sock.connect(sys.argv[1])
except OSError as exc:
    print("connect-failed", exc.errno)
    raise SystemExit(0)
data = b""
try:
    sock.sendall(request)
    while sys.argv[2].encode() not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
except OSError:
    pass  # EPIPE or ECONNRESET: the daemon closed on us, as EOF does
print("GOT-TOKEN" if sys.argv[2].encode() in data else "closed-with %d bytes" % len(data))
"""


def _require_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI must run as root: this test switches uid with setpriv")
        pytest.skip("needs root to switch uid with setpriv (CI runs it as root)")


def _run(script: Path, socket_path: Path, *, as_nobody: bool) -> str:
    python = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"
    command = [python, str(script), str(socket_path), TOKEN]
    if as_nobody:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False, cwd="/")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_another_uid_is_refused_even_through_a_world_writable_socket(daemon: DaemonProcess) -> None:
    _require_root()
    daemon.start()
    daemon.ready(TOKEN)
    script = daemon.root / "client.py"
    script.write_text(STDLIB_CLIENT)
    script.chmod(0o644)
    daemon.root.chmod(0o755)
    (daemon.root / "run").chmod(0o755)
    daemon.socket_path.parent.chmod(0o777)
    daemon.socket_path.chmod(0o777)

    assert _run(script, daemon.socket_path, as_nobody=False) == "GOT-TOKEN", "positive control"
    assert _run(script, daemon.socket_path, as_nobody=True) == "closed-with 0 bytes"
    assert "refused a connection from another user" in daemon.log and "uid=65534" in daemon.log
    assert _run(script, daemon.socket_path, as_nobody=False) == "GOT-TOKEN", "the daemon is still serving"


SQUATTER = r"""
import os, socket, sys
path, ready = sys.argv[1], sys.argv[2]
os.makedirs(os.path.dirname(path), exist_ok=True)
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
os.chmod(path, 0o777)
server.listen(1)
open(ready, "w").close()
server.settimeout(20)
conn, _ = server.accept()
conn.settimeout(2)
received = b""
try:
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        received += chunk
except OSError:
    pass
print(len(received))
"""


def test_the_client_never_talks_to_another_users_socket(short_tmp: Path) -> None:
    """A user without XDG_RUNTIME_DIR uses /tmp/vaultd-UID: another user could get there first."""
    _require_root()
    short_tmp.chmod(0o777)
    squatter, path = start_squatter(short_tmp, SQUATTER, "squat", as_nobody=True)
    with pytest.raises(UntrustedSocket, match="served by uid 65534"):
        Client(path).unlock("fake passphrase never sent")
    squatter.kill()  # it is still waiting for bytes that will never come
    squatter.wait(timeout=10)
    shutil.rmtree(short_tmp / "squat")
    (short_tmp / "squat.ready").unlink()

    # Positive control: the same listener run by our own user does receive the request.
    squatter, path = start_squatter(short_tmp, SQUATTER, "squat", as_nobody=False)
    with pytest.raises(ConnectionLost):
        Client(path).unlock("fake passphrase sent")
    out, _ = squatter.communicate(timeout=10)
    assert int(out) > 0


def test_vaultctl_refuses_another_users_socket_with_exit_3(short_tmp: Path) -> None:
    _require_root()
    short_tmp.chmod(0o777)
    squatter, path = start_squatter(short_tmp, SQUATTER, "squat", as_nobody=True)
    try:
        proc = subprocess.run(
            [BIN / "vaultctl", "--socket", str(path), "status"], capture_output=True, text=True, timeout=30, check=False
        )
    finally:
        squatter.kill()
        squatter.wait(timeout=10)
    assert proc.returncode == 3 and "served by uid 65534" in proc.stderr
    assert "--server-uid" in proc.stderr, "the message names the way to trust that uid on purpose"

    # Told to trust uid 65534 (a desk whose vaultd runs as another user), vaultctl talks to it.
    squatter, path = start_squatter(short_tmp, SQUATTER, "squat2", as_nobody=True)
    try:
        subprocess.run(
            [BIN / "vaultctl", "--socket", str(path), "--server-uid", "65534", "status"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        out, _ = squatter.communicate(timeout=30)
    assert int(out) > 0, "the request reached the listener of the trusted uid"
