"""Raw connections to a live vaultd that follow a script: what a peer sends, reads, and how it leaves.

One vocabulary for the chaos row's raw peers and the whole-connection fuzzers (the hypothesis
test and the atheris harness): the messages a peer may send (:data:`PAYLOADS`), the ways it
may leave a connection (:class:`Exit`, DESIGN.md section 11 "Peers die mid-conversation"),
a :class:`ScriptedConnection` that performs :class:`Action` s one at a time without ever
blocking for long, and a :func:`check_daemon` that says whether the daemon still serves a
fresh client. Fake credentials only: ``ex`` (static), ``binance`` (a ``sign`` one).
"""

from __future__ import annotations

import contextlib
import enum
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

__all__ = [
    "ANSWERED",
    "BINANCE",
    "PAYLOADS",
    "STATIC_TOKEN",
    "WRONG_PASSPHRASE",
    "Action",
    "Exit",
    "ScriptedConnection",
    "Step",
    "check_daemon",
    "run_script",
    "setup_vault",
]

STATIC_TOKEN = "fake-token-chaos-1"
BINANCE = {"scheme": "binance-hmac", "api_key": "fake-chaos-key", "secret": "fake-chaos-binance-secret-0"}
WRONG_PASSPHRASE = "fake wrong passphrase"
SIGN_REQUEST = {"name": "binance", "method": "GET", "url": "https://api.binance.com/api/v3/account", "body": b""}


class Exit(enum.StrEnum):
    """How a peer leaves a connection."""

    POLITE = "polite"  # shutdown(SHUT_WR), read every answer until the daemon closes, close
    CLOSE_UNREAD = "close-unread"  # close() with answers unread (the kernel resets if any arrived)
    RESET = "reset"  # SO_LINGER 0, then close(): an abortive close, always a RST
    HALF_CLOSE = "half-close"  # shutdown(SHUT_WR), then close a moment later without reading
    GARBAGE = "garbage-mid-frame"  # half of a request, then bytes that are no MessagePack, then close
    STALL = "stalled-reader"  # pipeline requests and never read, hold the socket, then close unread


def _request(msgid: int, method: str, params: dict[str, Any]) -> bytes:
    return msgpack.packb([0, msgid, method, [params]])  # type: ignore[no-any-return]


#: What a peer may send, by name: msgid -> bytes. The answer each gets is in ``ANSWERED``.
PAYLOADS: dict[str, Callable[[int], bytes]] = {
    "hello": lambda i: _request(i, "hello", {"protocol": 1, "client": "chaos"}),
    "get": lambda i: _request(i, "token.get", {"name": "ex"}),
    "get-missing": lambda i: _request(i, "token.get", {"name": "missing"}),
    "sign": lambda i: _request(i, "token.sign", SIGN_REQUEST),
    "watch": lambda i: _request(i, "token.watch", {"names": ["ex", "binance"]}),
    "watch-renewing": lambda i: _request(i, "token.watch", {"names": ["renewing"]}),
    "status": lambda i: _request(i, "status", {}),
    "admin": lambda i: _request(i, "credential.list", {"passphrase": WRONG_PASSPHRASE}),
    "unknown": lambda i: _request(i, "no.such.method", {}),
    "bad-params": lambda i: _request(i, "token.get", {"name": 5}),
    "notification": lambda i: msgpack.packb([2, "chaos.note", [{}]]),
    "garbage": lambda i: b"\xc1" * (1 + i % 3),
    "half-frame": lambda i: _request(i, "token.get", {"name": "ex"})[:7],
    "oversized": lambda i: b"\x94\x00" + bytes([i & 0x7F]) + b"\xdb\x00\x10\x00\x00" + b"x" * 64,
}
#: Payloads that are whole, valid requests: each gets exactly one answer under its msgid.
ANSWERED = frozenset(
    {"hello", "get", "get-missing", "sign", "watch", "watch-renewing", "status", "admin", "unknown", "bad-params"}
)
#: Payloads after which the daemon closes the connection (or waits for the rest of a frame).
BREAKING = frozenset({"garbage", "half-frame", "oversized"})


#: How long CLOSE_UNREAD and HALF_CLOSE wait for an answer to be there (unread) before closing.
ANSWER_WAIT = 0.05


def _until_readable(sock: socket.socket, timeout: float) -> None:
    select.select([sock], [], [], timeout)


