"""Durable replacement: the target is always the old file or the new one, never neither."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vaultd._atomic import StorageError, ensure_private_dir, remove_stale_temps, write_atomic

OLD, NEW = b"old vault contents " * 50, b"new vault contents " * 60

# The steps of one write, as the system calls that make them. A child process runs a
# write and dies (os._exit, no cleanup, like SIGKILL) at the n-th call of one of them.
CRASH_POINTS = [  # (call, nth call, what the target must hold after the crash)
    ("open", 1, OLD),  # creating the temp file
    ("write", 1, OLD),
    ("fsync", 1, OLD),  # the temp file
    ("link", 1, OLD),  # the backup link
    ("replace", 1, OLD),  # backup link into place
    ("replace", 2, OLD),  # temp file over the target: the crash comes before it
    ("fsync", 2, NEW),  # the folder: the rename has happened
]

_CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from vaultd._atomic import write_atomic

    name, nth = sys.argv[2], int(sys.argv[3])
    real = getattr(os, name)
    calls = 0

    def dying(*args, **kwargs):
        global calls
        calls += 1
        if calls == nth:
            os._exit(137)
        return real(*args, **kwargs)

    setattr(os, name, dying)
    target = Path(sys.argv[1])
    write_atomic(target, sys.stdin.buffer.read(), target.with_name("vault.bak"))
    os._exit(0)
    """
)


@pytest.fixture
def vault_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    ensure_private_dir(directory)
    write_atomic(directory / "vault", b"first", directory / "vault.bak")
    write_atomic(directory / "vault", OLD, directory / "vault.bak")
    return directory


@pytest.mark.parametrize(("call", "nth", "expected"), CRASH_POINTS)
def test_crash_at_each_step_leaves_old_or_new(vault_dir: Path, call: str, nth: int, expected: bytes) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(vault_dir / "vault"), call, str(nth)], input=NEW, check=False
    )
    assert child.returncode == 137, "the child must have died at the injected step"
    assert (vault_dir / "vault").read_bytes() == expected
    remove_stale_temps(vault_dir)
    assert sorted(p.name for p in vault_dir.iterdir()) in (["vault"], ["vault", "vault.bak"])
    # And the next write after the crash succeeds.
    write_atomic(vault_dir / "vault", NEW, vault_dir / "vault.bak")
    assert (vault_dir / "vault").read_bytes() == NEW


def test_a_write_that_completes_keeps_the_previous_file_as_backup(vault_dir: Path) -> None:
    write_atomic(vault_dir / "vault", NEW, vault_dir / "vault.bak")
    assert (vault_dir / "vault").read_bytes() == NEW
    assert (vault_dir / "vault.bak").read_bytes() == OLD
    assert sorted(p.name for p in vault_dir.iterdir()) == ["vault", "vault.bak"]


def test_files_are_0600_and_the_folder_0700(vault_dir: Path) -> None:
    write_atomic(vault_dir / "vault", NEW, vault_dir / "vault.bak")
    assert stat.S_IMODE(vault_dir.stat().st_mode) == 0o700
    for name in ("vault", "vault.bak"):
        assert stat.S_IMODE((vault_dir / name).stat().st_mode) == 0o600


def test_a_failing_fsync_fails_the_write_and_keeps_the_old_file(
    vault_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Injected: a real fsync error needs a failing block device, which this sandbox lacks.
    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StorageError, match="Input/output error"):
        write_atomic(vault_dir / "vault", NEW, vault_dir / "vault.bak")
    assert (vault_dir / "vault").read_bytes() == OLD
    assert sorted(p.name for p in vault_dir.iterdir()) == ["vault", "vault.bak"], "no temp file left behind"


def test_a_real_failure_midway_keeps_the_old_file(vault_dir: Path) -> None:
    (vault_dir / "vault.bak").unlink()
    (vault_dir / "vault.bak").mkdir()  # the backup step cannot replace a directory, even as root
    with pytest.raises(StorageError):
        write_atomic(vault_dir / "vault", NEW, vault_dir / "vault.bak")
    assert (vault_dir / "vault").read_bytes() == OLD


def test_stale_temps_are_removed_and_nothing_else(vault_dir: Path) -> None:
    (vault_dir / ".vault.tmp-0123456789ab").write_bytes(b"half")
    (vault_dir / ".vault.bak.tmp-ba9876543210").write_bytes(b"link")
    keep = [".vault.tmp-notours", ".other.tmp-0123456789ab", ".vault.tmp-0123456789abc", "notes.txt"]
    for name in keep:
        (vault_dir / name).write_bytes(b"the operator's")
    removed = remove_stale_temps(vault_dir)
    assert {p.name for p in removed} == {".vault.tmp-0123456789ab", ".vault.bak.tmp-ba9876543210"}
    assert sorted(p.name for p in vault_dir.iterdir()) == sorted(["vault", "vault.bak", *keep])


def test_private_dir_is_tightened(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    ensure_private_dir(loose)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
