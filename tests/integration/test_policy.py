"""Who may ask for what, enforced at the socket: units, another uid, a handed-over connection, vaultctl policy.

Engines are real processes running a stdlib-only client (``CLIENT``, with its own small
MessagePack codec) under the system ``python3``, so that the same script also runs as uid
65534, which cannot read the virtualenv or the checkout (docs/ARCHITECTURE.md section 13). Two engines
are told apart by their cgroup: the test creates ``engine-a.service`` and ``engine-b.service``
under a cgroup of its own (removed at the end) and each engine moves itself there before it
connects. Tests that switch uid or create cgroups need root: they fail under ``CI`` and are
skipped elsewhere, as in test_foreign_uid.py. Every refusal has a positive control beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from vaultd._policy import Policy
from vaultd._rpc import Dispatcher
from vaultd_protocol import Notification, Response

from ..daemon_process import DaemonProcess
from .conftest import PASS, RawClient, Served, StartServer

TOKEN_EX = "fake-token-policy-ex-1"
TOKEN_A = "fake-token-policy-alpha-2"
TOKEN_B = "fake-token-policy-beta-3"
TOKEN_SHARED = "fake-token-policy-shared-4"
SECRETS = (TOKEN_EX, TOKEN_A, TOKEN_B, TOKEN_SHARED, PASS)
PYTHON = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"
PYTHON_EXE = os.path.realpath(PYTHON)  # what /proc/PID/exe says
HELLO = ["hello", {"protocol": 1, "client": "policy-test"}]

#: A stdlib-only MessagePack codec for engines: ``enc(value)``, ``decode(bytes) -> (value, used)``.
CODEC = r"""
import json, os, socket, struct, sys

class Incomplete(Exception):
    pass

def enc(o):
    if o is None:
        return b"\xc0"
    if isinstance(o, bool):
        return b"\xc3" if o else b"\xc2"
    if isinstance(o, int):
        return bytes([o]) if 0 <= o < 128 else b"\xce" + struct.pack(">I", o)
    if isinstance(o, str):
        raw = o.encode()
        return (bytes([0xA0 | len(raw)]) if len(raw) < 32 else b"\xda" + struct.pack(">H", len(raw))) + raw
    if isinstance(o, list):
        return b"\xdc" + struct.pack(">H", len(o)) + b"".join(enc(x) for x in o)
    if isinstance(o, dict):
        return b"\xde" + struct.pack(">H", len(o)) + b"".join(enc(k) + enc(v) for k, v in o.items())
    raise TypeError(type(o))

def decode(b):
    pos = [0]
    def take(n):
        if pos[0] + n > len(b):
            raise Incomplete()
        pos[0] += n
        return b[pos[0] - n:pos[0]]
    def uint(n):
        return int.from_bytes(take(n), "big")
    def one():
        t = take(1)[0]
        if t < 0x80:
            return t
        if t >= 0xE0:
            return t - 256
        if t < 0x90:
            return {one(): one() for _ in range(t & 15)}
        if t < 0xA0:
            return [one() for _ in range(t & 15)]
        if t < 0xC0:
            return take(t & 31).decode()
        simple = {0xC0: None, 0xC2: False, 0xC3: True}
        if t in simple:
            return simple[t]
        if t in (0xC4, 0xC5, 0xC6):
            return take(uint(1 << (t - 0xC4))).hex()
        if t == 0xCA:
            return struct.unpack(">f", take(4))[0]
        if t == 0xCB:
            return struct.unpack(">d", take(8))[0]
        if 0xCC <= t <= 0xCF:
            return uint(1 << (t - 0xCC))
        if 0xD0 <= t <= 0xD3:
            return int.from_bytes(take(1 << (t - 0xD0)), "big", signed=True)
        if t in (0xD9, 0xDA, 0xDB):
            return take(uint(1 << (t - 0xD9))).decode()
        if t in (0xDC, 0xDD):
            return [one() for _ in range(uint(2 if t == 0xDC else 4))]
        if t in (0xDE, 0xDF):
            return {one(): one() for _ in range(uint(2 if t == 0xDE else 4))}
        raise ValueError("type %#x" % t)
    value = one()
    return value, pos[0]
