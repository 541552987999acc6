"""A real ``systemd --user`` in a private mount namespace, for the tests of vaultd's units.

PID 1 here is not systemd, so ``systemctl`` refuses to work unless ``/run/systemd/system``
exists: the manager runs under ``unshare --mount --propagation private`` with a tmpfs on
``/run/systemd`` that only its namespace sees (docs/ARCHITECTURE.md section 13), and every command that
talks to it runs in that namespace (``nsenter --target PID --mount``). It has its own HOME,
XDG_RUNTIME_DIR and config folders under a temp folder, and its own cgroup (so that it does
not adopt the host's processes into its ``init.scope``). It is stopped by its pid at the end.
Needs root (the mount namespace); the venv and checkout must be readable by root only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..polling import wait_for

__all__ = ["BIN", "PASS", "UserManager", "attack_as_same_uid", "wait_for"]

SYSTEMD = Path("/usr/lib/systemd/systemd")
BIN = Path(sys.executable).parent
PASS = "fake passphrase 1"

# Runs as the namespace's first process, then becomes the manager (same pid, via exec).
_HELPER = r"""
import os, sys
name, created_file = sys.argv[1], sys.argv[2]
# Our own cgroup in every hierarchy: the manager takes its cgroup as its root and moves
# what it finds there into init.scope; it must find only itself.
mounts = {}
for line in open("/proc/self/mountinfo"):
    fields = line.split()
    dash = fields.index("-")
    fstype, options = fields[dash + 1], set(fields[dash + 3].split(","))
    if fstype in ("cgroup", "cgroup2"):
        mounts[fields[4]] = (fstype, options)
created = []
for line in open("/proc/self/cgroup"):
    _, controllers, path = line.rstrip("\n").split(":", 2)
    wanted = set(filter(None, controllers.split(",")))
    for point, (fstype, options) in mounts.items():
        if (fstype == "cgroup2") != (not wanted) or not wanted <= options:
            continue
        folder = os.path.join(point + path.rstrip("/"), name)
        try:
            os.makedirs(folder, exist_ok=True)
            created.append(folder)
            with open(os.path.join(folder, "cgroup.procs"), "w") as procs:
                procs.write(str(os.getpid()))
        except OSError:
            pass  # e.g. a v1 cpuset without cpus: the manager does not use it
with open(created_file, "w") as out:
    out.write("\n".join(created))
os.makedirs("/run/systemd", exist_ok=True)
if os.system("mount -t tmpfs -o mode=0755 tmpfs /run/systemd") != 0:
    sys.exit("cannot mount a tmpfs on /run/systemd")
os.mkdir("/run/systemd/system")
# As systemd makes it at boot: mounts shared, within this namespace only (unshare made them
# private to the host), so that what a unit's helper mounts in its own namespace (such as
# the credentials folder) shows here.
if os.system("mount --make-rshared /") != 0:
    sys.exit("cannot make / shared inside the namespace")
os.execv(sys.argv[3], [sys.argv[3], "--user"])
"""

_MANAGER_CONF = """\
[Manager]
# No journald in this namespace: services write to the manager's own log file.
DefaultStandardOutput=inherit
DefaultStandardError=inherit
"""


def require_root() -> None:
    """Fail under CI without root; skip elsewhere (as tests/integration/test_foreign_uid.py does)."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI must run as root: these tests start systemd in a private mount namespace")
        pytest.skip("needs root for a private mount namespace with a real systemd --user (CI runs it as root)")
    for tool in (str(SYSTEMD), "unshare", "nsenter", "systemctl", "systemd-analyze"):
        if shutil.which(tool) is None:
            message = f"{tool} is missing: the systemd tests need systemd's binaries"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)


