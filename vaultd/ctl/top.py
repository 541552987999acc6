"""``vaultctl top``: a live, full-screen view of the daemon, its credentials and their renewals.

This module holds the command's parser and entry; the view runs in :mod:`.top_app` (trio tasks,
the terminal) and :mod:`.top_view` (what is drawn), imported only when ``top`` runs, so that
every other command starts without rich. Off a terminal (a pipe, a log) ``top`` prints one
plain-text snapshot without escape codes and exits, as ``--once`` does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from vaultd_client import Client

from .common import EXIT_USAGE, CtlError


def add_top_parser(sub: Any) -> None:
    p = sub.add_parser(
        "top",
        help="a live full-screen view: credentials, renewals as they happen, requests per second",
        description=(
            "Follow the daemon live on a full-screen view: each credential's state (in colour), its token's time "
            "left, next renewal, refresh-token expiry and last error; renewals as they happen (token.watch); "
            "requests per second and connected engines (status, read every --interval seconds). Keys: l locks the "
            "vault (after a y/N question), q or Ctrl-C quits. When stdout is not a terminal, prints one plain-text "
            "snapshot and exits (as --once does)."
        ),
    )
    p.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between two status reads (at least 1, at most 3600; default 1)",
    )
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")


def cmd_top(client: Client, args: argparse.Namespace) -> int:
    if not 1 <= args.interval <= 3600:
        raise CtlError(
            "--interval must be between 1 and 3600 seconds (top reads status at most once a second)", EXIT_USAGE
        )
    from . import top_app  # noqa: PLC0415 - rich and the view load only for top

    if args.once or not sys.stdout.isatty():
        return top_app.snapshot(client, args.interval)
    import trio  # noqa: PLC0415

    return trio.run(top_app.live, client, args.interval)


TOP_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {"top": cmd_top}
