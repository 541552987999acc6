"""The exec kind: real helper commands (small scripts in tmp_path), their answers and their faults.

A subprocess cannot run on trio's virtual clock, so these tests run on the real one; the only
ones that wait are the timeout tests, for half a second each.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from vaultd._providers import ConfigError, FetchContext, Issued, UpstreamError
from vaultd._providers.exec import ExecProvider

NOW = 1_800_000_000.0  # 2027-01-15
LATER = "2027-06-01T00:00:00Z"
LATER_EPOCH = 1_811_808_000.0
CAT = shutil.which("cat") or "/bin/cat"
AWS = {"Version": 1, "AccessKeyId": "AKIAFAKE", "SecretAccessKey": "fake-secret-key", "SessionToken": "fake-session",
       "Expiration": LATER}  # fmt: skip
K8S = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
       "status": {"token": "fake-k8s-token", "expirationTimestamp": LATER}}  # fmt: skip


def script(tmp_path: Path, body: str, name: str = "helper", shebang: str = "/bin/sh") -> str:
    path = tmp_path / name
    path.write_text(f"#!{shebang}\n{body}\n")
    path.chmod(0o755)
    return str(path)


def printing(tmp_path: Path, output: object) -> list[str]:
    """A command that prints ``output`` (JSON unless bytes or str) and exits 0."""
    path = tmp_path / "output"
    if isinstance(output, bytes):
        path.write_bytes(output)
    else:
        path.write_text(output if isinstance(output, str) else json.dumps(output))
    return [CAT, str(path)]


async def fetch(command: list[str], **config: Any) -> Issued:
    return await ExecProvider.from_config({"command": command, **config}).fetch(FetchContext(lambda: NOW))


async def failure(command: list[str], **config: Any) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await fetch(command, **config)
    return info.value


def dead(pid: int) -> bool:
    """Whether ``pid`` has died (a zombie waiting for init to reap it counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


async def gone(pid: int) -> bool:
    """Whether ``pid`` dies within 2 s (SIGKILL is delivered asynchronously)."""
    for _ in range(40):
        if dead(pid):
            return True
        await trio.sleep(0.05)
    return False


# -- answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("output_format", ["auto", "aws"])
async def test_aws_credential_process(tmp_path: Path, output_format: str) -> None:
    issued = await fetch(printing(tmp_path, AWS), format=output_format)
    assert issued.token.reveal_str() == "fake-session"
    assert (issued.token_type, issued.issued_at, issued.expires_at) == ("aws", NOW, LATER_EPOCH)
    assert issued.extra == {"access_key_id": "AKIAFAKE", "secret_access_key": "fake-secret-key",
                            "session_token": "fake-session"}  # fmt: skip
    assert issued.headers() == {}


async def test_long_term_aws_keys_give_the_key_id_and_never_expire(tmp_path: Path) -> None:
    answer = {"Version": 1, "AccessKeyId": "AKIAFAKE", "SecretAccessKey": "fake-secret-key"}
    issued = await fetch(printing(tmp_path, answer))
    assert (issued.token.reveal_str(), issued.expires_at) == ("AKIAFAKE", None)
    assert issued.extra["session_token"] is None


@pytest.mark.parametrize("api", ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"])
@pytest.mark.parametrize("output_format", ["auto", "kubernetes"])
async def test_kubectl_exec_credential(tmp_path: Path, api: str, output_format: str) -> None:
    issued = await fetch(printing(tmp_path, {**K8S, "apiVersion": api}), format=output_format)
    assert issued.headers() == {"Authorization": "Bearer fake-k8s-token"}
    assert (issued.issued_at, issued.expires_at, issued.extra) == (NOW, LATER_EPOCH, {})


async def test_type_overrides_the_formats_default(tmp_path: Path) -> None:
    issued = await fetch(printing(tmp_path, K8S), type="k8s")
    assert (issued.token_type, issued.headers()) == ("k8s", {})


async def test_a_bare_name_is_looked_up_on_path_at_fetch_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script(tmp_path, f"cat <<'EOF'\n{json.dumps(K8S)}\nEOF", name="vaultd-test-helper")
    provider = ExecProvider.from_config({"command": ["vaultd-test-helper"]})
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert (await provider.fetch(FetchContext(lambda: NOW))).token.reveal_str() == "fake-k8s-token"


async def test_only_allowed_variables_reach_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = tmp_path / "env.json"
    body = f"import json, os, sys\njson.dump(dict(os.environ), open(sys.argv[1], 'w'))\nprint({json.dumps(K8S)!r})"
    helper = script(tmp_path, body, shebang=sys.executable)
    monkeypatch.setenv("VAULTD_TEST_ALLOWED", "yes")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sk-daemon-secret")
    await fetch([helper, str(seen)], env=["PATH", "VAULTD_TEST_ALLOWED", "VAULTD_TEST_UNSET"])
    env = json.loads(seen.read_text())
    # Python may coerce a C locale by setting LC_CTYPE in its own environment (PEP 538).
    assert set(env) - {"LC_CTYPE"} == {"PATH", "VAULTD_TEST_ALLOWED"}
    await fetch([helper, str(seen)])
    env = json.loads(seen.read_text())
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert set(env) - {"LC_CTYPE"} <= {"PATH", "HOME", "LANG", "LC_ALL", "TZ"}


async def test_stdin_is_empty(tmp_path: Path) -> None:
    helper = script(tmp_path, f"cat >/dev/null\ncat <<'EOF'\n{json.dumps(K8S)}\nEOF")
    assert (await fetch([helper], timeout=5)).token.reveal_str() == "fake-k8s-token"


# -- faults --------------------------------------------------------------------------------------


async def test_non_zero_exit_shows_the_status_but_never_stderr(tmp_path: Path) -> None:
    helper = script(tmp_path, 'echo "sk-live-SECRET" >&2\necho \'{"leak": "sk-live-OUT"}\'\nexit 3')
    error = await failure([helper])
    assert str(error) == "the command exited with status 3 (its stderr, 15 bytes, is not shown: it may hold secrets)"
    assert not error.reauth


async def test_death_by_signal_is_reported(tmp_path: Path) -> None:
    error = await failure([script(tmp_path, "kill -9 $$")])
    assert str(error) == "the command was killed by signal 9 (it wrote nothing to stderr)"


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (b"sk-GARBAGE not json", "is not JSON"),
        (b"\xff\xfe sk-GARBAGE", "is not JSON"),
        (b"[" * 100_000, "is not JSON"),
        ('["sk-GARBAGE"]', "not an object"),
        ({"sk-GARBAGE": 1}, "neither AWS credential_process JSON"),
        ({**AWS, "Version": 2}, "neither AWS"),
        ({**AWS, "Version": True}, "neither AWS"),
        ({**AWS, "SecretAccessKey": None}, "no SecretAccessKey string"),
        ({**AWS, "AccessKeyId": 12345}, "no AccessKeyId string"),
        ({**AWS, "SessionToken": "sk-GARBAGE\n"}, "SessionToken must be visible ASCII"),
        ({**AWS, "Expiration": "sk-GARBAGE"}, "Expiration is not an ISO 8601 time"),
        ({**AWS, "Expiration": "2027-06-01T00:00:00"}, "Expiration is not an ISO 8601 time"),
        ({**AWS, "Expiration": "2020-01-01T00:00:00Z"}, "already expired"),
        ({**K8S, "apiVersion": "v1"}, "not an ExecCredential"),
        ({**K8S, "status": {"clientKeyData": "sk-GARBAGE"}}, "client certificates are not supported"),
        ({**K8S, "status": "sk-GARBAGE"}, "no status.token"),
        ({**K8S, "status": {"token": "sk-GARBAGE\nx"}}, "token must be visible ASCII"),
        ({**K8S, "status": {"token": "sk-GARBAGE x"}}, "token must be visible ASCII"),
        ({**K8S, "status": {"token": ""}}, "no token string"),
    ],
)
async def test_garbage_is_a_clear_retryable_error_without_the_output(
    tmp_path: Path, output: object, message: str
) -> None:
    error = await failure(printing(tmp_path, output))
    assert message in str(error)
    assert "sk-GARBAGE" not in str(error)
    assert not error.reauth


