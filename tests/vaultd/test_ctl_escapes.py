"""vaultctl never hands a daemon-supplied string to the terminal raw: escapes come out visible.

The daemon refuses control characters in what it is given, but a vault restored from a file
carries whatever the file holds, and vaultctl must not trust the daemon with its terminal
either. A stand-in daemon answers ``status`` and ``credential.list`` with names, kinds, errors,
holds, warnings and settings that set the window title, plant a hyperlink, clear the screen
and colour text; ``status``, ``list`` and ``top --once`` must print them as ``\\x1b...``.
"""

from __future__ import annotations

import argparse
import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from vaultd.ctl.common import printable
from vaultd.ctl.credentials import cmd_list
from vaultd.ctl.top_app import snapshot
from vaultd.ctl.vault import cmd_status

NOW = 1_800_000_000.0
#: Sets the window title, plants a hyperlink, clears the screen; DEL and a C1 CSI too.
HOSTILE = "evil\x1b]0;pwned\x07\x1b]8;;https://evil.example/\x1b\\link\x1b]8;;\x1b\\\x1b[2J\x7f\x9b31m"
CONTROLS = "\x1b\x07\x7f\x9b"


def _credential() -> dict[str, Any]:
    return {
        "name": "n" + HOSTILE, "kind": "oauth2" + HOSTILE, "state": "DEGRADED" + HOSTILE, "expires_at": NOW + 60,
        "next_renewal": NOW + 30, "last_error": "HTTP 503 " + HOSTILE, "hold": None, "warnings": ["w" + HOSTILE],
        "settings": {"client_id": HOSTILE, "scope": [HOSTILE], "not_after": NOW + 86400},
        "created_at": NOW, "updated_at": NOW, "upstream_calls": 3,
    }  # fmt: skip


class StandIn:
    """What vaultctl's commands call on a client, answered with hostile text."""

    slow_timeout = 5.0
    timeout = 5.0

    def status(self) -> dict[str, Any]:
        return {
            "state": "UNLOCKED", "vault_path": "/v" + HOSTILE, "generation": 1, "kdf_profile": "min",
            "socket": "/s" + HOSTILE, "version": "0.1" + HOSTILE, "pid": 7, "uptime": 3.0, "memory_locked": True,
            "credentials": [_credential()], "warnings": [HOSTILE], "connections": 1, "requests_total": 5,
        }  # fmt: skip

    def call(self, method: str, params: dict[str, Any], timeout: float | None = None) -> Any:
        return {"credentials": [_credential()]}


def _run(command: Any, args: argparse.Namespace) -> str:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert command(StandIn(), args) == 0
    return out.getvalue() + err.getvalue()


def test_printable_escapes_every_control_and_keeps_the_rest() -> None:
    assert printable("a\x1b[2J\x07\x7f\x9b\u202eé b") == "a\\x1b[2J\\x07\\x7f\\x9b\\u202eé b"
    assert printable(None) == "-" and printable(3) == "3"


def test_status_prints_daemon_text_with_its_escapes_visible() -> None:
    text = _run(cmd_status, argparse.Namespace(json=False))
    assert not any(c in text for c in CONTROLS), repr(text)
    assert "nevil\\x1b]0;pwned\\x07" in text and "HTTP 503 evil\\x1b" in text and "warning: evil\\x1b" in text


def test_list_prints_settings_with_their_escapes_visible(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("fake-passphrase\n")
    secret.chmod(0o600)
    args = argparse.Namespace(json=False, passphrase_file=str(secret), passphrase_fd=None)
    text = _run(cmd_list, args)
    assert not any(c in text for c in CONTROLS), repr(text)
    assert "client_id: evil\\x1b]0;pwned\\x07\\x1b]8;;https://evil.example/\\x1b\\link" in text, text


def test_top_once_prints_daemon_text_with_its_escapes_visible() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert snapshot(StandIn(), 1.0) == 0  # type: ignore[arg-type]
    assert not any(c in out.getvalue() for c in CONTROLS), repr(out.getvalue())
    assert "nevil\\x1b]0;pwned" in out.getvalue()


def test_list_shows_setting_times_as_the_created_column_does() -> None:
    from vaultd.ctl.credentials import settings_table

    rows = settings_table([{
        "name": "schwab", "kind": "oauth2", "created_at": NOW, "updated_at": NOW,
        "settings": {"not_after": 1796734488.0, "refresh_token_expires_at": NOW + 86400, "expires_in_at": "x",
                     "max_ttl": 3600},
    }])  # fmt: skip
    text = "\n".join(rows)
    assert "not_after: 2026-12-08T12:54:48Z" in text, text
    assert "refresh_token_expires_at: 2027-01-16T08:00:00Z" in text, text
    assert "expires_in_at: x" in text and "max_ttl: 3600" in text, "only times become dates"
    assert "2027-01-15T08:00:00Z" in rows[1], "the CREATED column's format"


def test_list_shows_a_nested_setting_as_pairs_not_a_python_repr() -> None:
    from vaultd.ctl.credentials import settings_table

    discovered = {"token_url": "https://id.example/token", "auth_methods": ["private_key_jwt"]}
    rows = settings_table([{
        "name": "broker", "kind": "oauth2", "created_at": NOW, "updated_at": NOW,
        "settings": {"discovered": discovered},
    }])  # fmt: skip
    text = "\n".join(rows)
    assert "discovered: auth_methods: private_key_jwt; token_url: https://id.example/token" in text, text
    assert "{'" not in text
