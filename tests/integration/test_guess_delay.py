"""A guesser on a real socket cannot skip the wrong-passphrase delay by breaking its connection.

The attack of issue 14 (item 2): a wrong passphrase, then a byte that is not MessagePack, so
that the server closes the connection and cancels the request during its delay; then the next
guess at once. Real time (the server's KDF runs in a worker thread; the second test runs a real daemon
process), so the tests assert lower bounds only, which the old behaviour (no wait) stays far
below.
"""

from __future__ import annotations

import socket
import time

import msgpack
import trio

from vaultd._vault import FailureDelay

from ..daemon_process import DaemonProcess
from .conftest import PASS, StartServer

STEP = 1.5


async def test_garbage_after_a_wrong_guess_does_not_skip_its_delay(start_server: StartServer) -> None:
    served = await start_server(delay=FailureDelay(step=STEP, cap=10.0))
    setup = await served.connect()
    await setup.ok("vault.init", passphrase=PASS, kdf_profile="min")
    await setup.aclose()

    start = trio.current_time()
    guesser = await served.connect()
    await guesser.request("vault.unlock", passphrase="wrong passphrase 9")
    with trio.fail_after(20):
        while served.vault.failed_attempts < 1:  # noqa: ASYNC110 - the guess has reached its check: poll
            await trio.sleep(0.01)
    await guesser.send_raw(b"\xc1")  # never valid MessagePack: the server closes this connection
    answers, closed = await guesser.raw_answer_then_close()
    assert closed
    assert not any(a[0] == 1 and a[2] and a[2].get("name") == "BAD_PASSPHRASE" for a in answers), "answered early"

    # The next try, on a fresh connection, with the right passphrase: it must wait out the delay.
    operator = await served.connect()
    assert (await operator.ok("vault.unlock", passphrase=PASS))["state"] == "UNLOCKED"
    assert trio.current_time() - start >= STEP, "the next check ran before the cancelled guess's delay was over"
    await operator.aclose()


def test_a_real_daemon_makes_guessers_who_break_their_connection_wait(daemon: DaemonProcess) -> None:
    """The same attack on a real ``vaultd`` process with its default delay (0.1 s steps): five
    guesses, each cut off by a garbage byte once the daemon counts it, then the right passphrase.
    Each check waits for the one before it, so the whole costs at least 0.1+0.2+0.3+0.4+0.5 s."""
    daemon.start()
    daemon.ctl("init", "--kdf-profile", "min", *daemon.pw())
    status = daemon.client()
    start = time.monotonic()
    for guess in range(1, 6):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(daemon.socket_path))
            sock.sendall(msgpack.packb([0, guess, "vault.unlock", [{"passphrase": f"wrong guess {guess}"}]]))
            deadline = time.monotonic() + 20
            while status.status()["failed_unlocks"] < guess:
                assert time.monotonic() < deadline, "the guess never reached its check"
                time.sleep(0.005)  # another process does the work: poll
            sock.sendall(b"\xc1")  # the daemon closes this connection, cancelling the guess
            sock.settimeout(20)
            while sock.recv(65536):
                pass
    daemon.ctl("unlock", *daemon.pw())
    assert time.monotonic() - start >= 1.5, "a guess ran before the previous one's delay was over"
    assert status.status()["failed_unlocks"] == 0
    status.close()
