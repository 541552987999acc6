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


def _sized(model: TopModel, width: int, height: int) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, height=height, force_terminal=False, color_system=None)
    console.print(render(model, NOW, height, width))
    return out.getvalue().rstrip("\n").split("\n")


HOSTILE = "x\x1b]0;pwned\x07\x1b]8;;https://evil.example/\x1b\\y\x1b[2J\x9b31m[/oops][bold]z"


def test_daemon_text_is_drawn_escaped_and_never_as_markup() -> None:
    hostile = _status()
    hostile["credentials"][1] = {**hostile["credentials"][1], "name": "n" + HOSTILE, "kind": "k" + HOSTILE,
                                 "last_error": HOSTILE}  # fmt: skip
    hostile["version"] = HOSTILE
    model = TopModel(1.0)
    model.took_status(hostile, NOW, 10.0)
    model.watched("updated", "n" + HOSTILE, NOW + 60, 60.0, NOW)
    model.note(NOW, "refused", None, "renewals not shown: [/oops] " + HOSTILE)
    screen = "\n".join(_sized(model, 200, 40))  # raised MarkupError before
    assert "\x1b" not in screen and "\x07" not in screen and "\x9b" not in screen, repr(screen)
    assert "\\x1b]0;pwned\\x07" in screen and "[/oops][bold]z" in screen, screen
    assert "\x1b]" not in plain_snapshot(model, NOW) and "\\x1b]0;pwned" in plain_snapshot(model, NOW)


def test_the_view_fits_80_by_24_with_a_long_error_on_one_line() -> None:
    status = _status()
    status["credentials"][1]["last_error"] = "invalid_grant: " + "the refresh token was revoked by the provider " * 4
    model = TopModel(1.0)
    model.took_status(status, NOW, 10.0)
    for i in range(30):
        model.note(NOW + i, "updated", "live", f"renewed {i}")
    lines = _sized(model, 80, 24)
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines), "\n".join(lines)
    assert "l lock the vault   q quit" in lines[-1], "the key help on the last line"
    head = next(line for line in lines if line.startswith("NAME"))
    assert head.split() == ["NAME", "KIND", "STATE", "TTL", "LEFT", "RENEWAL", "REFRESH", "LAST", "ERROR"], head
    live = next(line for line in lines if line.startswith("live"))
    assert "invalid_grant: the" in live and live.rstrip().endswith("…"), live
    assert sum("invalid_grant" in line for line in lines) == 1, "one line, not folded letter by letter"
    assert "renewed 29" in "\n".join(lines), "the events pane is shown, newest first"


def test_an_unlock_and_each_state_change_between_two_reads_get_a_row() -> None:
    model = TopModel(1.0)
    model.took_status({**_status(), "state": "LOCKED", "credentials": []}, NOW, 10.0)
    model.message = "vault locked"
    model.took_status(_status(), NOW + 1, 11.0)
    assert model.message is None, "the footer no longer says the vault is locked"
    changed = _status()
    changed["credentials"][0] = {**changed["credentials"][0], "state": "NEEDS_REAUTH", "last_error": "invalid_grant"}
    model.took_status(changed, NOW + 2, 12.0)
    routine = _status()
    routine["credentials"][0] = {**routine["credentials"][0], "state": "NEEDS_REAUTH", "last_error": "invalid_grant"}
    routine["credentials"][1] = {**routine["credentials"][1], "state": "FRESH"}  # DEGRADED -> FRESH: a row
    model.took_status(routine, NOW + 3, 13.0)
    routine["credentials"][1] = {**routine["credentials"][1], "state": "RENEW_DUE"}  # every renewal's: no row
    model.took_status(routine, NOW + 4, 14.0)
    assert [(e.kind, e.name, e.detail) for e in model.events] == [
        ("unlocked", None, "the vault was unlocked"),
        ("state", "ex", "FRESH -> NEEDS_REAUTH: invalid_grant"),
        ("state", "live", "DEGRADED -> FRESH: HTTP 503 from the token endpoint"),
    ]
    assert "FRESH -> NEEDS_REAUTH: invalid_grant" in "\n".join(_sized(model, 120, 40))


def test_while_the_daemon_is_gone_the_header_says_it_once_and_old_rows_keep_clock_times() -> None:
    model = TopModel(1.0)
    model.own_connections = 1
    model.took_status(_status(requests_total=10, connections=2), NOW, 10.0)
    model.took_status(_status(requests_total=12, connections=2), NOW + 1, 11.0)
    model.lost("cannot connect to /run/vaultd.sock: connection refused (will try again shortly)", NOW + 5)
    screen = "\n".join(_sized(model, 120, 30))
    assert "trying again every 1 s" in screen and "will try again shortly" not in screen, screen
    assert screen.count("again") == 1, screen
    assert "requests/s -   engines -" in screen, "no figures from a daemon that is gone"
    live = next(line for line in screen.splitlines() if line.startswith("live"))
    assert "at 08:00:30Z" in live and "in 30s" not in live and "to 08:10:00Z" in live, live


def test_top_leaves_its_own_connection_and_calls_out() -> None:
    model = TopModel(1.0)
    model.own_connections = 1
    model.took_status(_status(requests_total=100, connections=1), NOW, 10.0)
    model.own_calls += 2  # the next status call, and a watch
    model.took_status(_status(requests_total=102, connections=1), NOW + 1, 11.0)
    assert (model.rate, model.engines()) == (0.0, 0)
    model.own_calls += 1
    model.took_status(_status(requests_total=110, connections=3), NOW + 2, 12.0)
    assert (model.rate, model.engines()) == (7.0, 2)
