"""vaultctl's vault commands: ``init``, ``unlock``, ``lock``, ``passwd`` and ``status``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from vaultd_client import Client
from vaultd_protocol import KdfProfile, Method

from .._passphrase import PassphraseError, read_passphrase
from .common import EXIT_OK, EXIT_USAGE, CtlError, _passphrase, _passphrase_options, _slow, printable
from .credentials import credential_table
from .upstream import upstream_table


def add_vault_parsers(sub: Any) -> None:
    """The vault's subcommands, in the order ``--help`` lists them."""
    p = sub.add_parser("init", help="create a new, empty vault (it stays locked)")
    p.add_argument(
        "--kdf-profile",
        choices=[p.value for p in KdfProfile],
        default=KdfProfile.MODERATE.value,
        help="Argon2id cost (default moderate; 'min' is for tests only, never for real secrets)",
    )
    _passphrase_options(p)

    p = sub.add_parser("unlock", help="unlock the vault with its passphrase")
    _passphrase_options(p)
    p.add_argument(
        "--accept-rollback",
        action="store_true",
        help="unlock even if the vault file is older than one written before (a restored copy): "
        "it becomes the newest, and the audit log says so",
    )

    sub.add_parser("lock", help="lock the vault now: every token request is refused until unlock")

    p = sub.add_parser(
        "passwd",
        help="change the vault's passphrase (tokens keep being served; the old one stops working)",
        description="Seal the vault under a new passphrase, with a fresh data key (not only a new wrapping). "
        "The vault stays unlocked and engines keep getting tokens; afterwards only the new passphrase "
        "opens it, and vault.bak too.",
    )
    _passphrase_options(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--new-passphrase-file", metavar="PATH", help="read the new passphrase from the first line")
    group.add_argument("--new-passphrase-fd", type=int, metavar="N", help="read the new passphrase from fd N")

    p = sub.add_parser("status", help="show the daemon's state and each credential's (never a secret)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")


def cmd_init(client: Client, args: argparse.Namespace) -> int:
    passphrase = _passphrase(args, confirm=True)
    result = _slow(client, Method.VAULT_INIT, {"passphrase": passphrase, "kdf_profile": args.kdf_profile})
    print(f"vault created (KDF profile {result['kdf_profile']}); it is locked: run 'vaultctl unlock'")
    if args.kdf_profile == KdfProfile.MIN:
        print("warning: the 'min' KDF profile is for tests only, never for real secrets", file=sys.stderr)
    return EXIT_OK


def cmd_unlock(client: Client, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"passphrase": _passphrase(args)}
    if args.accept_rollback:
        params["accept_rollback"] = True
    result = _slow(client, Method.VAULT_UNLOCK, params)
    print(f"vault {printable(result['state']).lower()}")
    if result.get("rollback_accepted"):
        accepted = printable(result["rollback_accepted"])
        print(f"rollback accepted: {accepted} (written to the audit log)", file=sys.stderr)
    return EXIT_OK


def cmd_passwd(client: Client, args: argparse.Namespace) -> int:
    current = _passphrase(args)
    try:
        new = read_passphrase(
            file=args.new_passphrase_file, fd=args.new_passphrase_fd, prompt="New passphrase: ", confirm=True
        )
    except PassphraseError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None
    if new == current:
        raise CtlError("the new passphrase is the same as the current one", EXIT_USAGE)
    _slow(client, Method.VAULT_REKEY, {"passphrase": current, "new_passphrase": new})
    print("passphrase changed: only the new one opens the vault now")
    return EXIT_OK


def cmd_lock(client: Client, args: argparse.Namespace) -> int:
    result = client.lock()
    print(f"vault {result['state'].lower()}")
    return EXIT_OK


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    status = client.status()
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return EXIT_OK
    p = printable  # every field is the daemon's text: its escapes are shown, never acted on
    print(f"state:      {p(status['state'])}")
    profile = p(status.get("kdf_profile") or "-")
    print(f"vault:      {p(status['vault_path'])} (generation {p(status['generation'])}, KDF profile {profile})")
    print(f"socket:     {p(status['socket'])}")
    print(f"daemon:     vaultd {p(status['version'])}, pid {p(status['pid'])}, up {status['uptime']:.0f} s")
    print(f"memory:     {'locked' if status.get('memory_locked') else 'not locked (see vaultctl doctor)'}")
    if status["state"] == "UNLOCKED":
        print(f"credentials: {len(status['credentials'])}")
        print("\n".join(credential_table(status["credentials"])))
        if status.get("upstreams"):
            print(f"upstreams: {len(status['upstreams'])}")
            print("\n".join(upstream_table(status["upstreams"])))
    for warning in status.get("warnings", []):
        print(f"warning: {p(warning)}", file=sys.stderr)
    return EXIT_OK


VAULT_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "init": cmd_init,
    "unlock": cmd_unlock,
    "lock": cmd_lock,
    "passwd": cmd_passwd,
    "status": cmd_status,
}