class UserManager:
    """One ``systemd --user`` with its own HOME and XDG_RUNTIME_DIR under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.runtime = root / "run"
        self.config = self.home / ".config"
        self.data = self.home / ".local" / "share"
        self.log_path = root / "manager.log"
        self.cgroup = f"vaultd-test-{os.getpid()}-{root.name}"
        self.env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "XDG_CONFIG_HOME": str(self.config),
            "XDG_DATA_HOME": str(self.data),
            "LANG": "C.UTF-8",
            "SYSTEMD_LOG_TARGET": "console",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def socket_path(self) -> Path:
        return self.runtime / "vaultd" / "vaultd.sock"

    @property
    def unit_dir(self) -> Path:
        return self.config / "systemd" / "user"

    def start(self) -> None:
        self.home.mkdir(mode=0o700)
        self.runtime.mkdir(mode=0o700)
        (self.config / "systemd").mkdir(mode=0o700, parents=True)
        (self.config / "systemd" / "user.conf").write_text(_MANAGER_CONF)
        command = [
            "unshare", "--mount", "--propagation", "private",
            sys.executable, "-c", _HELPER, self.cgroup, str(self.root / "cgroups"), str(SYSTEMD),
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.home, start_new_session=True
            )

        def running() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"systemd --user exited with {self.proc.returncode}:\n{self.log}")
            state = self.run("systemctl", "--user", "is-system-running", check=False).stdout.strip()
            return state in ("running", "degraded")

        wait_for(running, "systemd --user to be running")

    def run(self, *argv: str | Path, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        """Run a command in the manager's mount namespace, with its environment."""
        proc = subprocess.run(
            ["nsenter", "--target", str(self.pid), "--mount", "--", *map(str, argv)],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=self.home,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, argv))} exited {proc.returncode}: {proc.stderr}{self.tail()}")
        return proc

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--user", *args, check=check)

    def vaultctl(self, *args: str, check: bool = True, stdin: str = "") -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["nsenter", "--target", str(self.pid), "--mount", "--", str(BIN / "vaultctl"), *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=self.home,
            start_new_session=True,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"vaultctl {' '.join(args)} exited {proc.returncode}: {proc.stderr}{self.tail()}")
        return proc

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, "-p", ",".join(props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def prop(self, unit: str, name: str) -> str:
        return self.show(unit, name)[name]

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 30) -> str:
        return "\n--- manager log (tail) ---\n" + "\n".join(self.log.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the manager by its pid (it stops its units, then exits); SIGKILL if it hangs."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        self._remove_cgroups()

    def _remove_cgroups(self) -> None:
        created = self.root / "cgroups"
        if not created.exists():
            return
        for top in filter(None, created.read_text().splitlines()):
            for folder, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
                with contextlib.suppress(OSError):  # still in use, or already gone: best effort
                    os.rmdir(folder)


# Tries PTRACE_SEIZE and opening /proc/PID/mem, as a debugger or a memory scraper would.
_ATTACKER = r"""
import ctypes, sys
pid = int(sys.argv[1])
caps = next(l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff:"))
assert caps == "0000000000000000", caps
libc = ctypes.CDLL(None, use_errno=True)
seize = "attached" if libc.ptrace(0x4206, pid, None, None) == 0 else "refused"
try:
    open(f"/proc/{pid}/mem", "rb").close()
    mem = "opened"
except OSError:
    mem = "refused"
print(seize, mem)
"""
#: root with no capability at all: the daemon's own uid, and nothing more.
UNPRIVILEGED = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]


def attack_as_same_uid(pid: int, folder: Path) -> tuple[str, str]:
    """Attach to ``pid`` from a process of its uid without privileges; (seize, mem) outcomes.

    A positive control runs first: the same attacker against a process of the same uid and
    the same (lack of) capabilities that is dumpable must succeed, or the test fails.
    """
    script = folder / "attacker.py"
    script.write_text(_ATTACKER)

    def attack(target: int) -> tuple[str, str]:
        command = [*UNPRIVILEGED, "/usr/bin/python3", str(script), str(target)]
        out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout.split()
        return out[0], out[1]

    control = subprocess.Popen([*UNPRIVILEGED, "/bin/sleep", "60"])
    try:
        wait_for(lambda: Path(f"/proc/{control.pid}/exe").resolve().name == "sleep", "the control to exec sleep")
        assert attack(control.pid) == ("attached", "opened"), "positive control: the attacker works"
    finally:
        control.kill()
        control.wait(timeout=10)
    return attack(pid)


@pytest.fixture(scope="module")
def manager() -> Iterator[UserManager]:
    require_root()
    root = Path(tempfile.mkdtemp(prefix="vsd-", dir="/tmp"))
    manager = UserManager(root)
    try:
        manager.start()
        yield manager
    finally:
        manager.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def installed(manager: UserManager) -> UserManager:
    """The units, written by ``vaultctl install`` (which also ran daemon-reload)."""
    result = manager.vaultctl("install")
    assert "next: systemctl --user enable --now vaultd.socket" in result.stdout, result.stdout
    return manager
