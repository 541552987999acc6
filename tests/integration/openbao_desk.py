"""A desk as README's "Many hosts" sets it up: a real OpenBao, a real vaultd, and engines that count errors.

:func:`configure` does step 1 of the README against a server of ``tests/openbao.py``;
:func:`add_upstream` step 3 (``vaultctl upstream add``, the secret_id wrapped unless told
otherwise); :class:`Engines` are threads that fetch and sign through the reference client in a
loop, as trading engines would, recording every error and every API key they were served.
Waits poll with a deadline: a real OpenBao cannot run on trio's virtual clock.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from vaultd_client import Client, VaultdError

from ..daemon_process import DaemonProcess
from ..openbao import _Api
from ..polling import wait_for

ROLE = "host-a"
#: README's policy: reads under desk/, and the two transit keys the transit tests use, by name.
POLICY = """
path "secret/data/desk/*" { capabilities = ["read"] }
path "transit/hmac/binance-desk" { capabilities = ["update"] }
path "transit/sign/binance-ed" { capabilities = ["update"] }
"""
SIGN_URL = "https://api.binance.com/api/v3/account"


def sign_record(api_key: str) -> dict[str, Any]:
    return {"scheme": "binance-hmac", "api_key": api_key, "secret": f"fake-secret-of-{api_key}"}


def configure(bao: _Api, *, token_ttl: str = "1h", token_max_ttl: str = "24h", enable: bool = True) -> str:
    """README step 1: AppRole (unless ``enable`` is false: a cluster has it), a read-only policy,
    role ``host-a``; its role_id."""
    if enable:
        bao.enable_approle()
    bao.write_policy("vaultd-host", POLICY)
    role_id, _ = bao.approle(ROLE, policies=["vaultd-host"], token_ttl=token_ttl, token_max_ttl=token_max_ttl)
    return role_id


def add_upstream(
    daemon: DaemonProcess, bao: _Api, address: str, role_id: str, *, wrapped: str | None = None, check: bool = True
) -> Any:
    """README step 3: ``vaultctl upstream add bao`` with a wrapped secret_id (a new one unless given)."""
    token = wrapped or bao.wrapped_secret_id(ROLE)
    settings = {"address": address, "auth": {"method": "approle", "role": ROLE, "role_id": role_id}}
    settings["auth"]["wrapped_secret_id"] = token
    daemon.secrets.update({role_id, token})
    return daemon.ctl(
        "upstream", "add", "bao", "--kind", "openbao", *daemon.pw(), stdin=json.dumps(settings), check=check
    )


def source(daemon: DaemonProcess, name: str, kind: str, path: str, refresh: float = 1) -> None:
    daemon.ctl("add", name, "--kind", kind, "--from", f"bao:{path}", "--refresh", str(refresh), *daemon.pw())


def described(daemon: DaemonProcess, name: str) -> dict[str, Any]:
    with daemon.client() as client:
        status = client.status()
    found = [c for c in status["credentials"] + status["upstreams"] if c["name"] == name]
    assert found, f"{name} is not in status"
    return found[0]


@dataclass
class Engines:
    """Threads that fetch ``token_name`` and sign with ``sign_name`` in a loop until stopped."""

    daemon: DaemonProcess
    token_name: str = "st"
    sign_name: str = "binance"
    count: int = 2
    errors: list[str] = field(default_factory=list)
    #: Every API key a signature carried, in the order served (per engine).
    keys: list[list[str]] = field(default_factory=list)
    tokens: list[list[str]] = field(default_factory=list)
    calls: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Engines:
        for n in range(self.count):
            self.keys.append([])
            self.tokens.append([])
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        wait_for(lambda: all(self.keys) and all(self.tokens), "every engine to be served once")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self, n: int) -> None:
        with Client(self.daemon.socket_path, timeout=5, cache=False) as client:
            while not self._stop.is_set():
                try:
                    token = client.token(self.token_name)
                    signed = client.sign(self.sign_name, "GET", SIGN_URL)
                except VaultdError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    time.sleep(0.01)
                    continue
                self.calls += 1
                if not self.tokens[n] or self.tokens[n][-1] != token.value:
                    self.tokens[n].append(token.value)
                key = signed.headers["X-MBX-APIKEY"]
                if not self.keys[n] or self.keys[n][-1] != key:
                    self.keys[n].append(key)
                time.sleep(0.002)

    def serving(self, key: str) -> bool:
        """Whether every engine's latest signature carries ``key``."""
        return all(keys and keys[-1] == key for keys in self.keys)
