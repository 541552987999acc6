"""atheris harness for whole connections: what peers send, when, and how they leave, on real sockets.

Not part of the test suite (atheris is not a project dependency): see ``tests/fuzz/README.md``.
The server (``serve`` + ``Dispatcher``, instrumented, so that the fuzzer is guided by the
server's own coverage) runs in a thread with its own trio loop, on a real Unix socket in a
temporary folder; its vault is created with the MIN KDF profile and given fake credentials
(``ex`` static, ``binance`` a ``sign`` one) through that socket; wrong passphrases cost
nothing here (``FailureDelay(0, 0)``), so that admin calls do not slow the fuzzer down.

Each input becomes a script (``tests/connection_script.py``): one to four raw connections,
each with a way of leaving (polite, close with answers unread, SO_LINGER 0, half-close,
garbage mid-frame, stalled reader), and up to 16 steps interleaved across them (send valid
or invalid messages, pipelined up to 40 at once, read what is there, pause up to 10 ms, leave
now), beside a control connection that asks for a token before and after. Findings: the
server's loop ended (the daemon would have died); a fresh client no longer gets a token and
a signature; the control connection, or a polite connection that sent only whole requests,
did not get exactly its answers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path

import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, for tests.*

with atheris.instrument_imports():
    import trio

    from vaultd._listen import bind_unix_socket
    from vaultd._rpc import Dispatcher
    from vaultd._server import ServerLimits, serve
    from vaultd._vault import FailureDelay, Vault

from tests.connection_script import PAYLOADS, Action, Exit, Step, check_daemon, run_script, setup_vault

PASS = "fuzz-canary-passphrase-c0nn"
EXITS = list(Exit)
SENDABLE = sorted(set(PAYLOADS) - {"watch-renewing"})


class _Server:
    """The daemon's server and dispatcher in a thread of their own, on a real Unix socket."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "vaultd.sock"
        self.data = folder / "data"
        self.data.mkdir(mode=0o700)
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="fuzzed-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self.error is not None:
            raise RuntimeError(f"the server did not start: {self.error!r}")

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    def wait(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the server's loop to end (it only ends when it failed)."""
        self._thread.join(seconds)

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # the daemon would have died: a finding
            self.error = exc
            self._ready.set()

    async def _serve(self) -> None:
        async with trio.open_nursery() as nursery:
            vault = Vault(self.data, nursery=nursery, failure_delay=FailureDelay(step=0.0, cap=0.0))
            listener = trio.socket.from_stdlib_socket(bind_unix_socket(self.path))
            await nursery.start(serve, listener, Dispatcher(vault, self.path), ServerLimits())
            self._ready.set()


_server: _Server | None = None


def _script(fdp: atheris.FuzzedDataProvider) -> tuple[list[Exit], list[Step]]:
    exits = [EXITS[fdp.ConsumeIntInRange(0, len(EXITS) - 1)] for _ in range(fdp.ConsumeIntInRange(1, 4))]
    steps = []
    for _ in range(fdp.ConsumeIntInRange(0, 16)):
        conn = fdp.ConsumeIntInRange(0, len(exits) - 1)
        kind = fdp.ConsumeIntInRange(0, 5)
        if kind <= 2:
            payload = SENDABLE[fdp.ConsumeIntInRange(0, len(SENDABLE) - 1)]
            action = Action("send", payload, fdp.ConsumeIntInRange(1, 40))
        elif kind == 3:
            action = Action("read")
        elif kind == 4:
            action = Action("pause", seconds=fdp.ConsumeIntInRange(0, 10) / 1000)
        else:
            action = Action("leave")
        steps.append(Step(conn, action))
    return exits, steps


def test_one_input(raw: bytes) -> None:
    assert _server is not None
    exits, steps = _script(atheris.FuzzedDataProvider(raw))
    problems = run_script(_server.path, exits, steps)
    fresh = check_daemon(_server.path)
    if fresh is not None:
        _server.wait(5.0)  # a server on its way out: say that it died rather than that it hangs
    if not _server.alive:
        raise AssertionError(f"the server died: {_server.error!r}\nscript: {exits} {steps}")
    if fresh is not None:
        raise AssertionError(f"{fresh}\nscript: {exits} {steps}")
    if problems:
        raise AssertionError("\n".join([*problems, f"script: {exits} {steps}"]))


def main() -> None:
    global _server  # atheris calls test_one_input with the input only
    # Every connection's end is logged at INFO: show errors only.
    handler = logging.StreamHandler()
    handler.setLevel(logging.ERROR)
    logging.getLogger("vaultd").addHandler(handler)
    logging.getLogger("vaultd").propagate = False
    folder = Path(tempfile.mkdtemp(prefix="vfzc", dir="/tmp"))
    _server = _Server(folder)
    setup_vault(_server.path, PASS)
    atheris.Setup(sys.argv, test_one_input)
    with contextlib.suppress(SystemExit):
        atheris.Fuzz()
    os._exit(0)  # the server thread never ends by itself


if __name__ == "__main__":
    main()
