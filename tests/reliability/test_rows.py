"""CI runs the short version of every row of the reliability suite: zero errors, crashes, data lost."""

from __future__ import annotations

import importlib

import pytest

from .rows import format_table
from .run_all import ROW_MODULES


@pytest.mark.parametrize("module", ROW_MODULES, ids=lambda name: name.rsplit(".", 1)[-1])
def test_the_short_version_of_each_row_loses_nothing(module: str) -> None:
    row = importlib.import_module(module).run("short")
    assert row.inputs + row.faults + row.connections + row.served > 0, "the row did nothing"
    assert row.ok, format_table([row])
