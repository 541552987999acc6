"""A real ``vaultd`` process on throwaway folders, and ``vaultctl`` runs against it."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from vaultd_client import Client, VaultdError

BIN = Path(sys.executable).parent
PASS = "fake passphrase 1"


class DaemonProcess:
    """``vaultd`` with XDG_RUNTIME_DIR and XDG_DATA_HOME under ``root``."""

    def __init__(self, root: Path, **env: str) -> None:
        self.root = root
        (root / "run").mkdir(mode=0o700, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if k not in ("VAULTD_SOCKET", "XDG_DATA_HOME")}
        self.env.update(
            {
                "XDG_RUNTIME_DIR": str(root / "run"),
                "XDG_DATA_HOME": str(root / "data"),
                "XDG_STATE_HOME": str(root / "state"),
                **env,
            }
        )
        self.socket_path = Path(self.env.get("VAULTD_SOCKET") or root / "run" / "vaultd" / "vaultd.sock")
        self.data_dir = Path(self.env["XDG_DATA_HOME"]) / "vaultd"
        self.audit_log = Path(self.env["XDG_STATE_HOME"]) / "vaultd" / "audit.log"
        #: Every secret given to this daemon (passphrases, what `vaultctl add` read): none may
        #: ever appear in its log or its audit log (checked when the test ends).
        self.secrets: set[str] = {PASS}
        self.passphrase_file = root / "passphrase"
        self.passphrase_file.write_text(PASS + "\n")
        self.passphrase_file.chmod(0o600)  # vaultctl warns about a passphrase file others can read
        self.log_path = root / "vaultd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *args: str, wait: bool = True, nofile: int | None = None) -> DaemonProcess:
        """Start vaultd; ``nofile`` sets its open-files limit (soft and hard)."""

        def limit_fds() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [BIN / "vaultd", *args],
                env=self.env,
                stderr=log,
                stdout=log,
                preexec_fn=limit_fds,  # noqa: PLW1509 - setrlimit only
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with Client(self.socket_path, timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"vaultd exited with {self.proc.returncode}:\n{self.log}")
                try:
                    client.hello("pytest")
                    return
                except VaultdError:
                    time.sleep(0.02)
        raise AssertionError(f"vaultd did not answer within {timeout} s:\n{self.log}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=20)
        self.proc = None
        return code

    @property
    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def client(self) -> Client:
        return Client(self.socket_path)

    def ctl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run vaultctl; with ``check``, fail the test unless it exits 0."""
        if args and args[0] == "add" and stdin:
            self.secrets.update(_secret_values(stdin))
        proc = subprocess.run(
            [BIN / "vaultctl", *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            start_new_session=True,  # no controlling terminal, as under CI or cron
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"vaultctl {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc

    def pw(self) -> tuple[str, str]:
        return ("--passphrase-file", str(self.passphrase_file))

    def ready(self, token: str = "fake-token-e2e-1") -> None:
        """Init (MIN profile), unlock and store credential 'ex'."""
        self.ctl("init", "--kdf-profile", "min", *self.pw())
        self.ctl("unlock", *self.pw())
        self.ctl("add", "ex", "--kind", "static", *self.pw(), stdin=token + "\n")

    def leaked(self) -> list[str]:
        """The secrets that appear in the daemon's log or its audit log (should be none)."""
        texts = [self.log] + [path.read_text(errors="replace") for path in self.audit_log.parent.glob("audit.log*")]
        return sorted(secret for secret in self.secrets if any(secret in text for text in texts))


def _secret_values(stdin: str) -> set[str]:
    """What `vaultctl add` was given: the bare token, or every string of 8+ characters in its JSON."""
    text = stdin.strip()
    try:
        config = json.loads(text)
    except ValueError:
        return {text} if len(text) >= 8 else set()
    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, str) and len(value) >= 8 and not value.startswith(("http://", "https://")):
            found.add(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(config)
    return found


class FakeExchangeProcess:
    """``python -m vaultd._fake_exchange`` in its own process, driven through ``/_control``."""

    def __init__(self, expires_in: float = 900.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vaultd._fake_exchange", "--expires-in", str(expires_in)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def control(self, **changes: Any) -> dict[str, Any]:
        request = urllib.request.Request(self.url + "/_control", data=json.dumps(changes).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            result: dict[str, Any] = json.loads(answer.read())
            return result

    def calls(self, path: str = "/oauth/token") -> int:
        return int(self.control()["calls"].get(path, 0))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
