"""``vaultctl exec`` and ``vaultctl env``: current tokens into a program's environment, or shell export lines.

For tools that cannot use the client library (as ``aws-vault exec`` and ``op run`` do it). A
process's environment is readable by every process of the same user (``/proc/PID/environ``)
and is inherited by its children, so the library remains the better way: this is a bridge.

Each credential goes into one variable, ``VAULTD_TOKEN_<NAME>`` by default (``NAME=VAR``
overrides it), and its expiry into ``<VAR>_EXPIRES_AT`` (whole epoch seconds, rounded down).
Every token is fetched before anything runs or prints: one failure, and nothing does. No
token ever goes into argv, a log line or an error message.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from vaultd_client import Client, Token
from vaultd_client.errors import InvalidParams, RemoteError

__all__ = ["ENV_COMMANDS", "Binding", "add_env_parsers", "environment", "parse_bindings"]

#: vaultctl's status for bad usage (the table is in ``ctl.common``); 126 and 127 are the shell's and env(1)'s.
EXIT_USAGE, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND = 2, 126, 127
PREFIX = "VAULTD_TOKEN_"
EXPIRY_SUFFIX = "_EXPIRES_AT"
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_IN_VARIABLE = re.compile(r"[^A-Z0-9_]")

_NAMING = """\
variables:
  each credential's token goes into VAULTD_TOKEN_<NAME>: the name upper-cased, every character
  other than A-Z, 0-9 and _ turned into _ (deribit-main -> VAULTD_TOKEN_DERIBIT_MAIN). NAME=VAR
  picks the variable (a shell identifier: letters, digits, _, not starting with a digit).
  <VAR>_EXPIRES_AT holds the token's expiry in whole epoch seconds (rounded down); it is
  removed (unset) for a token that never expires. Two credentials may not share a variable.
  Several names may be given comma-separated, as several words, or both.

security:
  a process's environment is readable by every process of the same user (/proc/PID/environ)
  and is inherited by every program it starts. Prefer the client library (vaultd_client),
  which keeps the token in one process's memory; this is for tools that cannot use it.
  A 'sign' credential has no token: sign requests with the library (Client.sign, VaultdAuth).
"""

_EXEC_EPILOG = f"""\
examples:
  vaultctl exec deribit -- ./engine --live
  vaultctl exec deribit=DERIBIT_TOKEN,binance-ws -- ./engine
  vaultctl exec --min-ttl 3600 deribit schwab -- python backtest.py
  vaultctl exec schwab -- sh -c 'curl -H "Authorization: Bearer $VAULTD_TOKEN_SCHWAB" ...'

Every token is fetched first; if one cannot be had, the error names the credential and the
program is not run. vaultctl then replaces itself with the program (as aws-vault does), so
signals reach it directly and its exit status is vaultctl's. The rest of the environment is
inherited. Without --, the first word holds the names and the rest is the command (so use --
when the command has a -- of its own). Exit status: the program's; 127 program not found, 126
not executable; else vaultctl's (1 refused by the daemon, 2 usage, 3 daemon not reachable,
4 vault locked).

{_NAMING}"""

_ENV_EPILOG = f"""\
examples:
  eval "$(vaultctl env deribit)"          # sets VAULTD_TOKEN_DERIBIT, VAULTD_TOKEN_DERIBIT_EXPIRES_AT
  eval "$(vaultctl env deribit=DERIBIT_TOKEN binance-ws)"
  vaultctl env --json deribit | jq -r .VAULTD_TOKEN_DERIBIT_EXPIRES_AT

Prints one "export VAR=value" line per variable, quoted for sh, bash and zsh ("unset VAR" for
the expiry of a token that never expires). With --json, one JSON object of the same variables,
all strings (no _EXPIRES_AT key for a token that never expires). The token then lives in your
shell and in everything it starts: prefer 'vaultctl exec', which scopes it to one program.

