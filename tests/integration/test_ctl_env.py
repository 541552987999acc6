"""``vaultctl exec`` and ``vaultctl env`` against a real daemon, with real child processes and a real sh."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..daemon_process import BIN, DaemonProcess

TOKEN = "fake-token-env-1"
#: A non-bearer static token may hold spaces and quotes: what a shell would choke on unquoted.
ODD = """it's a "quoted" $(touch pwned) `touch pwned2` $HOME \\ token;"""
FAR = "2099-01-01T00:00:00Z"
FAR_EPOCH = "4070908800"


def run(daemon: DaemonProcess, *args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """vaultctl with the daemon's environment plus ``env``, and no terminal."""
    return subprocess.run(
        [BIN / "vaultctl", *args],
        input="",
        capture_output=True,
        text=True,
        env={**daemon.env, **env},
        cwd=cwd,
        timeout=60,
        start_new_session=True,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str], status: int, *needles: str) -> None:
    assert result.returncode == status, (result.returncode, result.stderr)
    assert result.stderr.startswith("vaultctl: ") and result.stderr.count("\n") == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    for secret in (TOKEN, "fake-token-second", ODD, "fake-binance-secret"):
        assert secret not in result.stderr and secret not in result.stdout


@pytest.fixture
def ready(daemon: DaemonProcess) -> DaemonProcess:
    """Unlocked, with 'ex' (no expiry), 'deribit-main' (expires in 2099) and 'odd' (quotes, spaces)."""
    daemon.start()
    daemon.ready(TOKEN)
    daemon.ctl("add", "deribit-main", "--kind", "static", *daemon.pw(),
               stdin=json.dumps({"token": "fake-token-second", "not_after": FAR}))  # fmt: skip
    daemon.ctl("add", "odd", "--kind", "static", *daemon.pw(), stdin=json.dumps({"token": ODD, "type": "api-key"}))
    return daemon


PRINT_ENV = "import json, os, sys; json.dump(dict(os.environ), sys.stdout); sys.exit(int(sys.argv[1]))"


def test_exec_gives_the_child_the_tokens_and_its_exit_status_is_vaultctls(ready: DaemonProcess) -> None:
    result = run(
        ready, "exec", "ex,deribit-main", "--", sys.executable, "-c", PRINT_ENV, "7",
        VAULTD_TOKEN_EX_EXPIRES_AT="stale", INHERITED="yes",
    )  # fmt: skip
    assert result.returncode == 7, result.stderr
    seen = json.loads(result.stdout)
    assert seen["VAULTD_TOKEN_EX"] == TOKEN
    assert "VAULTD_TOKEN_EX_EXPIRES_AT" not in seen  # never expires: a stale value is removed, not inherited
    assert seen["VAULTD_TOKEN_DERIBIT_MAIN"] == "fake-token-second"
    assert seen["VAULTD_TOKEN_DERIBIT_MAIN_EXPIRES_AT"] == FAR_EPOCH
    assert seen["INHERITED"] == "yes" and seen["PATH"] == ready.env["PATH"]
    assert result.stderr == ""
    assert run(ready, "exec", "ex", "--", sys.executable, "-c", PRINT_ENV, "0").returncode == 0


def test_exec_names_variables_as_asked_in_every_form(ready: DaemonProcess) -> None:
    script = 'printf "%s|%s|%s|%s" "$DERIBIT_TOKEN" "$VAULTD_TOKEN_EX" "$WEIRD" "${DERIBIT_TOKEN_EXPIRES_AT-}"'
    both = run(ready, "exec", "deribit-main=DERIBIT_TOKEN,ex", "odd=WEIRD", "--", "sh", "-c", script)
    assert both.returncode == 0, both.stderr
    assert both.stdout == f"fake-token-second|{TOKEN}|{ODD}|{FAR_EPOCH}"
    # Without '--', the first word names the credentials and the rest is the command (as aws-vault).
    bare = run(ready, "exec", "ex=lower_case,odd", "printenv", "lower_case", "VAULTD_TOKEN_ODD")
    assert (bare.returncode, bare.stdout) == (0, f"{TOKEN}\n{ODD}\n"), bare.stderr
    # The same credential may go into two variables.
    twice = run(ready, "exec", "ex=A,ex=B", "--", "sh", "-c", 'printf "%s %s" "$A" "$B"')
    assert twice.stdout == f"{TOKEN} {TOKEN}", twice.stderr


def test_exec_replaces_itself_with_the_program_and_restores_sigpipe(ready: DaemonProcess) -> None:
    """Same pid (signals reach the program directly), and SIGPIPE not left ignored by Python."""
    proc = subprocess.Popen(
        [BIN / "vaultctl", "exec", "ex", "--", "cat", "/proc/self/status"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=ready.env,
    )  # fmt: skip
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    fields = dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)
    assert int(fields["Pid"]) == proc.pid
    assert int(fields["SigIgn"], 16) & (1 << (13 - 1)) == 0, f"SIGPIPE ignored in the child: {fields['SigIgn']}"


def test_a_missing_or_unrunnable_program_is_127_or_126_with_a_message(ready: DaemonProcess, tmp_path: Path) -> None:
    missing = run(ready, "exec", "ex", "--", "no-such-program-vaultd-test", "arg")
    one_line_error(missing, 127, "'no-such-program-vaultd-test'", "not found")
    not_executable = tmp_path / "script.sh"
    not_executable.write_text("#!/bin/sh\necho ran\n")
    refused = run(ready, "exec", "ex", "--", str(not_executable))
    one_line_error(refused, 126, str(not_executable), "ermission denied")


