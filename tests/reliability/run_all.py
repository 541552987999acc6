"""The reliability suite in one command: every row, then the table.

    python -m tests.reliability.run_all            # full: a few minutes
    python -m tests.reliability.run_all --short    # what CI runs (tests/reliability/test_rows.py)
    python -m tests.reliability.run_all --soak     # by hand; its table goes into the README

Exit status 0 when every row has zero errors, crashes and data lost.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

from .rows import Mode, Row, format_table

#: Row modules, in the order the table lists them; each has ``run(mode) -> Row``.
ROW_MODULES = (
    "tests.reliability.row_fuzz",
    "tests.reliability.row_hostile",
    "tests.reliability.row_load",
    "tests.reliability.row_crash",
    "tests.reliability.row_disk",
    "tests.reliability.row_residue",
    "tests.reliability.row_chaos",
)


def run_rows(mode: Mode, only: list[str] | None = None) -> list[Row]:
    rows = []
    for name in ROW_MODULES:
        if only and not any(part in name for part in only):
            continue
        module = importlib.import_module(name)
        started = time.monotonic()
        row = module.run(mode)
        row.figures.setdefault("took", f"{time.monotonic() - started:.1f} s")
        rows.append(row)
        verdict = "ok" if row.ok else "NOT OK"
        print(f"{row.name}: {verdict} ({row.figures['took']})", file=sys.stderr, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--short", action="store_const", const="short", dest="mode", help="the CI version")
    group.add_argument("--soak", action="store_const", const="soak", dest="mode", help="the long run, by hand")
    parser.add_argument("--only", nargs="*", help="rows whose module name contains one of these")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = parser.parse_args()
    mode: Mode = args.mode or "full"
    rows = run_rows(mode, args.only)
    print(f"reliability suite, {mode} mode")
    print(format_table(rows))
    if args.json:
        print(json.dumps([row.__dict__ | {"ok": row.ok} for row in rows]))
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
