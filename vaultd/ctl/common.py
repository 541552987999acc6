"""What every vaultctl command shares: exit statuses, the one error type, passphrase and stdin input."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import threading
import time
from typing import Any

from vaultd_client import Client
from vaultd_client.errors import RemoteError, TransportError

from .._passphrase import PassphraseError, read_passphrase

__all__ = [
    "EXIT_FAILED",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "CtlError",
    "printable",
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


#: libsodium's Argon2id memory per profile, as the progress note names it.
_KDF_MEMORY = {"min": "8 KiB", "interactive": "64 MiB", "moderate": "256 MiB", "sensitive": "1 GiB"}
#: A call carrying a passphrase that has not answered after this long says what it waits for.
PROGRESS_AFTER = 0.5


def _slow(client: Client, method: str, params: dict[str, Any]) -> Any:
    """A call whose answer may wait for Argon2id (every call carrying a passphrase).

    On a terminal, a key derivation that runs longer than :data:`PROGRESS_AFTER` says so on
    stderr ("deriving key (Argon2id, 1 GiB)..."), so that a ``sensitive`` unlock is not seconds
    of silence. Scripts (stderr not a terminal) see nothing extra.
    """
    if "passphrase" not in params or not sys.stderr.isatty():
        return client.call(method, params, timeout=client.slow_timeout)
    profile = params.get("kdf_profile")
    timer = threading.Timer(PROGRESS_AFTER, _say_deriving, (client, profile))
    timer.daemon = True
    timer.start()
    try:
        return client.call(method, params, timeout=client.slow_timeout)
    finally:
        timer.cancel()


def _say_deriving(client: Client, profile: str | None) -> None:
    """The progress note; the vault's profile is asked on a connection of its own (the first is busy)."""
    if profile is None:
        try:
            with Client(client.socket_path, timeout=PROGRESS_AFTER, cache=False, server_uid=client.server_uid) as other:
                found = other.status().get("kdf_profile")
        except (RemoteError, TransportError):  # the daemon is busy deriving: say it without the figure
            found = None
        profile = found if isinstance(found, str) else None
    memory = _KDF_MEMORY.get(profile or "")
    note = f"deriving key (Argon2id, {memory})..." if memory else "deriving key (Argon2id)..."
    print(note, file=sys.stderr, flush=True)


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


def printable(value: Any) -> str:
    """``value`` as text a terminal shows as is: every character it would act on comes escaped.

    Daemon-supplied text (names, kinds, errors, settings, event details) passes through here
    before vaultctl prints it, so that a crafted name or upstream error cannot move the cursor,
    set the window title, plant a hyperlink or clear the screen: C0 and C1 controls, ESC and DEL
    (and the other characters Python does not call printable, such as bidirectional overrides)
    become ``\\x1b``, ``\\u202e`` and the like. ``None`` is ``-``.
    """
    text = "-" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def _escaped(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
