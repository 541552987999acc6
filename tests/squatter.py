"""Start a listener at a socket path the client will use, as us or as another user (uid 65534).

For the tests that check a client never talks to a socket another user could have put in its
way. The listener is a script given as text, run by the system python3 (uid 65534 cannot
read the virtualenv); it gets the socket path and a file to create once it listens.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def start_squatter(root: Path, script: str, name: str, *, as_nobody: bool) -> tuple[subprocess.Popen[str], Path]:
    """Run ``script`` listening at ``root/name/vaultd.sock``; return it and the path once it listens."""
    source = root / "squatter.py"
    source.write_text(script)
    source.chmod(0o644)
    path, ready = root / name / "vaultd.sock", root / f"{name}.ready"
    command = ["/usr/bin/python3", str(source), str(path), str(ready)]
    if as_nobody:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd="/")
    for _ in range(200):
        if ready.exists():
            break
        time.sleep(0.05)  # another process's start-up: no clock of ours to drive
    assert ready.exists(), "the squatter did not start"
    return proc, path