@dataclass(frozen=True)
class Action:
    """One step of a script: send ``count`` of a payload, read what is there, pause, or leave."""

    kind: str  # "send", "read", "pause", "leave"
    payload: str = ""  # for "send": a key of PAYLOADS
    count: int = 1  # for "send": how many, pipelined in one write
    seconds: float = 0.0  # for "pause"
    exit: Exit = Exit.POLITE  # for "leave"


@dataclass
class ScriptedConnection:
    """A raw connection that performs actions; it records what it sent and what came back."""

    path: Path
    sock: socket.socket | None = None
    next_msgid: int = 0
    sent: dict[int, str] = field(default_factory=dict)  # msgid -> payload name, whole requests only
    broken: bool = False  # it sent something after which the daemon may close it
    admin: bool = False  # it sent an admin call (answered after the wrong-passphrase delay)
    left: Exit | None = None
    received: bytearray = field(default_factory=bytearray)
    closed_by_daemon: bool = False
    refused: bool = False  # the connect failed (the daemon is gone, or its cap is reached)

    def open(self, timeout: float = 5.0) -> bool:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(self.path))
        except OSError:
            sock.close()
            self.refused = True
            return False
        sock.setblocking(False)
        self.sock = sock
        return True

    def perform(self, action: Action) -> None:
        """Do ``action``; a connection that was refused or has left ignores the rest of its script."""
        if self.left is not None or self.refused:
            return
        if self.sock is None and not self.open():
            return
        if action.kind == "send":
            self.send(action.payload, action.count)
        elif action.kind == "read":
            self.read_available()
        elif action.kind == "pause":
            time.sleep(action.seconds)
        elif action.kind == "leave":
            self.leave(action.exit)

    def send(self, payload: str, count: int = 1) -> None:
        data = bytearray()
        for _ in range(count):
            self.next_msgid += 1
            data += PAYLOADS[payload](self.next_msgid)
            if payload in ANSWERED and not self.broken:
                self.sent[self.next_msgid] = payload
        self.broken = self.broken or payload in BREAKING
        self.admin = self.admin or payload == "admin"
        self._write(bytes(data))

    def _write(self, data: bytes, timeout: float = 2.0) -> None:
        """Write what the socket takes within ``timeout``; a daemon that stopped reading keeps the rest."""
        assert self.sock is not None
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view and time.monotonic() < deadline:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:  # the daemon closed or reset it
                self.closed_by_daemon = True
                return

    def read_available(self) -> None:
        """Take whatever the daemon has sent so far, without waiting."""
        assert self.sock is not None
        while True:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                self.closed_by_daemon = True
                return
            if not chunk:
                self.closed_by_daemon = True
                return
            self.received += chunk

    def read_until_closed(self, timeout: float) -> None:
        """Read until the daemon closes the connection, or ``timeout`` seconds pass."""
        assert self.sock is not None
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = self.sock.recv(65536)
                if not chunk:
                    self.closed_by_daemon = True
                    return
                self.received += chunk
        except TimeoutError:
            return
        except OSError:
            self.closed_by_daemon = True

    def leave(self, how: Exit, polite_timeout: float = 15.0) -> None:
        """Leave the connection ``how``; POLITE waits up to ``polite_timeout`` for the daemon to close."""
        sock = self.sock
        assert sock is not None
        self.left = how
        with contextlib.suppress(OSError):
            if how is Exit.CLOSE_UNREAD and self.sent:
                _until_readable(sock, ANSWER_WAIT)  # an answer is there, unread, when we close
            elif how is Exit.POLITE:
                sock.shutdown(socket.SHUT_WR)
                self.read_until_closed(polite_timeout)
            elif how is Exit.RESET:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif how is Exit.HALF_CLOSE:
                sock.shutdown(socket.SHUT_WR)
                _until_readable(sock, ANSWER_WAIT)
            elif how is Exit.GARBAGE:
                self._write(PAYLOADS["get"](self.next_msgid + 1)[:9] + b"\xc1\xc1\xc1")
            elif how is Exit.STALL:
                self.send("get", 500)  # never read: the daemon's send buffer fills
        sock.close()

    def answers(self) -> list[Any]:
        """The messages received, decoded (a truncated tail is left out)."""
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(bytes(self.received))
        out = []
        with contextlib.suppress(Exception):
            out.extend(unpacker)
        return out

    def problems(self) -> list[str]:
        """For a connection that sent only whole requests and left politely: what went wrong.

        Each request must have exactly one answer under its msgid (an admin call may still be
        in the daemon-wide wrong-passphrase delay), ``token.get ex`` the stored token, and no
        answer may be INTERNAL; the daemon then closes the connection.
        """
        found: list[str] = []
        responses: dict[int, Any] = {}
        for message in self.answers():
            if not (isinstance(message, list) and message and message[0] in (1, 2)):
                found.append(f"not a response: {message!r:.120}")
            elif message[0] == 1:
                msgid = message[1]
                if msgid in responses or msgid not in self.sent:
                    found.append(f"an answer nobody asked for, or a second one: {msgid!r}")
                responses[msgid] = message
        waiting = False
        for msgid, payload in self.sent.items():
            answer = responses.get(msgid)
            if answer is None and payload == "admin":  # still in the wrong-passphrase delay
                waiting = True
                continue
            if answer is None:
                found.append(f"{payload} (msgid {msgid}) was never answered")
                continue
            error, result = answer[2], answer[3]
            if isinstance(error, dict) and error.get("name") == "INTERNAL":
                found.append(f"{payload} was answered INTERNAL")
            if payload == "get" and (error is not None or result.get("token") != STATIC_TOKEN):
                found.append(f"token.get ex was answered {error or result!r:.120}")
            if payload == "sign" and error is not None:
                found.append(f"token.sign was answered {error!r:.120}")
        if not self.closed_by_daemon and not waiting:
            found.append("the daemon did not close the connection after our end of stream")
        return found


