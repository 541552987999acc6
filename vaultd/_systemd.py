"""The service manager's side of vaultd: an inherited socket, notifications, watchdog, credentials.

systemd's protocols, spoken with the standard library alone (no libsystemd): the listening
socket passed as ``LISTEN_FDS`` (sd_listen_fds(3)), ``NOTIFY_SOCKET`` datagrams (READY,
STATUS, RELOADING, STOPPING, WATCHDOG; sd_notify(3)), and a passphrase credential in
``$CREDENTIALS_DIRECTORY`` for unattended unlock. Every variable is taken out of the
environment once read, so that no command vaultd runs (an ``exec`` credential) inherits it.
Without systemd every call here is a no-op, and vaultd binds its own socket.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import time
import tomllib
from collections.abc import Callable, MutableMapping
from pathlib import Path

import platformdirs
import trio

from vaultd_protocol import CredentialState, VaultState

from ._listen import SocketSetupError
from ._secret import Secret
from ._vault import Vault

__all__ = [
    "PASSPHRASE_CREDENTIAL",
    "ServiceLink",
    "configured_log_level",
    "credential_passphrase",
    "listen_socket",
    "settings_path",
    "status_line",
]

log = logging.getLogger("vaultd.systemd")

#: The first fd systemd passes (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3
#: The credential name holding the passphrase, for LoadCredential= / LoadCredentialEncrypted=.
PASSPHRASE_CREDENTIAL = "vaultd-passphrase"
_MAX_PASSPHRASE = 4096
#: STATUS= is sent at most this often (many renewals at once make one line, not thousands).
STATUS_INTERVAL = 0.5
LOG_LEVELS = ("debug", "info", "warning", "error")


# -- socket activation ------------------------------------------------------------------------


def listen_socket(environ: MutableMapping[str, str] = os.environ) -> socket.socket | None:
    """The listening socket systemd passed (``LISTEN_FDS``), or None when not socket-activated.

    Reads ``LISTEN_PID``, ``LISTEN_FDS`` and ``LISTEN_FDNAMES``, then removes all three from
    ``environ`` whatever they said. The variables count only when ``LISTEN_PID`` is this
    process (they may have been inherited by mistake).

    Raises:
        SocketSetupError: systemd passed something other than exactly one listening
            AF_UNIX stream socket (the message names what to fix in vaultd.socket).
    """
    pid, count, names = (environ.pop(key, None) for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"))
    if pid is None or count is None or not pid.isdigit() or int(pid) != os.getpid():
        return None
    try:
        n = int(count)
    except ValueError:
        raise SocketSetupError(f"LISTEN_FDS={count!r} is not a number") from None
    fds = range(LISTEN_FDS_START, LISTEN_FDS_START + max(n, 0))
    for fd in fds:  # as sd_listen_fds does: none of them leaks into a command vaultd runs
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, False)
    if n == 0:
        return None
    labels = (names or "").split(":")
    if n != 1:
        raise SocketSetupError(
            f"systemd passed {n} sockets ({', '.join(labels)}); vaultd listens on one: "
            "give vaultd.socket a single ListenStream="
        )
    return _checked_listener(LISTEN_FDS_START, labels[0] or "unnamed")


def _checked_listener(fd: int, name: str) -> socket.socket:
    where = f"fd {fd} from systemd ({name})"
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise SocketSetupError(f"{where} is not a socket ({exc.strerror}): check vaultd.socket") from None
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
        kind = f"{sock.family.name}/{sock.type.name}{'' if listening else ', not listening'}"
        sock.detach()  # leave the fd to systemd's accounting: not ours to close
        raise SocketSetupError(f"{where} is {kind}, not a listening AF_UNIX stream socket: use ListenStream=PATH")
    path = sock.getsockname()
    if not isinstance(path, str) or not path.startswith("/"):
        sock.detach()
        raise SocketSetupError(f"{where} has no file path (abstract or unnamed): use ListenStream=/absolute/path")
    return sock


# -- unattended unlock --------------------------------------------------------------------------


def credential_passphrase(environ: MutableMapping[str, str] = os.environ) -> Secret | None:
    """The passphrase from ``$CREDENTIALS_DIRECTORY/vaultd-passphrase`` (its first line), if any.

    None when there is no such credential, or it cannot be read (logged, never its content).
    """
    folder = environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        return None
    path = Path(folder) / PASSPHRASE_CREDENTIAL
    raw = bytearray(_MAX_PASSPHRASE + 1)
    try:
        with path.open("rb", buffering=0) as handle:  # unbuffered: no copy left in a read buffer
            size = handle.readinto(raw) or 0
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("cannot read the passphrase credential %s: %s", path, exc.strerror)
        return None
    try:
        if size > _MAX_PASSPHRASE:
            log.error("the passphrase credential %s is over %d bytes: not used", path, _MAX_PASSPHRASE)
            return None
        end = raw.find(b"\n", 0, size)
        line = raw[: size if end < 0 else end]
        if line.endswith(b"\r"):
            del line[-1:]
        if not line:
            log.error("the passphrase credential %s is empty: not used", path)
            return None
        secret = Secret(line)
        line[:] = bytes(len(line))
        return secret
    finally:
        raw[:] = bytes(len(raw))


# -- settings reloaded on SIGHUP ----------------------------------------------------------------


def settings_path() -> Path:
    """``$XDG_CONFIG_HOME/vaultd/vaultd.toml``: settings a running daemon re-reads on SIGHUP."""
    return Path(platformdirs.user_config_dir("vaultd", appauthor=False)) / "vaultd.toml"


#: Every top-level name vaultd.toml may hold (``_notify_config`` checks inside the tables).
SETTINGS = ("alerts", "log_level", "metrics", "metrics_allow_remote", "notify")


def check_setting_names(path: Path) -> None:
    """Refuse a settings file with a name vaultd does not know: a typo (``[[notfy]]``, ``metrcs``)
    would otherwise turn alerts or metrics off without a word.

    Raises:
        ValueError: the file is not TOML, or holds an unknown name (the message lists the known ones).
    """
    try:
        with path.open("rb") as handle:
            settings = tomllib.load(handle)
    except FileNotFoundError:
        return
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise ValueError(f"{path}: unknown setting {names} (known: {', '.join(SETTINGS)})")


def configured_log_level(path: Path) -> str | None:
    """``log_level`` from the settings file (``vaultd.toml``); None when absent or unset.

    Raises:
        ValueError: the file is not TOML, or the level is not one of :data:`LOG_LEVELS`.
    """
    try:
        with path.open("rb") as handle:
            settings = tomllib.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    level = settings.get("log_level")
    if level is None:
        return None
    if level not in LOG_LEVELS:
        raise ValueError(f"{path}: log_level must be one of {', '.join(LOG_LEVELS)}")
    return str(level)


# -- notifications ------------------------------------------------------------------------------


#: States STATUS= does not list one by one (DEGRADED is always counted).
_HEALTHY = frozenset({CredentialState.FRESH, CredentialState.RENEW_DUE, CredentialState.DEGRADED})


def status_line(vault: Vault) -> str:
    """The one-line STATUS= systemd shows (``systemctl status``, the StatusText property)."""
    state = vault.state
    if state is VaultState.UNINITIALIZED:
        return "No vault yet: run 'vaultctl init'"
    if state is VaultState.LOCKED:
        return "Locked: run 'vaultctl unlock'"
    counts = vault.state_counts()
    total = sum(counts.values())
    parts = [f"{total} credential{'' if total == 1 else 's'}", f"{counts[CredentialState.DEGRADED]} degraded"]
    for trouble in CredentialState:  # every state but the healthy ones, new ones too (ON_HOLD...)
        if trouble not in _HEALTHY and counts[trouble]:
            parts.append(f"{counts[trouble]} {trouble.value.lower().replace('_', ' ')}")
    parts.extend(
        f"upstream {u['name']} {u['state'].lower().replace('_', ' ')}"
        for u in vault.upstream_list()
        if u["state"] in (CredentialState.NEEDS_REAUTH, CredentialState.EXPIRED)
    )
    return "Unlocked: " + ", ".join(parts)


def _notify_address(value: str) -> str | None:
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]  # an abstract socket name
    return None


class ServiceLink:
    """What vaultd tells its service manager (``NOTIFY_SOCKET``), and the watchdog it keeps.

    Sending never blocks and never raises: a notification that cannot be delivered is
    logged once, and the daemon carries on (systemd then judges it by its timeouts).
    """

    def __init__(self, address: str | None = None, watchdog_usec: int | None = None) -> None:
        self._address = address
        self._sock: socket.socket | None = None
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
        #: Seconds between WATCHDOG=1 (half of WATCHDOG_USEC), or None without a watchdog.
        self.watchdog_interval = watchdog_usec / 2e6 if watchdog_usec else None
        self._changed = trio.Event()
        self._warned = False
        self._ready = False
        self._last_status: str | None = None

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] = os.environ) -> ServiceLink:
        """Read and remove ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``."""
        raw = environ.pop("NOTIFY_SOCKET", None)
        usec, wpid = environ.pop("WATCHDOG_USEC", None), environ.pop("WATCHDOG_PID", None)
        address = _notify_address(raw) if raw else None
        if raw and address is None:
            log.warning("NOTIFY_SOCKET=%r is not a path or an @abstract name: not notifying systemd", raw)
        watchdog = int(usec) if usec and usec.isdigit() and int(usec) > 0 else None
        if wpid is not None and (not wpid.isdigit() or int(wpid) != os.getpid()):
            watchdog = None  # meant for another process
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; whether it went (False without systemd)."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto("\n".join(assignments).encode("utf-8", "replace"), self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot notify the service manager at %s: %s",
                    self._address.replace("\0", "@"),
                    os.strerror(exc.errno or errno.EIO),
                )
            return False
        return True

    # -- the lifecycle --------------------------------------------------------------------------

    def ready(self, status: str) -> None:
        """READY=1 (listening, and unlocked if a passphrase credential allowed), with STATUS."""
        self._ready = True
        self._last_status = status
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> bool:
        """RELOADING=1, if READY=1 was sent (a reload during start-up is silent); whether it was.

        The caller reloads, then sends READY=1 again when this returned True.
        """
        if not self._ready:
            return False
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", "STATUS=Reloading settings")
        return True

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=Stopping: locking the vault")

    def changed(self) -> None:
        """Something STATUS shows may have changed (the vault's ``on_change`` callback)."""
        self._changed.set()

    async def follow_status(self, line: Callable[[], str]) -> None:
        """Send STATUS= whenever :meth:`changed` was called and the line differs; runs forever."""
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            status = line()
            if status != self._last_status:
                self._last_status = status
                self.send(f"STATUS={status}")
            await trio.sleep(STATUS_INTERVAL)

    async def watchdog(self) -> None:
        """WATCHDOG=1 every half WATCHDOG_USEC, from a trio task: a loop that hangs stops it."""
        if self.watchdog_interval is None or not self.enabled:
            return
        while True:
            self.send("WATCHDOG=1")
            await trio.sleep(self.watchdog_interval)
