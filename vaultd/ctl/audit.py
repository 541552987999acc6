"""``vaultctl audit`` and ``vaultctl audit verify``: print the audit log, and check its hash chain.

Both read the files directly: they do not talk to the daemon and need no passphrase, so
they work with the daemon stopped, locked or gone. Neither ever prints a token: the log
holds none (only a short keyed fingerprint of each token handed out).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from vaultd_client import Client
from vaultd_protocol import METHODS, ErrorCode

from .._audit import default_audit_path, read, verify
from .common import printable

__all__ = ["AUDIT_COMMANDS", "add_audit_parsers", "table_row"]

#: vaultctl's statuses (the table is in ``ctl.common``).
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_HEADERS = ("TIME", "WHO (uid/unit/pid)", "METHOD", "CREDENTIAL", "OUTCOME", "COUNT", "FINGERPRINT")
#: Column widths while following (the rows to come are unknown): wide enough for every method and
#: outcome the daemon writes; a longer cell (a long name) pushes only its own line out.
_FOLLOW_WIDTHS: tuple[int, ...] = (
    29, 34, max(len(m) for m in METHODS), 18, max(len("rollback_accepted"), *(len(e.name) for e in ErrorCode)), 5, 16,
)  # fmt: skip

_AUDIT_EPILOG = """\
each line of the log is one JSON object, keys in this order:
  time         epoch seconds when the daemon decided
  identity     the peer as the daemon saw it: uid, gid, pid, unit, exe...
  method       what it asked for (token.get, token.sign, ...)
  credential   the credential's name, or null
  outcome      ok, refused (at accept), or an error code's name (LOCKED, FORBIDDEN, ...)
  count        how many decisions the line stands for: n identical ones (same identity, method,
               credential, outcome, fingerprint, detail) in one second are one line; for
               LINES_COUNTED (another uid over its budget) and LINES_DROPPED, how many were
               counted or dropped. Absent in lines written before it existed: 1
  fingerprint  for a token handed out, the first 16 hex digits of an HMAC of it (never the token)
  detail       a short note, or null
  seq          1, 2, 3...: never goes back, across rotation and restarts
  prev         SHA-256 of the previous line (64 zeros before the first line ever)

The table shows time in local ISO-8601, then uid/unit/pid, method, credential, outcome,
count, fingerprint and detail, each column as wide as its longest cell (with --follow, wide
enough for every method and outcome). Reading does not check the chain: 'vaultctl audit verify' does.
Files: audit.log, then audit.log.1 (newest) .. audit.log.4 (oldest) and audit.head, in
$XDG_STATE_HOME/vaultd (default ~/.local/state/vaultd).

Exit status: 0 ok, 1 no log at that path or a line that is not JSON, 2 usage.
"""

_VERIFY_EPILOG = """\
Checks every line from the oldest kept file (audit.log.N) to audit.log: valid JSON with the
keys in order, 'seq' one more than the line before, 'prev' the SHA-256 of the line before.
audit.head (the last seq and hash, rewritten after each write) shows lines removed from the
end, and records what rotation deleted: the oldest kept line must follow it, and verify says
which lines were rotated away, from when to when ("rotated" in --json). A deleted, edited,
inserted or reordered line fails, naming the file and line; so do oldest files deleted by
anything but rotation. (In a log whose head predates that record, the oldest kept line's
link to what is gone is taken on trust, and said so.)

Not detected: a process of your user that rewrites the whole chain and audit.head. Ship the
log elsewhere as it is written to guard against that.

Exit status: 0 the chain holds, 1 it does not (the first bad file and line on stderr), 2 usage.
"""


def _fail(message: str, status: int) -> NoReturn:
    print(f"vaultctl: {message}", file=sys.stderr)
    raise SystemExit(status)


_printable = printable  # control characters come escaped


def _when(epoch: Any) -> str:
    try:
        return datetime.fromtimestamp(float(epoch)).astimezone().isoformat(timespec="milliseconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return f"{epoch!r} (not a time)"


def _when_known(epoch: float | None) -> str:
    return "an unknown time" if epoch is None else _when(epoch)


def _who(identity: Any) -> str:
    if not isinstance(identity, dict):
        return _printable(identity)
    return "/".join(_printable(identity.get(key)) for key in ("uid", "unit", "pid"))


def _cells(entry: dict[str, Any]) -> tuple[str, ...]:
    """One log entry's cells, escaped for the terminal: the columns of :data:`_HEADERS`, then the detail."""
    return (
        _when(entry.get("time")), _who(entry.get("identity")), _printable(entry.get("method")),
        _printable(entry.get("credential")), _printable(entry.get("outcome")), _printable(entry.get("count", 1)),
        _printable(entry.get("fingerprint")), _printable(entry.get("detail")),
    )  # fmt: skip


def _line(cells: tuple[str, ...], widths: tuple[int, ...]) -> str:
    return ("".join(f"{cell:<{width}} " for cell, width in zip(cells, widths, strict=False)) + cells[-1]).rstrip()


