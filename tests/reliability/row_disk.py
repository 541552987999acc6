"""Row: a full disk and a failing fsync under a real daemon: visible, harmless, retried.

Both faults are real, not mocks. The daemon runs in a private mount namespace (``unshare
--mount --propagation private``, as root), so nothing is mounted on the host, and whatever
is mounted goes away with the daemon; the row reaches that namespace's files through
``/proc/PID/root``.

- **Full disk**: the data folder is a 256 KiB tmpfs. With a rotating ``oauth2`` credential
  renewing against the fake exchange, the row fills the tmpfs, then (1) an admin
  ``credential.put`` must fail with ``STORAGE_FAILED``, and (2) the next rotation's
  write-ahead must fail too. Each must show in ``status`` (``last_write_error`` and a
  warning) and in the daemon's log; the vault file must stay byte for byte what it was.
  Then the row frees the space: the renewer's retry must succeed by itself (the file then
  holds the exchange's current refresh token), and the ``put`` succeeds when sent again.
- **Failing fsync**: the data folder is an ext2 file system on a loop device whose backing
  file is sparse, on a 4 MiB tmpfs (thin provisioning). Once that tmpfs is full, ``write()``
  still succeeds (the ext2 has free blocks, and writes land in the page cache) but the
  ``fsync()`` that writes them back fails: the loop device cannot store the block, and the
  kernel returns ENOSPC from fsync, the "lost write" that fsync exists to report. A put must
  fail visibly, the old file must stay, and after freeing space the put must succeed.
  (device-mapper's ``dm-error``/``dm-flakey`` would be the textbook tool; this kernel has no
  device-mapper, while loop devices work.)

Without root, ``unshare``, or loop devices, a part is skipped and says so in the figures (an
error under ``CI=true``, where they exist). ``Row.faults`` counts faults injected (a full
tmpfs, a full backing store); ``Row.errors`` a failure that was not reported; ``Row.lost``
an old file that changed or does not open, or a refresh token not saved after the retry.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vaultd._secret import Secret
from vaultd._vaultfile import VaultFormatError, decode
from vaultd_client import Client, VaultdError
from vaultd_client.errors import StorageFailed

from ..daemon_process import BIN, PASS, DaemonProcess, FakeExchangeProcess
from .rows import Mode, Row

__all__ = ["run"]

#: The full-disk tmpfs, and the backing store of the loop device (both in the namespace).
TMPFS_SIZE = "256k"
BACKING_SIZE = "4m"
LOOP_FS_SIZE = "16m"

_TMPFS_SCRIPT = 'mount -t tmpfs -o size={size},mode=0700 tmpfs "$DATA" && exec "$@"'
_LOOP_SCRIPT = (
    'mount -t tmpfs -o size={size},mode=0700 tmpfs "$BACK" && truncate -s {fs_size} "$BACK/img"'
    ' && mkfs.ext2 -q -F -b 4096 -E lazy_itable_init=0 "$BACK/img" && mount -o loop "$BACK/img" "$DATA"'
    ' && exec "$@"'
)


class NamespacedDaemon(DaemonProcess):
    """``vaultd`` in a private mount namespace whose data folder ``script`` mounts first."""

    def __init__(self, root: Path, script: str) -> None:
        super().__init__(root)
        self.script = script
        self.back = root / "back"

    def start(self, *args: str, wait: bool = True, nofile: int | None = None) -> NamespacedDaemon:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.back.mkdir(exist_ok=True)
        env = {**self.env, "DATA": str(self.data_dir), "BACK": str(self.back)}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    self.script,
                    "sh",
                    BIN / "vaultd",
                    *args,
                ],
                env=env,
                stdout=log,
                stderr=log,
            )
        if wait:
            self.wait_ready()
        return self

    def inside(self, path: Path) -> Path:
        """``path`` as the daemon sees it (its mount namespace), from this process."""
        assert self.proc is not None
        return Path(f"/proc/{self.proc.pid}/root") / path.relative_to("/")


def _available() -> str | None:
    """Why the real faults cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (mount)"
    for tool in ("unshare", "mkfs.ext2", "truncate"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control)"
    return None


def _fill(folder: Path) -> int:
    """Fill the file system holding ``folder`` until ENOSPC; return the bytes written."""
    written = 0
    chunk = b"\0" * 4096
    with (folder / "filler").open("wb", buffering=0) as out:
        while True:
            try:
                written += out.write(chunk) or 0
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return written


