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


def _shell(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (.ci/run installs it)")
        pytest.skip(f"{name} is not installed")
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
