"""The reliability suite's table: one row per kind of trouble, and how rows are collected.

Each row module exposes ``run(mode) -> Row``; ``mode`` is ``"short"`` (CI: seconds), ``"full"``
(the documented command's default: minutes) or ``"soak"`` (by hand: the long run whose table
goes into the README). A row counts what it did and what went wrong; it never asserts: the
tests in ``test_rows.py`` and the runner judge the counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["MODES", "Mode", "Row", "format_table"]

Mode = Literal["short", "full", "soak"]
MODES: tuple[Mode, ...] = ("short", "full", "soak")


@dataclass
class Row:
    """What one row did, and what went wrong (all zero in the last three columns is a pass)."""

    name: str
    inputs: int = 0  # messages, fuzz inputs or requests tried
    faults: int = 0  # faults injected: kills, full disks, failing fsyncs, hostile peers
    connections: int = 0  # connections opened (or held at once, where the row says so)
    served: int = 0  # requests a well-behaved client had answered
    errors: int = 0  # answers a well-behaved client did not get, or got wrong
    crashes: int = 0  # daemon deaths we did not cause
    lost: int = 0  # data lost: a generation gone back, a committed refresh token missing
    figures: dict[str, str] = field(default_factory=dict)  # measured, not judged (p99, RSS, ...)

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.crashes == 0 and self.lost == 0


def format_table(rows: list[Row]) -> str:
    header = (
        f"{'row':34} {'inputs':>10} {'faults':>7} {'conns':>7} {'served':>9} {'errors':>6} {'crash':>5} {'lost':>5}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.name:34} {row.inputs:>10,} {row.faults:>7,} {row.connections:>7,} {row.served:>9,}"
            f" {row.errors:>6} {row.crashes:>5} {row.lost:>5}"
        )
        lines.extend(f"    {key}: {value}" for key, value in row.figures.items())
    return "\n".join(lines)
