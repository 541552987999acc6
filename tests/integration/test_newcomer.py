"""What a newcomer hit first: a data folder vaultd cannot use, and ``vaultctl ... | head -1``.

Real folders and real pipes. Tests run as root in CI, where permission bits stop nothing: a
read-only folder is a read-only tmpfs mounted in a private mount namespace (``unshare``), a
folder that cannot be made has a file in its path, an unreadable vault file is a folder.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ..daemon_process import BIN, PASS, DaemonProcess


def start_up(daemon: DaemonProcess, *args: str, wrap: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run vaultd in the foreground until it fails (or 20 s pass)."""
    return subprocess.run(
        [*(wrap or []), str(BIN / "vaultd"), *args],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def one_clear_line(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if "WARNING" not in line]
    assert len(errors) == 1 and errors[0].startswith("vaultd: cannot use "), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])


def test_a_data_folder_that_cannot_be_made_is_one_line_and_exit_1(daemon: DaemonProcess) -> None:
    blocker = daemon.root / "a-file"
    blocker.write_text("not a folder\n")
    one_clear_line(start_up(daemon, "--data-dir", str(blocker / "vaultd")), str(blocker / "vaultd"), "--data-dir")
    one_clear_line(start_up(daemon, "--data-dir", str(blocker)), str(blocker), "not a folder")
    daemon.start("--data-dir", str(daemon.root / "fine"))  # positive control: same daemon, usable folder
    assert daemon.client().status()["state"] == "UNINITIALIZED"


def test_a_state_folder_that_cannot_be_used_is_one_line_and_exit_1(daemon: DaemonProcess) -> None:
    """The audit log and the second generation record live there: without them, no start."""
    blocker = daemon.root / "state-file"
    blocker.write_text("not a folder\n")
    audit = blocker / "vaultd" / "audit.log"
    one_clear_line(start_up(daemon, "--audit-log", str(audit)), "the state folder", "--audit-log")
    daemon.start("--audit-log", str(daemon.root / "state" / "audit.log"))  # positive control
    assert daemon.client().status()["state"] == "UNINITIALIZED"


def test_an_unreadable_vault_file_is_one_line_and_exit_1(daemon: DaemonProcess) -> None:
    (daemon.data_dir / "vault").mkdir(parents=True)  # open() fails for root too: EISDIR
    one_clear_line(start_up(daemon), "the vault file", str(daemon.data_dir / "vault"), "vault.bak")
    (daemon.data_dir / "vault").rmdir()
    daemon.start()
    assert daemon.client().status()["state"] == "UNINITIALIZED"


def _read_only_wrap(folder: Path, make: str) -> list[str]:
    """A command prefix that runs vaultd with ``folder`` a read-only file system (root), or a
    0500 folder (anyone else, for whom the permission bits are real)."""
    if os.geteuid() != 0:
        folder.mkdir(exist_ok=True)
        if make:
            (folder / make).mkdir(mode=0o700)
        folder.chmod(0o500)
        return []
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a read-only tmpfs as root")
    folder.mkdir(exist_ok=True)
    inner = f"mount -t tmpfs -o mode=0700 tmpfs {folder}"
    if make:
        inner += f" && mkdir -m 0700 {folder / make}"
    inner += f' && mount -o remount,ro {folder} && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner, "sh"]


@pytest.mark.parametrize("existing", [False, True], ids=["to be created", "already there"])
def test_a_read_only_data_folder_is_one_line_and_exit_1(daemon: DaemonProcess, existing: bool) -> None:
    folder = daemon.root / "ro"
    data_dir = folder / "vaultd"
    wrap = _read_only_wrap(folder, "vaultd" if existing else "")
    try:
        proc = start_up(daemon, "--data-dir", str(data_dir), wrap=wrap)
        one_clear_line(proc, str(data_dir), "--data-dir")
        assert "ead-only file system" in proc.stderr or "not writable" in proc.stderr or "ermission" in proc.stderr
    finally:
        if folder.exists():
            folder.chmod(0o700)


# -- vaultctl and a reader that stops reading ------------------------------------------------------

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

COMMANDS = [["status"], ["status", "--json"], ["list", "--passphrase-file", "PW"], ["doctor", "--json"], ["audit"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_vaultctl_into_a_pipe_closed_early_is_quiet(daemon: DaemonProcess, command: list[str]) -> None:
    daemon.start()
    daemon.ready()
    args = [str(daemon.passphrase_file) if a == "PW" else a for a in command]
    wanted = daemon.ctl(*args, check=False)  # positive control: with a reader, it prints and succeeds
    assert wanted.stdout.count("\n") > 1 and wanted.returncode in (0, 1), wanted.stderr
    read, write = os.pipe()
    os.close(read)  # the reader is gone before vaultctl writes a byte: its first write fails
    try:
        proc = subprocess.run(
            [BIN / "vaultctl", *args], stdout=write, stderr=subprocess.PIPE, env=daemon.env, timeout=60, check=False
        )
    finally:
        os.close(write)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == b"", proc.stderr.decode()


def test_vaultctl_status_piped_into_head_is_quiet(daemon: DaemonProcess) -> None:
    """The reported case, as typed: ``vaultctl status | head -1``; the reader takes one line, closes."""
    daemon.start()
    daemon.ready()
    with daemon.client() as client:  # output longer than the pipe holds: vaultctl still writes when head leaves
        for n in range(40):
            daemon.secrets.add(token := f"fake-token-{n:04d}-e2e")
            config = {"token": token}
            client.call(
                "credential.put", {"passphrase": PASS, "name": f"tok{n:02d}", "kind": "static", "config": config}
            )
    proc = subprocess.Popen(
        [BIN / "vaultctl", "status", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=daemon.env
    )
    assert proc.stdout is not None and proc.stderr is not None
    fcntl.fcntl(proc.stdout.fileno(), F_SETPIPE_SZ, 4096)  # one page: less than the output
    first = proc.stdout.readline()
    proc.stdout.close()
    assert first.strip() == b"{"
    assert proc.wait(timeout=60) == 141
    assert proc.stderr.read() == b""
