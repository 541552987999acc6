"""Fixtures shared by every test folder."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .daemon_process import DaemonProcess, FakeExchangeProcess


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp folder with a short path: AF_UNIX socket paths must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="vd-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon(short_tmp: Path) -> Iterator[DaemonProcess]:
    """A real vaultd process, stopped (SIGTERM, exit 0 expected) at the end of the test."""
    proc = DaemonProcess(short_tmp)
    yield proc
    if proc.proc is not None:
        assert proc.stop() == 0, proc.log
    assert proc.leaked() == [], "a secret reached the daemon's log or audit log"


@pytest.fixture
def fake_exchange() -> Iterator[FakeExchangeProcess]:
    """The fake exchange in a process of its own, for tests of a real daemon process."""
    exchange = FakeExchangeProcess()
    yield exchange
    exchange.stop()
