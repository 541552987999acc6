"""Alerts: which conditions are notified, once, reminded, cleared and back; config errors; delivery.

The rules run on trio's autojump_clock against a stand-in vault (its state and descriptions set
by the test); delivery is a recording sink, except where a real command runs.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest
import trio

from vaultd._notify import TICK, Notifier
from vaultd._notify_config import NotifySettings, Sink, load_notify_settings, parse_notify_settings
from vaultd._notify_send import child_environment, deliver
from vaultd._systemd import status_line
from vaultd_protocol import CredentialState, VaultState

BASE = 1_800_000_000.0  # the stand-in wall clock at trio time 0
DAY = 86400.0


class FakeVault:
    def __init__(self) -> None:
        self.state = VaultState.UNLOCKED
        self.alarms: list[dict[str, Any]] = []
        self.rollback_refused: str | None = None
        self.credentials: dict[str, dict[str, Any]] = {}
        self.upstreams: list[dict[str, Any]] = []

    def set(self, name: str, state: str = "FRESH", **fields: Any) -> None:
        self.credentials[name] = {"name": name, "state": state, "last_error": None, "settings": {}, **fields}

    def describe(self) -> list[dict[str, Any]]:
        return [] if self.state is not VaultState.UNLOCKED else list(self.credentials.values())

    def upstream_list(self) -> list[dict[str, Any]]:
        return self.upstreams


class Recorder:
    def __init__(self) -> None:
        self.notices: list[dict[str, Any]] = []

    async def __call__(self, sink: Sink, notice: Mapping[str, Any]) -> str | None:
        self.notices.append(dict(notice))
        return None

    def events(self) -> list[tuple[str, str | None, bool]]:
        return [(n["event"], n["credential"] or n["upstream"], n["reminder"]) for n in self.notices]


SINK = parse_notify_settings({"notify": [{"command": ["true"]}]}).sinks[0]  # every event


def wall() -> float:
    return BASE + trio.current_time()


async def started(nursery: trio.Nursery, vault: FakeVault, **settings: Any) -> tuple[Notifier, Recorder]:
    recorder = Recorder()
    notifier = Notifier(vault, NotifySettings(sinks=(SINK,), **settings), wall=wall, send=recorder, host="h")
    await nursery.start(notifier.run)
    return notifier, recorder


async def settle() -> None:
    await trio.sleep(1)


async def test_needs_reauth_once_then_a_reminder_then_nothing_after_it_clears(
    nursery: trio.Nursery, autojump_clock: Any
) -> None:
    vault = FakeVault()
    vault.set("desk")
    notifier, sent = await started(nursery, vault, remind=3600.0)
    await settle()
    assert sent.notices == [], "a FRESH credential is no news"

    vault.set("desk", "NEEDS_REAUTH", last_error="invalid_grant: refresh token revoked")
    notifier.changed()
    await settle()
    assert sent.events() == [("needs_reauth", "desk", False)]
    notice = sent.notices[0]
    assert notice["state"] == "NEEDS_REAUTH" and "invalid_grant: refresh token revoked" in notice["reason"]
    assert notice["at"].endswith("Z") and notice["test"] is False and notice["host"] == "h"

    for _ in range(5):  # renewals, status changes: the condition holds, nothing new is said
        notifier.changed()
        await settle()
    await trio.sleep(1800)
    assert len(sent.notices) == 1

    await trio.sleep(1800 + TICK)  # past the reminder period
    assert sent.events() == [("needs_reauth", "desk", False), ("needs_reauth", "desk", True)]

    vault.set("desk", "FRESH")
    notifier.changed()
    await settle()
    await trio.sleep(3 * 3600)
    assert len(sent.notices) == 2, "cleared: no reminder"

    vault.set("desk", "NEEDS_REAUTH")
    notifier.changed()
    await settle()
    assert sent.events()[-1] == ("needs_reauth", "desk", False), "back again: a new notice"


async def test_degraded_only_after_degraded_after_minutes(nursery: trio.Nursery, autojump_clock: Any) -> None:
    vault = FakeVault()
    vault.set("desk", "DEGRADED", last_error="HTTP 503 from the token endpoint")
    notifier, sent = await started(nursery, vault, degraded_after=600.0)
    await trio.sleep(590)
    assert sent.notices == [], "a renewal that failed for a few minutes is not news"
    await trio.sleep(TICK + 1)  # the tick finds it, with no change to prompt it
    assert sent.events() == [("degraded", "desk", False)]
    assert "HTTP 503" in sent.notices[0]["reason"] and "10 minutes" in sent.notices[0]["reason"]

    vault.set("desk", "FRESH")  # recovered: the clock starts again the next time
    notifier.changed()
    await settle()
    vault.set("desk", "DEGRADED")
    notifier.changed()
    await trio.sleep(300)
    assert len(sent.notices) == 1


async def test_a_credential_awaiting_its_first_login_is_news_only_if_left_so(
    nursery: trio.Nursery, autojump_clock: Any
) -> None:
    """'vaultctl login NAME --kind oauth2' makes a credential that awaits its login: the operator is at
    it, so a notice comes only when it has waited degraded_after; a refusal later is news at once."""
    vault = FakeVault()
    vault.set("broker", "NEEDS_REAUTH", last_error="awaiting login: run 'vaultctl login broker'")
    notifier, sent = await started(nursery, vault, degraded_after=600.0)
    await trio.sleep(590)
    assert sent.notices == [], "the operator is logging it in"
    await trio.sleep(TICK + 1)
    assert sent.events() == [("needs_reauth", "broker", False)]
    assert "awaited its first login for 10 minutes" in sent.notices[0]["reason"]

    vault.set("broker", "FRESH")  # logged in
    notifier.changed()
    await settle()
    vault.set("broker", "NEEDS_REAUTH", last_error="invalid_grant: refresh token revoked")
    notifier.changed()
    await settle()
    assert sent.events()[-1] == ("needs_reauth", "broker", False), "a refusal is told at once"


async def test_an_unlock_that_refuses_again_says_nothing_new(nursery: trio.Nursery, autojump_clock: Any) -> None:
    """After an unlock a credential starts over (RENEW_DUE, no token, no error) until its first attempt
    ends: that moment clears nothing, so the same refusal again is no new notice."""
    vault = FakeVault()
    vault.set("desk", "NEEDS_REAUTH", last_error="invalid_grant: refresh token revoked")
    notifier, sent = await started(nursery, vault)
    await settle()
    vault.state = VaultState.LOCKED
    notifier.changed()
    await settle()
    vault.state = VaultState.UNLOCKED
    vault.set("desk", "RENEW_DUE", expires_at=None)
    notifier.changed()
    await settle()
    vault.set("desk", "NEEDS_REAUTH", last_error="invalid_grant: refresh token revoked")
    notifier.changed()
    await settle()
    assert sent.events() == [("needs_reauth", "desk", False), ("locked", None, False)]

    vault.set("desk", "FRESH", expires_at=BASE + DAY)  # a real recovery still clears it
    notifier.changed()
    await settle()
    vault.set("desk", "NEEDS_REAUTH", last_error="invalid_grant")
    notifier.changed()
    await settle()
    assert sent.events()[-1] == ("needs_reauth", "desk", False) and len(sent.notices) == 3


async def test_expiring_at_two_days_and_again_at_one(nursery: trio.Nursery, autojump_clock: Any) -> None:
    vault = FakeVault()
    vault.set("oauth", refresh_token_expires_at=BASE + 3 * DAY)
    vault.set("static", settings={"not_after": BASE + 1.5 * DAY})
    vault.set("nothing", refresh_token_expires_at=None)  # the field absent or None: no expiry known
    vault.set("configured", settings={"refresh_token_expires_at": BASE + 40 * DAY})  # the oauth2 setting: far
    _, sent = await started(nursery, vault, remind=10 * DAY)
    await settle()
    assert sent.events() == [("expiring", "static", False)]
    assert sent.notices[0]["expiring"] == "not_after" and "replace it" in sent.notices[0]["reason"]

    await trio.sleep(0.5 * DAY + TICK)  # static: 1 day left
    assert sent.events() == [("expiring", "static", False)] * 2
    assert "in 24 hours" in sent.notices[1]["reason"] or "in 23 hours" in sent.notices[1]["reason"]
    await trio.sleep(0.5 * DAY)  # oauth: 2 days left
    assert sent.events()[-1] == ("expiring", "oauth", False)
    await trio.sleep(DAY)  # oauth: 1 day left; static: past (the EXPIRED state says it, not this)
    assert sent.events()[-1] == ("expiring", "oauth", False)
    assert sent.notices[-1]["expires_at"] == "2027-01-18T08:00:00Z"
    assert len(sent.notices) == 4


async def test_a_configured_refresh_token_expiry_counts_when_the_description_has_none(
    nursery: trio.Nursery, autojump_clock: Any
) -> None:
    vault = FakeVault()
    vault.set("schwab", settings={"refresh_token_expires_at": BASE + 1.5 * DAY})
    _, sent = await started(nursery, vault)
    await settle()
    assert [(n["event"], n["expiring"], n["credential"]) for n in sent.notices] == [
        ("expiring", "refresh_token", "schwab")
    ]
    assert "log in again" in sent.notices[0]["reason"]


async def test_locked_after_an_unlock_and_not_while_starting(nursery: trio.Nursery, autojump_clock: Any) -> None:
    vault = FakeVault()
    vault.state = VaultState.LOCKED
    vault.set("desk", "NEEDS_REAUTH")
    notifier, sent = await started(nursery, vault, degraded_after=3600.0)
    await trio.sleep(60)
    assert sent.notices == [], "a daemon that just started locked says nothing yet"

    vault.state = VaultState.UNLOCKED
    notifier.changed()
    await settle()
    assert sent.events() == [("needs_reauth", "desk", False)]
    vault.state = VaultState.LOCKED
    notifier.changed()
    await settle()
    assert sent.events()[-1] == ("locked", None, False)
    vault.state = VaultState.UNLOCKED
    notifier.changed()
    await settle()
    assert len(sent.notices) == 2, "a lock and unlock does not repeat what was said about credentials"


async def test_a_lock_and_unlock_in_quick_succession_is_still_told(nursery: trio.Nursery, autojump_clock: Any) -> None:
    vault = FakeVault()
    notifier, sent = await started(nursery, vault)
    await settle()
    vault.state = VaultState.LOCKED
    notifier.changed()
    vault.state = VaultState.UNLOCKED  # before the notifier looked
    notifier.changed()
    await settle()
    assert sent.events() == [("locked", None, False)]
    assert sent.notices[0]["reason"] == "the vault was locked, and is unlocked again"


async def test_a_daemon_left_locked_is_notified_after_degraded_after(
    nursery: trio.Nursery, autojump_clock: Any
) -> None:
    vault = FakeVault()
    vault.state = VaultState.LOCKED
    _, sent = await started(nursery, vault, degraded_after=600.0)
    await trio.sleep(600 + TICK)
    assert sent.events() == [("locked", None, False)]


async def test_rollback_and_upstream_alarms(nursery: trio.Nursery, autojump_clock: Any) -> None:
    vault = FakeVault()
    vault.state = VaultState.LOCKED
    notifier, sent = await started(nursery, vault)
    vault.rollback_refused = "the vault is generation 1; generation 2 was recorded"
    notifier.changed()
    await settle()
    assert sent.events() == [("rollback", None, False)]
    assert "generation 2 was recorded" in sent.notices[0]["reason"]
    notifier.changed()  # refused again: the same condition
    await settle()
    vault.state, vault.rollback_refused = VaultState.UNLOCKED, None
    vault.alarms.append({"at": BASE, "upstream": "bao", "message": "ALARM: a wrapping token was unwrapped before"})
    vault.upstreams.append({"name": "bao", "state": "NEEDS_REAUTH", "last_error": "permission denied"})
    notifier.changed()
    await settle()
    assert sent.events()[1:] == [("needs_reauth", "bao", False), ("upstream_alarm", "bao", False)]


async def test_a_full_queue_drops_and_counts_and_never_waits(nursery: trio.Nursery, autojump_clock: Any) -> None:
    vault = FakeVault()
    release = trio.Event()
    taken: list[str] = []

    async def stuck(sink: Sink, notice: Mapping[str, Any]) -> str | None:
        taken.append(notice["credential"])
        await release.wait()
        return None

    notifier = Notifier(vault, NotifySettings(sinks=(SINK,), queue=2), wall=wall, send=stuck, host="h")
    await nursery.start(notifier.run)
    for i in range(6):
        vault.set(f"c{i}", "EXPIRED")
    notifier.check()  # returns at once, delivery or not
    assert notifier.dropped == 4  # check() never yields: two wait, four are dropped
    release.set()
    await settle()
    assert taken == ["c0", "c1"]


async def test_test_reaches_every_sink_whatever_its_events(autojump_clock: Any) -> None:
    recorder = Recorder()
    only = Sink(2, ("/bin/true",), None, frozenset({"locked"}), 5.0)
    notifier = Notifier(FakeVault(), NotifySettings(sinks=(SINK, only)), wall=wall, send=recorder, host="h")
    outcomes = await notifier.test("expiring")
    assert [o["ok"] for o in outcomes] == [True, True]
    assert all(n["test"] is True and n["event"] == "expiring" for n in recorder.notices)
    assert {n["expiring"] for n in recorder.notices} == {"refresh_token"}, "the shape a real expiring notice has"
    assert all(n["expires_at"].endswith("Z") for n in recorder.notices)
    with pytest.raises(ValueError, match="unknown event 'nope'"):
        await notifier.test("nope")


# -- the configuration -------------------------------------------------------------------------


def test_settings_parse_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "vaultd.toml"
    path.write_text(
        'log_level = "info"\n[alerts]\ndegraded_after = 5\nremind = 12\n'
        '[[notify]]\ncommand = ["/bin/true", "--x"]\n'
        '[[notify]]\nwebhook = "https://hooks.example/secret-path?k=v"\nevents = ["needs_reauth"]\ntimeout = 3\n'
    )
    settings = load_notify_settings(path)
    assert settings.degraded_after == 300 and settings.remind == 12 * 3600 and settings.expiring_days == (2.0, 1.0)
    command, webhook = settings.sinks
    assert command.command == ("/bin/true", "--x") and "expiring" in command.events
    assert webhook.events == {"needs_reauth"} and webhook.timeout == 3
    assert webhook.label == "#2 webhook https://hooks.example", "the URL's path may be its secret: never shown"
    assert load_notify_settings(tmp_path / "absent.toml").sinks == ()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[notify]\ncommand = ['x']\n", "write [[notify]] (two brackets)"),
        ("[[notify]]\nevents = ['locked']\n", "[[notify]] #1: give exactly one of command"),
        ("[[notify]]\ncommand = []\n", "[[notify]] #1: command must be a non-empty list"),
        ("[[notify]]\ncommand = 'notify-send hi'\n", "[[notify]] #1: command must be a non-empty list"),
        ("[[notify]]\ncommand = ['/nonexistent/x']\n", "command[0] /nonexistent/x is not an executable file"),
        ("[[notify]]\ncommand = ['bin/x']\n", "must be an absolute path"),
        ("[[notify]]\ncommand = ['true']\n[[notify]]\nwebhook = 'http://hooks.example/x'\n", "#2: webhook must"),
        ("[[notify]]\nwebhook = 'https://u:p@hooks.example/x'\n", "user or password"),
        ("[[notify]]\nwebhook = 'ftp://hooks.example/x'\n", "webhook must be an https:// URL"),
        ("[[notify]]\ncommand = ['true']\nevents = ['nope']\n", "events: unknown event 'nope'"),
        ("[[notify]]\ncommand = ['true']\nevent = ['locked']\n", "unknown field 'event'"),
        ("[[notify]]\ncommand = ['true']\ntimeout = 0\n", "timeout must be from 0.1 to 300"),
        ("[alerts]\nexpiring_days = [0]\n", "[alerts]: expiring_days must be"),
        ("[alerts]\nremind = 'daily'\n", "[alerts]: remind must be a number"),
        ("[alerts]\ndegraded = 5\n", "[alerts]: unknown field 'degraded'"),
    ],
)
def test_bad_settings_name_the_table_and_field(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "vaultd.toml"
    path.write_text(toml)
    with pytest.raises(ValueError, match=r"vaultd\.toml: ") as info:
        load_notify_settings(path)
    assert message in str(info.value)


def test_plain_http_only_to_loopback() -> None:
    for url in ("http://127.0.0.1:8080/x", "http://[::1]/x", "http://localhost/x"):
        assert parse_notify_settings({"notify": [{"webhook": url}]}).sinks[0].webhook == url


# -- delivery, for real ------------------------------------------------------------------------


def test_the_child_environment_is_built_not_inherited() -> None:
    env = child_environment(
        {"event": "expired", "credential": "desk", "state": "EXPIRED", "reason": "r", "at": "t"},
        {"PATH": "/bin", "HOME": "/home/x", "VAULTD_SOCKET": "/s", "CREDENTIALS_DIRECTORY": "/c", "AWS_SECRET": "x"},
    )
    assert env == {
        "PATH": "/bin",
        "HOME": "/home/x",
        "VAULTD_EVENT": "expired",
        "VAULTD_CREDENTIAL": "desk",
        "VAULTD_STATE": "EXPIRED",
        "VAULTD_REASON": "r",
        "VAULTD_AT": "t",
    }


async def test_a_command_gets_the_notice_and_one_that_hangs_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = tmp_path / "hook"
    script.write_text(f"#!/bin/sh\ncat > {out}\nenv >> {out}\n")
    script.chmod(0o700)
    notice = {"event": "expired", "credential": "desk", "state": "EXPIRED", "reason": "why", "at": "now"}
    assert await deliver(Sink(1, (str(script),), None, frozenset(), 5.0), notice) is None
    first, *env = out.read_text().splitlines()
    assert json.loads(first) == notice and "VAULTD_CREDENTIAL=desk" in env

    failing = Sink(1, (sys.executable, "-c", "import sys; sys.exit('no route to pager')"), None, frozenset(), 5.0)
    assert await deliver(failing, notice) == "exit status 1: no route to pager"

    pidfile = tmp_path / "pid"
    hang = Sink(1, ("/bin/sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"), None, frozenset(), 0.5)
    start = trio.current_time()
    assert await deliver(hang, notice) == "no answer within 0.5 s (killed)"
    assert trio.current_time() - start < 5
    with pytest.raises(ProcessLookupError):  # its whole process group went with it
        for _ in range(50):
            os.kill(int(pidfile.read_text()), 0)
            await trio.sleep(0.05)

    missing = Sink(1, ("no-such-program-vaultd",), None, frozenset(), 5.0)
    assert (await deliver(missing, notice) or "").startswith("cannot run it")


def test_status_line_lists_every_state_in_trouble_and_stays_short() -> None:
    """systemd's STATUS= beside the alerts: the states in trouble by count, whatever states exist."""

    class Counted(FakeVault):
        def state_counts(self) -> Counter[CredentialState]:
            return Counter(CredentialState(c["state"]) for c in self.credentials.values())

    vault = Counted()
    states = {"a": "FRESH", "b": "NEEDS_REAUTH", "c": "NEEDS_REAUTH", "d": "PULLED", "e": "DEGRADED"}
    for name, state in states.items():
        vault.set(name, state)
    vault.upstreams.append({"name": "bao", "state": "EXPIRED"})
    line = status_line(vault)  # type: ignore[arg-type]
    assert line == "Unlocked: 5 credentials, 1 degraded, 2 needs reauth, 1 pulled, upstream bao expired"


async def test_a_webhook_that_fails_is_told_without_its_url() -> None:
    class Refusing(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    notice = {"event": "expired", "credential": "desk"}
    try:
        url = f"http://127.0.0.1:{port}/hook/fake-url-secret"
        assert await deliver(Sink(1, None, url, frozenset(), 5.0), notice) == "HTTP 500"
    finally:
        server.shutdown()
        server.server_close()
    gone = await deliver(Sink(1, None, f"http://127.0.0.1:{port}/hook/fake-url-secret", frozenset(), 5.0), notice)
    assert gone is not None and gone.startswith("ConnectError") and "fake-url-secret" not in gone
