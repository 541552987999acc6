"""Fixtures for the vaultd unit tests: the fake exchange in-process, and a wall clock tied to trio's."""

from __future__ import annotations

import pytest
import trio

from vaultd._fake_exchange import FakeExchange

from .renewal_tools import Wall


@pytest.fixture
async def exchange(nursery: trio.Nursery) -> FakeExchange:
    """The fake exchange, serving on 127.0.0.1 in the test's own trio run (virtual time)."""
    fx = FakeExchange()
    await nursery.start(fx.serve)
    return fx


@pytest.fixture
def wall() -> Wall:
    return Wall()
