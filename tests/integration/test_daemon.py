"""End to end: the real ``vaultd`` and ``vaultctl`` commands, the client library, real files."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from vaultd_client import Client, DaemonUnavailable, Locked
from vaultd_client.errors import BadPassphrase, InvalidParams, TooLarge, UnknownCredential

from ..daemon_process import BIN, PASS, DaemonProcess
from ..vaultfile_tools import with_header

TOKEN = "fake-token-e2e-1"


def test_operator_and_engine_end_to_end(daemon: DaemonProcess) -> None:
    daemon.start()
    assert "UNINITIALIZED" in daemon.ctl("status").stdout
    init = daemon.ctl("init", "--kdf-profile", "min", *daemon.pw())
    assert "locked" in init.stdout and "tests only" in init.stderr
    status = json.loads(daemon.ctl("status", "--json").stdout)
    assert status["state"] == "LOCKED" and status["kdf_profile"] == "min"
    assert any("tests only" in w for w in status["warnings"])
    daemon.ctl("unlock", *daemon.pw())
    daemon.ctl("add", "ex", "--kind", "static", *daemon.pw(), stdin=TOKEN + "\n")
    later = '{"token": "fake-json-token", "not_after": "2099-01-01T00:00:00Z", "type": "api-key"}'
    daemon.ctl("add", "ex2", "--kind", "static", *daemon.pw(), stdin=later)

    assert daemon.ctl("get", "ex").stdout == TOKEN + "\n"
    got = json.loads(daemon.ctl("get", "ex2", "--json").stdout)
    assert got["token"] == "fake-json-token" and got["type"] == "api-key" and got["expires_at"] == 4070908800.0

    listed = json.loads(daemon.ctl("list", "--json", *daemon.pw()).stdout)
    assert [(c["name"], c["kind"], c["state"]) for c in listed] == [
        ("ex", "static", "FRESH"),
        ("ex2", "static", "FRESH"),
    ]
    table = [line for line in daemon.ctl("status").stdout.splitlines() if line.startswith("  ")]
    assert [line.index("static") for line in table[1:]] == [table[0].index("KIND")] * 2, "columns misaligned"
    listed_text = daemon.ctl("list", *daemon.pw()).stdout  # what status does not show: settings, history
    assert "CREATED" in listed_text and "UPDATED" in listed_text and "type: api-key" in listed_text
    assert TOKEN not in listed_text and "fake-json-token" not in listed_text
    status_text = daemon.ctl("status", "--json").stdout
    assert TOKEN not in status_text and "fake-json-token" not in status_text

    with Client(daemon.socket_path, cache=False) as engine:  # the cache and a lock: tests/client
        token = engine.token("ex")
        assert token.value == TOKEN and token.headers == {"Authorization": f"Bearer {TOKEN}"}
        assert TOKEN not in repr(token)
        with pytest.raises(UnknownCredential):
            engine.token("nope")
        with pytest.raises(InvalidParams):
            engine.token("ex", min_ttl=-1)
        daemon.ctl("lock")
        with pytest.raises(Locked):
            engine.token("ex")
    refused = daemon.ctl("get", "ex", check=False)
    assert refused.returncode == 4 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "locked" in refused.stderr

    log = daemon.log
    assert TOKEN not in log and "fake-json-token" not in log and PASS not in log


def test_files_are_private_and_never_hold_a_token_in_the_clear(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready(TOKEN)
    daemon.ctl("add", "second", "--kind", "static", *daemon.pw(), stdin="fake-token-second\n")
    assert stat.S_IMODE(daemon.socket_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(daemon.socket_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.data_dir.stat().st_mode) == 0o700
    for name in ("vault", "vault.bak"):
        path = daemon.data_dir / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        content = path.read_bytes()
        for secret in (TOKEN, "fake-token-second", PASS):
            assert secret.encode() not in content, f"{secret} in {name}"
    # vault.bak is the previous generation: it opens and holds one credential less.
    assert (daemon.data_dir / "vault.bak").read_bytes() != (daemon.data_dir / "vault").read_bytes()


def test_a_second_daemon_on_the_same_socket_is_refused(daemon: DaemonProcess, short_tmp: Path) -> None:
    daemon.start()
    second = subprocess.run([BIN / "vaultd"], env=daemon.env, capture_output=True, text=True, timeout=30, check=False)
    assert second.returncode == 1
    assert "already" in second.stderr and str(daemon.socket_path.parent) in second.stderr
    assert daemon.client().status()["state"] == "UNINITIALIZED"


def test_a_second_daemon_on_the_same_data_folder_is_refused(daemon: DaemonProcess) -> None:
    daemon.start()
    env = {**daemon.env, "VAULTD_SOCKET": str(daemon.root / "other.sock")}
    second = subprocess.run([BIN / "vaultd"], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert second.returncode == 1 and "data folder" in second.stderr


def test_a_stale_socket_file_is_replaced(daemon: DaemonProcess) -> None:
    daemon.socket_path.parent.mkdir(mode=0o700)
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(daemon.socket_path))  # bound, never listening, then abandoned
    dead.close()
    assert daemon.socket_path.exists()
    daemon.start()
    assert daemon.client().status()["state"] == "UNINITIALIZED"


def test_something_else_at_the_socket_path_is_left_alone(daemon: DaemonProcess) -> None:
    daemon.socket_path.parent.mkdir(mode=0o700)
    daemon.socket_path.write_text("not a socket")
    proc = subprocess.run([BIN / "vaultd"], env=daemon.env, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1 and "is not a socket" in proc.stderr
    assert daemon.socket_path.read_text() == "not a socket"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_it_cleanly(daemon: DaemonProcess, sig: int) -> None:
    daemon.start()
    daemon.ready()
    assert daemon.stop(sig) == 0
    assert not daemon.socket_path.exists()
    assert "locking the vault and stopping" in daemon.log
    daemon.start()  # and it comes back, LOCKED, with its credentials
    assert daemon.client().status()["state"] == "LOCKED"
    daemon.ctl("unlock", *daemon.pw())
    assert daemon.ctl("get", "ex").stdout.strip() == "fake-token-e2e-1"


def test_environment_moves_socket_and_data(short_tmp: Path) -> None:
    custom = short_tmp / "custom.sock"
    proc = DaemonProcess(short_tmp, VAULTD_SOCKET=str(custom), XDG_DATA_HOME=str(short_tmp / "elsewhere"))
    proc.start()
    try:
        proc.ctl("init", "--kdf-profile", "min", *proc.pw())
        assert custom.exists()
        assert (short_tmp / "elsewhere" / "vaultd" / "vault").exists()
        assert Client(custom).status()["vault_path"] == str(short_tmp / "elsewhere" / "vaultd" / "vault")
    finally:
        assert proc.stop() == 0


def _flip(data: bytes, offset: int) -> bytes:
    damaged = bytearray(data)
    damaged[offset] ^= 0x20
    return bytes(damaged)


def test_damaged_vault_files_fail_unlock_clearly_and_change_nothing(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready()
    good = (daemon.data_dir / "vault").read_bytes()
    daemon.ctl("lock")
    hostile_kdf = with_header(good, memlimit=2**42)
    cases = {
        "flipped body byte": (_flip(good, len(good) - 20), "wrong passphrase, or the vault file is damaged"),
        "flipped header byte": (_flip(good, 40), "vault"),
        "truncated": (good[: len(good) // 2], "truncated"),
        "truncated by one byte": (good[:-1], "wrong passphrase, or the vault file is damaged"),
        "hostile KDF header": (hostile_kdf, "memlimit"),
        "unknown version": (with_header(good, version=9), "unsupported vault format version 9"),
    }
    for label, (content, words) in cases.items():
        (daemon.data_dir / "vault").write_bytes(content)
        result = daemon.ctl("unlock", *daemon.pw(), check=False)
        assert result.returncode == 1, label
        assert result.stderr.count("\n") == 1 and words in result.stderr, (label, result.stderr)
        assert (daemon.data_dir / "vault").read_bytes() == content, label
        assert daemon.client().status()["state"] == "LOCKED", label
    wrong = daemon.root / "wrong"
    wrong.write_text("a wrong passphrase\n")
    wrong.chmod(0o600)
    (daemon.data_dir / "vault").write_bytes(good)
    result = daemon.ctl("unlock", "--passphrase-file", str(wrong), check=False)
    assert result.returncode == 1 and "BAD_PASSPHRASE" in result.stderr
    daemon.ctl("unlock", *daemon.pw())
    assert daemon.ctl("get", "ex").stdout.strip() == "fake-token-e2e-1"


def test_vaultctl_refuses_bad_input_with_one_clear_line(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready()
    cases = [
        (("add", "y", "--kind", "static", *daemon.pw()), "", 2, "nothing on stdin"),
        (("add", "y", "--kind", "static", *daemon.pw()), "{not json", 2, "not valid JSON"),
        (("add", "y", "--kind", "static", *daemon.pw()), '{"token": "t", "colour": 1}', 1, "unknown field"),
        (("add", "ex", "--kind", "static", *daemon.pw()), "fake-again", 1, "ALREADY_EXISTS"),
        (("add", "bad/name", "--kind", "static", *daemon.pw()), "fake", 1, "credential names"),
        (("add", "y", "--kind", "static", "--passphrase-fd", "0"), "fake", 2, "stdin carries the credential"),
        (("unlock", "--passphrase-file", "/nonexistent"), None, 2, "cannot read the passphrase file"),
        (("unlock",), None, 2, "no terminal"),
        (("get", "missing"), None, 1, "UNKNOWN_CREDENTIAL"),
        (("get", "ex", "--min-ttl", "-5"), None, 1, "INVALID_PARAMS"),
        (("init", "--kdf-profile", "min", *daemon.pw()), None, 1, "ALREADY_INITIALIZED"),
    ]
    for args, stdin, code, words in cases:
        result = daemon.ctl(*args, stdin=stdin, check=False)
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.startswith("vaultctl: ") and result.stderr.count("\n") == 1, (args, result.stderr)
        assert words in result.stderr, (args, result.stderr)
    assert daemon.ctl("get", "ex").stdout.strip() == "fake-token-e2e-1", "nothing was lost"


def test_wrong_passphrase_for_admin_calls(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready()
    wrong = daemon.root / "wrong"
    wrong.write_text("a wrong passphrase\n")
    wrong.chmod(0o600)
    result = daemon.ctl("rm", "ex", "--passphrase-file", str(wrong), check=False)
    assert result.returncode == 1 and "BAD_PASSPHRASE" in result.stderr
    with Client(daemon.socket_path) as client, pytest.raises(BadPassphrase):
        client.unlock("a wrong passphrase")
    daemon.ctl("rm", "ex", *daemon.pw())
    assert daemon.ctl("get", "ex", check=False).returncode == 1


def test_passphrase_from_an_inherited_fd(daemon: DaemonProcess) -> None:
    daemon.start()
    read_end, write_end = os.pipe()
    os.write(write_end, PASS.encode() + b"\n")
    os.close(write_end)
    try:
        proc = subprocess.run(
            [BIN / "vaultctl", "init", "--kdf-profile", "min", "--passphrase-fd", str(read_end)],
            env=daemon.env,
            pass_fds=(read_end,),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(read_end)
    assert proc.returncode == 0, proc.stderr
    daemon.ctl("unlock", *daemon.pw())


def test_no_daemon_is_exit_3_naming_the_socket(daemon: DaemonProcess) -> None:
    result = daemon.ctl("status", check=False)
    assert result.returncode == 3 and str(daemon.socket_path) in result.stderr
    with pytest.raises(DaemonUnavailable, match=str(daemon.socket_path)):
        daemon.client().status()


def test_client_reconnects_after_a_daemon_restart(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready()
    with Client(daemon.socket_path, cache=False) as engine, Client(daemon.socket_path) as cached:
        assert engine.token("ex").value == cached.token("ex").value == "fake-token-e2e-1"
        daemon.stop()
        daemon.start()
        assert engine.status()["state"] == "LOCKED"  # the stale connection was replaced
        with pytest.raises(Locked):
            engine.token("ex")
        assert cached.token("ex").value == "fake-token-e2e-1"  # a token it holds outlives the restart


@pytest.mark.parametrize("command", [["vaultd", "--help"], ["vaultctl", "--help"], ["vaultctl", "add", "--help"]])
def test_help_helps(command: list[str]) -> None:
    proc = subprocess.run([BIN / command[0], *command[1:]], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0 and "usage:" in proc.stdout
    assert len(proc.stdout.splitlines()) > 8


def test_the_start_up_line_names_where_the_audit_log_goes(daemon: DaemonProcess) -> None:
    # A throwaway daemon (--data-dir) still writes its audit log to the state folder: the
    # operator must be able to see where, and --help must say how to move it.
    daemon.start()
    daemon.ready()
    line = next(line for line in daemon.log.splitlines() if "listening on" in line)
    assert "audit log " in line
    proc = subprocess.run([BIN / "vaultd", "--help"], capture_output=True, text=True, timeout=30, check=False)
    assert "XDG_STATE_HOME" in proc.stdout and "--audit-log in a throwaway folder" in " ".join(proc.stdout.split())


def test_start_up_is_quick_enough_to_poll(daemon: DaemonProcess) -> None:
    """Not a timing assertion: the daemon must answer within the fixture's generous wait."""
    start = time.monotonic()
    daemon.start()
    assert daemon.client().hello()["protocol"] == 1
    assert time.monotonic() - start < 20


