"""The wrong-passphrase delay: one "next check not before" time for the whole daemon.

ssh-agent's rule (each failed passphrase waits ``step`` seconds more, up to ``cap``), made
so that cancelling a request cannot skip it. The time is kept on trio's clock and set
*before* the key derivation runs, as if the check will fail: a request cancelled during
its KDF or its delay (a peer that closes its connection, or sends garbage so that the
server closes it) has already pushed the next check back, and every check (``vault.unlock``
and every admin passphrase, from any connection and any uid) waits for that time before its
own KDF starts. Only a check that succeeds clears it. The wrong answer itself is still
delayed by the same amount, counted from the end of the KDF, as before.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from vaultd_protocol import ErrorCode

from ._errors import RpcError
from ._sealing import OpenFailed

__all__ = ["FailureDelay"]

log = logging.getLogger("vaultd.vault")


@dataclass
class FailureDelay:
    """The daemon's one passphrase gate: run every check through :meth:`check` (which calls
    :meth:`begin` right before the KDF, then :meth:`passed`, :meth:`failed`, or
    :meth:`not_a_guess` when no passphrase was tried)."""

    step: float = 0.1
    cap: float = 10.0
    #: Checks failed in a row; a check counts as failed from :meth:`begin` until it passes.
    failures: int = 0
    #: trio time before which the next check's KDF may not start.
    not_before: float = -math.inf

    async def check(self, blocking: Callable[..., Awaitable[Any]], kdf: Callable[..., Any], *args: Any) -> Any:
        """Run one passphrase check, ``blocking(kdf, *args)``, through the gate; return its result.

        Raises:
            RpcError: BAD_PASSPHRASE (``kdf`` raised OpenFailed), after the delay.
            Exception: whatever else ``kdf`` raises (an unreadable file: not counted as a guess).
                A cancellation is not an Exception: the check stays counted, the delay stays.
        """
        before = await self.begin()
        try:
            result = await blocking(kdf, *args)
        except OpenFailed as exc:
            await self.failed()
            raise RpcError(ErrorCode.BAD_PASSPHRASE, str(exc)) from None
        except Exception:
            self.not_a_guess(before)
            raise
        self.passed()
        return result

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` failures in a row (0 for none)."""
        return min(self.step * failures, self.cap) if failures > 0 else 0.0

    async def begin(self) -> tuple[int, float]:
        """Wait until the next check may run, then count this one as failed until it passes.

        Returns what :meth:`not_a_guess` needs to take the count back. Between the end of
        the wait and the new ``not_before`` there is no checkpoint, so no cancellation and
        no other check can come between.
        """
        await trio.sleep_until(self.not_before)
        before = (self.failures, self.not_before)
        self.failures += 1
        self.not_before = trio.current_time() + self.delay(self.failures)
        return before

    def passed(self) -> None:
        """The passphrase was right: the next check may run at once."""
        self.failures = 0
        self.not_before = -math.inf

    def not_a_guess(self, before: tuple[int, float]) -> None:
        """No passphrase was tried after all (the file was unreadable or gone): undo :meth:`begin`."""
        self.failures, self.not_before = before

    async def failed(self) -> None:
        """The passphrase was wrong: hold the answer for the delay, counted from now.

        The next check is held until then too, whether or not this wait is cancelled.
        """
        delay = self.delay(self.failures)
        self.not_before = max(self.not_before, trio.current_time() + delay)
        log.warning("wrong passphrase (failure %d in a row; answering in %.1f s)", self.failures, delay)
        await trio.sleep_until(self.not_before)

    def reset(self) -> None:
        """Forget every failure (same as :meth:`passed`)."""
        self.passed()
