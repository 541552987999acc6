"""An ``exe`` rule, at the socket, against a process that changes its program: before accept, and after.

The engines are real processes: the "allowed" program is the system python3 under a path of
its own (``engine``), the attacker the system python3 itself, running a stdlib-only script
(``FORK_AND_EXEC``, with test_policy.py's codec). The attacker connects, forks, and the process
that connected execs another program while its child keeps the connection and asks. The race
is made certain: for the exec before accept, the daemon is held back (its listener is served
only once the exec is done); for the exec after accept, the child waits for it. Each refusal
has a positive control on the same rule: the allowed program itself gets the token.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from vaultd._listen import bind_unix_socket
from vaultd._rpc import Dispatcher
from vaultd._server import ServerLimits, serve

from .conftest import StartServer
from .test_policy import CODEC, PYTHON_EXE, SECRETS, TOKEN_EX, Audits, _ready, _set_policy, audits, forbidden

__all__ = ["audits"]  # the fixture, imported for these tests

HELLO = ["hello", {"protocol": 1, "client": "exe-test"}]
GET_EX = ["token.get", {"name": "ex"}]
WAIT = "import sys; sys.stdin.buffer.read()"

#: config: socket, before (requests asked at once), after (asked by a forked child once the
#: process that connected has exec'd ``program``; none and no fork when ``program`` is empty).
#: One JSON line per answer, and {"exec": true} once the exec is done.
FORK_AND_EXEC = (
    CODEC
    + r"""
def ask(sock, requests, buf=b""):
    for msgid, (method, params) in enumerate(requests, 1):
        sock.sendall(enc([0, msgid, method, [params]]))
        while True:
            try:
                value, used = decode(buf)
            except Incomplete:
                chunk = sock.recv(65536)
                if not chunk:
                    print(json.dumps({"closed": True}), flush=True)
                    return
                buf += chunk
                continue
            buf = buf[used:]
            if value[0] == 1:
                break
        error, result = value[2], value[3]
        print(json.dumps({"error": error} if error else {"result": result}), flush=True)

config = json.loads(sys.argv[1])
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(config["socket"])
sock.settimeout(20)
ask(sock, config["before"])
if config["program"]:
    exec_done, exec_done_w = os.pipe()  # close-on-exec: its write end closes with the exec
    if os.fork():
        os.execv(config["program"][0], config["program"])
    os.close(exec_done_w)
    os.read(exec_done, 1)
    print(json.dumps({"exec": True}), flush=True)
    ask(sock, config["after"])
"""
)


@pytest.fixture
def engine(short_tmp: Path) -> str:
    """The allowed program: the system python3 under a path of its own (a hard link, else a copy)."""
    path = short_tmp / "engine"
    try:
        os.link(PYTHON_EXE, path)
    except OSError:
        shutil.copy2(PYTHON_EXE, path)
    return str(path)


class Engine:
    """A FORK_AND_EXEC process: its answers line by line; ``end()`` lets the exec'd program exit."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self._buffer = b""

    @classmethod
    async def start(cls, interpreter: str, script: Path, config: dict[str, Any]) -> Engine:
        command = [interpreter, str(script), json.dumps(config)]
        return cls(await trio.lowlevel.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE))

    async def lines(self, count: int) -> list[dict[str, Any]]:
        assert self.proc.stdout is not None
        with trio.fail_after(20):
            while self._buffer.count(b"\n") < count:
                chunk = await self.proc.stdout.receive_some(65536)
                assert chunk, f"the engine ended early: {self._buffer!r}"
                self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n", count)
        return [json.loads(line) for line in lines]

    async def end(self) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.aclose()
        with trio.fail_after(20):
            assert await self.proc.wait() == 0


def _script(folder: Path) -> Path:
    script = folder / "fork_and_exec.py"
    script.write_text(FORK_AND_EXEC)
    return script


async def test_an_exec_between_connect_and_accept_does_not_lend_its_exe_to_the_connection(
    start_server: StartServer, audits: Audits, short_tmp: Path, nursery: trio.Nursery, engine: str
) -> None:
    served, admin = await _ready(start_server)
    await _set_policy(admin, {"exe": engine, "credentials": ["ex"], "methods": ["get"]})
    script = _script(short_tmp)
    held_path = short_tmp / "held" / "vaultd.sock"
    held = bind_unix_socket(held_path)  # a daemon held back: nobody accepts here yet

    attacker = await Engine.start(
        PYTHON_EXE,
        script,
        {"socket": str(held_path), "before": [], "program": [engine, "-c", WAIT], "after": [HELLO, GET_EX]},
    )
    assert await attacker.lines(1) == [{"exec": True}]  # connected as python3, then exec'd the engine
    assert os.readlink(f"/proc/{attacker.proc.pid}/exe") == engine
    listener = trio.socket.from_stdlib_socket(held)
    await nursery.start(serve, listener, Dispatcher(served.vault, held_path), ServerLimits())
    hello, get = await attacker.lines(2)
    peer = hello["result"]["peer"]
    assert (peer["pid"], peer["exe"]) == (attacker.proc.pid, None)  # the connecting process, no exe
    forbidden(get, "token.get of 'ex'", "no rule matches")
    assert (os.getuid(), "token.get", "ex", "FORBIDDEN", None) in audits
    await attacker.end()

    # Positive control: the engine itself, on the same (now served) socket, under the same rule.
    own = await Engine.start(engine, script, {"socket": str(held_path), "before": [HELLO, GET_EX], "program": []})
    hello, get = await own.lines(2)
    assert hello["result"]["peer"]["exe"] == engine
    assert get["result"]["token"] == TOKEN_EX
    await own.end()


async def test_a_connection_whose_process_execs_after_accept_loses_its_exe_rule(
    start_server: StartServer, audits: Audits, short_tmp: Path, engine: str
) -> None:
    served, admin = await _ready(start_server)
    await _set_policy(
        admin,
        {"exe": engine, "credentials": ["ex"], "methods": ["get", "status"]},
        {"credentials": ["ex"], "methods": ["status"]},
    )
    script = _script(short_tmp)
    config = {
        "socket": str(served.socket_path),
        "before": [HELLO, GET_EX],
        "program": [PYTHON_EXE, "-c", WAIT],
        "after": [GET_EX, HELLO, ["status", {}]],
    }
    proc = await Engine.start(engine, script, config)
    hello, get = await proc.lines(2)
    # Positive control: the engine, on this very connection, before it execs.
    assert hello["result"]["peer"]["exe"] == engine
    assert get["result"]["token"] == TOKEN_EX
    done, get, hello, status = await proc.lines(4)
    assert done == {"exec": True}
    message = forbidden(get, "token.get of 'ex'", "rule 2 (any process of the daemon's uid) does not allow get")
    assert f"its exe {engine} no longer holds" in message
    assert hello["result"]["peer"]["exe"] == engine  # hello says who connected; the rule no longer follows
    assert [c["name"] for c in status["result"]["credentials"]] == ["ex"]  # rule 2's share: status
    assert audits.count((os.getuid(), "token.get", "ex", "ok", TOKEN_EX)) == 1
    assert (os.getuid(), "token.get", "ex", "FORBIDDEN", None) in audits
    assert not any(secret in json.dumps(get) for secret in SECRETS)
    await proc.end()
