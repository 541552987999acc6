"""``vaultctl sign``: sign one request for real and print what to send.

The signature is the one an engine's ``Client.sign`` gets: usable until ``valid_until`` and
recorded in the audit log, not a dry run. A REST request prints as it is to be sent (method
and final URL, the headers, the body). A WebSocket login (``okx-ws-login``, ``bybit-ws-auth``,
``binance-ws-logon``, ``coinbase-ws-jwt``: an answer with no headers and no body, whose
``query`` is the login args, SPEC.md 6.6) prints the plain URL to connect to and the message
to send, built as each venue's row of SPEC 6.6 says; the answer's own ``url`` carries the args
as a query (OKX's passphrase among them) and is not printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from vaultd_client import Client, Signed
from vaultd_client.errors import InvalidParams

from .common import _MAX_STDIN, EXIT_OK, EXIT_USAGE, CtlError, _when
from .env import _kind

__all__ = ["SIGN_COMMANDS", "add_sign_parser", "websocket_login"]

_DESCRIPTION = (
    "Sign one request with a 'sign' credential, exactly as an engine's Client.sign would. This is not a dry "
    "run: the signature printed is real, usable at the exchange until it expires, and recorded in the audit log. "
    "For a REST request it prints the method and final URL, the headers to add and the body to send. For a "
    "WebSocket login (okx-ws-login, bybit-ws-auth, binance-ws-logon, coinbase-ws-jwt) it prints the plain URL to "
    "connect to and, under it, the login message to send (for coinbase-ws-jwt the JWT for the subscribe "
    "message's 'jwt' field); OKX's login message holds the API key's passphrase, as OKX requires."
)


def add_sign_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sign",
        help="sign one request for real and print what to send (a usable, audited signature: not a dry run)",
        description=_DESCRIPTION,
    )
    p.add_argument("name")
    p.add_argument("method", help="HTTP method, e.g. GET or POST (GET for a WebSocket login)")
    p.add_argument(
        "url",
        help="the full URL, e.g. https://api.binance.com/api/v3/account?omitZeroBalances=true, or the WebSocket "
        "URL for a login, e.g. wss://ws.okx.com:8443/ws/v5/private",
    )
    body = p.add_mutually_exclusive_group()
    body.add_argument("--body", default="", help="the request body, as text")
    body.add_argument("--body-file", metavar="PATH", help="read the request body from PATH")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="K=V",
        help="a scheme knob (token.sign's 'options', SPEC.md 6.6, e.g. recvWindow=10000, expires_in=30000); "
        "repeatable; overrides the credential's own setting for this request",
    )
    p.add_argument(
        "--timestamp",
        type=int,
        metavar="MS",
        help="sign as of this time, in ms since the epoch: at most a minute ahead of and five minutes behind "
        "the daemon's clock (default: the daemon's clock)",
    )
    p.add_argument(
        "--nonce",
        type=int,
        metavar="N",
        help="propose a nonce, for schemes that take one (Kraken: refused unless above the last one handed out; "
        "default: the daemon picks)",
    )
    p.add_argument("--json", action="store_true", help="print the daemon's answer as JSON (query included)")


def _options(given: list[str]) -> dict[str, str] | None:
    """``--option K=V`` ... as ``token.sign``'s ``options``.

    Raises:
        CtlError: usage: no ``=``, an empty K, or a K given twice.
    """
    options: dict[str, str] = {}
    for item in given:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise CtlError(f"--option takes K=V, for example recvWindow=10000 (not {item!r})", EXIT_USAGE)
        if key in options:
            raise CtlError(f"--option {key} is given twice", EXIT_USAGE)
        options[key] = value
    return options or None


def _body(args: argparse.Namespace) -> bytes:
    if not args.body_file:
        text: str = args.body
        return text.encode("utf-8")
    try:
        with open(args.body_file, "rb") as handle:
            return handle.read(_MAX_STDIN + 1)
    except OSError as exc:
        raise CtlError(f"cannot read {args.body_file}: {exc.strerror}", EXIT_USAGE) from None


def _number(text: str) -> int | float:
    """A numeric login arg as the JSON number the venue expects (Binance's recvWindow may have decimals)."""
    return int(text) if text.isdigit() else float(text)


def _okx(args: dict[str, str]) -> str:
    return json.dumps({"op": "login", "args": [args]})


def _bybit(args: dict[str, str]) -> str:
    return json.dumps({"op": "auth", "args": [args["apiKey"], _number(args["expires"]), args["signature"]]})


def _binance(args: dict[str, str]) -> str:
    params = {name: _number(value) if name in ("timestamp", "recvWindow") else value for name, value in args.items()}
    return json.dumps({"id": 1, "method": "session.logon", "params": params})


def _coinbase(args: dict[str, str]) -> str:
    return args["jwt"]


#: Each WebSocket login scheme's args, in the order its scheme returns them: its name, how to
#: build what to send from them, and what to do with that (SPEC.md 6.6).
_LOGINS: dict[tuple[str, ...], tuple[str, Callable[[dict[str, str]], str], str]] = {
    ("apiKey", "passphrase", "timestamp", "sign"): (
        "okx-ws-login",
        _okx,
        "send the second line as the login message (it holds the API key's passphrase)",
    ),
    ("apiKey", "expires", "signature"): ("bybit-ws-auth", _bybit, "send the second line as the auth message"),
    ("apiKey", "timestamp", "signature"): ("binance-ws-logon", _binance, "send the second line as the request"),
    ("apiKey", "recvWindow", "timestamp", "signature"): (
        "binance-ws-logon",
        _binance,
        "send the second line as the request",
    ),
    ("jwt",): (
        "coinbase-ws-jwt",
        _coinbase,
        'put the second line, a JWT, in the "jwt" field of a subscribe message (a new one each: it lasts 2 minutes)',
    ),
}


def websocket_login(signed: Signed) -> tuple[str, str, str] | None:
    """A WebSocket login answer (no headers, no body, the query = the login args) as
    (scheme, what to do, what to send); None for any other answer.

    An answer of that shape with args in a layout not known here comes back as a JSON object of
    the args, under the scheme name ``websocket login``.
    """
    if signed.headers or signed.body or not signed.query:
        return None
    args = dict(signed.query)
    known = _LOGINS.get(tuple(name for name, _ in signed.query))
    if known is not None and len(args) == len(signed.query):
        scheme, build, todo = known
        try:
            return scheme, todo, build(args)
        except ValueError:  # a number that is none: shown as it came, below
            pass
    return "websocket login", "send the second line's login args as SPEC.md 6.6 says for the scheme", json.dumps(args)


def cmd_sign(client: Client, args: argparse.Namespace) -> int:
    options = _options(args.option)
    body = _body(args)
    try:
        signed = client.sign(
            args.name, args.method, args.url, body=body, timestamp=args.timestamp, nonce=args.nonce, options=options
        )
    except InvalidParams as exc:
        kind = _kind(client, args.name)
        if kind is None or kind == "sign":
            raise
        message = (
            f"credential {args.name!r} is a {kind} credential: it signs nothing, it has a token; "
            f"use 'vaultctl get {args.name}' (or Client.token in an engine)"
        )
        raise type(exc)(message, exc.code, exc.name) from None
    if args.json:
        print(json.dumps({
            "headers": dict(signed.headers), "url": signed.url, "query": [list(pair) for pair in signed.query],
            "body": signed.body.decode("utf-8", "replace"), "valid_until": signed.valid_until, "nonce": signed.nonce,
        }, indent=2))  # fmt: skip
        return EXIT_OK
    login = websocket_login(signed)
    if login is None:
        print(f"{args.method.upper()} {signed.url}")
        for key, value in signed.headers.items():
            print(f"{key}: {value}")
        if signed.body:
            print()
            print(signed.body.decode("utf-8", "replace"))
    else:
        scheme, todo, message = login
        print(f"# {scheme}: connect to the first line's URL (no query), then {todo}", file=sys.stderr, flush=True)
        print(signed.url.split("?", 1)[0])
        print(message, flush=True)
    print(f"# a real signature, valid until {_when(signed.valid_until)}", file=sys.stderr)
    return EXIT_OK


SIGN_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {"sign": cmd_sign}
