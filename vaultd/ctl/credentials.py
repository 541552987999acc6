"""vaultctl's credential commands: ``add``, ``rm``, ``list``, ``renew``, ``watch`` and ``get``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from vaultd_client import Client
from vaultd_client.errors import AlreadyExists, InvalidParams
from vaultd_protocol import Method

from .common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CtlError,
    _passphrase,
    _passphrase_options,
    _read_stdin_secret,
    _slow,
    _when,
    json_object,
    printable,
)
from .env import _kind
from .upstream import upstream_table

#: Credential kinds (the daemon's registry; a test checks the two agree).
KINDS = ["static", "oauth2", "jwt", "exec", "keepalive", "sign"]


def add_credential_parsers(sub: Any) -> None:
    """The credential subcommands, in the order ``--help`` lists them."""
    p = sub.add_parser(
        "add",
        help="store a credential, read from stdin",
        description=(
            "Store a credential. Its settings and secrets are read from stdin (never argv) as one JSON object, "
            "documented field by field for each kind in protocol/SPEC.md section 6. For --kind static, stdin may "
            'also be the bare token. Examples: {"token": "...", "not_after": "2026-12-31T00:00:00Z"} (static); '
            '{"token_url": "https://...", "grant_type": "refresh_token", "client_id": "...", "refresh_token": "..."} '
            "(oauth2). On a terminal, the input is asked for without echo."
        ),
    )
    p.add_argument("name", help="the credential's name (letters, digits, '.', '_', '-')")
    p.add_argument("--kind", required=True, choices=KINDS, help="credential kind")
    p.add_argument("--replace", action="store_true", help="replace an existing credential of that name")
    p.add_argument(
        "--from",
        dest="source",
        metavar="UPSTREAM:PATH",
        help="source the settings from the KV v2 record PATH of an upstream ('vaultctl upstream add') instead of "
        "stdin: the record holds exactly the JSON stdin would, and a new version there reaches the engines",
    )
    p.add_argument(
        "--refresh",
        type=float,
        metavar="SECONDS",
        help="with --from: how often the record is read again (default 60, at least 1; +-10%% jitter)",
    )
    _passphrase_options(p)

    p = sub.add_parser("rm", help="remove a credential")
    p.add_argument("name")
    _passphrase_options(p)

    p = sub.add_parser(
        "list",
        help="list credentials with their settings (never a secret) and history (needs the passphrase)",
        description="What 'status' leaves out: each credential's settings (endpoints, client id, scheme...; never a "
        "secret), when it was created and last changed, and how many upstream calls it made. 'status' shows states.",
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    _passphrase_options(p)

    p = sub.add_parser(
        "renew",
        help="make one upstream attempt now, whatever the state (needs the passphrase)",
        description="Make one attempt now, whatever the state (even NEEDS_REAUTH) and outside the call budget: "
        "for a credential, one renewal (a credential sourced from an upstream has its record read first); "
        "for an upstream, one login (after fixing what made it NEEDS_REAUTH). Exits 1 if the attempt failed.",
    )
    p.add_argument("name", help="a credential's name, or an upstream's ('vaultctl upstream list')")
    p.add_argument("--json", action="store_true", help="print the state after the attempt as JSON")
    _passphrase_options(p)

    p = sub.add_parser(
        "watch",
        help="print each renewal, expiry and lock as it happens (never the token)",
        description="Follow credentials live: one line per event (one JSON object per line with --json).",
    )
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--json", action="store_true", help="one JSON object per event")
    p.add_argument("--count", type=int, metavar="N", help="stop after N events")

    p = sub.add_parser("get", help="print a credential's current token alone (for scripts)")
    p.add_argument("name")
    p.add_argument("--min-ttl", type=float, default=0.0, metavar="SECONDS", help="require at least this much validity")
    p.add_argument("--json", action="store_true", help="print the token and its metadata as JSON")


def credential_table(credentials: list[dict[str, Any]]) -> list[str]:
    """The status table's rows: one per credential, with its source and warnings under it (all text escaped)."""
    if not credentials:
        return ["  (none)"]
    names = [printable(c["name"]) for c in credentials]
    width = max(len("NAME"), *(len(name) for name in names))
    rows = [f"  {'NAME':<{width}}  {'KIND':<9} {'STATE':<12} {'EXPIRES':<20} {'NEXT RENEWAL':<20} LAST ERROR"]
    for name, c in zip(names, credentials, strict=True):
        rows.append(
            f"  {name:<{width}}  {printable(c['kind']):<9} {printable(c['state']):<12} "
            f"{_when(c.get('expires_at')):<20} {_when(c.get('next_renewal')):<20} "
            f"{printable(c.get('hold') or c.get('last_error') or '-')}"
        )
        source = c.get("source")
        if source:
            where = printable(f"{source['upstream']}:{source['path']}")
            line = f"from {where} version {printable(source['version'])}, copy {source['age']:.0f} s old"
            if source.get("pulled"):
                line += f"; pulled upstream: {printable(source['pulled'])}"
            elif source.get("last_error"):
                line += f"; last read failed: {printable(source['last_error'])}"
            rows.append(f"  {'':<{width}}  {line}")
        rows.extend(f"  {'':<{width}}  warning: {printable(w)}" for w in c.get("warnings", []))
    return rows


