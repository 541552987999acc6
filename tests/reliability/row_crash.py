"""Row: SIGKILL the daemon at random moments while rotating refresh tokens renew; lose nothing.

A real ``vaultd`` renews several ``oauth2`` credentials against a fake exchange (in its own
process) whose access tokens live one second and whose refresh tokens rotate on every use,
with strict reuse detection (presenting a rotated token revokes its whole family). A client
fetches tokens all the while. At a random moment the daemon is SIGKILLed, then restarted and
unlocked; 10 times in the short mode, 200 in the full one, 1,000 in the soak.

The exchange is :class:`vaultd._fake_exchange.FakeExchange` plus a record of each family's
chain of refresh tokens and of which refresh token came with which access token, so that
after every kill the row can judge exactly what the daemon had committed. For each kill:

- the vault opens with the passphrase (and ``vault.bak`` too, when there is one);
- its generation is not below any generation the file had before (``generation checks``),
  and after the restart ``status`` reports at least that;
- for each credential, with ``stored`` the refresh token in the file and ``current`` the
  newest of its family at the exchange:

  * ``stored == current``: committed. The restarted daemon must renew with it (FRESH, never
    NEEDS_REAUTH).
  * ``stored`` is the one just before ``current``, and no access token that came with
    ``current`` was ever served: the kill fell between the exchange rotating and the vault
    write (the answer was on the wire, or the write had not finished). Nothing committed
    was lost; this is the window every client of a rotating endpoint has, counted as
    ``rotation in flight``. With strict reuse detection the restarted daemon's next attempt
    revokes the family (NEEDS_REAUTH, one call), and the row re-logs in (a new family, as an
    operator would).

**Data lost** (``Row.lost``, one per occurrence): the vault does not open or a restart does
not unlock it; its generation went back; a credential's stored refresh token is older than
one the daemon had served an access token from (it broke write-ahead), or more than one
rotation behind the exchange, or not of its family, or its family was revoked without a
rotation in flight; or a committed credential went NEEDS_REAUTH after the restart.

``Row.faults`` counts kills; ``Row.served`` tokens the client got; ``Row.errors`` refusals of
a credential that was not waiting for a re-login; ``Row.crashes`` daemon deaths we did not cause.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from vaultd._fake_exchange import Behaviour, FakeExchange
from vaultd._secret import Secret
from vaultd._vaultfile import VaultFormatError, decode
from vaultd_client import Client, VaultdError
from vaultd_client.errors import TransportError

from ..daemon_process import PASS, DaemonProcess, FakeExchangeProcess
from .rows import Mode, Row

__all__ = ["run"]

KILLS: dict[Mode, int] = {"short": 10, "full": 200, "soak": 1000}
CREDENTIALS = ("alpha", "bravo", "charlie")
#: Access tokens live this long (s): each credential renews, and rotates, about every 0.6 s.
LIFETIME = 1.0
#: How long a daemon runs before its kill: a random moment in this range (s).
KILL_AFTER = (0.0, 2.0)
REPO = Path(__file__).resolve().parents[2]


@dataclass
class TracingExchange(FakeExchange):
    """The fake exchange, also recording each family's chain of refresh tokens (oldest
    first) and the refresh token each access token came with: what the row judges by."""

    chains: dict[str, list[str]] = field(default_factory=dict)
    paired: dict[str, str] = field(default_factory=dict)

    def new_refresh_token(self) -> str:
        token = super().new_refresh_token()
        self.chains[self._by_token[token]] = [token]
        return token

    def _redeem(self, token: str) -> str | None:
        rotated = super()._redeem(token)
        if rotated is not None and rotated != token:
            self.chains[self._by_token[token]].append(rotated)
        return rotated

    def _tokens(self, refresh: str | None) -> dict[str, Any]:
        answer = super()._tokens(refresh)
        if refresh is not None:
            self.paired[answer["access_token"]] = refresh
        return answer

    def _control(self, body: bytes) -> tuple[int, bytes]:
        query = json.loads(body or b"{}")
        if "chain_of" in query:
            family = self._by_token.get(query["chain_of"], "")
            chain = self.chains.get(family, [])
            answer = {"chain": chain, "revoked": self.family_revoked(chain[0]) if chain else False}
            return 200, json.dumps(answer).encode()
        if "paired" in query:
            return 200, json.dumps({"refresh": [self.paired.get(t) for t in query["paired"]]}).encode()
        return super()._control(body)


def _exchange_main(expires_in: float) -> None:
    exchange = TracingExchange(behaviour=Behaviour(expires_in=expires_in))

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            print(await nursery.start(exchange.serve, 0), flush=True)

    trio.run(serve)


class TracingExchangeProcess(FakeExchangeProcess):
    """:class:`TracingExchange` in a process of its own (``python -m`` this module)."""

    def __init__(self, expires_in: float) -> None:  # the same as FakeExchangeProcess, another command
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.row_crash", "--exchange", str(expires_in)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"


@dataclass
class _Tracked:
    """One credential as the row follows it: its family and what was served from it."""

    first: str  # the family's first refresh token: how the exchange finds the family
    served: list[str] = field(default_factory=list)  # access tokens served since the last kill
    awaiting_relogin: bool = False  # a rotation was in flight at a kill: the family will be revoked


@dataclass
class _Soak:
    daemon: DaemonProcess
    exchange: TracingExchangeProcess
    rng: random.Random
    row: Row
    tracked: dict[str, _Tracked] = field(default_factory=dict)
    file_generation: int = 0
    generation_checks: int = 0
    in_flight: int = 0
    relogins: int = 0
    vault_opens: int = 0
    bak_opens: int = 0
    lost_reasons: list[str] = field(default_factory=list)

    def lose(self, reason: str) -> None:
        self.row.lost += 1
        if len(self.lost_reasons) < 5:
            self.lost_reasons.append(reason)

    # -- the daemon ------------------------------------------------------------------------

    def config(self, refresh: str) -> dict[str, Any]:
        return {
            "token_url": self.exchange.url + "/oauth/token",
            "grant_type": "refresh_token",
            "client_id": "fake-client",
            "client_secret": "fake-secret",
            "refresh_token": refresh,
            # 1 s tokens would not outlive the default 1 s margin; the fake exchange's clock
            # does not round, so none is needed here (the margin is tested in test_oidc_login).
            "expiry_margin": 0,
        }

    def login(self, client: Client, name: str, *, replace: bool) -> None:
        """What an operator does after a first login, or a re-login: a new refresh-token family."""
        refresh = str(self.exchange.control(new_refresh_token=True)["refresh_token"])
        self.daemon.secrets.add(refresh)
        params = {"passphrase": PASS, "name": name, "kind": "oauth2", "config": self.config(refresh)}
        client.call("credential.put", {**params, "replace": replace}, timeout=30)
        self.tracked[name] = _Tracked(refresh)

    def setup(self) -> None:
        self.daemon.start()
        with Client(self.daemon.socket_path, timeout=30, cache=False) as client:
            client.call("vault.init", {"passphrase": PASS, "kdf_profile": "min"}, timeout=30)
            client.unlock(PASS)
            for name in CREDENTIALS:
                self.login(client, name, replace=False)

    def restart(self) -> bool:
        """Start and unlock the daemon again; False (data lost) if the vault would not open."""
        self.daemon.start()
        with Client(self.daemon.socket_path, timeout=30, cache=False) as client:
            try:
                client.unlock(PASS)
            except VaultdError as exc:
                self.lose(f"unlock after a kill failed: {exc}")
                return False
            status = client.status()
            self.generation_checks += 1
            if status["generation"] < self.file_generation:
                self.lose(f"status generation {status['generation']} < the file's {self.file_generation}")
        return True

    def settle(self, client: Client) -> None:
        """Wait until each credential has tried its stored refresh token; judge the outcome."""
        deadline = time.monotonic() + 15
        while True:
            states = {c["name"]: c["state"] for c in client.status()["credentials"]}
            pending = [n for n, s in states.items() if s not in ("FRESH", "NEEDS_REAUTH")]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.02)  # another process renews: poll, bounded by the deadline
        for name, state in states.items():
            tracked = self.tracked[name]
            if state == "NEEDS_REAUTH":
                if not tracked.awaiting_relogin:
                    self.lose(f"{name}: a committed refresh token was refused after a restart")
                self.login(client, name, replace=True)
                self.relogins += 1
            elif state != "FRESH":
                self.row.errors += 1  # no answer from a healthy exchange within 15 s

    def serve_until(self, client: Client, deadline: float) -> None:
        """Fetch every token, again and again, until ``deadline``: what an engine does."""
        while time.monotonic() < deadline:
            for name in CREDENTIALS:
                try:
                    token = client.token(name)
                except TransportError:
                    self.row.crashes += 1  # we have not killed it yet
                    return
                except VaultdError:
                    if not self.tracked[name].awaiting_relogin:
                        self.row.errors += 1
                    continue
                self.row.served += 1
                self.tracked[name].served.append(token.value)
            time.sleep(0.005)  # an engine's pace, and the daemon's two cores are shared

    # -- the kill and what it left -----------------------------------------------------------

    def kill(self) -> None:
        assert self.daemon.proc is not None
        if self.daemon.proc.poll() is not None:
            self.row.crashes += 1
            self.daemon.proc = None
            return
        self.daemon.stop(signal.SIGKILL)
        self.row.faults += 1

    def judge(self) -> None:
        """What the kill left on disk, against what the exchange issued and the client saw."""
        path = self.daemon.data_dir / "vault"
        try:
            header, key, body = decode(path.read_bytes(), Secret(PASS))
            key.wipe()
        except (OSError, VaultFormatError, ValueError) as exc:
            self.lose(f"the vault does not open after a kill: {type(exc).__name__}: {exc}")
            return
        self.vault_opens += 1
        backup = self.daemon.data_dir / "vault.bak"
        if backup.exists():
            try:
                decode(backup.read_bytes(), Secret(PASS))[1].wipe()
                self.bak_opens += 1
            except (VaultFormatError, ValueError) as exc:
                self.lose(f"vault.bak does not open after a kill: {exc}")
        self.generation_checks += 1
        if header.generation < self.file_generation:
            self.lose(f"the generation went back: {header.generation} < {self.file_generation}")
        self.file_generation = max(self.file_generation, header.generation)
        for name, tracked in self.tracked.items():
            record = body["credentials"].get(name)
            stored = None if record is None else record["config"].get("refresh_token")
            self.judge_credential(name, tracked, stored)

    def judge_credential(self, name: str, tracked: _Tracked, stored: str | None) -> None:
        family = self.exchange.control(chain_of=tracked.first)
        chain: list[str] = family["chain"]
        served = self.exchange.control(paired=tracked.served)["refresh"] if tracked.served else []
        tracked.served = []
        if stored not in chain:
            self.lose(f"{name}: the stored refresh token is not of its family")
            return
        at = chain.index(stored)
        newest_served = max((chain.index(r) for r in served if r in chain), default=-1)
        if newest_served > at:
            self.lose(f"{name}: an access token was served before its refresh token was saved")
        if family["revoked"] and not tracked.awaiting_relogin:
            self.lose(f"{name}: its family was revoked without a rotation in flight")
        elif at == len(chain) - 2 and not tracked.awaiting_relogin:
            tracked.awaiting_relogin = True
            self.in_flight += 1
        elif at < len(chain) - 2:
            self.lose(f"{name}: the stored refresh token is {len(chain) - 1 - at} rotations behind")

    def cycle(self, first: bool) -> None:
        if not first and not self.restart():
            return
        deadline = time.monotonic() + self.rng.uniform(*KILL_AFTER)
        with Client(self.daemon.socket_path, timeout=30, cache=False) as client:
            if self.rng.random() < 0.75:  # else: kill while the first renewals run
                self.settle(client)
            self.serve_until(client, deadline)
        self.kill()
        self.judge()


def run(mode: Mode) -> Row:
    row = Row("crash: SIGKILL while rotating")
    root = Path(tempfile.mkdtemp(prefix="vd-", dir="/tmp"))
    exchange = TracingExchangeProcess(LIFETIME)
    daemon = DaemonProcess(root)
    soak = _Soak(daemon, exchange, random.Random(), row)
    try:
        soak.setup()
        for kill in range(KILLS[mode]):
            soak.cycle(first=kill == 0)
        if soak.restart():  # the last kill is judged by one more restart
            with Client(daemon.socket_path, timeout=30, cache=False) as client:
                soak.settle(client)
        daemon.stop()
        row.inputs = exchange.calls()  # token endpoint calls: renewals tried
        leaked = daemon.leaked()
        if leaked:
            row.errors += 1
            row.figures["secrets in the log"] = str(len(leaked))
    finally:
        if daemon.proc is not None:
            daemon.stop(signal.SIGKILL)
        exchange.stop()
        shutil.rmtree(root, ignore_errors=True)
    row.figures.update(
        {
            "kills": str(row.faults),
            "credentials": f"{len(CREDENTIALS)} oauth2, {LIFETIME:g} s tokens, rotating, strict reuse detection",
            "generation checks": f"{soak.generation_checks} (last generation {soak.file_generation})",
            "vault opened after a kill": f"{soak.vault_opens}/{row.faults} (vault.bak {soak.bak_opens})",
            "rotation in flight at a kill": f"{soak.in_flight} (re-logins {soak.relogins}; not lost: see above)",
        }
    )
    if soak.lost_reasons:
        row.figures["lost"] = "; ".join(soak.lost_reasons)
    return row


if __name__ == "__main__":
    if sys.argv[1:2] == ["--exchange"]:
        _exchange_main(float(sys.argv[2]))
