"""The ``exec`` kind: tokens printed by a helper command (AWS ``credential_process``, kubectl exec).

The command runs as an argv list, never through a shell, with stdin from ``/dev/null``, an
environment built only from an allow-list of variable names, no controlling terminal (it
starts a new session, so a helper that would prompt fails fast instead of hanging), and a
deadline. At the deadline, or once stdout passes 1 MiB, its whole process group gets
SIGKILL at once: trio's default ``deliver_cancel`` (SIGTERM, then SIGKILL 5 s later) would
let a helper that ignores SIGTERM outlive the timeout. Its stderr is counted, never kept:
it may hold secrets, so errors give its length only.

Decisions: ``command[0]`` is an absolute path or a bare name looked up, at each fetch, on
the ``PATH`` the child gets; a missing or non-executable command is ``reauth`` (an operator
must fix it; retrying cannot). The arguments may hold secrets: ``describe`` and ``repr``
show ``command[0]`` and the argument count only, and ``wipe`` overwrites the arguments. An
AWS answer's token is its ``SessionToken`` (the short-lived part) or, for long-term keys
without one, its ``AccessKeyId``; ``extra`` holds all three values, since a request signer
needs them all. Without ``Expiration`` the credentials never expire and are not renewed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import trio

from .._secret import Secret
from ._base import (
    ConfigError,
    FetchContext,
    Issued,
    UpstreamError,
    check_keys,
    opt_number,
    opt_str,
    parse_time,
    token_type,
)

__all__ = ["ExecProvider"]

MAX_STDOUT = 1024 * 1024
MAX_TOKEN_CHARS = 16 * 1024
MAX_ARGS = 256
MAX_ARG_CHARS = 4096
DEFAULT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_K8S_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
_DEFAULT_TYPE = {"aws": "aws", "kubernetes": "bearer"}


def _command(config: Mapping[str, Any]) -> list[str]:
    value = config.get("command")
    if isinstance(value, str):
        raise ConfigError("'command' must be a list of strings (argv), not one string: no shell ever runs it")
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError("'command' is required and must be a non-empty list of strings (argv)")
    if len(value) > MAX_ARGS:
        raise ConfigError(f"'command' has more than {MAX_ARGS} items")
    for item in value:
        if not isinstance(item, str) or "\x00" in item or len(item) > MAX_ARG_CHARS:
            raise ConfigError(f"'command' items must be strings of at most {MAX_ARG_CHARS} characters, without NUL")
    program = value[0]
    if not program or program != program.strip() or not program.isprintable():
        raise ConfigError("'command'[0] must be a program name without control characters or surrounding whitespace")
    if "/" in program and not os.path.isabs(program):
        raise ConfigError("'command'[0] must be an absolute path or a bare name looked up on PATH")
    return list(value)


def _env_names(config: Mapping[str, Any]) -> tuple[str, ...]:
    value = config.get("env")
    if value is None:
        return DEFAULT_ENV
    if not isinstance(value, (list, tuple)) or len(value) > 64:
        raise ConfigError("'env' must be a list of at most 64 environment variable names")
    if not all(isinstance(name, str) and _ENV_NAME.fullmatch(name) for name in value):
        raise ConfigError("'env' items must be variable names such as PATH or AWS_PROFILE (names only, no values)")
    return tuple(dict.fromkeys(value))


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # all gone already; or not ours
        os.killpg(pgid, signal.SIGKILL)


async def _kill_group(proc: trio.Process) -> None:
    """run_process's ``deliver_cancel``: SIGKILL the whole group, at once (see the module doc)."""
    _killpg(proc.pid)


@dataclass(slots=True)
class _Run:
    """What one run of the command left behind."""

    stdout: bytearray = field(default_factory=bytearray)
    stderr_bytes: int = 0
    overflow: bool = False
    returncode: int | None = None

    async def read_stdout(self, stream: trio.abc.ReceiveStream, scope: trio.CancelScope) -> None:
        async with stream:
            async for chunk in stream:
                self.stdout += chunk
                if len(self.stdout) > MAX_STDOUT:
                    self.overflow = True
                    scope.cancel()
                    return

    async def count_stderr(self, stream: trio.abc.ReceiveStream) -> None:
        async with stream:
            async for chunk in stream:
                self.stderr_bytes += len(chunk)


