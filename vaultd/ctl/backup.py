"""``vaultctl backup FILE``, ``vaultctl restore FILE``, ``vaultctl release NAME``: copies of the vault.

The daemon does the work: it writes the backup itself and checks a restore whole before it
replaces anything, so no decrypted byte passes through vaultctl. vaultctl turns a relative FILE
into an absolute path (the daemon runs in another folder) and takes the passphrase as every
admin command does (terminal, --passphrase-file or --passphrase-fd; never argv).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from vaultd_client import Client
from vaultd_client.errors import BadPassphrase
from vaultd_protocol import Method

from .._passphrase import PassphraseError, read_passphrase
from .common import EXIT_OK, EXIT_USAGE, CtlError, _passphrase, _passphrase_options, _slow

__all__ = ["BACKUP_COMMANDS", "add_backup_parsers"]

_BACKUP_DESCRIPTION = """\
Write a sealed copy of the vault to FILE. The daemon writes it (0600; it never follows a
symbolic link at FILE and never overwrites a file unless --force), reads it back and opens
it, and prints its generation and fingerprint (the SHA-256 of the whole file, as sha256sum
prints it). The copy opens with the passphrase the vault has now. Needs the vault unlocked.
"""

_RESTORE_DESCRIPTION = """\
Make the backup in FILE the vault. The vault must be locked ('vaultctl lock') or not created
yet (a new host). The passphrase asked first is the vault's, as it is now: a vault is replaced
only with its own passphrase (checked before FILE is even opened). The backup must open with
the passphrase of its day: give it with --backup-passphrase-file or --backup-passphrase-fd
(without them the same passphrase is tried; on a terminal you are asked for the backup's only
when it does not open with it). On a new host (no vault yet) only the backup's passphrase is
asked for.

The daemon checks FILE whole before it replaces anything: a vault file this version reads,
that opens with the backup's passphrase, every record readable. The file is installed as it
is: the vault then opens with the backup's passphrase (vaultctl says so when it is not the one
the vault had; 'vaultctl passwd' changes it). The vault replaced is kept as
vault.pre-restore-<UTC time> in the data folder (never overwritten; delete it yourself once
you are sure) besides vault.bak. The restore is recorded as an accepted rollback (the next
unlock does not refuse it) and written to the audit log.

After the next unlock, every credential whose upstream may rotate refresh tokens (oauth2 with
a refresh token, exec, any kind vaultd cannot vouch for) is ON_HOLD: not served, not renewed,
nothing sent upstream. Stop the vault the backup came from first, then 'vaultctl release NAME'
for each (or log in again): two copies renewing one rotating refresh token make the provider
revoke it.
"""

_RELEASE_DESCRIPTION = """\
End the hold a restore put on credential NAME: it renews at once. Run it only once the vault
the backup came from is stopped (or no longer holds NAME), or the two copies race and the
provider's reuse detection revokes the refresh token for both.
"""


def add_backup_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "backup",
        help="write a verified, sealed copy of the vault to FILE (needs the passphrase)",
        description=_BACKUP_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="where to write the copy (its folder must exist)")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists (never through a symbolic link)")
    p.add_argument(
        "--lock",
        action="store_true",
        help="lock the vault at the moment of the copy (nothing renews after it): to move the vault to another host",
    )
    p.add_argument("--json", action="store_true", help="print path, generation, fingerprint and size as JSON")
    _passphrase_options(p)

    p = sub.add_parser(
        "restore",
        help="replace the locked vault with a backup, checked first (needs the vault's passphrase)",
        description=_RESTORE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="a file 'vaultctl backup' wrote (or a copy of a vault file)")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    _passphrase_options(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--backup-passphrase-file",
        metavar="PATH",
        help="read the passphrase the backup opens with from the first line of PATH (default: the vault's)",
    )
    group.add_argument(
        "--backup-passphrase-fd", type=int, metavar="N", help="read the backup's passphrase from file descriptor N"
    )

    p = sub.add_parser(
        "release",
        help="end the hold a restore put on credential NAME (needs the passphrase)",
        description=_RELEASE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", metavar="NAME", help="the credential on hold ('vaultctl status' shows ON_HOLD and why)")
    p.add_argument("--json", action="store_true", help="print the credential's state after the release as JSON")
    _passphrase_options(p)


def _absolute(path: str) -> str:
    """FILE as the daemon must get it: absolute, without resolving a symbolic link at its end."""
    return os.path.join(os.path.abspath(os.path.dirname(path) or "."), os.path.basename(path))


def cmd_backup(client: Client, args: argparse.Namespace) -> int:
    params = {"passphrase": _passphrase(args), "path": _absolute(args.file), "force": args.force, "lock": args.lock}
    result: dict[str, Any] = _slow(client, Method.VAULT_BACKUP, params)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return EXIT_OK
    print(f"backup written: {result['path']}")
    print(f"generation:  {result['generation']}")
    print(f"fingerprint: {result['fingerprint']} (sha256)")
    if result.get("locked"):
        print("the vault is locked: nothing renews here after this copy")
    return EXIT_OK


def _backup_passphrase(args: argparse.Namespace, *, prompt: bool) -> str | None:
    """The backup's passphrase from --backup-passphrase-file/-fd, or asked on the terminal
    (``prompt``); None: the same as the vault's."""
    if args.backup_passphrase_file is None and args.backup_passphrase_fd is None and not prompt:
        return None
    try:
        return read_passphrase(
            file=args.backup_passphrase_file, fd=args.backup_passphrase_fd, prompt="The backup's passphrase: "
        )
    except PassphraseError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None


def cmd_restore(client: Client, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"passphrase": _passphrase(args), "path": _absolute(args.file)}
    given = _backup_passphrase(args, prompt=False)
    if given is not None:
        params["backup_passphrase"] = given
    try:
        result: dict[str, Any] = _slow(client, Method.VAULT_RESTORE, dict(params))
    except BadPassphrase as exc:
        # The backup does not open with the vault's passphrase: on a terminal, ask for the backup's.
        asked = args.passphrase_file is None and args.passphrase_fd is None
        if given is not None or not asked or not exc.message.startswith("'backup_passphrase'"):
            raise
        print(f"vaultctl: {exc.message}", file=sys.stderr)
        params["backup_passphrase"] = _backup_passphrase(args, prompt=True)
        result = _slow(client, Method.VAULT_RESTORE, params)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return EXIT_OK
    print(f"restored {result['path']} as generation {result['generation']} (the vault stays locked)")
    print(f"fingerprint: {result['fingerprint']} (sha256)")
    if result.get("previous"):
        print(f"the vault replaced is kept as {result['previous']} (delete it once you are sure)")
    if result.get("passphrase_changed"):
        print(
            "the vault now opens with the backup's passphrase, not the one it had: unlock with that "
            "('vaultctl passwd' changes it)",
            file=sys.stderr,
        )
    held = result.get("held") or []
    if held:
        print(
            f"on hold after the next unlock: {', '.join(held)}. Stop the vault this backup came from, then "
            "'vaultctl release NAME' for each (or log in again)",
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_release(client: Client, args: argparse.Namespace) -> int:
    params = {"passphrase": _passphrase(args), "name": args.name}
    described = _slow(client, Method.CREDENTIAL_RELEASE, params)["credential"]
    if args.json:
        print(json.dumps(described, indent=2, sort_keys=True))
        return EXIT_OK
    print(f"credential {args.name!r} released: it renews now ('vaultctl status' shows how it went)")
    return EXIT_OK


BACKUP_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "backup": cmd_backup,
    "restore": cmd_restore,
    "release": cmd_release,
}