def test_start_removes_temp_files_an_interrupted_write_left(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready()
    daemon.stop()
    leftover = daemon.data_dir / ".vault.tmp-0badc0ffee00"
    leftover.write_bytes(b"half a vault")
    daemon.start()
    assert not leftover.exists()
    assert "removed a temp file left by an interrupted write" in daemon.log
    daemon.ctl("unlock", *daemon.pw())
    assert daemon.ctl("get", "ex").stdout.strip() == "fake-token-e2e-1"


def test_running_out_of_file_descriptors_does_not_kill_the_daemon(daemon: DaemonProcess) -> None:
    daemon.start(nofile=48)
    daemon.ready()
    held = []
    try:
        for _ in range(80):  # more than it has fds for
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(daemon.socket_path))
            held.append(sock)
        time.sleep(0.5)  # another process: let it hit EMFILE a few times
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while True:  # it accepts again once fds are free
        try:
            assert daemon.ctl("get", "ex").stdout.strip() == "fake-token-e2e-1"
            break
        except AssertionError:
            assert time.monotonic() < deadline, daemon.log
            time.sleep(0.1)
    assert "accept failed (Too many open files)" in daemon.log


def test_message_size_limit_and_the_client_after_a_refusal(daemon: DaemonProcess) -> None:
    daemon.start("--max-message-size", "1024")
    daemon.ready()
    with Client(daemon.socket_path) as client:
        with pytest.raises(TooLarge):
            client.call("credential.put", {"passphrase": PASS, "name": "big", "kind": "static",
                                           "config": {"token": "x" * 2000}})  # fmt: skip
        assert client.token("ex").value == "fake-token-e2e-1", "the client reconnects after the daemon closed"