def _wait(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)  # another process does the work: poll, bounded by the deadline


def _opened(vault: Path) -> tuple[int, dict[str, Any]] | None:
    """The vault's generation and body, or None if it does not open."""
    try:
        header, key, body = decode(vault.read_bytes(), Secret(PASS))
    except (OSError, VaultFormatError, ValueError):
        return None
    key.wipe()
    return header.generation, body


def _put(client: Client, name: str, token: str) -> dict[str, Any]:
    params = {"passphrase": PASS, "name": name, "kind": "static", "config": {"token": token}, "replace": True}
    result: dict[str, Any] = client.call("credential.put", params, timeout=30)
    return result


def _described(client: Client, name: str) -> dict[str, Any]:
    return next(c for c in client.status()["credentials"] if c["name"] == name)


class _Judge:
    """Counts one part's checks into the row, remembering the first few failures' reasons."""

    def __init__(self, row: Row) -> None:
        self.row = row
        self.reasons: list[str] = []

    def check(self, ok: bool, what: str, *, lost: bool = False) -> None:
        if ok:
            return
        if lost:
            self.row.lost += 1
        else:
            self.row.errors += 1
        self.reasons.append(what)

    def failed_visibly(self, daemon: DaemonProcess, client: Client, log_line: str) -> None:
        status = client.status()
        self.check(bool(status["last_write_error"]), "status has no last_write_error")
        self.check(any("vault write failed" in w for w in status["warnings"]), "status warns of nothing")
        self.check(log_line in daemon.log, f"no {log_line!r} line in the log")


@contextlib.contextmanager
def _daemon(script: str) -> Iterator[NamespacedDaemon]:
    root = Path(tempfile.mkdtemp(prefix="vd-", dir="/tmp"))
    daemon = NamespacedDaemon(root, script)
    try:
        yield daemon
    finally:
        if daemon.proc is not None:
            daemon.stop(signal.SIGKILL)  # its namespace, mounts and loop device go with it
        shutil.rmtree(root, ignore_errors=True)


def full_disk(row: Row) -> dict[str, str]:
    """Fill the tmpfs data folder: a put and a rotation fail visibly; both recover."""
    judge = _Judge(row)
    exchange = FakeExchangeProcess(expires_in=2.0)
    try:
        with _daemon(_TMPFS_SCRIPT.format(size=TMPFS_SIZE)) as daemon, Client(daemon.socket_path, timeout=30) as client:
            daemon.start()
            client.call("vault.init", {"passphrase": PASS, "kdf_profile": "min"}, timeout=30)
            client.unlock(PASS)
            first = str(exchange.control(new_refresh_token=True)["refresh_token"])
            config = {
                "token_url": exchange.url + "/oauth/token",
                "grant_type": "refresh_token",
                "client_id": "fake-client",
                "client_secret": "fake-secret",
                "refresh_token": first,
            }
            daemon.secrets.update({first, "fake-token-disk-1", "fake-token-disk-2"})
            params = {"passphrase": PASS, "name": "live", "kind": "oauth2", "config": config, "replace": False}
            client.call("credential.put", params, timeout=30)
            _put(client, "ex", "fake-token-disk-1")
            _wait(lambda: _described(client, "live")["state"] == "FRESH")
            vault = daemon.inside(daemon.data_dir / "vault")
            calls_before = exchange.calls()
            filled = _fill(daemon.inside(daemon.data_dir))
            row.faults += 1
            before = vault.read_bytes()
            opened = _opened(vault)
            judge.check(opened is not None, "the vault does not open before the fault", lost=True)
            generation = opened[0] if opened else -1

            try:
                _put(client, "ex", "fake-token-disk-2")
                judge.check(False, "credential.put on a full disk did not fail")
            except StorageFailed as exc:
                judge.check("not saved" in str(exc), f"the error does not say the change was not saved: {exc}")
            judge.failed_visibly(daemon, client, "vault write failed")
            # The next rotation's write-ahead fails the same way; the old token keeps serving.
            rotation_failed = _wait(lambda: "could not be saved" in (_described(client, "live")["last_error"] or ""))
            judge.check(bool(rotation_failed), "a rotation on a full disk did not fail visibly")
            judge.check("a rotated refresh token could not be saved" in daemon.log, "no log line for the rotation")
            judge.check(vault.read_bytes() == before, "the vault file changed while the disk was full", lost=True)
            judge.check(_opened(vault) is not None, "the old vault does not open", lost=True)

            (daemon.inside(daemon.data_dir) / "filler").unlink()  # space again: retried later
            saved = _wait(
                lambda: (
                    _described(client, "live")["state"] == "FRESH"
                    and client.status()["last_write_error"] is None
                    and (now := _opened(vault)) is not None
                    and now[1]["credentials"]["live"]["config"]["refresh_token"]
                    == exchange.control(current_of=first)["current"]
                )
            )
            judge.check(bool(saved), "after freeing space the rotation was not retried and saved", lost=True)
            _put(client, "ex", "fake-token-disk-2")
            after = _opened(vault)
            judge.check(after is not None and after[0] > generation, "the put did not succeed after freeing space")
            retries = exchange.calls() - calls_before
            daemon.stop()
            judge.check(not daemon.leaked(), "a secret reached the log")
    finally:
        exchange.stop()
    return {
        "full disk": (
            f"a {TMPFS_SIZE} tmpfs filled ({filled:,} bytes): put -> STORAGE_FAILED, rotation write-ahead failed,"
            f" both in status and log; old file unchanged; after freeing, {retries} token calls, saved"
        )
        + (f"; FAILED: {'; '.join(judge.reasons)}" if judge.reasons else ""),
    }