@pytest.mark.parametrize(("output_format", "answer"), [("aws", K8S), ("kubernetes", AWS)])
async def test_the_wrong_format_is_refused(tmp_path: Path, output_format: str, answer: object) -> None:
    assert "the command's output" in str(await failure(printing(tmp_path, answer), format=output_format))


@pytest.mark.parametrize("body", ["head -c 2097152 /dev/zero", "exec yes sk-GARBAGE"])
async def test_more_than_a_mebibyte_is_refused_promptly(tmp_path: Path, body: str) -> None:
    started = time.monotonic()
    error = await failure([script(tmp_path, body)], timeout=60)
    assert str(error) == "the command printed more than 1 MiB on stdout: it was killed"
    assert time.monotonic() - started < 10


async def test_a_hanging_command_that_ignores_sigterm_is_killed_at_the_timeout(tmp_path: Path) -> None:
    pids = tmp_path / "shell.pid", tmp_path / "sleep.pid"
    body = 'trap \'\' TERM\necho $$ > "$1"\nsleep 1000 &\necho $! > "$2"\nwait'
    started = time.monotonic()  # real time: see the module docstring
    error = await failure([script(tmp_path, body), *map(str, pids)], timeout=0.5)
    assert time.monotonic() - started < 3
    assert str(error) == "the command did not finish within 0.5 s: it was killed"
    assert not error.reauth
    for pid in pids:
        assert await gone(int(pid.read_text()))