{_NAMING}"""


class UsageError(ValueError):
    """Bad names or arguments: reported on one line, exit status 2."""


@dataclass(frozen=True, slots=True)
class Binding:
    """Credential ``credential`` goes into variable ``variable``."""

    credential: str
    variable: str

    @property
    def expiry_variable(self) -> str:
        return self.variable + EXPIRY_SUFFIX


def default_variable(credential: str) -> str:
    """``VAULTD_TOKEN_`` and the name upper-cased, every character outside ``[A-Z0-9_]`` as ``_``."""
    return PREFIX + _NOT_IN_VARIABLE.sub("_", credential.upper())


def parse_bindings(specs: Sequence[str]) -> list[Binding]:
    """``["deribit=DERIBIT_TOKEN,binance", "schwab"]`` into bindings, in order.

    Raises:
        UsageError: an empty name, an invalid variable name, no name at all, or two
            variables (tokens or expiries) with the same name.
    """
    bindings: list[Binding] = []
    owners: dict[str, str] = {}  # variable -> what sets it, for the error message
    for spec in specs:
        for item in (part.strip() for part in spec.split(",")):
            credential, has_variable, variable = item.partition("=")
            if not credential:
                raise UsageError(f"a credential name is missing in {spec!r} (NAME or NAME=VAR, comma-separated)")
            if not has_variable:
                variable = default_variable(credential)
            elif not _VARIABLE.fullmatch(variable):
                raise UsageError(
                    f"{variable!r} is not a valid variable name for {credential!r}: use letters, digits and _, "
                    "not starting with a digit"
                )
            binding = Binding(credential, variable)
            if binding in bindings:
                raise UsageError(f"credential {credential!r} is listed twice for {variable}")
            sets = (
                (variable, f"the token of {credential!r}"),
                (binding.expiry_variable, f"the expiry of {credential!r}"),
            )
            for name, what in sets:
                if name in owners:
                    raise UsageError(
                        f"{name} would hold both {owners[name]} and {what}: pick another variable with NAME=VAR"
                    )
                owners[name] = what
            bindings.append(binding)
    if not bindings:
        raise UsageError("no credential named: give NAME[,NAME...] (NAME=VAR picks the variable)")
    return bindings


def _fetch(client: Client, credential: str, min_ttl: float, consequence: str) -> Token:
    """One token, or the daemon's error again, with the credential named (and the class kept,
    so that vaultctl's exit status is the same as for any refusal)."""
    try:
        token = client.token(credential, min_ttl=min_ttl)
    except RemoteError as exc:
        if isinstance(exc, InvalidParams) and _kind(client, credential) == "sign":
            message = (
                f"{credential!r} is a 'sign' credential and has no token, so {consequence}: sign requests with "
                "the client library (Client.sign, vaultd_client.httpx_auth.VaultdAuth), or sign one with "
                f"'vaultctl sign {credential} METHOD URL' (a real, audited signature)"
            )
        else:
            message = f"cannot get a token for {credential!r}, so {consequence}: {exc.message}"
        raise type(exc)(message, exc.code, exc.name) from None
    if "\0" in token.value:
        raise UsageError(f"the token of {credential!r} holds a NUL character, which no environment variable can")
    return token


def _kind(client: Client, credential: str) -> str | None:
    try:
        described = client.status().get("credentials") or []
    except RemoteError:
        return None
    return next((c.get("kind") for c in described if c.get("name") == credential), None)


def environment(
    client: Client, bindings: Sequence[Binding], min_ttl: float, consequence: str
) -> list[tuple[str, str | None]]:
    """Every variable to set (``None``: to unset), after fetching every token.

    Raises:
        RemoteError: the daemon refused one (the message names it); TransportError.
    """
    tokens: dict[str, Token] = {}
    for binding in bindings:
        if binding.credential not in tokens:
            tokens[binding.credential] = _fetch(client, binding.credential, min_ttl, consequence)
    variables: list[tuple[str, str | None]] = []
    for binding in bindings:
        token = tokens[binding.credential]
        expires = None if token.expires_at is None else str(math.floor(token.expires_at))
        variables += [(binding.variable, token.value), (binding.expiry_variable, expires)]
    return variables


# -- the two commands -------------------------------------------------------------------------


def _fail(message: str, status: int) -> NoReturn:
    print(f"vaultctl: {message}", file=sys.stderr)
    raise SystemExit(status)