class ExecProvider:
    kind: ClassVar[str] = "exec"
    renewable: ClassVar[bool] = True
    FIELDS: ClassVar[frozenset[str]] = frozenset({"command", "timeout", "env", "format", "type"})

    def __init__(
        self,
        command: list[str],
        *,
        timeout: float = 30.0,
        env: tuple[str, ...] = DEFAULT_ENV,
        output_format: str = "auto",
        type_name: str | None = None,
    ) -> None:
        self.program = command[0]
        self._args = [Secret(arg) for arg in command[1:]]
        self.timeout = timeout
        self.env = env
        self.format = output_format
        #: None: the format's default (``aws`` or ``bearer``).
        self.token_type = type_name

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ExecProvider:
        check_keys(config, cls.FIELDS, cls.kind)
        output_format = opt_str(config, "format", "auto") or "auto"
        if output_format not in ("auto", "aws", "kubernetes"):
            raise ConfigError("'format' must be 'auto', 'aws' (credential_process) or 'kubernetes' (ExecCredential)")
        return cls(
            _command(config),
            timeout=opt_number(config, "timeout", 30.0, low=0.1, high=300.0),
            env=_env_names(config),
            output_format=output_format,
            type_name=None if config.get("type") is None else token_type(config),
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ExecProvider:
        return cls.from_config(record)

    def to_record(self) -> dict[str, Any]:
        record = {**self.describe(), "command": [self.program, *(arg.reveal_str() for arg in self._args)]}
        del record["arguments"]
        return {k: v for k, v in record.items() if v is not None}

    def describe(self) -> dict[str, Any]:
        return {
            "command": self.program,
            "arguments": len(self._args),
            "timeout": self.timeout,
            "env": list(self.env),
            "format": self.format,
            "type": self.token_type,
        }

    def warnings(self, now: float) -> list[str]:
        return []

    # -- running ---------------------------------------------------------------------------------

    async def fetch(self, ctx: FetchContext) -> Issued:
        env = {name: os.environ[name] for name in self.env if name in os.environ}
        argv = [self._resolve(env), *(arg.reveal_str() for arg in self._args)]
        run = await self._run(argv, env)
        if run.overflow:
            raise UpstreamError("the command printed more than 1 MiB on stdout: it was killed")
        code = run.returncode
        if code is not None and code < 0:
            raise UpstreamError(f"the command was killed by signal {-code} ({_stderr_note(run.stderr_bytes)})")
        if code != 0:
            raise UpstreamError(f"the command exited with status {code} ({_stderr_note(run.stderr_bytes)})")
        # Issued now, once the command has answered: its lifetime starts here, not at the launch.
        return self._issued(_json_object(run.stdout), ctx.now())

    def _resolve(self, env: Mapping[str, str]) -> str:
        # Where Python's exec would look (the child's PATH, else os.defpath), minus relative
        # entries: what runs must not depend on the daemon's working directory.
        path = os.pathsep.join(d for d in os.get_exec_path(env) if os.path.isabs(d))
        found = shutil.which(self.program, path=path)
        if found is None:
            where = "" if os.path.isabs(self.program) else " on the PATH it gets"
            raise UpstreamError(f"the command {self.program!r} was not found{where} or is not executable: "
                                "fix the credential", reauth=True)  # fmt: skip
        return found

    async def _run(self, argv: list[str], env: dict[str, str]) -> _Run:
        run = _Run()
        start = partial(
            trio.run_process, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, check=False, start_new_session=True, deliver_cancel=_kill_group,
        )  # fmt: skip
        proc: trio.Process | None = None
        failed_start: OSError | None = None
        finished = False
        try:
            with trio.move_on_after(self.timeout) as deadline:
                async with trio.open_nursery() as nursery:
                    try:
                        proc = await nursery.start(start)
                    except OSError as exc:
                        failed_start = exc
                    else:
                        assert proc.stdout is not None and proc.stderr is not None
                        nursery.start_soon(run.read_stdout, proc.stdout, nursery.cancel_scope)
                        nursery.start_soon(run.count_stderr, proc.stderr)
            finished = not deadline.cancelled_caught and not run.overflow
        finally:
            if proc is not None and not finished:
                # The leader may have exited while a child of its still holds our pipes: kill the
                # rest. The group id stays reserved while any member lives; once none does, killpg
                # finds nothing (barring a pid reused within microseconds).
                _killpg(proc.pid)
        if failed_start is not None:
            # Found and executable, yet exec failed: a missing script interpreter, say.
            message = f"the command {self.program!r} could not start: {failed_start.strerror}"
            raise UpstreamError(message, reauth=True)
        if deadline.cancelled_caught or proc is None:
            raise UpstreamError(f"the command did not finish within {self.timeout:g} s: it was killed")
        run.returncode = proc.returncode
        return run

    # -- reading the answer ----------------------------------------------------------------------

    def _issued(self, answer: dict[str, Any], now: float) -> Issued:
        kind = self.format
        if kind == "auto":
            if _is_version_1(answer):
                kind = "aws"
            elif answer.get("kind") == "ExecCredential":
                kind = "kubernetes"
            else:
                raise UpstreamError("the command's output is neither AWS credential_process JSON (\"Version\": 1) "
                                    "nor a kubectl ExecCredential")  # fmt: skip
        type_ = self.token_type or _DEFAULT_TYPE[kind]
        if kind == "aws":
            if not _is_version_1(answer):
                raise UpstreamError('the command\'s output has no "Version": 1 (AWS credential_process)')
            key_id = _text(answer, "AccessKeyId")
            secret_key = _text(answer, "SecretAccessKey")
            session = _text(answer, "SessionToken") if answer.get("SessionToken") is not None else None
            expires_at = _expiry(answer.get("Expiration"), "Expiration", now)
            extra = {"access_key_id": key_id, "secret_access_key": secret_key, "session_token": session}
            return Issued(Secret(session or key_id), now, expires_at, type_, extra)
        if answer.get("kind") != "ExecCredential" or answer.get("apiVersion") not in _K8S_VERSIONS:
            raise UpstreamError("the command's output is not an ExecCredential of client.authentication.k8s.io/v1 "
                                "or v1beta1")  # fmt: skip
        status = answer.get("status")
        if not isinstance(status, dict) or status.get("token") is None:
            raise UpstreamError("the ExecCredential has no status.token (client certificates are not supported)")
        token = _text(status, "token")
        expires_at = _expiry(status.get("expirationTimestamp"), "expirationTimestamp", now)
        return Issued(Secret(token), now, expires_at, type_)

    def wipe(self) -> None:
        for arg in self._args:
            arg.wipe()

    def __repr__(self) -> str:
        return f"ExecProvider(command={self.program!r}, arguments={len(self._args)}, format={self.format!r})"


def _stderr_note(size: int) -> str:
    return f"its stderr, {size} bytes, is not shown: it may hold secrets" if size else "it wrote nothing to stderr"


def _json_object(stdout: bytes | bytearray) -> dict[str, Any]:
    try:
        answer = json.loads(stdout.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise UpstreamError(f"the command's output ({len(stdout)} bytes) is not JSON") from None
    if not isinstance(answer, dict):
        raise UpstreamError("the command's output is JSON but not an object")
    return answer


def _is_version_1(answer: Mapping[str, Any]) -> bool:
    return type(answer.get("Version")) is int and answer["Version"] == 1


def _text(answer: Mapping[str, Any], key: str) -> str:
    value = answer.get(key)
    if not isinstance(value, str) or not value:
        raise UpstreamError(f"the command's output has no {key} string")
    if len(value) > MAX_TOKEN_CHARS or not all(0x21 <= ord(c) <= 0x7E for c in value):
        raise UpstreamError(f"the command's {key} must be visible ASCII of at most {MAX_TOKEN_CHARS} characters")
    return value


def _expiry(value: object, key: str, now: float) -> float | None:
    try:
        expires_at = parse_time(value, key)
    except ConfigError:
        raise UpstreamError(f"the command's {key} is not an ISO 8601 time with a UTC offset") from None
    if expires_at is not None and expires_at <= now:
        raise UpstreamError(f"the command returned credentials that had already expired ({key})")
    return expires_at
