"""A peer for the benchmark suite: gnome-keyring's Secret Service, read through secretstorage.

The suite starts a private D-Bus bus and a gnome-keyring-daemon on it (a throwaway HOME,
unlocked with a fake password), stores one 200-byte fake token, and times what an engine
would do to fetch it: ``Item.get_secret()`` on the item, over the bus, as the secretstorage
package does it. Both processes are stopped by their pids. Where the pieces are missing, the
suite leaves the row out and prints :func:`missing`'s reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from sign_vs_ssh_agent import pinned

#: What is needed, and how to get it.
NEEDS = (
    "gnome-keyring-daemon and dbus-daemon (apt install gnome-keyring dbus) and the secretstorage "
    "package (pip install '.[bench]')"
)
#: The collection ``gnome-keyring-daemon --unlock`` makes, unlocked with the password it reads.
LOGIN = "/org/freedesktop/secrets/collection/login"
SECRETS = "org.freedesktop.secrets"
#: A session bus without service activation: with the stock session.conf, a call that comes
#: before our daemon owns its name makes the bus start a second gnome-keyring-daemon (one that
#: knows no password), and ours then exits with "another secret service is running".
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def missing() -> str | None:
    """Why the row cannot be measured here, or None when it can."""
    absent = [tool for tool in ("gnome-keyring-daemon", "dbus-daemon") if not shutil.which(tool)]
    try:
        import secretstorage  # type: ignore[import-not-found]  # noqa: F401 - optional peer
    except ImportError:
        absent.append("the secretstorage package")
    if absent:
        return f"gnome-keyring: {', '.join(absent)} not installed; it needs {NEEDS}"
    return None


class GnomeKeyring:
    """A private bus with an unlocked gnome-keyring holding one item."""

    def __init__(self, root: Path, cpu: int | None = None) -> None:
        import secretstorage  # optional peer: missing() said it is there

        root.mkdir(mode=0o700, exist_ok=True)
        (root / "run").mkdir(mode=0o700, exist_ok=True)
        config = root / "bus.conf"
        config.write_text(BUS_CONFIG.format(socket=root / "bus.sock"))
        address = f"unix:path={root / 'bus.sock'}"
        env = {**os.environ, "HOME": str(root), "XDG_RUNTIME_DIR": str(root / "run")}
        env.update(XDG_DATA_HOME=str(root / "data"), XDG_CONFIG_HOME=str(root / "config"))
        env["DBUS_SESSION_BUS_ADDRESS"] = address
        self.bus = subprocess.Popen(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile", "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            preexec_fn=pinned(cpu),  # noqa: PLW1509 - sched_setaffinity only
        )
        self.keyring: subprocess.Popen[bytes] | None = None
        self.connection: Any = None
        self._previous = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
        try:
            assert self.bus.stdout is not None
            self.bus.stdout.readline()  # printed once the bus listens
            self.keyring = subprocess.Popen(
                ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                preexec_fn=pinned(cpu),  # noqa: PLW1509 - sched_setaffinity only
            )
            assert self.keyring.stdin is not None
            self.keyring.stdin.write(b"fake-keyring-password\n")  # --unlock reads it from stdin
            self.keyring.stdin.close()
            os.environ["DBUS_SESSION_BUS_ADDRESS"] = address  # secretstorage connects to this one
            self.connection = secretstorage.dbus_init()
            collection = self._login_collection(secretstorage)
            self.item = collection.create_item("vaultd bench", {"app": "vaultd-bench"}, b"f" * 200, replace=True)
        except BaseException:
            self.stop()
            raise

    def _login_collection(self, secretstorage: Any) -> Any:
        """The login keyring, once the daemon is on the bus and ``--unlock`` has made and
        unlocked it (up to 10 s). Asked for by its path: ``get_default_collection`` would have
        the daemon create a default collection if there is none yet, behind a prompt nobody
        can answer."""
        from jeepney import DBus  # secretstorage's own D-Bus library

        deadline = time.monotonic() + 10
        while True:
            assert self.keyring is not None
            if self.keyring.poll() is not None:
                raise RuntimeError(f"gnome-keyring-daemon exited at start ({self.keyring.returncode})")
            reply = self.connection.send_and_get_reply(DBus().NameHasOwner(SECRETS))
            if reply.body[0]:
                try:
                    collection = secretstorage.Collection(self.connection, LOGIN)
                    if not collection.is_locked():
                        return collection
                except secretstorage.exceptions.SecretStorageException:  # the login keyring is not made yet
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError("gnome-keyring-daemon did not offer an unlocked login keyring within 10 s")
            time.sleep(0.05)

    def get(self) -> bytes:
        """One fetch of the stored secret, over the bus."""
        secret: bytes = self.item.get_secret()
        return secret

    def stop(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        for proc in (self.keyring, self.bus):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        if self._previous is None:
            os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SESSION_BUS_ADDRESS"] = self._previous
