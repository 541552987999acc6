"""``vaultctl``: the operator's command line, a thin shell over the client library.

Commands talk to the running daemon through :class:`vaultd_client.Client` (``demo``,
``install``, ``audit`` and ``policy test --file`` work without it); secrets come from the
terminal, a file, an fd or stdin, never from argv. Output for people by
default, ``--json`` where scripts read it. Exit status: 0 success, 1 the daemon refused,
2 bad usage, 3 no daemon, 4 the vault is locked, 141 stdout closed by its reader (quietly).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from vaultd_client import Client
from vaultd_client.errors import DaemonUnavailable, Locked, RemoteError, TransportError

from .. import __version__
from .audit import AUDIT_COMMANDS, add_audit_parsers
from .backup import BACKUP_COMMANDS, add_backup_parsers
from .common import EXIT_FAILED, EXIT_LOCKED, EXIT_UNAVAILABLE, EXIT_USAGE, CtlError
from .completion import COMPLETION_COMMANDS, add_completion_parser
from .credentials import CREDENTIAL_COMMANDS, add_credential_parsers
from .env import ENV_COMMANDS, add_env_parsers
from .login import LOGIN_COMMANDS, add_login_parsers
from .notify import NOTIFY_COMMANDS, add_notify_parsers
from .policy import POLICY_COMMANDS, add_policy_parsers
from .sign import SIGN_COMMANDS, add_sign_parser
from .systemd import SYSTEMD_COMMANDS, add_systemd_parsers
from .top import TOP_COMMANDS, add_top_parser
from .upstream import UPSTREAM_COMMANDS, add_upstream_parsers
from .vault import VAULT_COMMANDS, add_vault_parsers

__all__ = ["main"]

#: stdout was closed by its reader (128 + SIGPIPE, as a shell reports a program SIGPIPE ended).
EXIT_BROKEN_PIPE = 141


# -- argument parsing -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaultctl",
        description="Operate the vaultd credential daemon: create, unlock and lock the vault, manage credentials.",
        epilog=(
            "Passphrases are read from the terminal unless --passphrase-file or --passphrase-fd says otherwise; "
            "secrets are never taken from the command line. Exit status: 0 ok, 1 refused by the daemon, "
            "2 usage, 3 daemon not reachable, 4 vault locked, 141 output cut off by its reader (| head)."
        ),
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="the daemon's socket (default: $VAULTD_SOCKET, else the standard path)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="per-call timeout (default 10)")
    parser.add_argument(
        "--server-uid",
        type=int,
        metavar="UID",
        help=(
            "the uid of the daemon to trust, for a user whose engines another user's vaultd serves "
            "through a shared socket (default: $VAULTD_SERVER_UID, else your own uid)"
        ),
    )
    parser.add_argument("--version", action="version", version=f"vaultctl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    add_vault_parsers(sub)
    add_credential_parsers(sub)
    add_sign_parser(sub)
    add_env_parsers(sub)
    add_policy_parsers(sub)
    add_upstream_parsers(sub)
    add_systemd_parsers(sub)
    add_audit_parsers(sub)
    add_top_parser(sub)
    add_notify_parsers(sub)
    add_backup_parsers(sub)
    add_login_parsers(sub)
    sub.add_parser("demo", help="run a self-contained demo on a throwaway vault in a temporary folder")
    add_completion_parser(sub)
    return parser


# -- commands ---------------------------------------------------------------------------------


def cmd_demo(client: Client, args: argparse.Namespace) -> int:
    from .._demo import run_demo  # noqa: PLC0415 - only the demo needs it

    return run_demo()


_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    **VAULT_COMMANDS,
    **CREDENTIAL_COMMANDS,
    **SIGN_COMMANDS,
    "demo": cmd_demo,
    **ENV_COMMANDS,
    **POLICY_COMMANDS,
    **UPSTREAM_COMMANDS,
    **SYSTEMD_COMMANDS,
    **AUDIT_COMMANDS,
    **TOP_COMMANDS,
    **COMPLETION_COMMANDS,
    **NOTIFY_COMMANDS,
    **BACKUP_COMMANDS,
    **LOGIN_COMMANDS,
}


def _fail(message: str, status: int) -> NoReturn:
    print(f"vaultctl: {message}", file=sys.stderr)
    raise SystemExit(status)


def main(argv: list[str] | None = None) -> int:
    """Run one vaultctl command; its exit status.

    A reader that closes our stdout early (``vaultctl status | head -1``) ends vaultctl quietly
    with status 141, as a program killed by SIGPIPE ends in a shell (128 + 13): the output was
    not all read, and ``set -o pipefail`` scripts can tell. Python would print a traceback, and
    another complaint while flushing stdout at exit, so stdout is pointed at /dev/null.
    """
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # inside the try: a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 < args.timeout < 86400:
        _fail("--timeout must be a number of seconds above 0 and below 86400", EXIT_USAGE)
    server_uid = args.server_uid
    if server_uid is None and os.environ.get("VAULTD_SERVER_UID"):
        try:
            server_uid = int(os.environ["VAULTD_SERVER_UID"])
        except ValueError:
            _fail("VAULTD_SERVER_UID must be a uid (a whole number)", EXIT_USAGE)
    client = Client(
        args.socket or os.environ.get("VAULTD_SOCKET") or None,
        timeout=args.timeout,
        cache=False,
        server_uid=server_uid,
    )
    try:
        with client:
            return _COMMANDS[args.command](client, args)
    except CtlError as exc:
        _fail(str(exc), exc.status)
    except Locked as exc:
        _fail(f"{exc.message} (LOCKED)", EXIT_LOCKED)
    except RemoteError as exc:
        _fail(f"{exc.message} ({exc.name})", EXIT_FAILED)
    except DaemonUnavailable as exc:
        _fail(
            f"{exc}; is the daemon running? (start it with 'vaultd' or 'systemctl --user start vaultd')",
            EXIT_UNAVAILABLE,
        )
    except TransportError as exc:
        _fail(str(exc), EXIT_UNAVAILABLE)
    except KeyboardInterrupt:
        _fail("interrupted", 130)


if __name__ == "__main__":  # python -m vaultd.ctl.main
    raise SystemExit(main())
