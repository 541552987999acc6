"""A guesser on a real socket cannot skip the wrong-passphrase delay by breaking its connection.

The attack of issue 14 (item 2): a wrong passphrase, then a byte that is not MessagePack, so
that the server closes the connection and cancels the request during its delay; then the next
guess at once. Real time (the server's KDF runs in a worker thread), so the test asserts a
lower bound only, with a step large enough that the old behaviour (no wait) stays far below it.
"""

from __future__ import annotations

import trio

from vaultd._vault import FailureDelay

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
