"""``vaultctl policy show|set|test``: read, replace and explain who may ask the daemon for what.

The policy lives sealed in the vault, so reading or changing it takes the passphrase.
``policy set`` checks the TOML file here first, for an error that names the line; ``policy
test`` evaluates a policy (the daemon's, or a local file) with the daemon's own code
(``_policy``), so what it prints is what the daemon decides.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from vaultd_client import Client
from vaultd_protocol import Method

from .._passphrase import PassphraseError, read_passphrase
from .._policy import METHODS, Identity, Policy, PolicyError

__all__ = ["POLICY_COMMANDS", "add_policy_parsers"]

#: vaultctl's statuses (the table is in ``ctl.common``): ``policy test`` says deny with 1.
EXIT_OK, EXIT_DENY, EXIT_USAGE = 0, 1, 2
_MAX_FILE = 64 * 1024

_EPILOG = """\
A policy file holds [[rule]] tables. Each matches processes by uid (a number; without it, the
daemon's own uid only), unit (a systemd unit, glob) and exe (the executable's absolute path),
and allows credentials (globs) and methods (get, sign, watch, status; for another uid also
lock and admin, which the daemon's own uid always has). The first rule that matches a process
decides; with no rules at all, the daemon's own uid may do everything.

  [[rule]]
  unit = "engine-a.service"
  credentials = ["deribit*"]
  methods = ["get", "watch"]
"""


def _fail(message: str, status: int) -> NoReturn:
    print(f"vaultctl: {message}", file=sys.stderr)
    raise SystemExit(status)


def _passphrase_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--passphrase-file", metavar="PATH", help="read the passphrase from the first line of PATH")
    group.add_argument("--passphrase-fd", type=int, metavar="N", help="read the passphrase from file descriptor N")


def _passphrase(args: argparse.Namespace, *, stdin_busy: bool = False) -> str:
    try:
        return read_passphrase(file=args.passphrase_file, fd=args.passphrase_fd, stdin_busy=stdin_busy)
    except PassphraseError as exc:
        _fail(str(exc), EXIT_USAGE)


def _read_file(path: str) -> Policy:
    """The policy in ``path`` (``-``: stdin), checked; exit 2 with the file and line if it is not right."""
    try:
        if path == "-":
            raw = sys.stdin.buffer.read(_MAX_FILE + 1)
        else:
            with open(path, "rb") as handle:
                raw = handle.read(_MAX_FILE + 1)
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}", EXIT_USAGE)
    if len(raw) > _MAX_FILE:
        _fail(f"{path} holds more than {_MAX_FILE} bytes", EXIT_USAGE)
    try:
        return Policy.from_toml(raw.decode("utf-8"))
    except UnicodeDecodeError:
        _fail(f"{path} is not UTF-8 text", EXIT_USAGE)
    except PolicyError as exc:
        _fail(f"{path}: {exc}", EXIT_USAGE)


def _fetch(client: Client, args: argparse.Namespace) -> Policy:
    stored = client.call(Method.POLICY_GET, {"passphrase": _passphrase(args)}, timeout=client.slow_timeout)
    try:
        return Policy.from_config(stored)
    except PolicyError as exc:
        _fail(f"the daemon's policy cannot be read here (a newer daemon?): {exc}", EXIT_USAGE)


def cmd_policy_show(client: Client, args: argparse.Namespace) -> int:
    policy = _fetch(client, args)
    if args.json:
        print(json.dumps(policy.to_config(), indent=2))
    else:
        print(policy.to_toml(), end="")
    return EXIT_OK


def cmd_policy_set(client: Client, args: argparse.Namespace) -> int:
    policy = _read_file(args.file)
    params = {"passphrase": _passphrase(args, stdin_busy=args.file == "-"), "policy": policy.to_config()}
    result = client.call(Method.POLICY_SET, params, timeout=client.slow_timeout)
    count = result["rules"]
    print(f"policy set: {count} rule{'' if count == 1 else 's'}")
    return EXIT_OK


def cmd_policy_test(client: Client, args: argparse.Namespace) -> int:
    policy = _read_file(args.file) if args.file else _fetch(client, args)
    who = Identity(args.uid, args.unit, args.exe)
    credential = None if args.method == "status" else args.credential
    decision = policy.decide(who, credential, args.method, own_uid=os.getuid())
    print(f"{'allow' if decision.allowed else 'deny'}: {decision.why}")
    return EXIT_OK if decision.allowed else EXIT_DENY


def add_policy_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``policy show``, ``policy set`` and ``policy test`` on vaultctl's subcommands."""
    policy = sub.add_parser(
        "policy",
        help="show, set or test who may ask for what (needs the passphrase)",
        description="Which processes may get, sign, watch or see which credentials.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)

    p = actions.add_parser("show", help="print the daemon's rules, numbered (TOML that 'policy set' reads back)")
    p.add_argument("--json", action="store_true", help='print {"rules": [...]} as JSON')
    _passphrase_options(p)

    p = actions.add_parser("set", help="replace the rules with those of a TOML file ('-': stdin)")
    p.add_argument("file", metavar="FILE")
    _passphrase_options(p)

    p = actions.add_parser(
        "test",
        help="say whether a process would be allowed, and which rule decides (exit 0 allow, 1 deny)",
        description=(
            "Evaluate the daemon's policy (or --file) for a process described by its uid, unit and exe. "
            "Prints 'allow: ...' and exits 0, or 'deny: ...' and exits 1. The daemon's uid is taken to be yours."
        ),
    )
    p.add_argument("--uid", type=int, required=True, metavar="N", help="the process's uid")
    p.add_argument("--unit", metavar="UNIT", help="its systemd unit, e.g. engine-a.service (default: none known)")
    p.add_argument("--exe", metavar="PATH", help="its executable (default: none known)")
    p.add_argument("--file", metavar="FILE", help="evaluate this policy file instead of the daemon's (no passphrase)")
    p.add_argument("credential", metavar="CREDENTIAL", help="the credential asked for (any name for status)")
    p.add_argument("method", metavar="METHOD", choices=METHODS, help=f"one of: {', '.join(METHODS)}")
    _passphrase_options(p)


def _dispatch(client: Client, args: argparse.Namespace) -> int:
    return _ACTIONS[args.policy_command](client, args)


_ACTIONS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "show": cmd_policy_show,
    "set": cmd_policy_set,
    "test": cmd_policy_test,
}
POLICY_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {"policy": _dispatch}
