"""``vaultctl install`` and ``vaultctl doctor``: vaultd as a systemd user service, set up and checked.

``install`` writes ``vaultd.socket`` and ``vaultd.service`` (the templates in the project's
``systemd/`` folder, kept here verbatim: a test holds the two copies equal) with the absolute
path of this installation's daemon, then reloads the user manager. ``doctor`` checks what
makes the service safe and durable: private socket folder and socket, the units' state,
lingering (so that logging out does not stop the service), memory locking and core dumps.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from vaultd_client import Client
from vaultd_client.errors import Forbidden, RemoteError, TransportError

__all__ = ["SERVICE_TEMPLATE", "SOCKET_TEMPLATE", "SYSTEMD_COMMANDS", "add_systemd_parsers", "render_units"]

EXIT_OK, EXIT_FAILED = 0, 1
EXEC_START = "@EXEC_START@"
_SYSTEMCTL_TIMEOUT = 15.0

SOCKET_TEMPLATE = """\
# vaultd's listening socket: systemd holds it, and starts vaultd.service on the first
# connection (socket activation). Install with 'vaultctl install'; then
#   systemctl --user enable --now vaultd.socket
[Unit]
Description=vaultd credential daemon socket

[Socket]
ListenStream=%t/vaultd/vaultd.sock
# Only the user may connect; the daemon also checks every peer's uid (SO_PEERCRED).
SocketMode=0600
DirectoryMode=0700
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"""

SERVICE_TEMPLATE = """\
# vaultd as a systemd user service. A template: 'vaultctl install' writes it to
# ~/.config/systemd/user with ExecStart= the absolute path of the installed daemon.
# Change settings with a drop-in ('systemctl --user edit vaultd.service'), not here.
[Unit]
Description=vaultd credential daemon
Requires=vaultd.socket
After=vaultd.socket

[Service]
# READY=1 once vaultd listens (and has unlocked itself, given a passphrase credential);
# STATUS= follows the vault; WATCHDOG=1 comes from the event loop, so a hung loop is restarted.
Type=notify
NotifyAccess=main
ExecStart=@EXEC_START@
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=1s
WatchdogSec=30s
TimeoutStopSec=20s

# Secrets live in this process only: no core dumps, no swap, private files.
UMask=0077
LimitCORE=0
MemorySwapMax=0

# Sandboxing a user manager applies: seccomp and prctl only. Options that need mount
# namespaces or capabilities (ProtectSystem=, PrivateTmp=, CapabilityBoundingSet=, ...)
# are for the system manager, or would need user namespaces that many hosts forbid.
NoNewPrivileges=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
KeyringMode=private
# Unix for engines, IP for token endpoints, netlink for sock_diag (which process holds the
# other end of a connection: what an 'exe' rule relies on).
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM

# Unattended unlock after a reboot (optional, see the README): put this line in a drop-in.
#LoadCredential=vaultd-passphrase:%h/.config/vaultd/passphrase

[Install]
WantedBy=default.target
Also=vaultd.socket
"""

UNITS = ("vaultd.socket", "vaultd.service")


class InstallError(Exception):
    """The units cannot be written; the message says why."""


# -- install ----------------------------------------------------------------------------------


def _quote(arg: str) -> str:
    """One ExecStart= word: systemd's specifiers (%) and variables ($) kept literal."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if any(c.isspace() or c in "\"'\\;" for c in text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def exec_start() -> list[str]:
    """This installation's daemon: the ``vaultd`` script beside the interpreter, else ``python -m vaultd``."""
    script = Path(sys.executable).parent / "vaultd"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "vaultd"]


def render_units(command: list[str] | None = None) -> dict[str, str]:
    """Both unit files' text, by name, with ExecStart= filled in."""
    words = command or exec_start()
    if not os.path.isabs(words[0]):
        raise InstallError(f"the daemon's path {words[0]!r} is not absolute")
    return {
        "vaultd.socket": SOCKET_TEMPLATE,
        "vaultd.service": SERVICE_TEMPLATE.replace(EXEC_START, " ".join(_quote(w) for w in words)),
    }


def unit_dir() -> Path:
    """``$XDG_CONFIG_HOME/systemd/user``, by default ``~/.config/systemd/user``."""
    config = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(config) if os.path.isabs(config) else Path.home() / ".config"
    return base / "systemd" / "user"


def _make_dirs(path: Path) -> None:
    """Create ``path`` and any missing parents 0700; existing folders are left as they are."""
    missing = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise InstallError(f"cannot create {folder}: {exc.strerror}") from None


