"""Where the engine and the daemon run for the suite's latency rows, and what each placement is held to.

A round trip between two processes costs very different amounts depending on where the
scheduler puts them: on one core the hand-over is a context switch; on two, each side waits to
be woken by the other; unpinned, the scheduler moves them as it likes. ``suite.py`` measures
every latency row in each placement (:func:`placements`), and this module judges and renders
them side by side (:func:`targets`, :func:`render_latency`, :func:`render_targets`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

#: (name, the servers' cpu or None for the scheduler's choice, the engine's cpus).
Placement = tuple[str, int | None, set[int]]
#: Held in every placement: (name, limit). The ratios are of p50s measured in the same placement.
TARGETS = [
    ("token.get p50 / floor p50", 1.1),
    ("token.sign HMAC p50 / token.get p50", 1.3),
    ("token.sign Ed25519 p50 / token.get p50", 1.6),
    ("p99 / p50, every signing row", 3.0),
]
#: The rows the ratios are made of (labels of ``suite.py``).
FLOOR, GET = "floor token.get", "vaultd token.get static"
HMAC, ED = "vaultd token.sign HMAC", "vaultd token.sign Ed25519"
#: How a row the daemon cannot answer is shown (``token.sign_many`` before the daemon has it).
ABSENT = "n/a (method absent)"


def placements(cpus: list[int], left_out: list[str]) -> list[Placement]:
    """Engine and daemon on one core (``cpus[0]``), on two (the daemon on ``cpus[1]``), and where
    the scheduler puts them; cross-core is left out, with the reason, on one CPU."""
    first = cpus[0]
    chosen: list[Placement] = [("same core", first, {first})]
    if len(cpus) > 1:
        chosen.append(("cross-core", cpus[1], {first}))
    else:
        left_out.append("the cross-core placement: this process may run on one CPU only")
    chosen.append(("unpinned", None, set(cpus)))
    return chosen


def pin_threads(pid: int, cpus: set[int]) -> None:
    """Move every thread of process ``pid`` (a server already running) to ``cpus``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)


def signing(label: str) -> bool:
    return "token.sign" in label


def targets(latency: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each target in each placement: value, limit, whether it is met, and (p99 / p50) which row is worst."""
    out = []
    for placement, rows in latency.items():
        p50 = {label: figure["p50"] for label, figure in rows.items()}
        values: dict[str, tuple[float, str]] = {
            "token.get p50 / floor p50": (p50[GET] / p50[FLOOR], ""),
            "token.sign HMAC p50 / token.get p50": (p50[HMAC] / p50[GET], ""),
            "token.sign Ed25519 p50 / token.get p50": (p50[ED] / p50[GET], ""),
        }
        spread = {label: figure["p99"] / figure["p50"] for label, figure in rows.items() if signing(label)}
        worst = max(spread, key=spread.__getitem__)
        floor = rows[FLOOR]["p99"] / rows[FLOOR]["p50"]  # what the machine itself adds to a tail
        values["p99 / p50, every signing row"] = (spread[worst], f"{worst}; the floor's own: {floor:.2f}")
        for name, limit in TARGETS:
            value, row = values[name]
            out.append(
                {"placement": placement, "target": name, "value": round(value, 3), "limit": limit,
                 "met": value <= limit, "row": row}
            )  # fmt: skip
    return out


def render_latency(latency: dict[str, dict[str, dict[str, Any]]], absent: list[str]) -> list[str]:
    """The latency rows, one column group per placement: p50, p99 and p50 / the floor's p50;
    ``absent`` rows are shown as not measured (:data:`ABSENT`)."""
    names = list(latency)
    starts = len(next(iter(latency[names[0]].values()))["p50 per start"])
    lines = [
        f"one connection, sequential (microseconds, median of {starts} starts of every server per placement;",
        "same core: engine and servers on one cpu; cross-core: on two; unpinned: where the scheduler puts them)",
        f"  {'':46}" + "".join(f"{name:>26}" for name in names),
        f"  {'':46}" + f"{'p50':>10}{'p99':>8}{'/ floor':>8}" * len(names),
    ]
    labels = list(dict.fromkeys(label for rows in latency.values() for label in rows))
    for label in labels + absent:
        cells = []
        for name in names:
            figure = latency[name].get(label)
            if figure is None:
                cells.append(f"{ABSENT if label in absent else '-':>26}")
            else:
                ratio = figure["p50"] / latency[name][FLOOR]["p50"]
                cells.append(f"{figure['p50']:10.1f}{figure['p99']:8.1f}{ratio:7.2f}x")
        lines.append(f"  {label:46}" + "".join(cells))
    return lines


def render_targets(judged: list[dict[str, Any]], names: list[str]) -> list[str]:
    """The targets side by side, then one plain line per target missed: where, and by how much."""
    header = f"{'targets in every placement (ratios of this run)':54}" + "".join(f"{n:>14}" for n in names)
    lines = [header + "  target"]
    by = {(row["placement"], row["target"]): row for row in judged}
    for name, limit in TARGETS:
        cells = []
        for placement in names:
            row = by[(placement, name)]
            cells.append(f"{row['value']:>13.2f}{' ' if row['met'] else '!'}")
        lines.append(f"  {name:52}" + "".join(cells) + f"  <= {limit}")
    missed = [row for row in judged if not row["met"]]
    for row in missed:
        over = row["value"] - row["limit"]
        where = f" (row: {row['row']})" if row["row"] else ""
        lines.append(
            f"  MISSED, {row['placement']}: {row['target']} is {row['value']:.2f}, {over:.2f} over the "
            f"{row['limit']} target ({over / row['limit'] * 100:.0f}% over){where}"
        )
    if not missed:
        lines.append("  every target met in every placement")
    return lines
