"""The project's documents stand alone in a fresh clone: every relative link resolves, and the
license pyproject.toml names is there."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    ROOT / "client" / "README.md",
    ROOT / "protocol" / "SPEC.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
#: ``[text](target)``, the target up to a space or the closing parenthesis.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(document: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", document.read_text(), flags=re.DOTALL)  # code blocks hold no links
    return [
        target
        for target in LINK.findall(text)
        if not re.match(r"[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")
    ]


@pytest.mark.parametrize("document", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves_in_the_clone(document: Path) -> None:
    missing = [target for target in relative_links(document) if not (document.parent / target.split("#")[0]).exists()]
    assert missing == []


def test_the_check_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("[a](missing.md) [b](https://example.com) [c](#anchor) [d](page.md#x)\n```\n[e](nope.md)\n```\n")
    assert relative_links(page) == ["missing.md", "page.md#x"]


def test_the_license_pyproject_names_is_in_the_repository() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
