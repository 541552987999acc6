"""``vaultctl notify test``: the daemon sends a sample alert to every ``[[notify]]`` sink now.

The sample is marked ``"test": true`` and names no real credential. Each sink's outcome is
printed (``ok``, or why not: an exit status, an HTTP status, a timeout); the exit status is 0
only when every sink took it. No passphrase: a notice holds no secret, and only the daemon's
own user (or a policy rule's ``admin``) may ask.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from vaultd_client import Client
from vaultd_protocol import Method

from .common import EXIT_FAILED, EXIT_OK, CtlError, _passphrase, _passphrase_options

__all__ = ["NOTIFY_COMMANDS", "add_notify_parsers"]

#: The events a sample may be (``_notify_config.EVENTS``; vaultctl imports nothing of the daemon).
_EVENTS = ("degraded", "needs_reauth", "expired", "expiring", "locked", "rollback", "upstream_alarm")


def add_notify_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    notify = sub.add_parser(
        "notify",
        help="alerts: try the [[notify]] commands and webhooks of vaultd.toml",
        description="Alerts (README: Alerts). The sinks are [[notify]] tables in vaultd.toml, read at start and "
        "on SIGHUP.",
    )
    actions = notify.add_subparsers(dest="notify_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "test",
        help="send a sample alert to every sink now and show each one's outcome",
        description='The daemon sends a sample notice ("test": true, credential "example") to every '
        "[[notify]] sink, whatever events the sink asks for, and reports each outcome. Exit status 0 when "
        "every sink took it, 1 otherwise (or when no sink is configured). Needs the vault unlocked and its "
        "passphrase, so that no engine can make your pager ring.",
    )
    p.add_argument(
        "--event", default="needs_reauth", choices=_EVENTS, help="the kind of sample notice (default needs_reauth)"
    )
    p.add_argument("--json", action="store_true", help="print the outcomes as JSON")
    _passphrase_options(p)


def cmd_notify_test(client: Client, args: argparse.Namespace) -> int:
    # The daemon waits for every sink (each within its timeout, up to 300 s): the slow timeout.
    params = {"passphrase": _passphrase(args), "event": args.event}
    result = client.call(Method.NOTIFY_TEST, params, timeout=max(client.slow_timeout, 320.0))
    sinks = result["sinks"]
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif not sinks:
        raise CtlError(
            "the running daemon has no [[notify]] sink: nothing to test. It reads them from vaultd.toml "
            "($XDG_CONFIG_HOME/vaultd/vaultd.toml) at start and on SIGHUP: after editing the file, "
            "'systemctl --user reload vaultd' or 'kill -HUP <pid of vaultd>' (README: Alerts)"
        )
    else:
        width = max(len(s["sink"]) for s in sinks)
        for s in sinks:
            print(f"{s['sink']:<{width}}  {'ok' if s['ok'] else 'FAILED: ' + str(s['error'])}")
    return EXIT_OK if sinks and all(s["ok"] for s in sinks) else EXIT_FAILED


NOTIFY_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {"notify": cmd_notify_test}
