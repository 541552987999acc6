"""``vaultctl``: the operator's command line, a thin shell over the client library.

Commands talk to the running daemon through :class:`vaultd_client.Client` (``demo``,
``install``, ``audit`` and ``policy test --file`` work without it); secrets come from the
terminal, a file, an fd or stdin, never from argv. Output for people by
default, ``--json`` where scripts read it. Exit status: 0 success, 1 the daemon refused,
2 bad usage, 3 no daemon, 4 the vault is locked, 141 stdout closed by its reader (quietly).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from vaultd_client import Client
from vaultd_client.errors import AlreadyExists, DaemonUnavailable, InvalidParams, Locked, RemoteError, TransportError
from vaultd_protocol import KdfProfile, Method

from . import __version__
from ._ctl_audit import AUDIT_COMMANDS, add_audit_parsers
from ._ctl_common import (
    EXIT_FAILED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CtlError,
    _passphrase,
    _passphrase_options,
    _read_stdin_secret,
    _slow,
    _when,
    json_object,
)
from ._ctl_env import ENV_COMMANDS, _kind, add_env_parsers
from ._ctl_policy import POLICY_COMMANDS, add_policy_parsers
from ._ctl_sign import SIGN_COMMANDS, add_sign_parser
from ._ctl_systemd import SYSTEMD_COMMANDS, add_systemd_parsers
from ._ctl_upstream import UPSTREAM_COMMANDS, add_upstream_parsers, upstream_table
from ._passphrase import PassphraseError, read_passphrase

__all__ = ["main"]

#: stdout was closed by its reader (128 + SIGPIPE, as a shell reports a program SIGPIPE ended).
EXIT_BROKEN_PIPE = 141
#: Credential kinds (the daemon's registry; a test checks the two agree).
KINDS = ["static", "oauth2", "jwt", "exec", "keepalive", "sign"]


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

    p = sub.add_parser("list", help="list credentials (needs the passphrase)")
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

    add_sign_parser(sub)

    p = sub.add_parser("get", help="print a credential's current token alone (for scripts)")
    p.add_argument("name")
    p.add_argument("--min-ttl", type=float, default=0.0, metavar="SECONDS", help="require at least this much validity")
    p.add_argument("--json", action="store_true", help="print the token and its metadata as JSON")

    add_env_parsers(sub)
    add_policy_parsers(sub)
    add_upstream_parsers(sub)
    add_systemd_parsers(sub)
    add_audit_parsers(sub)
    sub.add_parser("demo", help="run a self-contained demo on a throwaway vault in a temporary folder")
    return parser


# -- commands ---------------------------------------------------------------------------------


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
    print(f"vault {result['state'].lower()}")
    if result.get("rollback_accepted"):
        print(f"rollback accepted: {result['rollback_accepted']} (written to the audit log)", file=sys.stderr)
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


def _credential_table(credentials: list[dict[str, Any]]) -> list[str]:
    if not credentials:
        return ["  (none)"]
    width = max(len(c["name"]) for c in credentials)
    rows = [f"  {'NAME':<{width}}  {'KIND':<9} {'STATE':<12} {'EXPIRES':<20} {'NEXT RENEWAL':<20} LAST ERROR"]
    for c in credentials:
        rows.append(
            f"  {c['name']:<{width}}  {c['kind']:<9} {c['state']:<12} {_when(c.get('expires_at')):<20} "
            f"{_when(c.get('next_renewal')):<20} {c.get('last_error') or '-'}"
        )
        source = c.get("source")
        if source:
            where = f"{source['upstream']}:{source['path']}"
            line = f"from {where} version {source['version']}, copy {source['age']:.0f} s old"
            if source.get("pulled"):
                line += f"; pulled upstream: {source['pulled']}"
            elif source.get("last_error"):
                line += f"; last read failed: {source['last_error']}"
            rows.append(f"  {'':<{width}}  {line}")
        rows.extend(f"  {'':<{width}}  warning: {w}" for w in c.get("warnings", []))
    return rows


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    status = client.status()
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return EXIT_OK
    print(f"state:      {status['state']}")
    profile = status.get("kdf_profile") or "-"
    print(f"vault:      {status['vault_path']} (generation {status['generation']}, KDF profile {profile})")
    print(f"socket:     {status['socket']}")
    print(f"daemon:     vaultd {status['version']}, pid {status['pid']}, up {status['uptime']:.0f} s")
    print(f"memory:     {'locked' if status.get('memory_locked') else 'not locked (see vaultctl doctor)'}")
    if status["state"] == "UNLOCKED":
        print(f"credentials: {len(status['credentials'])}")
        print("\n".join(_credential_table(status["credentials"])))
        if status.get("upstreams"):
            print(f"upstreams: {len(status['upstreams'])}")
            print("\n".join(upstream_table(status["upstreams"])))
    for warning in status.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return EXIT_OK


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
        print("\n".join(_credential_table([described])))
    else:
        print("\n".join(upstream_table([described])))
    if described["state"] == "FRESH" and not described.get("last_error"):
        return EXIT_OK
    print(f"vaultctl: the attempt failed: {described.get('last_error')} ({described['state']})", file=sys.stderr)
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
                print(f"{when} {event.kind:<8} {event.name or '-'}{tail}", flush=True)
            seen += 1
            if args.count is not None and seen >= args.count:
                break
    return EXIT_OK


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    result = _slow(client, Method.CREDENTIAL_LIST, {"passphrase": _passphrase(args)})
    if args.json:
        print(json.dumps(result["credentials"], indent=2, sort_keys=True))
    else:
        print("\n".join(_credential_table(result["credentials"])))
    return EXIT_OK


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


def cmd_demo(client: Client, args: argparse.Namespace) -> int:
    from ._demo import run_demo  # noqa: PLC0415 - only the demo needs it

    return run_demo()


_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "init": cmd_init,
    "unlock": cmd_unlock,
    "lock": cmd_lock,
    "passwd": cmd_passwd,
    "status": cmd_status,
    "add": cmd_add,
    "rm": cmd_rm,
    "list": cmd_list,
    "get": cmd_get,
    "renew": cmd_renew,
    **SIGN_COMMANDS,
    "watch": cmd_watch,
    "demo": cmd_demo,
    **ENV_COMMANDS,
    **POLICY_COMMANDS,
    **UPSTREAM_COMMANDS,
    **SYSTEMD_COMMANDS,
    **AUDIT_COMMANDS,
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


if __name__ == "__main__":  # python -m vaultd._ctl, used by the demo
    raise SystemExit(main())
