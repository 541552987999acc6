"""``vaultctl demo``: the whole operator and engine story on a throwaway vault, narrated.

Starts a real daemon on a temporary socket and data folder, drives it with the real
``vaultctl`` commands and the client library, and checks each outcome as it goes, so a
demo that prints success has shown the feature working. Uses the ``min`` KDF profile so
it runs in a second; that profile is for tests and demos only. The renewal part runs a
fake exchange (fake credentials only) on 127.0.0.1 in a process of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from vaultd_client import Client, Locked, VaultdError, WatchEvent

__all__ = ["run_demo"]

_TOKEN = "demo-token-0123456789-not-a-real-secret"
_NAME = "demo-exchange"


class _DemoFailed(Exception):
    pass


def _say(text: str) -> None:
    print(text, flush=True)


def _vaultctl(env: dict[str, str], *args: str, stdin: str | None = None, expect: int = 0, quiet: bool = False) -> str:
    if not quiet:
        _say("$ vaultctl " + " ".join(args) + (f"   # stdin: {stdin.strip()}" if stdin else ""))
    proc = subprocess.run(
        [sys.executable, "-m", "vaultd.ctl", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    for line in (proc.stdout + proc.stderr).splitlines():
        _say("  " + line)
    if proc.returncode != expect:
        raise _DemoFailed(f"vaultctl {args[0]} exited {proc.returncode}, expected {expect}")
    return proc.stdout


def _wait_for_daemon(client: Client, daemon: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise _DemoFailed(f"vaultd exited at start with status {daemon.returncode}")
        try:
            client.hello("vaultctl-demo")
            return
        except VaultdError:
            time.sleep(0.05)
    raise _DemoFailed("vaultd did not start listening within 15 s")


def run_demo() -> int:
    """Run the demo; 0 when every step behaved as it should."""
    root = Path(tempfile.mkdtemp(prefix="vaultd-demo-"))
    env = {k: v for k, v in os.environ.items() if k != "VAULTD_SOCKET"}
    env.update(XDG_RUNTIME_DIR=str(root / "run"), XDG_DATA_HOME=str(root / "data"), XDG_STATE_HOME=str(root / "state"))
    (root / "run").mkdir(mode=0o700)
    socket_path = root / "run" / "vaultd" / "vaultd.sock"
    passphrase_file = root / "passphrase"
    passphrase_file.write_text("demo passphrase, not a real one\n")
    passphrase_file.chmod(0o600)
    _say(f"vaultd demo: a throwaway daemon and vault in {root}\n")
    _say("$ vaultd &")
    daemon = subprocess.Popen([sys.executable, "-m", "vaultd"], env=env, stderr=subprocess.DEVNULL)
    client = Client(socket_path)
    try:
        _wait_for_daemon(client, daemon)
        _say(f"  listening on {socket_path}\n")
        pw = ("--passphrase-file", str(passphrase_file))
        _vaultctl(env, "status")
        _say("\n# 'min' keeps the demo fast; real vaults use the default, moderate")
        _vaultctl(env, "init", "--kdf-profile", "min", *pw)
        _vaultctl(env, "unlock", *pw)
        _vaultctl(env, "add", _NAME, "--kind", "static", *pw, stdin=f'{{"token": "{_TOKEN}"}}\n')
        _say("\n# a trading engine, with the client library:")
        _say(f">>> Client().token({_NAME!r}).headers")
        token = client.token(_NAME)
        _say(f"  {dict(token.headers)}")
        if token.value != _TOKEN:
            raise _DemoFailed("the engine got a different token from the one stored")
        _vaultctl(env, "get", _NAME)
        vault_bytes = (root / "data" / "vaultd" / "vault").read_bytes()
        sealed = _TOKEN.encode() not in vault_bytes
        _say(f"\n# the vault file ({len(vault_bytes)} bytes) holds the token in the clear: {not sealed}")
        if not sealed:
            raise _DemoFailed("the token is in the vault file in the clear")
        watcher = _renewing_live(env, pw, client)
        _say("\n# an operator pulls the emergency brake:")
        _vaultctl(env, "lock")
        locked = next((event for event in watcher if event.kind == "locked"), None)  # renewals may come first
        _say(f"  the watcher hears: {locked.kind if locked else 'nothing'}")
        if locked is None or locked.kind != "locked":
            raise _DemoFailed("the watcher did not hear the lock")
        _say(f">>> Client().token({_NAME!r})")
        try:
            client.token(_NAME)
        except Locked as exc:
            _say(f"  refused: vaultd_client.errors.Locked: {exc}")
        else:
            raise _DemoFailed("a locked vault served a token")
        _vaultctl(env, "get", _NAME, expect=4)
    except (_DemoFailed, VaultdError, subprocess.SubprocessError, OSError) as exc:
        _say(f"\ndemo FAILED: {exc}")
        return 1
    finally:
        client.close()
        _stop_exchange()
        _say("\n$ kill -TERM %vaultd")
        daemon.send_signal(signal.SIGTERM)
        try:
            status = daemon.wait(timeout=15)
            _say(f"  vaultd exited with status {status}; socket removed: {not socket_path.exists()}")
        except subprocess.TimeoutExpired:
            daemon.kill()
            _say("  vaultd did not stop within 15 s and was killed")
        shutil.rmtree(root, ignore_errors=True)
    _say("\ndemo OK: stored sealed, served over the socket, renewed live, refused once locked.")
    return 0


_EXCHANGE: list[subprocess.Popen[str]] = []


def _stop_exchange() -> None:
    for proc in _EXCHANGE:
        proc.kill()
        proc.wait(timeout=10)
    _EXCHANGE.clear()


def _control(url: str, **changes: object) -> dict[str, object]:
    # S310: the URL is our own fake exchange's, http://127.0.0.1:PORT, built above.
    request = urllib.request.Request(url + "/_control", data=json.dumps(changes).encode(), method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        result: dict[str, object] = json.loads(answer.read())
        return result


def _renewing_live(env: dict[str, str], pw: tuple[str, str], client: Client) -> Iterator[WatchEvent]:
    """An OAuth2 credential renewing from a fake exchange (3 s tokens, 2 s after the expiry margin);
    a watcher prints each renewal."""
    _say("\n# a fake exchange on 127.0.0.1 issues 3-second access tokens and rotates refresh tokens")
    exchange = subprocess.Popen(
        [sys.executable, "-m", "vaultd._fake_exchange", "--expires-in", "3"], stdout=subprocess.PIPE, text=True
    )
    _EXCHANGE.append(exchange)
    assert exchange.stdout is not None
    url = f"http://127.0.0.1:{int(exchange.stdout.readline())}"
    config = {
        "token_url": url + "/oauth/token",
        "grant_type": "refresh_token",
        "client_id": "fake-client",
        "client_secret": "fake-secret",
        "refresh_token": _control(url, new_refresh_token=True)["refresh_token"],
    }
    _say(f'$ vaultctl add demo-oauth --kind oauth2 ...   # stdin: {{"token_url": "{url}/oauth/token", ...}}')
    _vaultctl(env, "add", "demo-oauth", "--kind", "oauth2", *pw, stdin=json.dumps(config), quiet=True)
    _say("\n# an engine follows it live, without polling:")
    _say(">>> for event in Client().watch(['demo-oauth']): ...")
    watcher = client.watch(["demo-oauth"], timeout=20)
    seen: set[str] = set()
    for event in watcher:
        if event.kind != "updated" or event.token is None:
            raise _DemoFailed(f"unexpected watch event {event.kind}")
        ttl = (event.token.expires_at or 0) - time.time()
        _say(f"  renewed: {event.token.value[:14]}... valid {ttl:.1f} s more")
        seen.add(event.token.value)
        if len(seen) == 3:
            break
    _vaultctl(env, "status")
    return iter(watcher)