def config_from_stdin(kind: str, text: str) -> dict[str, Any]:
    """stdin for ``add``: a JSON object; for ``static``, the bare token will do too."""
    if kind == "static":
        if text and not text.startswith("{"):
            return {"token": text}
        return json_object(text, "pipe the token, or a JSON object with a 'token' field", "stdin starts with '{' but")
    return json_object(text, f"pipe a JSON object with the {kind} settings (SPEC.md section 6)")


def _source(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--from UPSTREAM:PATH [--refresh S]`` as ``credential.put``'s ``source``."""
    if args.source is None:
        if args.refresh is not None:
            raise CtlError("--refresh goes with --from UPSTREAM:PATH", EXIT_USAGE)
        return None
    upstream, colon, path = args.source.partition(":")
    if not colon or not upstream or not path:
        raise CtlError("--from takes UPSTREAM:PATH, for example bao:desk/binance", EXIT_USAGE)
    if args.refresh is not None and not 1 <= args.refresh <= 86400:
        raise CtlError("--refresh must be between 1 and 86400 seconds", EXIT_USAGE)
    source: dict[str, Any] = {"upstream": upstream, "path": path}
    if args.refresh is not None:
        source["refresh"] = args.refresh
    return source


#: The daemon's hint for RPC callers in ``ALREADY_EXISTS``; vaultctl names its own flag instead.
_PUT_WITH_REPLACE = " (put with replace to overwrite)"


def _already_exists(message: str, replace: bool) -> str:
    """``add``'s line for ``ALREADY_EXISTS``: the daemon's message, its hint said once, as vaultctl's flag."""
    if message.endswith(_PUT_WITH_REPLACE):
        message = message.removesuffix(_PUT_WITH_REPLACE)
        if not replace:
            message += ": add --replace to replace it"
    return f"{message} (ALREADY_EXISTS)"


def cmd_add(client: Client, args: argparse.Namespace) -> int:
    source = _source(args)
    params: dict[str, Any] = {"name": args.name, "kind": args.kind, "replace": args.replace}
    if source is None:
        params["config"] = config_from_stdin(args.kind, _read_stdin_secret(args.kind))
        params["passphrase"] = _passphrase(args, stdin_busy=True)
    else:
        params["source"] = source
        params["passphrase"] = _passphrase(args)
    try:
        result = _slow(client, Method.CREDENTIAL_PUT, params)
    except AlreadyExists as exc:
        raise CtlError(_already_exists(exc.message, args.replace)) from None
    print(f"credential {args.name!r} {'added' if result['created'] else 'replaced'}")
    if source is not None:
        print(f"it follows {args.source}: a new version there is served within the refresh interval")
    return EXIT_OK


def cmd_rm(client: Client, args: argparse.Namespace) -> int:
    _slow(client, Method.CREDENTIAL_REMOVE, {"passphrase": _passphrase(args), "name": args.name})
    print(f"credential {args.name!r} removed")
    return EXIT_OK


def cmd_renew(client: Client, args: argparse.Namespace) -> int:
    result = _slow(client, Method.CREDENTIAL_RENEW, {"passphrase": _passphrase(args), "name": args.name})
    described = result.get("credential") or result["upstream"]
    if args.json:
        print(json.dumps(described, indent=2, sort_keys=True))
    elif "credential" in result:
        print("\n".join(credential_table([described])))
    else:
        print("\n".join(upstream_table([described])))
    if described["state"] == "FRESH" and not described.get("last_error"):
        return EXIT_OK
    failed = f"{printable(described.get('last_error'))} ({printable(described['state'])})"
    print(f"vaultctl: the attempt failed: {failed}", file=sys.stderr)
    return EXIT_FAILED


def cmd_watch(client: Client, args: argparse.Namespace) -> int:
    seen = 0
    with client.watch(args.names) as events:
        for event in events:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            expires = event.token.expires_at if event.token else None
            if args.json:
                line = {"time": when, "event": event.kind, "name": event.name, "expires_at": expires}
                print(json.dumps(line), flush=True)
            else:
                tail = f" expires {_when(expires)}" if event.token else ""
                print(f"{when} {printable(event.kind):<8} {printable(event.name)}{tail}", flush=True)
            seen += 1
            if args.count is not None and seen >= args.count:
                break
    return EXIT_OK


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    result = _slow(client, Method.CREDENTIAL_LIST, {"passphrase": _passphrase(args)})
    if args.json:
        print(json.dumps(result["credentials"], indent=2, sort_keys=True))
    else:
        print("\n".join(settings_table(result["credentials"])))
    return EXIT_OK


def settings_table(credentials: list[dict[str, Any]]) -> list[str]:
    """``list``'s rows: what ``status`` leaves out (settings, when made and changed, upstream calls), escaped."""
    if not credentials:
        return ["  (none)"]
    names = [printable(c["name"]) for c in credentials]
    width = max(len("NAME"), *(len(name) for name in names))
    rows = [f"  {'NAME':<{width}}  {'KIND':<9} {'CREATED':<20} {'UPDATED':<20} UPSTREAM CALLS"]
    for name, c in zip(names, credentials, strict=True):
        rows.append(
            f"  {name:<{width}}  {printable(c['kind']):<9} {_when(c.get('created_at')):<20} "
            f"{_when(c.get('updated_at')):<20} {printable(c.get('upstream_calls', 0))}"
        )
        settings = c.get("settings") or {}
        rows.extend(
            f"  {'':<{width}}  {printable(key)}: {_setting(key, value)}" for key, value in sorted(settings.items())
        )
    return rows


def _setting(key: str, value: Any) -> str:
    """A setting's value as ``list`` prints it: times (``not_after``, ``*_at``) as the CREATED column's dates."""
    if (key == "not_after" or key.endswith("_at")) and isinstance(value, int | float) and not isinstance(value, bool):
        return _when(value)
    if isinstance(value, list | tuple):
        return printable(", ".join(str(v) for v in value) or "-")
    if isinstance(value, dict):  # e.g. what discovery found: its own key: value pairs
        return "; ".join(f"{printable(k)}: {_setting(str(k), v)}" for k, v in sorted(value.items())) or "-"
    return printable(value)


def cmd_get(client: Client, args: argparse.Namespace) -> int:
    try:
        token = client.token(args.name, min_ttl=args.min_ttl)
    except InvalidParams as exc:
        if _kind(client, args.name) != "sign":
            raise
        message = (
            f"credential {args.name!r} is a 'sign' credential: it has no token, it signs requests; sign them "
            f"with Client.sign in an engine (or 'vaultctl sign {args.name} METHOD URL')"
        )
        raise type(exc)(message, exc.code, exc.name) from None
    if args.json:
        print(json.dumps({
            "name": token.name, "token": token.value, "type": token.type,
            "expires_at": token.expires_at, "ttl": token.ttl,
        }))  # fmt: skip
    else:
        print(token.value)
    return EXIT_OK


CREDENTIAL_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "add": cmd_add,
    "rm": cmd_rm,
    "list": cmd_list,
    "get": cmd_get,
    "renew": cmd_renew,
    "watch": cmd_watch,
}
