"""The signing schemes depend on nothing above them: only on each other and on ``vaultd._secret``.

A scheme that imported from ``vaultd._providers`` (as ``coinbase`` once did, for ConfigError)
closed a circle through ``_providers/sign.py``, which imports the schemes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import vaultd._schemes

SCHEMES_DIR = Path(vaultd._schemes.__file__).parent
#: What a scheme may import from the rest of vaultd.
ALLOWED_ABOVE = {"_secret"}


def _imports_above(path: Path) -> list[str]:
    """Modules of vaultd outside ``_schemes`` that ``path`` imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level >= 2:
                target = (node.module or "").split(".")[0]
                if target not in ALLOWED_ABOVE:
                    found.append(f"{'.' * node.level}{node.module or ''}")
            elif node.level == 0 and (node.module or "").startswith("vaultd"):
                found.append(node.module or "")
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("vaultd")]
    return found


def test_schemes_import_nothing_above_them() -> None:
    modules = sorted(SCHEMES_DIR.glob("*.py"))
    assert len(modules) > 5
    offenders = {path.name: above for path in modules if (above := _imports_above(path))}
    assert offenders == {}


def test_the_check_sees_an_import_from_providers(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("from .._providers import ConfigError\nfrom .._secret import Secret\nimport vaultd._vault\n")
    assert _imports_above(module) == [".._providers", "vaultd._vault"]
