"""``vaultctl release --help`` says what its NAME is."""

from __future__ import annotations

import contextlib
import io

import pytest

from vaultd.ctl.main import build_parser


def test_release_help_describes_name() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(["release", "--help"])
    positional = out.getvalue().split("positional arguments:")[1].split("options:")[0]
    assert "NAME" in positional and "the credential on hold" in positional, out.getvalue()
