"""``vaultctl completion``: real bash, zsh and fish complete commands, flag values and credential names.

bash and zsh run interactively on a pseudo-terminal: the test types a partial line and Tab, then
a key bound to "write the line to a file", and reads what the shell's own completion made of it.
fish answers ``complete -C LINE`` with its completion engine. The shells come from `.ci/run`;
without one, the test fails under CI and is skipped elsewhere.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ..daemon_process import BIN, DaemonProcess
from ..unavailable import unavailable


def _shell(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (.ci/run installs it)")
    return path


def _env(daemon: DaemonProcess, home: Path) -> dict[str, str]:
    return {**daemon.env, "PATH": f"{BIN}:{os.environ['PATH']}", "HOME": str(home), "TERM": "xterm"}


def _interactive(argv: list[str], env: dict[str, str], setup: str, typed: str, out: Path) -> str:
    """What the line reads after ``typed`` (which ends with the key that writes the line to ``out``)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    try:
        os.write(master, setup.encode() + b"\n" + typed.encode())
        deadline = time.monotonic() + 20
        while not (out.exists() and out.read_text().endswith("\n")):
            assert time.monotonic() < deadline, f"{argv[0]} never wrote its line"
            if select.select([master], [], [], 0.1)[0]:
                try:
                    os.read(master, 65536)  # keep the terminal drained
                except OSError:
                    break
        text = out.read_text()
        out.unlink()
        return text.rstrip("\n").rstrip()
    finally:
        proc.kill()
        proc.wait()
        os.close(master)


@pytest.fixture
def named(daemon: DaemonProcess) -> DaemonProcess:
    daemon.start()
    daemon.ready()
    daemon.ctl("add", "binance-main", "--kind", "static", *daemon.pw(), stdin="fake-completion-token\n")
    return daemon


def test_bash_completes_commands_values_and_names(named: DaemonProcess, tmp_path: Path) -> None:
    out = tmp_path / "line"
    setup = f'eval "$(vaultctl completion bash)"; bind -x \'"\\C-x": echo "$READLINE_LINE" > {out}\''
    argv, env = [_shell("bash"), "--norc", "--noprofile", "-i"], _env(named, tmp_path)
    assert _interactive(argv, env, setup, "vaultctl sta\t\x18", out) == "vaultctl status"
    assert _interactive(argv, env, setup, "vaultctl init --kdf-profile mo\t\x18", out) == (
        "vaultctl init --kdf-profile moderate"
    )
    assert (
        _interactive(argv, env, setup, "vaultctl --socket /x policy te\t\x18", out)
        == "vaultctl --socket /x policy test"
    )
    assert _interactive(argv, env, setup, "vaultctl get bin\t\x18", out) == "vaultctl get binance-main"


def test_zsh_completes_through_bashcompinit(named: DaemonProcess, tmp_path: Path) -> None:
    out = tmp_path / "line"
    setup = (
        'autoload -U compinit; compinit -u; eval "$(vaultctl completion zsh)"; '
        f'dump() {{ print -r -- "$BUFFER" > {out} }}; zle -N dump; bindkey "^X" dump'
    )
    argv, env = [_shell("zsh"), "-f", "-i"], _env(named, tmp_path)
    assert _interactive(argv, env, setup, "vaultctl sta\t\x18", out) == "vaultctl status"
    assert _interactive(argv, env, setup, "vaultctl completion fi\t\x18", out) == "vaultctl completion fish"
    assert _interactive(argv, env, setup, "vaultctl watch bin\t\x18", out) == "vaultctl watch binance-main"


