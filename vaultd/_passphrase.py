"""Where vaultctl reads a passphrase from: the terminal, a file, or an inherited fd.

Never argv, never the environment: both are visible to other processes of the user.
"""

from __future__ import annotations

import getpass
import os
import stat
import sys

__all__ = ["PassphraseError", "read_passphrase"]

_MAX = 4096


class PassphraseError(Exception):
    """No passphrase could be read; the message says how to give one."""


def _first_line(raw: bytes, where: str) -> str:
    text = raw.decode("utf-8", errors="strict").split("\n", 1)[0].removesuffix("\r")
    if not text:
        raise PassphraseError(f"the passphrase from {where} is empty")
    return text


def _warn_if_others_can_read(file: str, status: os.stat_result) -> None:
    """ssh's habit for key files: a passphrase file others can read, write, or own is said out loud
    (but used): readable, it is no secret; writable or owned by another user, someone else can put
    their passphrase in it before an ``init`` or a ``passwd``. A named pipe is checked the same way
    (another user who can open it can read the passphrase from it, or feed it theirs); a terminal
    or a socket is not a file someone prepared."""
    mode = status.st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        return
    others = []
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        others.append("readable")
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        others.append("writable")
    if others:
        print(
            f"vaultctl: warning: the passphrase file {file} is {' and '.join(others)} by other users "
            f"(mode {stat.S_IMODE(mode):04o}): run 'chmod 600 {file}'",
            file=sys.stderr,
        )
    if status.st_uid != os.geteuid():
        print(
            f"vaultctl: warning: the passphrase file {file} belongs to uid {status.st_uid}, not you "
            f"(uid {os.geteuid()}): its owner can change it",
            file=sys.stderr,
        )


def _read_fd(fd: int) -> bytes:
    chunks = []
    size = 0
    while size <= _MAX:
        chunk = os.read(fd, _MAX + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk:
            break
    return b"".join(chunks)


def read_passphrase(
    *,
    file: str | None,
    fd: int | None,
    prompt: str = "Passphrase: ",
    confirm: bool = False,
    stdin_busy: bool = False,
) -> str:
    """Read one passphrase (its first line, for files and fds).

    Raises:
        PassphraseError: unreadable file or fd, no terminal to prompt on, an empty
            passphrase, or two different entries when ``confirm`` is set.
    """
    if file is not None:
        try:
            with open(file, "rb") as handle:
                _warn_if_others_can_read(file, os.fstat(handle.fileno()))
                return _first_line(handle.read(_MAX + 1), file)
        except OSError as exc:
            raise PassphraseError(f"cannot read the passphrase file {file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise PassphraseError(f"the passphrase file {file} is not UTF-8") from None
    if fd is not None:
        if fd == 0 and stdin_busy:
            raise PassphraseError("stdin carries the credential here: give the passphrase on another fd or a file")
        try:
            return _first_line(_read_fd(fd), f"fd {fd}")
        except OSError as exc:
            raise PassphraseError(f"cannot read the passphrase from fd {fd}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise PassphraseError(f"the passphrase on fd {fd} is not UTF-8") from None
    try:
        with open("/dev/tty", "rb"):
            pass
    except OSError:
        raise PassphraseError(
            "no terminal to ask for the passphrase: use --passphrase-file or --passphrase-fd"
        ) from None
    first = getpass.getpass(prompt)
    if not first:
        raise PassphraseError("empty passphrase")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise PassphraseError("the two passphrases differ")
    return first
