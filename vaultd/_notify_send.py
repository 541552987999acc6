"""Deliver one notice to one sink: run a ``[[notify]]`` command, or POST to its webhook.

A command runs without a shell, in a session of its own, with the notice as JSON on stdin and
as ``VAULTD_*`` variables in a minimal environment built here (PATH, HOME, LANG and those):
never the daemon's, so nothing the daemon holds reaches it. It is killed (its whole process
group) when its timeout passes. A webhook gets the JSON in a POST, with a timeout, no
redirects and no proxy from the environment. Every outcome is a short text without the
notice in it, for the log and ``vaultctl notify test``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
from collections.abc import Mapping
from typing import Any

import httpx
import trio

from ._loopback import checked_pool
from ._notify_config import Sink

__all__ = ["child_environment", "deliver"]

#: The daemon's variables a command inherits, if set: where to find programs, a home, a locale.
_KEPT = ("PATH", "HOME", "LANG")
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
#: Characters of a failing command's stderr kept for its outcome.
_STDERR_KEPT = 200


def child_environment(event: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The whole environment a command runs with: PATH, HOME, LANG and the event's fields."""
    env = {key: environ[key] for key in _KEPT if key in environ}
    env.setdefault("PATH", _DEFAULT_PATH)
    for name, key in (("EVENT", "event"), ("CREDENTIAL", "credential"), ("STATE", "state"), ("REASON", "reason")):
        env[f"VAULTD_{name}"] = str(event.get(key) or "").replace("\0", "?")  # a NUL cannot be in a variable
    env["VAULTD_AT"] = str(event.get("at") or "")
    return env


async def deliver(sink: Sink, event: Mapping[str, Any]) -> str | None:
    """Send ``event`` to ``sink`` within its timeout; None when it was taken, else why not."""
    body = json.dumps(event, sort_keys=True).encode() + b"\n"  # one line: a script may append it to a log
    with trio.move_on_after(sink.timeout) as scope:
        try:
            if sink.command is not None:
                return await _run(sink.command, body, child_environment(event))
            assert sink.webhook is not None
            return await _post(sink.webhook, body, seconds=sink.timeout)
        except OSError as exc:
            return f"cannot run it: {exc.strerror or type(exc).__name__}"
    assert scope.cancelled_caught
    return f"no answer within {sink.timeout:g} s" + (" (killed)" if sink.command is not None else "")


async def _kill_group(process: trio.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def _run(argv: tuple[str, ...], body: bytes, env: dict[str, str]) -> str | None:
    done = await trio.run_process(
        list(argv),
        stdin=body,
        stdout=subprocess.DEVNULL,
        capture_stderr=True,
        env=env,
        cwd="/",
        start_new_session=True,  # its own process group, killed whole at the timeout
        check=False,
        deliver_cancel=_kill_group,
    )
    if done.returncode == 0:
        return None
    why = f"exit status {done.returncode}" if done.returncode > 0 else f"killed by signal {-done.returncode}"
    lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
    return f"{why}: {_plain(lines[-1])}" if lines else why


async def _post(url: str, body: bytes, *, seconds: float) -> str | None:
    """``seconds`` bounds each of httpx's phases; :func:`deliver`'s cancel scope bounds the whole.

    Plain http goes only to loopback (the settings say so), where nothing proves who listens: as
    for OpenBao (``_loopback``), the socket that accepts the connection must be this user's, else
    nothing is sent (another user could bind the port while the webhook's server is down)."""
    transport = None
    if httpx.URL(url).scheme == "http":
        transport = httpx.AsyncHTTPTransport()
        transport._pool = checked_pool(ssl.create_default_context(), frozenset({os.getuid()}), 1)  # as _bao does
    try:
        async with httpx.AsyncClient(
            timeout=seconds, follow_redirects=False, trust_env=False, transport=transport
        ) as http:
            answer = await http.post(
                url, content=body, headers={"Content-Type": "application/json", "User-Agent": "vaultd-notify"}
            )
    except httpx.HTTPError as exc:  # the URL may hold the webhook's secret: never in the text
        detail = _plain(str(exc).replace(url, "<webhook>")) if isinstance(exc, httpx.TransportError) else ""
        return type(exc).__name__ + (f": {detail}" if detail else "")
    if 200 <= answer.status_code < 300:
        return None
    return f"HTTP {answer.status_code}"


def _plain(text: str) -> str:
    """One short printable line."""
    line = "".join(ch if ch.isprintable() else "?" for ch in text)
    return line[:_STDERR_KEPT] + ("..." if len(line) > _STDERR_KEPT else "")