def _write(path: Path, text: str) -> str:
    """Write ``text`` to ``path`` (0644, atomically); return 'written', 'updated' or 'unchanged'."""
    try:
        if path.read_text(encoding="utf-8") == text:
            os.chmod(path, 0o644)
            return "unchanged"
        outcome = "updated"
    except FileNotFoundError:
        outcome = "written"
    except (OSError, UnicodeDecodeError):
        outcome = "updated"
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise InstallError(f"cannot write {path}: {exc.strerror}") from None
    return outcome


def _systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    """``systemctl --user ARGS``; a missing systemctl looks like a failed run (127)."""
    if shutil.which("systemctl") is None:
        return subprocess.CompletedProcess(["systemctl"], 127, "", "systemctl: command not found")
    try:
        return subprocess.run(
            ["systemctl", "--user", *args], capture_output=True, text=True, timeout=_SYSTEMCTL_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(["systemctl"], 124, "", f"systemctl timed out after {_SYSTEMCTL_TIMEOUT} s")


def cmd_install(client: Client, args: argparse.Namespace) -> int:
    try:
        units = render_units()
    except InstallError as exc:
        print(f"vaultctl: {exc}", file=sys.stderr)
        return EXIT_FAILED
    folder = unit_dir()
    if args.print:
        for name in UNITS:
            print(f"# {folder / name}")
            print(units[name])
        return EXIT_OK
    try:
        _make_dirs(folder)
        for name in UNITS:
            print(f"{folder / name}: {_write(folder / name, units[name])}")
    except InstallError as exc:
        print(f"vaultctl: {exc}", file=sys.stderr)
        return EXIT_FAILED
    reload = _systemctl("daemon-reload")
    if reload.returncode != 0:
        reason = (reload.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"vaultctl: units written, but 'systemctl --user daemon-reload' failed: {reason}", file=sys.stderr)
        return EXIT_FAILED
    print("next: systemctl --user enable --now vaultd.socket")
    print("then: vaultctl doctor   (and 'loginctl enable-linger' so the service survives logout)")
    return EXIT_OK


# -- doctor -----------------------------------------------------------------------------------


@dataclass
class Check:
    """One finding: ``status`` is ``ok``, ``warn`` (works, but weaker) or ``fail``."""

    check: str
    status: str
    detail: str
    advice: str | None = None


def _private(path: Path, want_socket: bool) -> Check:
    what = "socket" if want_socket else "socket folder"
    try:
        st = path.lstat()
    except FileNotFoundError:
        advice = "start it: systemctl --user start vaultd.socket" if want_socket else "start vaultd.socket (or vaultd)"
        return Check(what, "fail", f"{path} does not exist", advice)
    except OSError as exc:
        return Check(what, "fail", f"{path}: {exc.strerror}")
    mode = stat.S_IMODE(st.st_mode)
    kind_ok = stat.S_ISSOCK(st.st_mode) if want_socket else stat.S_ISDIR(st.st_mode)
    if not kind_ok:
        return Check(what, "fail", f"{path} is not a {'socket' if want_socket else 'folder'}", "move it away")
    if st.st_uid != os.getuid():
        return Check(what, "fail", f"{path} belongs to uid {st.st_uid}, not to you", "remove it; it is not vaultd's")
    if mode & 0o077:
        fix = f"chmod {'0600' if want_socket else '0700'} {path}"
        return Check(what, "fail", f"{path} is {mode:04o}: other users may reach it", fix)
    return Check(what, "ok", f"{path} is {mode:04o}, yours")


def _show(unit: str) -> dict[str, str] | None:
    props = "LoadState,ActiveState,SubState,UnitFileState,Result,NRestarts,MainPID"
    run = _systemctl("show", unit, "-p", props)
    if run.returncode != 0:
        return None
    return dict(line.split("=", 1) for line in run.stdout.splitlines() if "=" in line)


def _units() -> list[Check]:
    checks = []
    for unit in UNITS:
        props = _show(unit)
        if props is None:
            detail = (_systemctl("show", unit).stderr.strip().splitlines() or ["systemctl failed"])[-1]
            advice = "run this in a login session of the user (systemctl --user needs the user's manager)"
            checks.append(Check(unit, "fail", f"no systemd user manager answers: {detail}", advice))
            continue
        if props.get("LoadState") != "loaded":
            checks.append(Check(unit, "fail", f"not installed ({props.get('LoadState')})", "vaultctl install"))
            continue
        active, sub, result = props.get("ActiveState"), props.get("SubState"), props.get("Result")
        state = f"{active} ({sub}), {props.get('UnitFileState')}, result {result}, restarts {props.get('NRestarts')}"
        if active == "failed" or result not in (None, "success"):
            checks.append(Check(unit, "fail", state, f"journalctl --user -u {unit}; systemctl --user restart {unit}"))
        elif unit == "vaultd.socket" and active != "active":
            checks.append(Check(unit, "fail", state, "systemctl --user enable --now vaultd.socket"))
        elif unit == "vaultd.socket" and props.get("UnitFileState") != "enabled":
            advice = "systemctl --user enable vaultd.socket (else it is gone after a reboot)"
            checks.append(Check(unit, "warn", state, advice))
        else:
            checks.append(Check(unit, "ok", state))
    return checks


def _lingering() -> Check:
    user = pwd.getpwuid(os.getuid()).pw_name
    advice = f"loginctl enable-linger {user}   (else logging out stops vaultd, and nothing starts it at boot)"
    linger: str | None = None
    if shutil.which("loginctl"):
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            run = subprocess.run(
                ["loginctl", "show-user", str(os.getuid()), "-p", "Linger", "--value"],
                capture_output=True, text=True, timeout=_SYSTEMCTL_TIMEOUT, check=False,
            )  # fmt: skip
            if run.returncode == 0 and run.stdout.strip() in ("yes", "no"):
                linger = run.stdout.strip()
    if linger is None:  # logind does not know the user (no session): its own record on disk
        linger = "yes" if Path("/var/lib/systemd/linger", user).exists() else "no"
    if linger == "yes":
        return Check("lingering", "ok", f"enabled for {user}: vaultd runs without a login session")
    return Check("lingering", "warn", f"disabled for {user}", advice)


def _core_limit(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/limits", encoding="ascii") as limits:
            for line in limits:
                if line.startswith("Max core file size"):
                    return line.split()[4]
    except OSError:
        return None
    return None


def _daemon(client: Client) -> list[Check]:
    try:
        status = client.status()
    except Forbidden:
        return [Check("daemon", "ok", "answers (its policy does not let this shell read its status)")]
    except (TransportError, RemoteError) as exc:
        return [Check("daemon", "fail", f"no answer: {exc}", "systemctl --user status vaultd.service")]
    pid = status["pid"]
    checks = [Check("daemon", "ok", f"vaultd {status['version']}, pid {pid}, vault {status['state']}")]
    if status.get("memory_locked"):
        checks.append(Check("memory", "ok", "locked (mlockall): secrets are never swapped out"))
    else:
        checks.append(Check(
            "memory", "warn", "not locked: RLIMIT_MEMLOCK is finite (see the daemon's log)",
            "LimitMEMLOCK=infinity for the user manager (a user@.service drop-in), or rely on MemorySwapMax=0",
        ))  # fmt: skip
    core = _core_limit(pid)
    if status.get("dumpable", True):
        checks.append(Check("core dumps", "fail", f"pid {pid} is dumpable: ptrace and core dumps possible"))
    elif core is not None and core != "0":
        checks.append(Check("core dumps", "fail", f"pid {pid} may dump {core} bytes of core", "LimitCORE=0"))
    else:
        shown = "0" if core == "0" else "not readable here"
        checks.append(Check("core dumps", "ok", f"pid {pid}: not dumpable, core size limit {shown}"))
    return checks


def run_checks(client: Client) -> list[Check]:
    socket_path = Path(client.socket_path)
    return [
        _private(socket_path.parent, want_socket=False),
        _private(socket_path, want_socket=True),
        *_units(),
        _lingering(),
        *_daemon(client),
    ]


def cmd_doctor(client: Client, args: argparse.Namespace) -> int:
    checks = run_checks(client)
    failed = any(c.status == "fail" for c in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
        return EXIT_FAILED if failed else EXIT_OK
    width = max(len(c.check) for c in checks)
    for c in checks:
        print(f"{c.status:<4}  {c.check:<{width}}  {c.detail}")
        if c.advice and c.status != "ok":
            print(f"{'':<4}  {'':<{width}}  -> {c.advice}")
    return EXIT_FAILED if failed else EXIT_OK


# -- registration -----------------------------------------------------------------------------


def add_systemd_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``install`` and ``doctor`` on vaultctl's subcommands."""
    p = sub.add_parser(
        "install",
        help="write vaultd.socket and vaultd.service for the systemd user manager",
        description=(
            "Write vaultd.socket and vaultd.service (0644) into $XDG_CONFIG_HOME/systemd/user (default "
            "~/.config/systemd/user), with ExecStart= this installation's daemon, then run "
            "'systemctl --user daemon-reload'. Existing files of those names are replaced; customise "
            "with drop-ins ('systemctl --user edit vaultd.service')."
        ),
    )
    p.add_argument("--print", action="store_true", help="only print the units and where they would go")
    p = sub.add_parser(
        "doctor",
        help="check the service: socket modes, units, lingering, memory locking, core dumps",
        description="Check what keeps vaultd safe and running. Exit status 1 when a check fails (warnings do not).",
    )
    p.add_argument("--json", action="store_true", help="print the findings as JSON")


SYSTEMD_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "install": cmd_install,
    "doctor": cmd_doctor,
}