def test_nothing_runs_when_a_token_cannot_be_had(ready: DaemonProcess, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    touch = ["--", "sh", "-c", 'touch "$1"', "sh", str(marker)]
    unknown = run(ready, "exec", "ex,nope", *touch)  # 'ex' is fetched first, and still nothing runs
    one_line_error(unknown, 1, "'nope'", "UNKNOWN_CREDENTIAL", "nothing was run")
    soon = run(ready, "exec", "--min-ttl", "4000000000", "ex,deribit-main", *touch)  # beyond 2099
    one_line_error(soon, 1, "'deribit-main'", "TOKEN_EXPIRED")
    signing = {"scheme": "binance-hmac", "api_key": "fake-key", "secret": "fake-binance-secret"}
    ready.ctl("add", "binance", "--kind", "sign", *ready.pw(), stdin=json.dumps(signing))
    signer = run(ready, "exec", "binance", *touch)
    one_line_error(signer, 1, "'binance' is a 'sign' credential", "Client.sign")
    assert not marker.exists()
    assert run(ready, "exec", "--min-ttl", "3600", "ex,deribit-main", *touch).returncode == 0
    assert marker.exists()  # the positive control: the same child does run when every token is there
    marker.unlink()
    ready.ctl("lock")
    one_line_error(run(ready, "exec", "ex", *touch), 4, "'ex'", "LOCKED")
    ready.stop()
    one_line_error(run(ready, "exec", "ex", *touch), 3, "not reachable")
    assert not marker.exists()


def test_env_lines_set_the_variables_in_a_real_shell(ready: DaemonProcess, tmp_path: Path) -> None:
    script = """
        out=$("$VAULTCTL" env ex,odd=ODD_TOKEN deribit-main) || exit 9
        eval "$out"
        printf '%s\\n' "$VAULTD_TOKEN_EX" "${VAULTD_TOKEN_EX_EXPIRES_AT-(unset)}" "$ODD_TOKEN" \
            "$VAULTD_TOKEN_DERIBIT_MAIN" "$VAULTD_TOKEN_DERIBIT_MAIN_EXPIRES_AT"
        sh -c 'printf "%s\\n" "$ODD_TOKEN"'   # exported, not just set
    """
    shell = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
        env={**ready.env, "VAULTCTL": str(BIN / "vaultctl"), "VAULTD_TOKEN_EX_EXPIRES_AT": "stale"},
    )  # fmt: skip
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.splitlines() == [TOKEN, "(unset)", ODD, "fake-token-second", FAR_EPOCH, ODD]
    assert shell.stderr == ""
    assert list(tmp_path.iterdir()) == []  # nothing in the token was run by eval


def test_env_json_is_the_same_variables(ready: DaemonProcess) -> None:
    result = run(ready, "env", "--json", "ex", "odd=ODD_TOKEN,deribit-main")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "VAULTD_TOKEN_EX": TOKEN,
        "ODD_TOKEN": ODD,
        "VAULTD_TOKEN_DERIBIT_MAIN": "fake-token-second",
        "VAULTD_TOKEN_DERIBIT_MAIN_EXPIRES_AT": FAR_EPOCH,
    }
    refused = run(ready, "env", "ex,nope")
    one_line_error(refused, 1, "'nope'", "UNKNOWN_CREDENTIAL", "nothing was printed")
    assert refused.stdout == ""


BAD_NAMES = [
    ("ex=1BAD", "'1BAD' is not a valid variable name"),
    ("ex=BAD-NAME", "'BAD-NAME' is not a valid variable name"),
    ("ex=", "'' is not a valid variable name"),
    ("ex=A B", "'A B' is not a valid variable name"),
    ("=X", "a credential name is missing"),
    ("ex,,odd", "a credential name is missing"),
    ("ex=X,odd=X", "X would hold both the token of 'ex' and the token of 'odd'"),
    ("deribit.main,deribit-main", "VAULTD_TOKEN_DERIBIT_MAIN would hold both"),
    ("ex=X,odd=X_EXPIRES_AT", "X_EXPIRES_AT would hold both the expiry of 'ex' and the token of 'odd'"),
    ("ex,ex", "credential 'ex' is listed twice"),
]


def test_bad_names_are_refused_before_anything_runs(ready: DaemonProcess, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    for spec, needle in BAD_NAMES:
        one_line_error(run(ready, "exec", spec, "--", "touch", str(marker)), 2, needle)
        one_line_error(run(ready, "env", spec), 2, needle)
    assert not marker.exists()


def test_exec_usage_errors(ready: DaemonProcess) -> None:
    one_line_error(run(ready, "exec", "ex"), 2, "no command to run")
    one_line_error(run(ready, "exec", "ex", "--"), 2, "no command to run")
    one_line_error(run(ready, "exec"), 2, "no credential named")
    one_line_error(run(ready, "exec", "--", "true"), 2, "no credential named")
    one_line_error(run(ready, "exec", "ex", "--min-ttl", "5", "--", "true"), 2, "options go before the names")
    negative = run(ready, "exec", "--min-ttl", "-1", "ex", "--", "true")
    assert negative.returncode == 2 and "0 or more" in negative.stderr


def test_help_explains_names_and_the_caveat(ready: DaemonProcess) -> None:
    for command in ("exec", "env"):
        text = run(ready, command, "--help").stdout
        for needle in ("VAULTD_TOKEN_<NAME>", "NAME=VAR", "_EXPIRES_AT", "/proc/PID/environ", "examples:"):
            assert needle in text, (command, needle)
    listing = run(ready, "--help").stdout
    assert "exec " in listing and "env " in listing