def failing_fsync(row: Row) -> dict[str, str]:
    """Fill the loop device's backing store: fsync fails; the old file stays; a retry succeeds."""
    judge = _Judge(row)
    script = _LOOP_SCRIPT.format(size=BACKING_SIZE, fs_size=LOOP_FS_SIZE)
    with _daemon(script) as daemon, Client(daemon.socket_path, timeout=30) as client:
        daemon.start()
        daemon.secrets.update({"fake-token-fsync-1", "fake-token-fsync-2"})
        client.call("vault.init", {"passphrase": PASS, "kdf_profile": "min"}, timeout=30)
        client.unlock(PASS)
        _put(client, "ex", "fake-token-fsync-1")
        os.sync()  # every block written so far is in the backing file; later ones need new space
        vault = daemon.inside(daemon.data_dir / "vault")
        before = vault.read_bytes()
        opened = _opened(vault)
        generation = opened[0] if opened else -1
        _fill(daemon.inside(daemon.back))
        row.faults += 1
        free = os.statvfs(daemon.inside(daemon.data_dir))
        error = ""
        try:
            _put(client, "ex", "fake-token-fsync-2")
            judge.check(False, "credential.put did not fail when fsync failed")
        except StorageFailed as exc:
            error = str(exc)
        judge.failed_visibly(daemon, client, "vault write failed")
        judge.check(vault.read_bytes() == before, "the vault file changed when fsync failed", lost=True)
        judge.check(_opened(vault) is not None, "the old vault does not open", lost=True)
        (daemon.inside(daemon.back) / "filler").unlink()
        try:
            _put(client, "ex", "fake-token-fsync-2")
        except VaultdError as exc:
            judge.check(False, f"the put failed again after freeing space: {exc}")
        after = _opened(vault)
        judge.check(after is not None and after[0] > generation, "the retried put is not in the file")
        daemon.stop()
        judge.check(not daemon.leaked(), "a secret reached the log")
    return {
        "failing fsync": (
            f"ext2 on a loop device over a sparse file on a {BACKING_SIZE} tmpfs, filled: write() ok"
            f" ({free.f_bavail * free.f_frsize // 1024} KiB free on the ext2), fsync() failed: {json.dumps(error)};"
            " old file unchanged; after freeing, the put succeeded"
        )
        + (f"; FAILED: {'; '.join(judge.reasons)}" if judge.reasons else ""),
    }


def run(mode: Mode) -> Row:
    """The same two faults in every mode: each is deterministic, so repeating proves nothing."""
    del mode
    row = Row("disk: full disk, failing fsync")
    missing = _available()
    if missing is not None:
        row.figures["skipped"] = f"{missing}; real faults only, no mocks"
        if os.environ.get("CI") == "true":
            row.errors += 1
        return row
    row.figures.update(full_disk(row))
    row.figures.update(failing_fsync(row))
    row.inputs = 4  # writes attempted under a fault: two puts, a rotation, a put
    return row