"""

CLIENT = (
    CODEC
    + r"""
config = json.loads(sys.argv[1])
if config.get("cgroup"):
    with open(os.path.join(config["cgroup"], "cgroup.procs"), "w") as procs:
        procs.write(str(os.getpid()))
if config.get("recv_fd") is not None:
    carrier = socket.socket(fileno=config["recv_fd"])
    _, fds, _, _ = socket.recv_fds(carrier, 16, 1)
    sock = socket.socket(fileno=fds[0])
else:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(config["socket"])
    except OSError as exc:
        print(json.dumps({"connect_failed": exc.errno}))
        raise SystemExit(0)
sock.settimeout(10)
buf, received = b"", 0
for msgid, (method, params) in enumerate(config["requests"], 1):
    try:
        sock.sendall(enc([0, msgid, method, [params]]))
        while True:
            try:
                value, used = decode(buf)
            except Incomplete:
                chunk = sock.recv(65536)
                if not chunk:
                    raise EOFError()
                buf += chunk
                received += len(chunk)
                continue
            buf = buf[used:]
            if value[0] == 1:
                break
    except (OSError, EOFError):
        print(json.dumps({"closed": True, "received": received}))
        break
    error, result = value[2], value[3]
    print(json.dumps({"error": error} if error else {"result": result}))
if config.get("send_fd") is not None:
    socket.send_fds(socket.socket(fileno=config["send_fd"]), [b"fd"], [sock.fileno()])