def test_fish_completes_with_descriptions(named: DaemonProcess, tmp_path: Path) -> None:
    def complete(line: str) -> list[str]:
        script = f"vaultctl completion fish | source; complete -C {line!r}"
        proc = subprocess.run(
            [_shell("fish"), "--no-config", "-c", script],
            env=_env(named, tmp_path),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return [row.split("\t")[0] for row in proc.stdout.splitlines()]

    assert complete("vaultctl sta") == ["status"]
    assert complete("vaultctl init --kdf-profile ") == ["interactive", "min", "moderate", "sensitive"]
    assert "test" in complete("vaultctl policy t")
    assert complete("vaultctl get bin") == ["binance-main"]


def test_names_are_quietly_empty_without_a_daemon(tmp_path: Path) -> None:
    proc = subprocess.run(
        [BIN / "vaultctl", "--socket", str(tmp_path / "none.sock"), "completion", "--names"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_a_shell_must_be_named(tmp_path: Path) -> None:
    proc = subprocess.run([BIN / "vaultctl", "completion"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "name a shell: vaultctl completion {bash,zsh,fish}" in proc.stderr


#: What a hostile daemon (or a vault restored from a crafted file) could list as names.
_HOSTILE_NAMES = ["good-one", "g$(touch {mark})", "$(touch {mark})", "`touch {mark}`", "g;touch {mark}"]


def _shimmed(daemon: DaemonProcess, home: Path) -> tuple[dict[str, str], Path]:
    """An environment whose first ``vaultctl`` answers ``completion --names`` with hostile names."""
    mark = home / "ran"
    shim = home / "shim"
    shim.mkdir()
    names = "\n".join(name.format(mark=mark) for name in _HOSTILE_NAMES)
    (shim / "vaultctl").write_text(
        f'#!/bin/sh\nif [ "$3 $4" = "completion --names" ]; then cat <<\'EOF\'\n{names}\nEOF\nexit 0; fi\n'
        f'exec {BIN / "vaultctl"} "$@"\n'
    )
    (shim / "vaultctl").chmod(0o755)
    env = _env(daemon, home)
    env["PATH"] = f"{shim}:{env['PATH']}"
    return env, mark


def test_bash_never_runs_or_offers_a_crafted_name(named: DaemonProcess, tmp_path: Path) -> None:
    out = tmp_path / "line"
    setup = f'eval "$(vaultctl completion bash)"; bind -x \'"\\C-x": echo "$READLINE_LINE" > {out}\''
    env, mark = _shimmed(named, tmp_path)
    argv = [_shell("bash"), "--norc", "--noprofile", "-i"]
    line = _interactive(argv, env, setup, "vaultctl get g\t\x18", out)
    assert not mark.exists(), "a credential name ran a command"
    assert line == "vaultctl get good-one", "only the name that passes the name rule is offered"
    assert _interactive(argv, env, setup, "vaultctl get $\t\x18", out) == "vaultctl get $"
    assert not mark.exists(), "a credential name ran a command"


def test_zsh_never_runs_or_offers_a_crafted_name(named: DaemonProcess, tmp_path: Path) -> None:
    out = tmp_path / "line"
    setup = (
        'autoload -U compinit; compinit -u; eval "$(vaultctl completion zsh)"; '
        f'dump() {{ print -r -- "$BUFFER" > {out} }}; zle -N dump; bindkey "^X" dump'
    )
    env, mark = _shimmed(named, tmp_path)
    argv = [_shell("zsh"), "-f", "-i"]
    line = _interactive(argv, env, setup, "vaultctl get g\t\x18", out)
    assert not mark.exists(), "a credential name ran a command"
    assert line == "vaultctl get good-one"


def _fish_complete(env: dict[str, str], line: str) -> list[str]:
    script = f"vaultctl completion fish | source; complete -C {line!r}"
    proc = subprocess.run(
        [_shell("fish"), "--no-config", "-c", script], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    return [row.split("\t")[0] for row in proc.stdout.splitlines()]


def test_fish_never_runs_or_offers_a_crafted_name(named: DaemonProcess, tmp_path: Path) -> None:
    env, mark = _shimmed(named, tmp_path)
    assert _fish_complete(env, "vaultctl get ") == ["good-one"]
    assert not mark.exists(), "a credential name ran a command"


def test_names_prints_only_names_that_pass_the_name_rule(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from vaultd.ctl.completion import cmd_completion

    class StandIn:
        def status(self) -> dict[str, object]:
            names = ["ok.1", "$(id)", "a\x1b[2J", "-rf", "x y", "é", "b" * 65, "a" * 64]
            return {"credentials": [{"name": name} for name in names]}

    assert cmd_completion(StandIn(), argparse.Namespace(names=True, shell=None)) == 0  # type: ignore[arg-type]
    assert capsys.readouterr().out.splitlines() == ["ok.1", "a" * 64]


def test_paths_complete_files_and_numbers_do_not(named: DaemonProcess, tmp_path: Path) -> None:
    (tmp_path / "xbackup.vault").write_text("")
    (tmp_path / "xpass").write_text("")
    env = _env(named, tmp_path)
    backup = str(tmp_path / "xbackup.vault")
    assert _fish_complete(env, f"vaultctl restore {tmp_path}/xb") == [backup]
    assert _fish_complete(env, f"vaultctl backup {tmp_path}/xb") == [backup]
    assert _fish_complete(env, f"vaultctl unlock --passphrase-file {tmp_path}/xp") == [str(tmp_path / "xpass")]
    assert _fish_complete(env, f"vaultctl audit --path {tmp_path}/xb") == [backup]
    assert _fish_complete(env, f"vaultctl unlock --passphrase-fd {tmp_path}/xp") == [], "a descriptor is a number"

    out = tmp_path / "line"
    setup = f'eval "$(vaultctl completion bash)"; bind -x \'"\\C-x": echo "$READLINE_LINE" > {out}\''
    argv = [_shell("bash"), "--norc", "--noprofile", "-i"]
    assert _interactive(argv, env, setup, f"vaultctl restore {tmp_path}/xb\t\x18", out) == f"vaultctl restore {backup}"
    assert _interactive(argv, env, setup, "vaultctl unlock --passphrase-file \t\x18", out) == (
        "vaultctl unlock --passphrase-file"
    ), "a path, not the command's flags"
    assert _interactive(argv, env, setup, f"vaultctl unlock --passphrase-fd {tmp_path}/xp\t\x18", out) == (
        f"vaultctl unlock --passphrase-fd {tmp_path}/xp"
    ), "a descriptor is a number"


def test_the_name_rule_is_the_daemons() -> None:
    from vaultd._credentials import NAME_PATTERN
    from vaultd.ctl.completion import NAME_RULE

    assert NAME_PATTERN.pattern == NAME_RULE
