"""What ``vaultctl top`` draws from a status answer and watch events (no daemon, no terminal)."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from vaultd.ctl.top_view import TopModel, connections, plain_snapshot, render

NOW = 1_800_000_000.0


def _status(**extra: Any) -> dict[str, Any]:
    credentials = [
        {"name": "ex", "kind": "static", "state": "FRESH", "expires_at": None, "next_renewal": None},
        {
            "name": "live", "kind": "oauth2", "state": "DEGRADED", "expires_at": NOW + 600,
            "next_renewal": NOW + 30, "last_error": "HTTP 503 from the token endpoint",
            "settings": {"refresh_token_expires_at": NOW + 2 * 86400},
        },
        {
            "name": "held", "kind": "oauth2", "state": "ON_HOLD", "expires_at": None, "next_renewal": None,
            "hold": "restored from a backup: run 'vaultctl release held' once the live copy is stopped",
        },
    ]  # fmt: skip
    return {"state": "UNLOCKED", "version": "0.1.0", "pid": 42, "uptime": 5.0, "generation": 3,
            "credentials": credentials, **extra}  # fmt: skip


def _screen(model: TopModel, colour: bool = True) -> str:
    out = io.StringIO()
    system = "standard" if colour else None
    console = Console(file=out, width=140, height=40, force_terminal=colour, color_system=system)
    console.print(render(model, NOW, 40))
    return out.getvalue()


def test_requests_per_second_come_from_the_difference_of_two_status_answers() -> None:
    model = TopModel(1.0)
    model.took_status(_status(requests_total=100, connections=3), NOW, 10.0)
    assert model.rate is None, "one answer is no rate"
    model.took_status(_status(requests_total=150, connections={"1000": 2, "1001": 1}), NOW + 2, 12.0)
    assert model.rate == 25.0
    assert model.engines() == 3
    assert "requests/s 25.0   engines 3" in _screen(model, colour=False)
    model.took_status(_status(requests_total=4), NOW + 3, 13.0)
    assert model.rate is None, "a count that went back is a restarted daemon, not a negative rate"


def test_without_the_fields_it_shows_dashes() -> None:
    model = TopModel(1.0)
    model.took_status(_status(), NOW, 10.0)
    model.took_status(_status(), NOW + 1, 11.0)
    assert "requests/s -   engines -" in _screen(model, colour=False)
    assert "requests/s -  engines -" in plain_snapshot(model, NOW)


def test_connections_in_any_of_the_shapes_a_daemon_may_give() -> None:
    assert [connections(v) for v in (4, [1, 2], {"total": 5, "by_uid": {}}, {"1000": 2}, None, True)] == [
        4, 2, 5, 2, None, None,
    ]  # fmt: skip


def test_states_in_colour_an_unknown_one_magenta_and_the_refresh_token_expiry() -> None:
    model = TopModel(1.0)
    model.took_status(_status(), NOW, 10.0)
    screen = _screen(model)
    assert "\x1b[1;32mFRESH" in screen
    assert "\x1b[1;33mDEGRADED" in screen
    assert "\x1b[1;35mON_HOLD" in screen, "a state without a colour of its own is shown in magenta"
    plain = plain_snapshot(model, NOW)
    assert "\x1b" not in plain
    live_row = next(line for line in plain.splitlines() if line.startswith("live"))
    assert "in 30s" in live_row and "in 2d 0h" in live_row and "HTTP 503" in live_row
    held_row = next(line for line in plain.splitlines() if line.startswith("held"))
    assert "ON_HOLD" in held_row and "vaultctl release held" in held_row, "why it is held, and what to do"


def test_a_renewal_enters_the_events_pane_without_its_token_and_gives_the_bar_its_lifetime() -> None:
    model = TopModel(1.0)
    model.took_status(_status(), NOW, 10.0)
    assert model.fraction_left("live", NOW + 600, NOW) is None, "a token issued before top started has no bar"
    model.watched("updated", "live", NOW + 900, 900.0, NOW)
    assert model.fraction_left("live", NOW + 900, NOW + 450) == 0.5
    screen = _screen(model, colour=False)
    assert "updated" in screen and "renewed, expires in 15m 0s" in screen
    model.watched("locked", None, None, None, NOW + 1)
    assert model.status is not None and model.status["state"] == "LOCKED"
    assert "the vault is LOCKED" in _screen(model, colour=False)


def test_the_daemon_gone_is_said_once_and_its_return_too() -> None:
    model = TopModel(1.0)
    model.took_status(_status(), NOW, 10.0)
    model.lost("connection refused", NOW + 1)
    model.lost("connection refused", NOW + 2)
    assert model.names == [], "nothing to watch while it is gone"
    screen = _screen(model, colour=False)
    assert "daemon NOT REACHABLE" in screen and "as last seen at" in screen
    model.took_status(_status(), NOW + 3, 13.0)
    assert [e.kind for e in model.events] == ["gone", "back"]
    assert model.names == ["ex", "held", "live"]