"""
)


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _require_root() -> None:
    if os.geteuid() != 0:
        _unavailable("needs root to switch uid with setpriv and to create cgroups (CI runs it as root)")


def _cgroup_mount() -> Path:
    """Where to make the engines' cgroups: the unified hierarchy, else systemd's named v1 one."""
    named = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        after = fields[fields.index("-") + 1 :]
        if after[0] == "cgroup2":
            return Path(fields[4])
        if after[0] == "cgroup" and "name=systemd" in after[2].split(","):
            named = Path(fields[4])
    if named is None:
        _unavailable("no cgroup2 or name=systemd hierarchy is mounted")
    assert named is not None
    return named


@pytest.fixture
def engine_cgroups() -> Iterator[dict[str, Path]]:
    """``engine-a.service`` and ``engine-b.service`` in a test-owned cgroup, removed at the end."""
    _require_root()
    top = _cgroup_mount() / f"vaultd-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    units = {"a": top / "engine-a.service", "b": top / "engine-b.service"}
    try:
        top.mkdir()
        for folder in units.values():
            folder.mkdir()
    except OSError as exc:
        with contextlib.suppress(OSError):
            top.rmdir()
        _unavailable(f"cannot create cgroups under {top.parent}: {exc.strerror}")
    try:
        yield units
    finally:
        for folder in [*units.values(), top]:
            with contextlib.suppress(FileNotFoundError):
                folder.rmdir()  # every engine has exited (and was reaped) by now


class Audits(list[tuple[Any, ...]]):
    """Every call of the audit hook: (uid, method, credential, outcome, token)."""

    def __init__(self) -> None:
        super().__init__()
        self._grew = trio.Event()

    def record(self, entry: tuple[Any, ...]) -> None:
        self.append(entry)
        self._grew.set()

    async def wait_for(self, method: str, credential: str | None, outcome: str) -> None:
        while (method, credential, outcome) not in {(m, c, o) for _, m, c, o, _ in self}:
            self._grew = trio.Event()
            await self._grew.wait()


@pytest.fixture
def audits(monkeypatch: pytest.MonkeyPatch) -> Audits:
    calls = Audits()

    def record(
        self: Dispatcher, identity: dict[str, Any], method: str, credential: str | None, outcome: str, **kw: Any
    ) -> None:
        calls.record((identity["uid"], str(method), credential, outcome, kw.get("token")))

    monkeypatch.setattr(Dispatcher, "_audit", record)
    return calls


def _open_to_others(top: Path, socket_path: Path) -> None:
    """What an operator does for another user (README): folders it may enter, a socket it may open."""
    top.chmod(0o711)
    socket_path.parent.chmod(0o711)
    socket_path.chmod(0o666)


def _script(folder: Path) -> Path:
    script = folder / "engine.py"
    script.write_text(CLIENT)
    script.chmod(0o644)
    return script


async def run_engine(
    script: Path, config: dict[str, Any], *, as_nobody: bool = False, pass_fds: tuple[int, ...] = ()
) -> list[dict[str, Any]]:
    """Run the stdlib client; one dict per request (or ``closed``, ``connect_failed``)."""
    command = [PYTHON, str(script), json.dumps(config)]
    if as_nobody:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    proc = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False, pass_fds=pass_fds)
    assert proc.returncode == 0, proc.stderr.decode()
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def forbidden(answer: dict[str, Any], *words: str) -> str:
    assert "error" in answer, answer
    error = answer["error"]
    assert error["name"] == "FORBIDDEN" and error["code"] == 14, error
    for word in words:
        assert word in error["message"], (word, error["message"])
    assert not any(secret in error["message"] for secret in SECRETS), error["message"]
    message: str = error["message"]
    return message


async def _put(client: RawClient, name: str, token: str) -> None:
    await client.ok("credential.put", passphrase=PASS, name=name, kind="static", config={"token": token}, replace=True)


async def _set_policy(client: RawClient, *rules: dict[str, Any]) -> None:
    assert await client.ok("policy.set", passphrase=PASS, policy={"rules": list(rules)}) == {"rules": len(rules)}


async def _ready(start_server: StartServer, *names: str) -> tuple[Served, RawClient]:
    served = await start_server()
    await served.ready(TOKEN_EX)
    admin = await served.connect()
    for name, token in zip(names, (TOKEN_A, TOKEN_B, TOKEN_SHARED), strict=False):
        await _put(admin, name, token)
    return served, admin


# -- in process, no root needed ----------------------------------------------------------------------


async def test_forbidden_answers_name_the_method_and_credential_and_follow_policy_changes(
    start_server: StartServer, audits: Audits
) -> None:
    served, admin = await _ready(start_server, "other")
    uid = os.getuid()
    conn = await served.connect()
    assert (await conn.ok("token.get", name="ex"))["token"] == TOKEN_EX  # no rules: the own uid gets everything

    await _set_policy(admin, {"credentials": ["ex"], "methods": ["get"]})
    assert (await conn.ok("token.get", name="ex"))["token"] == TOKEN_EX
    rule = "rule 1 (any process of the daemon's uid)"
    response = await conn.call("token.get", name="other")
    assert response.error is not None
    message = response.error.message
    assert (
        message
        == f"token.get of 'other' is not allowed for this process: {rule} does not allow 'other' (its credentials: ex)"
    )
    assert response.error.name == "FORBIDDEN"
    refusals = [
        (
            await conn.call("token.sign", name="ex", method="GET", url="https://api.binance.com/api/v3/account"),
            "token.sign of 'ex'",
        ),
        (await conn.call("token.watch", names=["ex"]), "token.watch of 'ex'"),
        (await conn.call("status"), "status is not allowed"),
    ]
    for answer, words in refusals:
        assert answer.error is not None and answer.error.name == "FORBIDDEN", answer
        assert words in answer.error.message and rule in answer.error.message
        assert not any(secret in answer.error.message for secret in SECRETS)
    assert (await conn.ok("hello", protocol=1))["peer"]["uid"] == uid  # hello is always open

    # A new policy holds on the same connection at once (the cached rule is dropped).
    await _set_policy(admin, {"credentials": ["oth*"], "methods": ["get", "status"]})
    assert (await conn.call("token.get", name="ex")).error.name == "FORBIDDEN"  # type: ignore[union-attr]
    assert (await conn.ok("token.get", name="other"))["token"] == TOKEN_A
    assert [c["name"] for c in (await conn.ok("status"))["credentials"]] == ["other"]  # only its rule's credentials

    # Locked, the policy is sealed: the own uid may say hello, see status and unlock; tokens say LOCKED.
    await conn.ok("vault.lock")
    assert (await conn.call("token.get", name="other")).error.name == "LOCKED"  # type: ignore[union-attr]
    assert (await conn.ok("status"))["state"] == "LOCKED"
    await conn.ok("vault.unlock", passphrase=PASS)
    assert (await conn.call("token.get", name="ex")).error.name == "FORBIDDEN"  # type: ignore[union-attr]

    await _set_policy(admin)  # no rules: ssh-agent's behaviour again
    assert (await conn.ok("token.get", name="ex"))["token"] == TOKEN_EX

    outcomes = {(m, c, o) for u, m, c, o, _ in audits if u == uid}
    assert {
        ("token.get", "ex", "ok"),
        ("token.get", "other", "FORBIDDEN"),
        ("token.sign", "ex", "FORBIDDEN"),
        ("token.watch", "ex", "FORBIDDEN"),
        ("status", None, "FORBIDDEN"),
        ("token.get", "other", "LOCKED"),
        ("policy.set", None, "ok"),
        ("vault.lock", None, "ok"),
    } <= outcomes
    tokens = {t for *_, t in audits if t is not None}
    assert tokens == {TOKEN_EX, TOKEN_A}  # only tokens handed out, for the fingerprint
    assert all(o == "ok" for _, m, _, o, t in audits if t is not None)


async def test_policy_set_checks_the_rules_and_policy_get_returns_them(start_server: StartServer) -> None:
    _, admin = await _ready(start_server)
    bad = {"rules": [{"credentials": ["x"], "methods": ["get"]}, {"uuid": 1, "methods": []}]}
    response = await admin.call("policy.set", passphrase=PASS, policy=bad)
    assert response.error is not None and response.error.name == "INVALID_PARAMS"
    assert response.error.message.startswith("policy: rule 2: unknown key 'uuid'")
    good = {"rules": [{"unit": "engine-*.service", "methods": ["watch", "get"], "credentials": ["a*"]}]}
    response = await admin.call("policy.set", passphrase="fake wrong passphrase", policy=good)
    assert response.error is not None and response.error.name == "BAD_PASSPHRASE"
    assert await admin.ok("policy.get", passphrase=PASS) == {"rules": []}
    assert await admin.ok("policy.set", passphrase=PASS, policy=good) == {"rules": 1}
    stored = await admin.ok("policy.get", passphrase=PASS)
    assert stored == {"rules": [{"unit": "engine-*.service", "credentials": ["a*"], "methods": ["get", "watch"]}]}
    assert Policy.from_config(stored) == Policy.from_config(good)
    await admin.ok("vault.lock")
    assert (await admin.call("policy.get", passphrase=PASS)).error.name == "LOCKED"  # type: ignore[union-attr]


async def test_a_watcher_hears_only_what_the_policy_in_force_allows(start_server: StartServer, audits: Audits) -> None:
    served, admin = await _ready(start_server)
    watcher = await served.connect()
    await watcher.ok("token.watch", names=["ex"])
    await _put(admin, "ex", "fake-token-policy-ex-5")
    pushed = await watcher.receive()
    assert isinstance(pushed, Notification) and pushed.params[0]["token"] == "fake-token-policy-ex-5"  # control

    await _set_policy(admin, {"credentials": ["ex"], "methods": ["get"]})  # watch no longer allowed
    await _put(admin, "ex", "fake-token-policy-ex-6")
    with trio.fail_after(10):  # the renewer publishes in a task of its own
        await audits.wait_for("token.updated", "ex", "FORBIDDEN")
    msgid = await watcher.request("hello", protocol=1)
    answer = await watcher.receive()
    assert isinstance(answer, Response) and answer.msgid == msgid, answer  # no notification came first


# -- engines in units, another uid, a handed-over connection (root) -----------------------------------


async def test_two_engines_in_two_units_get_different_answers_for_the_same_credential(
    start_server: StartServer, engine_cgroups: dict[str, Path], short_tmp: Path
) -> None:
    served, admin = await _ready(start_server, "alpha", "beta")
    await _set_policy(
        admin,
        {"unit": "engine-a.service", "credentials": ["alpha"], "methods": ["get"]},
        {"unit": "engine-b.*", "credentials": ["beta", "ex"], "methods": ["get", "status"]},
    )
    script = _script(short_tmp)
    asks = [HELLO, ["token.get", {"name": "alpha"}], ["token.get", {"name": "beta"}], ["status", {}]]
    base = {"socket": str(served.socket_path), "requests": asks}
    a = await run_engine(script, {**base, "cgroup": str(engine_cgroups["a"])})
    b = await run_engine(script, {**base, "cgroup": str(engine_cgroups["b"])})

    assert a[0]["result"]["peer"]["unit"] == "engine-a.service" and a[0]["result"]["peer"]["exe"] == PYTHON_EXE
    assert b[0]["result"]["peer"]["unit"] == "engine-b.service" and b[0]["result"]["peer"]["exe"] == PYTHON_EXE
    assert a[1]["result"]["token"] == TOKEN_A
    forbidden(a[2], "token.get of 'beta'", "rule 1 (unit engine-a.service) does not allow 'beta'")
    forbidden(a[3], "status", "rule 1 (unit engine-a.service) does not allow status")
    forbidden(b[1], "token.get of 'alpha'", "rule 2 (unit engine-b.*) does not allow 'alpha'")
    assert b[2]["result"]["token"] == TOKEN_B
    assert [c["name"] for c in b[3]["result"]["credentials"]] == ["beta", "ex"]

    # This test's own process is in neither unit: with rules, nothing matches it.
    response = await admin.call("token.get", name="alpha")
    assert response.error is not None and response.error.name == "FORBIDDEN"
    assert f"no rule matches uid {os.getuid()}" in response.error.message


async def test_another_uid_is_refused_at_accept_unless_a_rule_names_it_then_gets_exactly_its_share(
    start_server: StartServer, short_tmp: Path, audits: Audits, caplog: pytest.LogCaptureFixture
) -> None:
    _require_root()
    served, admin = await _ready(start_server, "shared-prices")
    _open_to_others(short_tmp, served.socket_path)
    script = _script(short_tmp)
    get_ex = {"socket": str(served.socket_path), "requests": [["token.get", {"name": "ex"}]]}

    assert (await run_engine(script, get_ex))[0]["result"]["token"] == TOKEN_EX, "positive control: the own uid"
    assert await run_engine(script, get_ex, as_nobody=True) == [{"closed": True, "received": 0}]
    assert "refused a connection from another user" in caplog.text and "uid=65534" in caplog.text
    assert (65534, "accept", None, "refused", None) in audits

    # A rule that names the uid but not this process (another unit) does not let it in either.
    await _set_policy(
        admin, {"uid": 65534, "unit": "engine-z.service", "credentials": ["shared-*"], "methods": ["get"]}
    )
    assert await run_engine(script, get_ex, as_nobody=True) == [{"closed": True, "received": 0}]

    await _set_policy(admin, {"uid": 65534, "credentials": ["shared-*"], "methods": ["get"]})
    asks = [
        HELLO,
        ["token.get", {"name": "shared-prices"}],
        ["token.get", {"name": "ex"}],
        ["status", {}],
        ["token.watch", {"names": ["shared-prices"]}],
        ["token.sign", {"name": "shared-prices", "method": "GET", "url": "https://api.binance.com/api/v3/account"}],
    ]
    out = await run_engine(script, {"socket": str(served.socket_path), "requests": asks}, as_nobody=True)
    assert out[0]["result"]["peer"]["uid"] == 65534
    assert out[1]["result"]["token"] == TOKEN_A
    forbidden(out[2], "token.get of 'ex'", "rule 1 (uid 65534) does not allow 'ex'")
    forbidden(out[3], "status", "rule 1 (uid 65534) does not allow status")
    forbidden(out[4], "token.watch of 'shared-prices'", "does not allow watch")
    forbidden(out[5], "token.sign of 'shared-prices'", "does not allow sign")
    assert len(out) == len(asks)

    # With rules, the own uid gets only what a rule gives it: here nothing.
    forbidden((await run_engine(script, get_ex))[0], "no rule matches uid 0")

    # Locked, the policy is sealed: another uid is refused at accept again.
    await admin.ok("vault.lock")
    assert await run_engine(script, get_ex, as_nobody=True) == [{"closed": True, "received": 0}]


async def test_a_connection_handed_to_another_process_keeps_its_connect_time_identity(
    start_server: StartServer, engine_cgroups: dict[str, Path], short_tmp: Path
) -> None:
    served, admin = await _ready(start_server, "alpha", "beta")
    await _set_policy(
        admin,
        {"unit": "engine-a.service", "credentials": ["alpha"], "methods": ["get"]},
        {"unit": "engine-b.service", "credentials": ["beta"], "methods": ["get"]},
    )
    script = _script(short_tmp)
    giver, taker = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with giver, taker:
        # Engine A connects, says hello, passes the connection over SCM_RIGHTS, and exits.
        a = await run_engine(
            script,
            {"socket": str(served.socket_path), "cgroup": str(engine_cgroups["a"]), "requests": [HELLO]}
            | {"send_fd": giver.fileno()},
            pass_fds=(giver.fileno(),),
        )
        a_peer = a[0]["result"]["peer"]
        assert a_peer["unit"] == "engine-a.service"
        # Engine B uses it: the daemon still sees engine A.
        asks = [HELLO, ["token.get", {"name": "alpha"}], ["token.get", {"name": "beta"}]]
        b = await run_engine(
            script,
            {"cgroup": str(engine_cgroups["b"]), "recv_fd": taker.fileno(), "requests": asks},
            pass_fds=(taker.fileno(),),
        )
    assert b[0]["result"]["peer"] == a_peer
    assert b[1]["result"]["token"] == TOKEN_A
    forbidden(b[2], "token.get of 'beta'", "rule 1 (unit engine-a.service)")
    # Positive control: engine B's own connection is judged as engine B.
    own = await run_engine(
        script, {"socket": str(served.socket_path), "cgroup": str(engine_cgroups["b"]), "requests": asks}
    )
    assert own[0]["result"]["peer"]["unit"] == "engine-b.service"
    forbidden(own[1], "token.get of 'alpha'", "rule 2 (unit engine-b.service)")
    assert own[2]["result"]["token"] == TOKEN_B


# -- vaultctl policy, end to end ----------------------------------------------------------------------

POLICY_FILE = """\
# engines on this desk
[[rule]]
unit = "engine-a.service"
credentials = ["ex"]
methods = ["get"]