async def test_a_child_left_holding_stdout_is_killed_too(tmp_path: Path) -> None:
    pid = tmp_path / "sleep.pid"
    body = 'sleep 1000 &\necho $! > "$1"\nexit 0'
    error = await failure([script(tmp_path, body), str(pid)], timeout=0.5)
    assert "did not finish within 0.5 s" in str(error)
    assert await gone(int(pid.read_text()))


async def test_a_cancelled_fetch_kills_the_command(tmp_path: Path) -> None:
    pid = tmp_path / "sleep.pid"
    with trio.move_on_after(0.5):
        await fetch([script(tmp_path, 'echo $$ > "$1"\nexec sleep 1000'), str(pid)])
    assert await gone(int(pid.read_text()))


@pytest.mark.parametrize("name", ["vaultd-no-such-helper", "/nonexistent/vaultd-helper", "not-executable"])
async def test_a_missing_command_needs_the_operator(tmp_path: Path, name: str) -> None:
    if name == "not-executable":
        (tmp_path / name).write_text("#!/bin/sh\n")
        name = str(tmp_path / name)
    error = await failure([name])
    assert "was not found" in str(error)
    assert error.reauth


async def test_a_missing_interpreter_needs_the_operator(tmp_path: Path) -> None:
    error = await failure([script(tmp_path, "", shebang="/nonexistent/interpreter")])
    assert "could not start" in str(error)
    assert error.reauth


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "'command' is required"),
        ({"command": []}, "'command' is required"),
        ({"command": "/usr/bin/helper --key sk-SECRET"}, "'command' must be a list of strings"),
        ({"command": ["/usr/bin/helper", 7]}, "'command' items"),
        ({"command": ["/usr/bin/helper", "sk-SECRET\x00"]}, "'command' items"),
        ({"command": ["/usr/bin/helper", "x" * 5000]}, "'command' items"),
        ({"command": ["x"] * 300}, "more than 256"),
        ({"command": ["bin/helper"]}, "absolute path or a bare name"),
        ({"command": [" helper"]}, r"'command'\[0\]"),
        ({"command": [""]}, r"'command'\[0\]"),
        ({"command": ["helper"], "timeout": 0}, "'timeout' must be between 0.1 and 300"),
        ({"command": ["helper"], "timeout": 301}, "'timeout' must be between"),
        ({"command": ["helper"], "timeout": "30"}, "'timeout' must be a number"),
        ({"command": ["helper"], "env": "PATH"}, "'env' must be a list"),
        ({"command": ["helper"], "env": ["AWS_KEY=sk-SECRET"]}, "'env' items must be variable names"),
        ({"command": ["helper"], "format": "json"}, "'format' must be"),
        ({"command": ["helper"], "type": "Bearer Token"}, "'type'"),
        ({"command": ["helper"], "shell": True}, "unknown field"),
    ],
)
def test_bad_config_is_refused_with_the_field_named(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        ExecProvider.from_config(config)
    assert "sk-SECRET" not in str(info.value)


def test_defaults() -> None:
    assert ExecProvider.from_config({"command": ["helper"]}).describe() == {
        "command": "helper", "arguments": 0, "timeout": 30.0, "env": ["PATH", "HOME", "LANG", "LC_ALL", "TZ"],
        "format": "auto", "type": None,
    }  # fmt: skip


def test_arguments_are_kept_in_the_record_only() -> None:
    command = ["/usr/bin/op", "read", "op://Private/sk-ARG/credential"]
    provider = ExecProvider.from_config({"command": command, "format": "aws", "timeout": 5, "env": ["PATH"]})
    for shown in (repr(provider), str(provider.describe())):
        assert "/usr/bin/op" in shown
        assert "sk-ARG" not in shown
        assert "read" not in shown
    assert provider.describe()["arguments"] == 2
    record = provider.to_record()
    assert record["command"] == command
    assert set(record) | {"type"} == ExecProvider.FIELDS
    assert ExecProvider.from_record(record).to_record() == record
    provider.wipe()
    assert provider.to_record()["command"] == ["/usr/bin/op", "", ""]
