"""``vaultctl upstream add|list|rm``: the OpenBao servers that credentials are sourced from.

``add`` reads the upstream's settings as one JSON object on stdin (its AppRole secret_id, or
a response-wrapping token of one, never on argv) and takes the passphrase, as ``vaultctl add``
does. ``list`` needs no passphrase, like ``status``; ``vaultctl status`` shows the same table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from vaultd_client import Client
from vaultd_client.errors import AlreadyExists
from vaultd_protocol import Method

from .common import (
    EXIT_OK,
    CtlError,
    _passphrase,
    _passphrase_options,
    _read_stdin_secret,
    _slow,
    _when,
    json_object,
    printable,
)

__all__ = ["UPSTREAM_COMMANDS", "add_upstream_parsers", "upstream_table"]

_ADD_DESCRIPTION = """\
Add an upstream: an OpenBao server whose KV v2 records credentials are sourced from
('vaultctl add NAME --kind KIND --from UPSTREAM:PATH'). Its settings are one JSON object on
stdin:

  {"address": "https://bao.desk.example:8200", "ca_file": "/etc/vaultd/bao-ca.pem",
   "kv_mount": "secret", "namespace": null, "max_stale": 86400,
   "auth": {"method": "approle", "mount": "approle", "role": "host-a",
            "role_id": "...", "wrapped_secret_id": "s.XXXXXXXX..."}}

'wrapped_secret_id' is a response-wrapping token of a secret_id (bao write -wrap-ttl=10m -f
auth/approle/role/host-a/secret-id): vaultd checks that it was made at exactly
auth/<mount>/role/<role>/secret-id and that nobody unwrapped it before, then unwraps it; anything
else is an ALARM (refused, shown in 'vaultctl status' and written to the audit log). A plain
'secret_id' is accepted too. http:// only for 127.0.0.1 and [::1]. The upstream logs in now and
keeps its token renewed; the secret_id is sealed in the vault to log in again after the token's
max TTL. With --replace, what the JSON leaves out stays as it was: to deliver a new secret_id,
{"auth": {"wrapped_secret_id": "..."}} is enough; the old token is revoked.
"""


def add_upstream_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    upstream = sub.add_parser(
        "upstream",
        help="manage upstreams (OpenBao servers that credentials are sourced from)",
        description="Manage the OpenBao upstreams that credentials are sourced from (README: Many hosts).",
    )
    actions = upstream.add_subparsers(dest="upstream_command", metavar="ACTION", required=True)

    p = actions.add_parser(
        "add",
        help="add an upstream, its settings read as JSON from stdin (needs the passphrase)",
        description=_ADD_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="the upstream's name (letters, digits, '.', '_', '-'), as --from NAME:PATH names it")
    p.add_argument("--kind", required=True, choices=["openbao"], help="the upstream's kind")
    p.add_argument("--replace", action="store_true", help="replace the upstream of that name (a new secret_id, say)")
    p.add_argument("--json", action="store_true", help="print the upstream's state as JSON")
    _passphrase_options(p)

    p = actions.add_parser("list", help="each upstream's state, token expiry and last error (no passphrase)")
    p.add_argument("--json", action="store_true", help="print the upstreams as JSON")
    actions.add_parser("status", help="the same as 'list'")

    p = actions.add_parser(
        "rm",
        help="remove an upstream no credential uses any more (needs the passphrase)",
        description="Remove an upstream. Refused while credentials are sourced from it or sign through its "
        "transit engine (they are named): remove or replace those first. Its OpenBao token is revoked; "
        "its secret_id stays valid in OpenBao until you destroy it (its accessor is in 'upstream list --json').",
    )
    p.add_argument("name")
    _passphrase_options(p)


def upstream_table(upstreams: list[dict[str, Any]]) -> list[str]:
    """The upstreams as ``upstream list`` and ``status`` print them."""
    if not upstreams:
        return ["  (none)"]
    names = [printable(u["name"]) for u in upstreams]
    width = max(4, *(len(name) for name in names))
    rows = [f"  {'NAME':<{width}}  {'STATE':<12} {'TOKEN EXPIRES':<20} {'SOURCED':>7}  ADDRESS / LAST ERROR"]
    for name, u in zip(names, upstreams, strict=True):
        rows.append(
            f"  {name:<{width}}  {printable(u['state']):<12} {_when(u.get('token_expires_at')):<20} "
            f"{len(u.get('sourced', [])):>7}  {printable(u['address'])}"
        )
        if u.get("last_error"):
            rows.append(f"  {'':<{width}}  last error: {printable(u['last_error'])}")
    return rows


def cmd_upstream_add(client: Client, args: argparse.Namespace) -> int:
    empty = "pipe the upstream's settings as one JSON object (vaultctl upstream add -h)"
    config = json_object(_read_stdin_secret("openbao"), empty)
    params = {
        "passphrase": _passphrase(args, stdin_busy=True),
        "name": args.name,
        "kind": args.kind,
        "config": config,
        "replace": args.replace,
    }
    try:
        result = _slow(client, Method.UPSTREAM_PUT, params)
        described = result["upstream"]
    except AlreadyExists as exc:
        raise CtlError(f"{exc.message} (ALREADY_EXISTS)") from None
    if args.json:
        print(json.dumps(described, indent=2, sort_keys=True))
    else:
        print(f"upstream {args.name!r} {'added' if result.get('created', True) else 'replaced'}")
        print("\n".join(upstream_table([described])))
    if described.get("last_error"):
        print(
            f"warning: it is saved, but not logged in yet: {described['last_error']} (it keeps trying; "
            "see 'vaultctl upstream list')",
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_upstream_list(client: Client, args: argparse.Namespace) -> int:
    result = client.call(Method.UPSTREAM_LIST, {})
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2, sort_keys=True))
        return EXIT_OK
    if result["state"] != "UNLOCKED":
        print(f"the vault is {result['state'].lower()}: upstreams are sealed in it until 'vaultctl unlock'")
    else:
        print("\n".join(upstream_table(result["upstreams"])))
    for alarm in result.get("alarms", []):
        print(f"warning: {_when(alarm['at'])} {printable(alarm['message'])}", file=sys.stderr)
    return EXIT_OK


def cmd_upstream_rm(client: Client, args: argparse.Namespace) -> int:
    _slow(client, Method.UPSTREAM_REMOVE, {"passphrase": _passphrase(args), "name": args.name})
    print(f"upstream {args.name!r} removed")
    return EXIT_OK


def _dispatch(client: Client, args: argparse.Namespace) -> int:
    return _ACTIONS[args.upstream_command](client, args)


_ACTIONS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "add": cmd_upstream_add,
    "list": cmd_upstream_list,
    "status": cmd_upstream_list,
    "rm": cmd_upstream_rm,
}
UPSTREAM_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {"upstream": _dispatch}