[[rule]]
uid = 1001
credentials = ["shared-*"]
methods = ["get"]
"""


def test_vaultctl_policy_set_show_and_test(daemon: DaemonProcess, short_tmp: Path) -> None:
    daemon.start()
    daemon.ready(TOKEN_EX)
    uid = str(os.getuid())
    path = short_tmp / "policy.toml"
    path.write_text(POLICY_FILE)
    bad = short_tmp / "bad.toml"
    bad.write_text(POLICY_FILE.replace('methods = ["get"]\n', 'methods = ["get", "delete"]\n'))

    proc = daemon.ctl("policy", "set", str(bad), *daemon.pw(), check=False)
    assert proc.returncode == 2, proc.stderr
    assert (
        proc.stderr == f"vaultctl: {bad}: rule 1 (line 2): unknown method 'delete' in 'methods' "
        "(known: get, sign, watch, status, lock, admin)\n"
    )
    assert daemon.ctl("policy", "set", str(path), *daemon.pw()).stdout == "policy set: 2 rules\n"

    shown = daemon.ctl("policy", "show", *daemon.pw()).stdout
    assert shown.startswith('# rule 1\n[[rule]]\nunit = "engine-a.service"\ncredentials = ["ex"]\nmethods = ["get"]\n')
    assert Policy.from_toml(shown) == Policy.from_toml(POLICY_FILE)
    assert (
        json.loads(daemon.ctl("policy", "show", "--json", *daemon.pw()).stdout)
        == Policy.from_toml(POLICY_FILE).to_config()
    )

    def test(*args: str) -> subprocess.CompletedProcess[str]:
        return daemon.ctl("policy", "test", *args, *daemon.pw(), check=False)

    proc = test("--uid", uid, "--unit", "engine-a.service", "ex", "get")
    assert (proc.returncode, proc.stdout) == (0, "allow: rule 1 (unit engine-a.service) allows get on ex\n")
    proc = test("--uid", uid, "--unit", "engine-b.service", "--exe", "/usr/bin/x", "ex", "get")
    assert (proc.returncode, proc.stdout) == (
        1,
        f"deny: no rule matches uid {uid}, unit engine-b.service, exe /usr/bin/x\n",
    )
    proc = test("--uid", "1001", "shared-prices", "sign")
    assert (proc.returncode, proc.stdout) == (1, "deny: rule 2 (uid 1001) does not allow sign\n")
    proc = daemon.ctl("policy", "test", "--uid", uid, "ex", "get", "--passphrase-file", str(bad), check=False)
    assert proc.returncode == 1 and "BAD_PASSPHRASE" in proc.stderr
    # --file needs neither the daemon nor the passphrase.
    proc = daemon.ctl(
        "--socket",
        str(short_tmp / "nothing.sock"),
        "policy",
        "test",
        "--file",
        str(path),
        "--uid",
        "1001",
        "shared-x",
        "get",
        check=False,
    )
    assert (proc.returncode, proc.stdout) == (0, "allow: rule 2 (uid 1001) allows get on shared-*\n"), proc.stderr

    # The daemon decides as 'policy test' says: vaultctl runs in neither rule's reach.
    proc = daemon.ctl("get", "ex", check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "token.get of 'ex' is not allowed for this process: no rule matches uid" in proc.stderr
    assert "(FORBIDDEN)" in proc.stderr and TOKEN_EX not in proc.stderr
    assert (
        "allow"
        in daemon.ctl("policy", "test", "--uid", uid, "--unit", "engine-a.service", "ex", "get", *daemon.pw()).stdout
    )


async def test_a_name_the_policy_no_longer_allows_leaves_the_watch_and_the_others_go_on(
    start_server: StartServer, audits: Audits
) -> None:
    """Found by review: one subscription per connection, so a refused name ended the whole watch."""
    served, admin = await _ready(start_server, "other")
    watcher = await served.connect()
    await watcher.ok("token.watch", names=["ex", "other"])
    await _set_policy(admin, {"credentials": ["other"], "methods": ["watch", "get"]})  # ex no longer
    await _put(admin, "ex", "fake-token-policy-ex-7")
    with trio.fail_after(10):
        await audits.wait_for("token.updated", "ex", "FORBIDDEN")
    await _put(admin, "other", "fake-token-policy-other-8")
    with trio.fail_after(10):
        pushed = await watcher.receive()
    assert isinstance(pushed, Notification) and pushed.params[0]["name"] == "other", pushed
    assert served.vault.hub.watchers("ex") == 0 and served.vault.hub.watchers("other") == 1
