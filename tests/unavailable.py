"""A test that needs what this machine lacks (a tool, root): it fails under CI, and skips elsewhere."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(message: str) -> NoReturn:
    """Fail under ``CI`` (it installs or runs as what the test needs); skip, saying why, elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
