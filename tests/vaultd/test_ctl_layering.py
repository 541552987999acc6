"""vaultctl's modules sit in ``vaultd/ctl/`` and the daemon imports nothing from there.

The daemon's modules are the rest of the package; if one imported from ``ctl``, the daemon
would load the operator's command line (and whatever it grows to need) at every start.
"""

from __future__ import annotations

import ast
from pathlib import Path

import vaultd

PACKAGE = Path(vaultd.__file__).parent


def _imports_ctl(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = {alias.name for alias in node.names}
            relative_ctl = node.level >= 1 and (module.split(".")[0] == "ctl" or (not module and "ctl" in names))
            if relative_ctl or module.startswith("vaultd.ctl"):
                return True
        elif isinstance(node, ast.Import) and any(a.name.startswith("vaultd.ctl") for a in node.names):
            return True
    return False


def test_the_daemon_imports_nothing_from_vaultctl() -> None:
    daemon = [p for p in PACKAGE.rglob("*.py") if "ctl" not in p.relative_to(PACKAGE).parts]
    assert len(daemon) > 30
    assert [p.name for p in daemon if _imports_ctl(p)] == []


def test_vaultctl_commands_live_together() -> None:
    assert not list(PACKAGE.glob("_ctl*.py"))
    assert {p.stem for p in (PACKAGE / "ctl").glob("*.py")} >= {"main", "common", "vault", "credentials", "sign"}
