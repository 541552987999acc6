"""SPEC.md documents every method, parameter and error code that the code defines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vaultd_client import errors
from vaultd_protocol import METHODS, ErrorCode, ErrorInfo

SPEC = (Path(__file__).parents[2] / "protocol" / "SPEC.md").read_text()


def _section(method: str) -> str:
    match = re.search(rf"^### 5\.\d+ `{re.escape(method)}`\n(.*?)(?=^### |^## )", SPEC, re.M | re.S)
    assert match, f"SPEC.md has no section for {method}"
    return match.group(1)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_and_parameter_is_documented(method: str) -> None:
    section = _section(method)
    for field in METHODS[method]:  # type: ignore[index]
        assert f"| `{field.name}` |" in section, f"{method}: parameter {field.name} missing"
        if field.kind in ("str", "secret"):
            assert f"| {field.max_len} |" in section.split(f"| `{field.name}` |")[1].splitlines()[0]


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_is_documented_with_its_number_and_class(code: ErrorCode) -> None:
    row = re.search(rf"^\| {int(code)} \| `{code.name}` \|.*\| `(\w+)` \|$", SPEC, re.M)
    assert row, f"{code.name} is not in the error table with code {int(code)}"
    cls = getattr(errors, row.group(1))
    assert issubclass(cls, errors.RemoteError) and cls.code == code


def test_every_error_code_has_a_client_class_named_after_it() -> None:
    for code in ErrorCode:
        name = "".join(part.capitalize() for part in code.name.split("_"))
        cls = getattr(errors, name)
        info = errors.error_from_info(ErrorInfo.of(code, "m"))
        assert type(info) is cls


def test_every_credential_kind_and_config_field_is_documented() -> None:
    from vaultd._providers import KINDS

    for kind, cls in KINDS.items():
        match = re.search(rf"^### 6\.\d+ `{kind}`\n(.*?)(?=^### |^## )", SPEC, re.M | re.S)
        assert match, f"SPEC.md has no section for kind {kind}"
        for field in cls.FIELDS:
            assert f"| `{field}` |" in match.group(1), f"{kind}: field {field} missing"
