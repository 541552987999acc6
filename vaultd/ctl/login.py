"""``vaultctl login NAME``: an operator logs an ``oauth2`` credential in, in a browser or with a device code.

The daemon does the OAuth work (``credential.login``: its loopback listener, the PKCE verifier,
the code's redemption, the device polling); vaultctl shows the URL or the user code, opens a
browser where there is a display, and waits for the outcome (``credential.login_wait``). The
refresh token never passes through this process. With ``--kind oauth2`` the credential is
created first from the JSON on stdin, as ``vaultctl add`` would.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from vaultd_client import Client
from vaultd_client.errors import AlreadyExists, RemoteError
from vaultd_protocol import Method

from .common import (
    EXIT_FAILED,
    EXIT_OK,
    CtlError,
    _passphrase,
    _passphrase_options,
    _read_stdin_secret,
    json_object,
    printable,
)

__all__ = ["LOGIN_COMMANDS", "add_login_parsers"]

#: How long each ``credential.login_wait`` waits in the daemon (it allows at most 90 s).
_WAIT = 60.0

_DESCRIPTION = """\
Log an oauth2 credential in: you authorise in a browser (or on another device) and the daemon
stores the refresh token in the vault itself; it never passes through vaultctl, a shell, a file
or the clipboard.

Browser (the default): the daemon listens once on 127.0.0.1 on a random port for the redirect
(RFC 8252), with PKCE (S256) and a checked 'state', and answers only your own user. vaultctl
prints the URL to open, a one-time link to that listener (http://127.0.0.1:PORT/start/...) that
sends the browser on to the authorization server, and opens a browser itself where there is a
display (not with --no-browser); the authorization request itself (its state and PKCE challenge)
never goes on a command line. Register the redirect URI http://127.0.0.1/callback (any port)
with the authorization server, for a native client.

--device (RFC 8628): vaultctl prints where to go and the code to enter there; the daemon polls.

With --kind oauth2 the credential is created first, from one JSON object on stdin, e.g.

  {"issuer": "https://id.example", "grant_type": "authorization_code",
   "client_id": "desk-vaultd", "scope": "openid offline_access trade"}

(or the endpoints: "authorization_endpoint", "token_url", "device_authorization_endpoint";
client authentication: "client_secret" with "client_auth" basic or post, or "private_key" for
private_key_jwt; "resource", "audience": protocol/SPEC.md section 6.2). Re-running login on a
credential in NEEDS_REAUTH brings it back to FRESH without a restart; a login of the same
credential still in flight is replaced. With --json, two JSON lines: what to show (url, or
verification_uri and user_code; a browser login's authorization_url too), then the outcome.
Exits 0 once logged in, 1 if the login failed.
"""


def add_login_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "login",
        help="log an oauth2 credential in, in a browser or with --device (needs the passphrase)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="the oauth2 credential's name")
    p.add_argument("--device", action="store_true", help="use the device authorization grant (a user code)")
    p.add_argument("--no-browser", action="store_true", help="print the URL only; open no browser")
    p.add_argument("--json", action="store_true", help="print JSON lines: what to show, then the outcome")
    p.add_argument(
        "--kind",
        choices=["oauth2"],
        help="create the credential first, its settings read as one JSON object from stdin",
    )
    p.add_argument(
        "--login-timeout",
        dest="login_timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long the login may take (default 300, at most 900)",
    )
    _passphrase_options(p)


def _has_display() -> bool:
    if sys.platform == "darwin" or os.name == "nt":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _open_browser(url: str) -> bool:
    """Hand ``url`` to a browser: it goes on that program's command line, which every local user can
    read, so only the daemon's one-time loopback link is ever handed over (never the authorization
    request itself, whose state would let another user complete the login with their account)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname != "127.0.0.1" or not parts.path.startswith("/start/") or parts.query:
        return False
    import webbrowser  # noqa: PLC0415 - only a browser login needs it

    try:
        return webbrowser.open(url, new=2)
    except webbrowser.Error:
        return False


def _show(started: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(started, sort_keys=True), flush=True)
        return
    if started["mode"] == "device":
        print(f"Go to {printable(started['verification_uri'])} and enter the code {printable(started['user_code'])}")
        if started.get("verification_uri_complete"):
            print(f"(or open {printable(started['verification_uri_complete'])})")
    else:
        print("Open this URL in a browser to log in:")
        print(printable(started["url"]))
    print(f"Waiting up to {started['expires_in']:.0f} s for the login to finish...", file=sys.stderr, flush=True)
    sys.stdout.flush()


def _made(client: Client, name: str) -> tuple[Any, Any] | None:
    """When the credential ``name`` was made and last replaced, as ``status`` says (None: none)."""
    for described in client.status().get("credentials") or []:
        if described.get("name") == name:
            return described.get("created_at"), described.get("updated_at")
    return None


def cmd_login(client: Client, args: argparse.Namespace) -> int:
    if not 1 <= args.login_timeout <= 900:
        raise CtlError("--login-timeout must be between 1 and 900 seconds", 2)
    config, made = None, None
    if args.kind is not None:
        empty = "pipe the credential's settings as one JSON object (vaultctl login -h)"
        config = json_object(_read_stdin_secret(args.kind), empty)
    passphrase = _passphrase(args, stdin_busy=config is not None)
    slow = client.slow_timeout
    if config is not None:
        put = {"passphrase": passphrase, "name": args.name, "kind": args.kind, "config": config}
        try:
            client.call(Method.CREDENTIAL_PUT, put, timeout=slow)
        except AlreadyExists:
            raise CtlError(
                f"credential {args.name!r} exists: leave out --kind to log it in, or change its settings with "
                f"'vaultctl add {args.name} --kind oauth2 --replace' first"
            ) from None
        made = _made(client, args.name)
        if not args.json:
            print(f"credential {args.name!r} added", file=sys.stderr)
    params = {"passphrase": passphrase, "name": args.name, "device": args.device, "timeout": args.login_timeout}
    try:
        started = client.call(Method.CREDENTIAL_LOGIN, params, timeout=slow)
    except RemoteError as exc:
        # Made a moment ago for this login: not left behind half-made; but only if it is still the
        # one made here (another 'add --replace' meanwhile is someone's newer credential: kept).
        if config is not None and made is not None and _made(client, args.name) == made:
            client.call(Method.CREDENTIAL_REMOVE, {"passphrase": passphrase, "name": args.name}, timeout=slow)
            raise CtlError(
                f"{exc.message} ({exc.name}); the credential {args.name!r} was not kept: fix its settings and "
                "run the same command again"
            ) from None
        raise
    _show(started, args)
    if started["mode"] == "browser" and not args.no_browser and _has_display():
        _open_browser(started["url"])
    while True:
        wait = {"passphrase": passphrase, "login_id": started["login_id"], "wait": _WAIT}
        outcome = client.call(Method.CREDENTIAL_LOGIN_WAIT, wait, timeout=slow + _WAIT)
        if outcome["outcome"] != "pending":
            break
    if args.json:
        print(json.dumps(outcome, sort_keys=True))
    elif outcome["outcome"] == "ok":
        described = outcome["credential"]
        print(f"credential {args.name!r} is logged in: {described['state']}")
    if outcome["outcome"] == "ok":
        return EXIT_OK
    if not args.json:
        print(f"vaultctl: the login failed: {printable(outcome['error'])}", file=sys.stderr)
    return EXIT_FAILED


LOGIN_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {"login": cmd_login}