def table_row(entry: dict[str, Any], widths: tuple[int, ...] = _FOLLOW_WIDTHS) -> str:
    """One log entry as a table row (escaped for the terminal)."""
    return _line(_cells(entry), widths)


def _widths(rows: list[tuple[str, ...]]) -> tuple[int, ...]:
    """Each column as wide as its header and its longest cell."""
    return tuple(max(len(header), *(len(row[i]) for row in rows)) for i, header in enumerate(_HEADERS))


def _show(entries: Iterable[dict[str, Any]], *, as_json: bool, follow: bool = False) -> int:
    status = EXIT_OK
    widths: tuple[int, ...] = _FOLLOW_WIDTHS
    if not as_json and not follow:  # the whole table is known: columns sized from its rows
        entries = list(entries)
        widths = _widths([_cells(e) for e in entries if not ("error" in e and "seq" not in e)])
    if not as_json:
        print(_line((*_HEADERS, "DETAIL"), widths), flush=True)
    for entry in entries:
        if "error" in entry and "seq" not in entry:
            print(f"vaultctl: {entry['error']} (run 'vaultctl audit verify')", file=sys.stderr, flush=True)
            status = EXIT_FAILED
        elif as_json:
            print(json.dumps(entry, separators=(",", ":")), flush=True)
        else:
            print(_line(_cells(entry), widths), flush=True)
    return status


def _path(args: argparse.Namespace) -> Path:
    return Path(args.path).expanduser() if args.path else default_audit_path()


def cmd_audit(client: Client, args: argparse.Namespace) -> int:
    """``vaultctl audit [verify]``: the client is not used (no daemon needed)."""
    path = _path(args)
    try:
        if args.audit_command == "verify":
            if args.follow:
                _fail("--follow goes with 'vaultctl audit', not with 'verify'", EXIT_USAGE)
            return _verify(path, as_json=args.json)
        if not args.follow and not path.exists():
            _fail(f"no audit log at {path} (the daemon writes it; --path names another)", EXIT_FAILED)
        if args.follow and not path.exists():
            print(f"vaultctl: waiting for {path} to appear", file=sys.stderr, flush=True)
        return _show(read(path, follow=args.follow), as_json=args.json, follow=args.follow)
    except BrokenPipeError:
        raise  # 'vaultctl audit | head': vaultctl's main ends quietly with 141, as every command does
    except OSError as exc:
        _fail(f"cannot read the audit log at {path}: {exc.strerror or exc}", EXIT_FAILED)


def _verify(path: Path, *, as_json: bool) -> int:
    result = verify(path)
    if as_json:
        print(json.dumps({"path": str(path), **asdict(result)}, indent=2))
        return EXIT_OK if result.ok else EXIT_FAILED
    if not result.ok:
        checked = f" ({result.lines} lines checked before it)" if result.lines else ""
        _fail(f"the audit log does not verify: {result.problem}{checked}", EXIT_FAILED)
    span = f" (seq {result.first_seq} to {result.last_seq})" if result.first_seq is not None else ""
    gone = result.rotated
    if gone is None:
        print(f"audit log intact: {result.lines} lines in {result.files} files{span}, {path}")
    else:
        print(f"audit log intact from seq {result.first_seq}, not complete: lines {gone.first_seq}..{gone.last_seq} "
              f"from {_when_known(gone.first_time)} to {_when_known(gone.last_time)} were rotated away")  # fmt: skip
        print(f"{result.lines} lines kept in {result.files} files{span}, {path}")
    if result.note:
        print(f"note: {result.note}")
    return EXIT_OK


def add_audit_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``audit`` (and its ``verify``) on vaultctl's subcommands."""
    default = default_audit_path()
    p = sub.add_parser(
        "audit",
        help="print the audit log (--follow, --json); 'vaultctl audit verify' checks its hash chain",
        description=(
            "Print the audit log, oldest line first: one line per decision the daemon made. "
            "Reads the files directly: no daemon and no passphrase needed."
        ),
        usage=(
            "vaultctl audit [-h] [--follow] [--json] [--path FILE]\n"
            "       vaultctl audit verify [-h] [--json] [--path FILE]"
        ),
        epilog=_AUDIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-f", "--follow", action="store_true", help="keep printing lines as they are written (as tail -F)")
    p.add_argument("--json", action="store_true", help="print each entry as one JSON line, as stored")
    p.add_argument("--path", metavar="FILE", help=f"the audit log (default {default})")
    actions = p.add_subparsers(dest="audit_command", title="actions")
    v = actions.add_parser(
        "verify",
        prog="vaultctl audit verify",
        help="check the hash chain: exit 0 when it holds, 1 naming the first bad file and line",
        description="Check the audit log's hash chain and its head file. Needs no daemon and no passphrase.",
        epilog=_VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # SUPPRESS: given before 'verify' or after it, either way counts.
    v.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the result as JSON")
    v.add_argument("--path", metavar="FILE", default=argparse.SUPPRESS, help=f"the audit log (default {default})")


AUDIT_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {"audit": cmd_audit}
