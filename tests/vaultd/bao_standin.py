"""A stand-in for OpenBao's HTTP API, for tests on trio's virtual clock.

The real server cannot run under trio's ``autojump_clock``: the clock would jump ahead while a
task waits for its answer, and a 2/3-TTL renewal of a 24-hour copy cannot be waited for in real
time. This stand-in has :class:`vaultd._bao.BaoClient`'s methods over an in-memory KV v2 store,
with the failures a test scripts (down, a revoked token, a refused login, a hanging read), and
records every call. The same paths run against the real ``bao`` binary in
``tests/integration/test_openbao_*.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from vaultd import _upstream
from vaultd._bao import (
    BaoForbidden,
    BaoNotFound,
    BaoRefused,
    BaoToken,
    BaoUnavailable,
    BaoWrapInvalid,
    KvVersion,
    WrapInfo,
)
from vaultd._secret import Secret

ROLE_ID, SECRET_ID = "fake-role-id", "fake-secret-id"


@dataclass
class StandInBao:
    """One fake OpenBao server shared by every client the daemon makes of it."""

    #: path -> versions (data, or None once deleted/destroyed), version 1 first.
    kv: dict[str, list[dict[str, Any] | None]] = field(default_factory=dict)
    token_ttl: float = 3600.0
    max_ttl: float = 4 * 3600.0
    #: Set to make every call fail as OpenBao down would.
    down: bool = False
    #: Set to make KV reads wait until the event is set (a hanging server).
    hang: trio.Event | None = None
    refuse_login: bool = False
    #: Set to make logins wait until the event is set.
    hang_login: trio.Event | None = None
    #: The version reads answer with when set (a standby behind the leader).
    lag_to: int | None = None
    #: Transit keys the role's policy does not allow (403 with a valid token).
    denied: set[str] = field(default_factory=set)
    #: Bumped by :meth:`rebuild`: part of each version's created_time.
    generation: int = 1
    calls: list[tuple[str, float]] = field(default_factory=list)
    wraps: dict[str, str] = field(default_factory=dict)
    _valid: dict[str, float] = field(default_factory=dict)  # token -> max-TTL end
    _ids: Iterator[int] = field(default_factory=itertools.count)

    # -- the operator's side -----------------------------------------------------------------

    def put(self, path: str, data: dict[str, Any]) -> int:
        self.kv.setdefault(path, []).append(dict(data))
        return len(self.kv[path])

    def rebuild(self) -> None:
        """An OpenBao rebuilt from nothing: every record gone, versions start again at 1."""
        self.kv.clear()
        self.generation += 1

    def delete(self, path: str) -> None:
        self.kv[path][-1] = None

    def revoke_all(self) -> None:
        self._valid.clear()

    def logins(self) -> int:
        return sum(1 for name, _ in self.calls if name == "login")

    def wrap_secret_id(self, creation_path: str) -> str:
        token = f"fake-wrap-{next(self._ids)}"
        self.wraps[token] = creation_path
        return token

    # -- BaoClient's methods -----------------------------------------------------------------

    def _call(self, name: str) -> None:
        self.calls.append((name, trio.current_time()))
        if self.down:
            raise BaoUnavailable("connection refused (stand-in)")

    def _check(self, token: Secret) -> None:
        if trio.current_time() >= self._valid.get(token.reveal_str(), -1.0):
            raise BaoForbidden("permission denied (stand-in)", 403)

    async def aclose(self) -> None:
        return None

    async def login_approle(self, mount: str, role_id: Secret, secret_id: Secret) -> BaoToken:
        self._call("login")
        if self.hang_login is not None:
            await self.hang_login.wait()
        if self.refuse_login or role_id.reveal_str() != ROLE_ID or secret_id.reveal_str() != SECRET_ID:
            raise BaoRefused("invalid secret id (stand-in)", 400)
        token = f"fake-bao-token-{next(self._ids)}"
        self._valid[token] = trio.current_time() + self.max_ttl
        return BaoToken(Secret(token), min(self.token_ttl, self.max_ttl), True, "acc", ("host",))

    async def renew_self(self, token: Secret, increment: float | None = None) -> BaoToken:
        self._call("renew")
        self._check(token)
        left = self._valid[token.reveal_str()] - trio.current_time()
        return BaoToken(Secret(token.reveal()), min(increment or self.token_ttl, left), True, "acc", ("host",))

    async def revoke_self(self, token: Secret) -> None:
        self._call("revoke")
        self._check(token)
        del self._valid[token.reveal_str()]

    def live_tokens(self) -> int:
        return sum(1 for end in self._valid.values() if end > trio.current_time())

    async def lookup_wrapping(self, wrapping_token: Secret) -> WrapInfo:
        self._call("lookup")
        path = self.wraps.get(wrapping_token.reveal_str())
        if path is None:
            raise BaoWrapInvalid("wrapping token is not valid or does not exist (stand-in)", 400)
        return WrapInfo(path, "2026-12-06T00:00:00Z", 300)

    async def unwrap(self, wrapping_token: Secret) -> dict[str, Any]:
        self._call("unwrap")
        if self.wraps.pop(wrapping_token.reveal_str(), None) is None:
            raise BaoWrapInvalid("wrapping token is not valid or does not exist (stand-in)", 400)
        return {"secret_id": SECRET_ID, "secret_id_accessor": "acc"}

    async def transit_hmac(self, token: Secret, key: str, data: bytes, *, algorithm: str = "sha2-256") -> bytes:
        """HMAC-SHA256 under the key ``fake-transit-key`` (a stand-in: the real one is tested in
        tests/integration/test_openbao_e2e.py); waits like a hanging server while ``hang`` is set."""
        self._call("hmac")
        self._check(token)
        if key in self.denied:
            raise BaoForbidden("1 error occurred: permission denied (stand-in)", 403)
        if self.hang is not None:
            await self.hang.wait()
        return hmac.new(b"fake-transit-key", data, hashlib.sha256).digest()

    async def kv_read(self, token: Secret, mount: str, path: str) -> KvVersion:
        self._call("read")
        self._check(token)
        if self.hang is not None:
            await self.hang.wait()
        versions = self.kv.get(path)
        if not versions:
            raise BaoNotFound("not found (stand-in)")
        number = len(versions) if self.lag_to is None else self.lag_to
        data = versions[number - 1]
        if data is None:
            raise BaoNotFound("deleted (stand-in)", deleted=True, version=number)
        return KvVersion(dict(data), number, f"2026-12-0{self.generation}T00:00:{number:02d}Z")


@contextmanager
def serving(monkeypatch: pytest.MonkeyPatch, bao: StandInBao) -> Iterator[StandInBao]:
    """Every upstream the daemon makes talks to ``bao`` instead of a real server."""
    monkeypatch.setattr(_upstream.UpstreamConfig, "client", lambda self: bao)
    yield bao


def upstream_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "address": "http://127.0.0.1:8200",
        "auth": {"method": "approle", "role": "host-a", "role_id": ROLE_ID, "secret_id": SECRET_ID},
    }
    config.update(overrides)
    return config
