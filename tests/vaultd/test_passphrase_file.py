"""A ``--passphrase-file`` that other users can read is used, and said out loud (as ssh does for keys)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vaultd._passphrase import read_passphrase

from ..unavailable import unavailable

PASSPHRASE = "fake passphrase in a file"


def _file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "passphrase"
    path.write_text(PASSPHRASE + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_file_others_can_read_is_warned_about(tmp_path: Path, mode: int, capsys: pytest.CaptureFixture[str]) -> None:
    path = _file(tmp_path, mode)
    assert read_passphrase(file=str(path), fd=None) == PASSPHRASE
    err = capsys.readouterr().err
    assert f"passphrase file {path} is readable by other users (mode {mode:04o})" in err
    assert f"chmod 600 {path}" in err
    assert PASSPHRASE not in err


@pytest.mark.parametrize(("mode", "said"), [(0o602, "writable"), (0o620, "writable"), (0o666, "readable and writable")])
def test_a_file_others_can_write_is_warned_about(
    tmp_path: Path, mode: int, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _file(tmp_path, mode)
    assert read_passphrase(file=str(path), fd=None) == PASSPHRASE
    assert f"passphrase file {path} is {said} by other users (mode {mode:04o})" in capsys.readouterr().err


def test_a_file_another_user_owns_is_warned_about(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0:  # CI runs as root: there, no root is a failure, not a skip
        unavailable("giving a file to another user needs root")
    path = _file(tmp_path, 0o600)
    os.chown(path, 65534, 65534)
    assert read_passphrase(file=str(path), fd=None) == PASSPHRASE
    err = capsys.readouterr().err
    assert f"passphrase file {path} belongs to uid 65534, not you" in err and PASSPHRASE not in err


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_file_reads_quietly(tmp_path: Path, mode: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert read_passphrase(file=str(_file(tmp_path, mode)), fd=None) == PASSPHRASE
    assert capsys.readouterr().err == ""


def test_a_fifo_others_can_write_is_warned_about(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A named pipe is read as a file is (a process substitution, a secrets agent); someone else
    who can write to it can feed it their passphrase, so its mode and owner are checked too."""
    path = tmp_path / "passphrase.fifo"
    os.mkfifo(path, 0o666)
    path.chmod(0o622)
    writer = os.fork()
    if writer == 0:  # pragma: no cover - the child writes the passphrase into the pipe and leaves
        with open(path, "w") as pipe:
            pipe.write(PASSPHRASE + "\n")
        os._exit(0)
    try:
        assert read_passphrase(file=str(path), fd=None) == PASSPHRASE
    finally:
        os.waitpid(writer, 0)
    err = capsys.readouterr().err
    assert f"passphrase file {path} is writable by other users (mode 0622)" in err and PASSPHRASE not in err
