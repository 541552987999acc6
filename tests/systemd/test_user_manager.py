"""vaultd as a user service under a real ``systemd --user``: the units ``vaultctl install`` wrote.

Socket activation, READY (after the unattended unlock), STATUS following the vault, reload,
a clean stop, a crash restarted without a core file, the sandbox score, and the process
hardening seen from outside. One manager serves the whole module (see conftest.py); each
test says what state it starts from.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from vaultd.ctl.systemd import SOCKET_TEMPLATE
from vaultd_client import Client

from .conftest import BIN, PASS, UserManager, attack_as_same_uid, wait_for

#: systemd-analyze's exposure score must stay below this (see test_security_exposure_...).
EXPOSURE_THRESHOLD = 6.5

#: Every check systemd-analyze may still mark as exposed, and why each cannot be closed in a
#: user manager. Anything else exposed fails the test: a lost directive cannot pass unseen.
ACCEPTED_EXPOSURES = {
    # Offline, the analysis assumes root; a user service runs as its user, whose services
    # hold no capability at all, so no bounding set can take any away.
    "User=/DynamicUser=": "a user service runs as the user",
    "CapabilityBoundingSet=": "a user manager's services hold no capabilities",
    # Mount namespaces: a user manager can only build them inside a user namespace
    # (PrivateUsers=), which many hosts forbid to unprivileged users; vaultd would not start.
    "PrivateDevices=": "mount namespace",
    "PrivateMounts=": "mount namespace",
    "PrivateTmp=": "mount namespace",
    "PrivateUsers=": "user namespace",
    "ProtectSystem=": "mount namespace",
    "ProtectHome=": "mount namespace",
    "ProtectProc=": "mount namespace",
    "ProcSubset=": "mount namespace",
    "ProtectKernelTunables=": "mount namespace",
    "ProtectKernelModules=": "mount namespace (its syscalls are filtered: ~@privileged holds @module)",
    "ProtectKernelLogs=": "mount namespace",
    "ProtectControlGroups=": "mount namespace",
    "ProtectHostname=": "UTS namespace",
    "ProtectClock=": "device cgroup (its syscalls are filtered: @clock is not in @system-service)",
    "DeviceAllow=": "device cgroup: the system manager's",
    "RootDirectory=/RootImage=": "needs the vaultd installation inside the image",
    # The network: token endpoints are on the internet, engines on the Unix socket.
    "PrivateNetwork=": "token endpoints need the network",
    "IPAddressDeny=": "BPF in the system manager; endpoints are arbitrary hosts",
    "RestrictAddressFamilies=~AF_UNIX": "the socket engines connect to",
    "RestrictAddressFamilies=~AF_(INET|INET6)": "token endpoints",
    "RestrictAddressFamilies=~AF_NETLINK": "sock_diag: which process holds a connection's other end (exe rules)",
}


def _status_text(manager: UserManager) -> str:
    return manager.prop("vaultd.service", "StatusText")


def _wait_status(manager: UserManager, expected: str) -> None:
    seen: list[str] = []

    def matches() -> bool:
        seen.append(_status_text(manager))
        return seen[-1] == expected

    try:
        wait_for(matches, f"StatusText={expected!r}", timeout=10)
    except AssertionError:
        raise AssertionError(f"StatusText never became {expected!r}; last {seen[-1:]}{manager.tail()}") from None


def _main_pid(manager: UserManager) -> int:
    return int(manager.prop("vaultd.service", "MainPID"))


def _stop_all(manager: UserManager) -> None:
    manager.systemctl("stop", "vaultd.service", "vaultd.socket")
    manager.systemctl("reset-failed", "vaultd.service", "vaultd.socket", check=False)


def test_install_writes_both_units_with_absolute_paths(installed: UserManager, tmp_path: Path) -> None:
    for name in ("vaultd.socket", "vaultd.service"):
        path = installed.unit_dir / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, name
        assert installed.show(name, "LoadState", "FragmentPath") == {"LoadState": "loaded", "FragmentPath": str(path)}
    service = (installed.unit_dir / "vaultd.service").read_text()
    assert f"\nExecStart={BIN / 'vaultd'}\n" in service and "@EXEC_START@" not in service
    assert (installed.unit_dir / "vaultd.socket").read_text() == SOCKET_TEMPLATE

    # --print shows them and touches nothing.
    elsewhere = tmp_path / "config"
    printed = subprocess.run(
        [BIN / "vaultctl", "install", "--print"],
        env={**installed.env, "XDG_CONFIG_HOME": str(elsewhere)},
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert f"# {elsewhere}/systemd/user/vaultd.service\n" in printed.stdout
    assert f"ExecStart={BIN / 'vaultd'}\n" in printed.stdout and "ListenStream=%t/vaultd/vaultd.sock" in printed.stdout
    assert not elsewhere.exists()


def test_units_verify_without_a_word(installed: UserManager) -> None:
    units = [installed.unit_dir / "vaultd.socket", installed.unit_dir / "vaultd.service"]
    verify = installed.run("systemd-analyze", "--user", "verify", *units, check=False)
    assert verify.returncode == 0 and verify.stderr == "" and verify.stdout == "", verify.stderr

    # The check can fail: a misspelt directive is reported (on stderr, with exit status 0).
    broken = installed.root / "broken" / "vaultd.service"
    broken.parent.mkdir(exist_ok=True)
    broken.write_text((installed.unit_dir / "vaultd.service").read_text().replace("UMask=", "UMaks="))
    shutil.copy(installed.unit_dir / "vaultd.socket", broken.parent)
    bad = installed.run("systemd-analyze", "--user", "verify", broken, check=False)
    assert "UMaks" in bad.stderr


def test_security_exposure_is_below_the_threshold(installed: UserManager) -> None:
    """Threshold 6.5: the score is 6.2 (MEDIUM) with every directive a user manager applies.

    What is left is listed in ACCEPTED_EXPOSURES: capabilities a user service never holds
    (counted because an offline analysis assumes root), options that need a mount namespace
    (which a user manager builds only inside a user namespace, refused by many hosts), and
    the network that token endpoints need. Losing any directive adds an exposure line not
    in that list, which this test reports by name.
    """
    run = installed.run(
        "systemd-analyze", "--user", "security", "--offline=true", "--no-pager", installed.unit_dir / "vaultd.service",
        check=False,
    )  # fmt: skip
    out = run.stdout
    score = re.search(r"Overall exposure level for vaultd\.service: (\d+\.\d+)", out)
    assert score is not None, out + run.stderr
    exposed = [line.split()[1] for line in out.splitlines() if line.startswith("✗")]
    unexpected = [
        name for name in exposed if not any(name == a or name.startswith(a) for a in ACCEPTED_EXPOSURES)
    ]  # fmt: skip
    assert unexpected == [], f"exposed beyond what a user manager can close: {unexpected}"
    assert float(score.group(1)) < EXPOSURE_THRESHOLD, out


def test_socket_activation_ready_status_reload_and_clean_stop(installed: UserManager) -> None:
    manager = installed
    _stop_all(manager)
    manager.systemctl("start", "vaultd.socket")
    folder = manager.socket_path.parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(manager.socket_path.stat().st_mode) == 0o600
    assert manager.systemctl("is-active", "vaultd.service", check=False).stdout.strip() == "inactive"

    with Client(manager.socket_path, timeout=20) as client:
        hello = client.hello("pytest")  # the first connection starts the service
    assert hello["state"] in ("UNINITIALIZED", "LOCKED")
    # The sandbox lets the daemon vouch for an exe (sock_diag needs AF_NETLINK): else None.
    assert hello["peer"]["exe"] == os.readlink("/proc/self/exe")
    assert manager.systemctl("is-active", "vaultd.service").stdout.strip() == "active"
    pid = _main_pid(manager)
    assert pid > 0 and manager.prop("vaultd.service", "ActiveState") == "active"

    if hello["state"] == "UNINITIALIZED":
        assert _status_text(manager) == "No vault yet: run 'vaultctl init'"
        manager.vaultctl("init", "--kdf-profile", "min", "--passphrase-fd", "0", stdin=PASS + "\n")
    _wait_status(manager, "Locked: run 'vaultctl unlock'")
    manager.vaultctl("unlock", "--passphrase-fd", "0", stdin=PASS + "\n")
    _wait_status(manager, "Unlocked: 0 credentials, 0 degraded")
    passphrase = manager.root / "pass"
    passphrase.write_text(PASS + "\n")
    passphrase.chmod(0o600)
    manager.vaultctl("add", "ex", "--kind", "static", "--passphrase-file", str(passphrase), stdin="fake-token-sd\n")
    _wait_status(manager, "Unlocked: 1 credential, 0 degraded")
    manager.vaultctl("lock")
    _wait_status(manager, "Locked: run 'vaultctl unlock'")

    manager.systemctl("reload", "vaultd.service")
    wait_for(lambda: "SIGHUP: log level info" in manager.log, "the reload in the daemon's log")
    assert manager.prop("vaultd.service", "ActiveState") == "active" and _main_pid(manager) == pid

    manager.systemctl("stop", "vaultd.service")
    shown = manager.show("vaultd.service", "ActiveState", "Result", "ExecMainCode", "ExecMainStatus", "ExecMainPID")
    assert shown == {
        "ActiveState": "inactive", "Result": "success", "ExecMainCode": "1", "ExecMainStatus": "0",
        "ExecMainPID": str(pid),
    }, shown  # fmt: skip  # ExecMainCode 1 is CLD_EXITED: exit status 0, not a signal
    assert not Path(f"/proc/{pid}").exists()
    assert manager.socket_path.exists(), "the socket is systemd's: vaultd leaves it in place"
    assert manager.prop("vaultd.socket", "ActiveState") == "active"
    assert PASS not in manager.log and "fake-token-sd" not in manager.log


def test_active_only_after_ready_which_follows_the_unattended_unlock(installed: UserManager) -> None:
    """READY=1 comes after the unlock from a passphrase credential (LoadCredential=).

    The vault uses the 'moderate' KDF (256 MiB, about a second), so the service spends a
    visible while in 'activating' with its process running; the first time systemd says
    'active', the vault must already be unlocked: systemd waited for READY, and READY waited
    for the unlock. (With Type=simple it would be active, and locked, at once.)
    """
    manager = installed
    _stop_all(manager)
    data = manager.root / "data-ready"
    secret = manager.root / "passphrase-credential"
    secret.write_text(PASS + "\n")
    secret.chmod(0o600)
    dropin = manager.unit_dir / "vaultd.service.d" / "unattended.conf"
    dropin.parent.mkdir(exist_ok=True)
    dropin.write_text(f"[Service]\nEnvironment=XDG_DATA_HOME={data}\nLoadCredential=vaultd-passphrase:{secret}\n")
    manager.systemctl("daemon-reload")
    try:
        manager.systemctl("start", "vaultd.service")
        assert "there is no vault yet" in wait_for(lambda: manager.log, "the log")
        manager.vaultctl("init", "--kdf-profile", "moderate", "--passphrase-fd", "0", stdin=PASS + "\n")
        manager.systemctl("stop", "vaultd.service")

        manager.systemctl("start", "--no-block", "vaultd.service")
        states: list[tuple[str, str]] = []

        def active() -> bool:
            shown = manager.show("vaultd.service", "ActiveState", "MainPID")
            states.append((shown["ActiveState"], shown["MainPID"]))
            return shown["ActiveState"] == "active"

        wait_for(active, "vaultd.service to become active", timeout=30, interval=0.005)
        with Client(manager.socket_path, timeout=20) as client:
            state = client.status()["state"]
        assert state == "UNLOCKED", f"active before the unlock finished (states seen: {states})"
        assert any(s == "activating" and pid != "0" for s, pid in states), f"never seen starting: {states}"
        assert _status_text(manager) == "Unlocked: 0 credentials, 0 degraded"
        assert PASS not in manager.log
    finally:
        dropin.unlink()
        manager.systemctl("daemon-reload")
        _stop_all(manager)


def _core_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.startswith("core")}


def test_a_crash_leaves_no_core_and_systemd_restarts_it(installed: UserManager) -> None:
    manager = installed
    _stop_all(manager)
    manager.systemctl("start", "vaultd.service")
    pid = _main_pid(manager)
    cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert re.search(r"^Max core file size\s+0\s+0\s+bytes", limits, re.M), limits
    before = _core_files(cwd)
    restarts = int(manager.prop("vaultd.service", "NRestarts"))

    os.kill(pid, signal.SIGSEGV)

    def restarted() -> bool:
        shown = manager.show("vaultd.service", "NRestarts", "MainPID", "ActiveState")
        return (
            shown["NRestarts"] == str(restarts + 1)
            and shown["MainPID"] not in ("0", str(pid))
            and (shown["ActiveState"] == "active")
        )

    wait_for(restarted, "systemd to restart vaultd after SIGSEGV", timeout=30)
    assert _core_files(cwd) == before, "vaultd left a core file"
    with Client(manager.socket_path, timeout=20) as client:
        assert client.hello("pytest")["state"] in ("LOCKED", "UNINITIALIZED")

    # Positive control: under the same manager and in the same folder, a process that may
    # dump core does leave one, so the absence above is vaultd's doing.
    if Path("/proc/sys/kernel/core_pattern").read_text().startswith(("|", "/")):
        pytest.skip("this kernel's core_pattern does not write cores beside the process: no control possible")
    manager.run(
        "systemd-run", "--user", "--unit=vaultd-core-control", "-p", "LimitCORE=infinity",
        "-p", f"WorkingDirectory={cwd}", "/bin/sleep", "60",
    )  # fmt: skip
    control = int(wait_for(lambda: int(manager.prop("vaultd-core-control.service", "MainPID")), "the control"))
    os.kill(control, signal.SIGSEGV)
    new = wait_for(lambda: _core_files(cwd) - before, "the control's core file", timeout=20)
    for name in new:
        (cwd / name).unlink()
    manager.systemctl("reset-failed", "vaultd-core-control.service", check=False)
    _stop_all(manager)


def test_its_own_uid_cannot_ptrace_it(installed: UserManager) -> None:
    """A same-uid process without privileges can neither PTRACE_SEIZE vaultd nor open its memory.

    The manager here runs as root, so its services would hold every capability, and the
    kernel refuses a capability-less tracer for that reason alone. A drop-in takes them away,
    as a real user's manager has none to give: then only PR_SET_DUMPABLE=0 stands in the way.
    """
    manager = installed
    _stop_all(manager)
    dropin = manager.unit_dir / "vaultd.service.d" / "no-capabilities.conf"
    dropin.parent.mkdir(exist_ok=True)
    dropin.write_text("[Service]\nCapabilityBoundingSet=\n")
    manager.systemctl("daemon-reload")
    try:
        manager.systemctl("start", "vaultd.service")
        pid = _main_pid(manager)
        status = Path(f"/proc/{pid}/status").read_text()
        assert re.search(r"^Uid:\s+0\s+0\s+0\s+0$", status, re.M) and "CapPrm:\t0000000000000000" in status
        with Client(manager.socket_path, timeout=20) as client:
            reported = client.status()
        # Without CAP_IPC_LOCK, this host's 8 MiB RLIMIT_MEMLOCK is too small: status says so.
        assert reported["dumpable"] is False and reported["memory_locked"] is False
        assert attack_as_same_uid(pid, manager.root) == ("refused", "refused")
    finally:
        dropin.unlink()
        manager.systemctl("daemon-reload")
        _stop_all(manager)


def test_doctor_finds_the_service_healthy_then_a_loose_socket_folder(installed: UserManager) -> None:
    manager = installed
    _stop_all(manager)
    manager.systemctl("enable", "--now", "vaultd.socket")
    try:
        run = manager.vaultctl("doctor", "--json", check=False)
        report = json.loads(run.stdout)
        by_name = {c["check"]: c for c in report["checks"]}
        assert run.returncode == 0 and report["ok"], run.stdout
        for name in ("socket folder", "socket", "vaultd.socket", "vaultd.service", "daemon", "memory", "core dumps"):
            assert by_name[name]["status"] == "ok", by_name[name]
        # No logind here, and no linger file: the advice says how to keep vaultd after logout.
        assert by_name["lingering"]["status"] == "warn"
        assert "loginctl enable-linger" in by_name["lingering"]["advice"]

        manager.socket_path.parent.chmod(0o755)
        loose = manager.vaultctl("doctor", check=False)
        assert loose.returncode == 1
        assert re.search(r"^fail\s+socket folder\s+.*is 0755", loose.stdout, re.M), loose.stdout
        assert f"chmod 0700 {manager.socket_path.parent}" in loose.stdout
    finally:
        manager.socket_path.parent.chmod(0o700)
        manager.systemctl("disable", "--now", "vaultd.socket")
        _stop_all(manager)
