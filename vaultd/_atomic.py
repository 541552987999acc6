"""Durable, atomic replacement of one file, keeping the previous version as a backup.

The recipe: write a temp file in the same directory (``O_EXCL``, 0600), fsync it, hard-link
the current file to the backup name (atomically, through a second temp name), rename the
temp file over the target, fsync the directory. After a crash at any step the target is
the old file or the new one, never neither and never a mix. Any fsync error fails the
write; the fd is never fsynced again (on Linux a failed fsync may have dropped the data).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

__all__ = ["NotDurable", "StorageError", "ensure_private_dir", "fsync_dir", "remove_stale_temps", "write_atomic"]

_TMP_MARK = ".tmp-"


class StorageError(OSError):
    """A write failed. The previous file is still in place."""


class NotDurable(StorageError):
    """The new file is in place, but the folder fsync failed: a power loss may undo it."""


def _temp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}{_TMP_MARK}{secrets.token_hex(6)}")


def _is_temp_of(name: str, targets: tuple[str, ...]) -> bool:
    """Whether ``name`` is exactly a temp name that :func:`_temp_name` makes for a target."""
    for target in targets:
        prefix = f".{target}{_TMP_MARK}"
        if name.startswith(prefix):
            tail = name[len(prefix) :]
            return len(tail) == 12 and all(c in "0123456789abcdef" for c in tail)
    return False


def ensure_private_dir(path: Path, *, tighten: bool = True) -> bool:
    """Create ``path`` (and parents) 0700, or check an existing one is ours.

    An existing folder that others may enter is made 0700 when ``tighten`` is set (it is
    vaultd's own); otherwise it is left alone. Returns whether it is private now.

    Raises:
        StorageError: it exists but belongs to another user, or is not a directory.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not path.is_dir() or path.is_symlink():
        raise StorageError(errno.ENOTDIR, f"{path} is not a directory")
    if st.st_uid != os.getuid():
        raise StorageError(errno.EPERM, f"{path} belongs to uid {st.st_uid}, not to us")
    if st.st_mode & 0o077:
        if not tighten:
            return False
        os.chmod(path, 0o700)
    return True


def fsync_dir(directory: Path) -> None:
    """Make the names in ``directory`` (a file created or renamed there) survive a power loss."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(target: Path, data: bytes, backup: Path | None = None, *, overwrite: bool = True) -> None:
    """Replace ``target`` with ``data`` durably; keep the old file as ``backup``. Without
    ``overwrite`` the new file is linked into place, which fails if anything (a symbolic link
    too) has the name already. Either way a symbolic link at ``target`` is never followed.

    Raises:
        NotDurable: everything but the final folder fsync succeeded: ``target`` holds the
            new contents, which may or may not survive a power loss.
        StorageError: an earlier step failed (disk full, fsync error, ...): ``target``
            still holds the previous contents. Its errno is EEXIST when ``target`` exists
            and ``overwrite`` is off.
    """
    directory = target.parent
    tmp = _temp_name(target)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise StorageError(exc.errno, f"cannot create a temp file in {directory}: {exc.strerror}") from exc
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if backup is not None and target.exists():
            link_tmp = _temp_name(backup)
            os.link(target, link_tmp)
            os.replace(link_tmp, backup)
        if overwrite:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)
            with contextlib.suppress(OSError):  # in place already: a leftover temp name is harmless
                tmp.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageError(exc.errno, f"writing {target.name} failed: {exc.strerror}") from exc
    try:
        fsync_dir(directory)
    except OSError as exc:
        raise NotDurable(exc.errno, f"fsync of {directory} failed: {exc.strerror}") from exc


def remove_stale_temps(directory: Path, targets: tuple[str, ...] = ("vault", "vault.bak")) -> list[Path]:
    """Delete temp files that a crashed write of one of ``targets`` left; return them.

    Only names this module makes (``.vault.tmp-<12 hex>``) are touched, so a folder the
    operator chose loses nothing else.
    """
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in directory.iterdir():
            if _is_temp_of(entry.name, targets) and entry.is_file() and not entry.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                    removed.append(entry)
    return removed