def test_explicit_socket_flags(daemon: DaemonProcess) -> None:
    path = daemon.root / "flag.sock"
    daemon.start("--socket", str(path), wait=False)
    daemon.socket_path = path
    daemon.wait_ready()
    assert json.loads(daemon.ctl("--socket", str(path), "status", "--json").stdout)["socket"] == str(path)
    assert daemon.ctl("status", check=False).returncode == 3, "the default path is not in use"


def test_daemon_starts_on_a_hostile_vault_file_and_stays_up(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready()
    daemon.stop()
    good = (daemon.data_dir / "vault").read_bytes()
    hostile = with_header(good, salt=3 * 10**9)  # an integer where bytes belong
    (daemon.data_dir / "vault").write_bytes(hostile)
    daemon.start()
    assert daemon.client().status()["state"] == "LOCKED"
    result = daemon.ctl("unlock", *daemon.pw(), check=False)
    assert result.returncode == 1 and "VAULT_DAMAGED" in result.stderr and "'salt' is not bytes" in result.stderr
    assert (daemon.data_dir / "vault").read_bytes() == hostile


def test_the_readme_demo_runs_and_checks_itself() -> None:
    proc = subprocess.run([BIN / "vaultctl", "demo"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo OK" in proc.stdout and "renewed:" in proc.stdout and "the watcher hears: locked" in proc.stdout