def setup_vault(path: Path, passphrase: str, extra: dict[str, tuple[str, dict[str, Any]]] | None = None) -> None:
    """Create (MIN KDF profile) and unlock the vault behind ``path``, with ``ex`` and ``binance``."""
    from vaultd_client import Client  # here: the atheris harness instruments imports first

    credentials = {"ex": ("static", {"token": STATIC_TOKEN}), "binance": ("sign", BINANCE), **(extra or {})}
    with Client(path, timeout=30, cache=False) as client:
        client.call("vault.init", {"passphrase": passphrase, "kdf_profile": "min"}, timeout=30)
        client.unlock(passphrase)
        for name, (kind, config) in credentials.items():
            client.call("credential.put", {"passphrase": passphrase, "name": name, "kind": kind, "config": config})


def check_daemon(path: Path, timeout: float = 10.0) -> str | None:
    """None if a fresh client gets ``hello``, the ``ex`` token and a signature; else what failed."""
    from vaultd_client import Client, VaultdError

    try:
        with Client(path, timeout=timeout, cache=False) as client:
            client.hello("chaos-check")
            token = client.token("ex")
            if token.value != STATIC_TOKEN:
                return f"a fresh client got a wrong token: {token.value!r:.40}"
            client.sign("binance", "GET", SIGN_REQUEST["url"])  # type: ignore[arg-type]
    except VaultdError as exc:
        return f"a fresh client failed: {type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True)
class Step:
    """One action of a whole-connection script, on connection number ``conn``."""

    conn: int
    action: Action


def run_script(path: Path, exits: list[Exit], steps: list[Step], polite_timeout: float = 5.0) -> list[str]:
    """Run ``steps`` interleaved on ``len(exits)`` connections, beside a control connection.

    A "leave" step ends its connection the way ``exits`` says for it; the connections still
    open at the end leave that way too, in order. The control connection asks ``token.get``
    before the script and again after it, and leaves politely. Returns what went wrong on the
    control connection and on each connection that sent only whole requests and left politely:
    another connection's fate must not reach them. Whether the daemon lives is the caller's
    to judge (it knows the daemon).
    """
    control = ScriptedConnection(path)
    if not control.open():
        return ["the control connection was refused"]
    control.send("get")
    conns = [ScriptedConnection(path) for _ in exits]
    for step in steps:
        action = step.action
        if action.kind == "leave":
            action = Action("leave", exit=exits[step.conn])
        conns[step.conn].perform(action)
    for conn, how in zip(conns, exits, strict=True):
        if conn.sock is not None and conn.left is None:
            conn.leave(how, polite_timeout)
    control.send("get", 3)
    control.leave(Exit.POLITE, polite_timeout)
    problems = [f"the control connection: {problem}" for problem in control.problems()]
    for i, (conn, how) in enumerate(zip(conns, exits, strict=True)):
        if conn.refused:
            problems.append(f"connection {i} was refused")
        elif how is Exit.POLITE and conn.sock is not None and not conn.broken:
            problems += [f"connection {i} (polite): {problem}" for problem in conn.problems()]
    return problems
