"""What every vaultctl command shares: exit statuses, the one error type, passphrase and stdin input."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import Any

from vaultd_client import Client

from .._passphrase import PassphraseError, read_passphrase

__all__ = [
    "EXIT_FAILED",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "CtlError",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_LOCKED = 0, 1, 2, 3, 4
_MAX_STDIN = 64 * 1024


class CtlError(Exception):
    """A failure to report as one line on stderr, with an exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


def _passphrase_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--passphrase-file", metavar="PATH", help="read the passphrase from the first line of PATH")
    group.add_argument("--passphrase-fd", type=int, metavar="N", help="read the passphrase from file descriptor N")


def _passphrase(args: argparse.Namespace, *, confirm: bool = False, stdin_busy: bool = False) -> str:
    try:
        return read_passphrase(file=args.passphrase_file, fd=args.passphrase_fd, confirm=confirm, stdin_busy=stdin_busy)
    except PassphraseError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None


def _slow(client: Client, method: str, params: dict[str, Any]) -> Any:
    return client.call(method, params, timeout=client.slow_timeout)


def _read_stdin_secret(kind: str) -> str:
    if sys.stdin.isatty():
        prompt = "Token (input hidden): " if kind == "static" else "JSON config, on one line (input hidden): "
        return getpass.getpass(prompt)
    raw = sys.stdin.buffer.read(_MAX_STDIN + 1)
    if len(raw) > _MAX_STDIN:
        raise CtlError(f"stdin holds more than {_MAX_STDIN} bytes", EXIT_USAGE)
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CtlError("stdin is not UTF-8 text", EXIT_USAGE) from None


def json_object(text: str, empty: str, said: str = "stdin") -> dict[str, Any]:
    """The one JSON object ``text`` (stdin) holds.

    Raises:
        CtlError: usage: nothing there (``empty`` says what to pipe), not JSON (``said`` begins
            the message), or not an object.
    """
    if not text:
        raise CtlError(f"nothing on stdin: {empty}", EXIT_USAGE)
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CtlError(f"{said} is not valid JSON (line {exc.lineno}, column {exc.colno})", EXIT_USAGE) from None
    if not isinstance(config, dict):
        raise CtlError("the JSON on stdin must be an object", EXIT_USAGE)
    return config


def _when(epoch: float | None) -> str:
    """An epoch time as vaultctl prints it (``-`` for none)."""
    if epoch is None:
        return "-"
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    except (OverflowError, OSError, ValueError):
        return f"{epoch!r} (not a date)"