def _min_ttl(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not (math.isfinite(seconds) and seconds >= 0):
        raise argparse.ArgumentTypeError("must be a number of seconds, 0 or more")
    return seconds


def split_exec_arguments(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """``NAME[,NAME...] [NAME...] -- CMD ARGS`` (or ``NAME[,NAME...] CMD ARGS``) into names and command.

    Raises:
        UsageError: no names, no command, or an option among the names.
    """
    words = list(words)
    if words[:1] == ["--"] and "--" in words[1:]:
        words = words[1:]
    if "--" in words:
        cut = words.index("--")
        specs, command = words[:cut], words[cut + 1 :]
    else:
        specs, command = words[:1], words[1:]
    if not specs:
        raise UsageError("no credential named: vaultctl exec NAME[,NAME...] -- COMMAND [ARGS...]")
    option = next((s for s in specs if s.startswith("-")), None)
    if option is not None:
        raise UsageError(f"{option!r}: options go before the names (vaultctl exec --min-ttl 60 NAME -- COMMAND)")
    if not command:
        raise UsageError("no command to run: vaultctl exec NAME[,NAME...] -- COMMAND [ARGS...]")
    return specs, command


def cmd_exec(client: Client, args: argparse.Namespace) -> int:
    try:
        specs, command = split_exec_arguments(args.words)
        variables = environment(client, parse_bindings(specs), args.min_ttl, "nothing was run")
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE)
    client.close()
    child = dict(os.environ)
    for name, value in variables:
        if value is None:
            child.pop(name, None)
        else:
            child[name] = value
    _replace_process(command, child)


def _replace_process(command: list[str], env: dict[str, str]) -> NoReturn:
    program = command[0]
    sys.stdout.flush()
    sys.stderr.flush()
    # Python ignores SIGPIPE and SIGXFSZ, and exec keeps ignored signals ignored: give them back,
    # or 'vaultctl exec x -- yes | head' would see EPIPE errors instead of ending quietly.
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL)
    try:
        os.execvpe(program, command, env)  # noqa: S606 - running the operator's program is the point
    except FileNotFoundError:
        if "/" in program and os.path.exists(program):
            _fail(f"cannot run {program!r}: its interpreter (the #! line) was not found", EXIT_NOT_EXECUTABLE)
        _fail(f"{program!r}: command not found", EXIT_NOT_FOUND)
    except OSError as exc:
        _fail(f"cannot run {program!r}: {exc.strerror or type(exc).__name__}", EXIT_NOT_EXECUTABLE)
    except ValueError:  # an argument with a NUL character
        _fail(f"cannot run {program!r}: an argument holds a NUL character", EXIT_USAGE)


def cmd_env(client: Client, args: argparse.Namespace) -> int:
    try:
        variables = environment(client, parse_bindings(args.names), args.min_ttl, "nothing was printed")
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE)
    if args.json:
        print(json.dumps({name: value for name, value in variables if value is not None}, indent=2))
    else:
        for name, value in variables:
            print(f"unset {name}" if value is None else f"export {name}={shlex.quote(value)}")
    return 0


def add_env_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``exec`` and ``env`` on vaultctl's subcommands."""
    p = sub.add_parser(
        "exec",
        help="run a program with current tokens in its environment (for tools that cannot use the library)",
        description="Run COMMAND with the current token of each credential in its environment.",
        usage="vaultctl exec [-h] [--min-ttl SECONDS] NAME[=VAR][,NAME[=VAR]...] [NAME...] -- COMMAND [ARGS...]",
        epilog=_EXEC_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_min_ttl(p)
    p.add_argument("words", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    p = sub.add_parser(
        "env",
        help='print shell export lines with current tokens: eval "$(vaultctl env NAME)"',
        description="Print the current token of each credential as shell export lines (or JSON).",
        usage="vaultctl env [-h] [--min-ttl SECONDS] [--json] NAME[=VAR][,NAME[=VAR]...] [NAME...]",
        epilog=_ENV_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "names", nargs="+", metavar="NAME", help="a credential; NAME=VAR picks its variable; comma-separated"
    )
    _add_min_ttl(p)
    p.add_argument("--json", action="store_true", help="print one JSON object of variable names to values")


def _add_min_ttl(parser: argparse.ArgumentParser) -> None:
    """``--min-ttl``, the same for ``exec`` and ``env``."""
    parser.add_argument(
        "--min-ttl",
        type=_min_ttl,
        default=0.0,
        metavar="SECONDS",
        help="fetch tokens valid at least this long (default 0)",
    )


ENV_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {"exec": cmd_exec, "env": cmd_env}
