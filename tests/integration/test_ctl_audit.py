"""``vaultctl audit`` and ``vaultctl audit verify`` as real processes, on logs written by AuditLog.

Every run points VAULTD_SOCKET at nothing: a command that tried to reach the daemon would fail.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from vaultd._audit import DEFAULT_KEEP, DEFAULT_MAX_BYTES, AuditLog, fingerprint

from ..daemon_process import BIN

ENGINE = {"uid": 1000, "gid": 1000, "pid": 4242, "unit": "engine-a.service", "exe": "/opt/engine"}
TOKEN = "fake-token-ctl-audit-42"
PRINT = fingerprint(b"fake key", TOKEN)
T0 = 1_800_000_000.25  # 2027-01-15T08:00:00.250Z, 13:30:00.250 in India (TZ=IST-5:30, no tzdata needed)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "vaultd" / "audit.log"


def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "VAULTD_SOCKET": str(tmp_path / "no-daemon.sock"), "TZ": "IST-5:30",
            "XDG_STATE_HOME": str(tmp_path / "state")}  # fmt: skip


def ctl(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "vaultctl", *args], capture_output=True, text=True, env=env(tmp_path), timeout=60, check=False
    )


def write(path: Path, count: int, *, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP) -> AuditLog:
    clock = iter(T0 + n for n in range(10_000))
    log = AuditLog(path, clock=lambda: next(clock), max_bytes=max_bytes, keep=keep)
    for n in range(count):
        log.record(identity=ENGINE, method="token.get", credential=f"deribit-{n}", outcome="allow", fingerprint=PRINT)
        if n % 5 == 4:
            log.flush()
    log.flush()
    return log


def test_audit_prints_a_table_or_the_lines_as_stored_without_a_daemon(tmp_path: Path, path: Path) -> None:
    log = write(path, 2)
    log.record(identity={"uid": 1001, "unit": "evil\x1b[2J.service", "pid": 7}, method="token.sign",
               credential="binance", outcome="FORBIDDEN", detail="rule 3")  # fmt: skip
    log.flush()
    table = ctl(tmp_path, "audit")  # the default path, from XDG_STATE_HOME
    assert table.returncode == 0, table.stderr
    header, first, _, odd = table.stdout.splitlines()
    assert header.split() == [
        "TIME",
        "WHO",
        "(uid/unit/pid)",
        "METHOD",
        "CREDENTIAL",
        "OUTCOME",
        "COUNT",
        "FINGERPRINT",
        "DETAIL",
    ]
    assert first.split() == ["2027-01-15T13:30:00.250+05:30", "1000/engine-a.service/4242", "token.get", "deribit-0",
                             "allow", "1", PRINT, "-"]  # fmt: skip
    assert odd.split() == ["2027-01-15T13:30:02.250+05:30", "1001/evil\\x1b[2J.service/7", "token.sign", "binance",
                           "FORBIDDEN", "1", "-", "rule", "3"]  # fmt: skip
    assert "\x1b" not in table.stdout  # a peer's unit name cannot drive the operator's terminal
    raw = ctl(tmp_path, "audit", "--json", "--path", str(path))
    assert raw.returncode == 0 and raw.stderr == ""
    assert raw.stdout.encode() == path.read_bytes()
    assert TOKEN not in table.stdout + raw.stdout


def test_verify_passes_across_rotation_and_says_what_rotation_deleted(tmp_path: Path, path: Path) -> None:
    write(path, 120, max_bytes=4096, keep=2)
    result = ctl(tmp_path, "audit", "verify", "--path", str(path))
    assert result.returncode == 0, result.stderr
    first, kept, note = result.stdout.splitlines()
    assert first.startswith("audit log intact from seq ") and first.endswith(" were rotated away")
    assert ", not complete: lines 1.." in first and " from 2027-01-15T13:30:00.250+05:30 to 2027-01-15T13:" in first
    assert kept.startswith(tuple(f"{n} lines kept in 3 files (seq {121 - n} to 120)" for n in range(1, 120)))
    assert note.startswith("note: the chain starts at seq ") and note.endswith("right after the lines rotated away")
    as_json = ctl(tmp_path, "audit", "--path", str(path), "verify", "--json")  # options on either side
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 0 and report["ok"] is True and report["files"] == 3 and report["last_seq"] == 120
    assert report["lines"] == 120 - report["first_seq"] + 1 and report["problem"] is None
    gone = report["rotated"]
    assert (gone["first_seq"], gone["last_seq"], gone["first_time"]) == (1, report["first_seq"] - 1, T0)
    assert gone["last_time"] == T0 + gone["last_seq"] - 1 and len(gone["last_hash"]) == 64


def test_an_oldest_file_deleted_by_hand_fails_verify_and_the_table_shows_counts(tmp_path: Path, path: Path) -> None:
    write(path, 120, max_bytes=4096, keep=2)
    report = json.loads(ctl(tmp_path, "audit", "verify", "--json", "--path", str(path)).stdout)
    last = report["rotated"]["last_seq"]
    ist = timezone(timedelta(hours=5, minutes=30))
    until = datetime.fromtimestamp(T0 + last - 1, ist).isoformat(timespec="milliseconds")
    shown = ctl(tmp_path, "audit", "verify", "--path", str(path))
    assert shown.returncode == 0 and shown.stdout.splitlines()[0] == (
        f"audit log intact from seq {last + 1}, not complete: lines 1..{last} "
        f"from 2027-01-15T13:30:00.250+05:30 to {until} were rotated away"
    )
    oldest = path.with_name("audit.log.2")
    after = json.loads(path.with_name("audit.log.1").read_bytes().splitlines()[0])["seq"]
    oldest.unlink()  # once, this looked like rotation and verify said "intact"
    problem = (f"audit.log.1 line 1: the log starts at seq {after}, but audit.head records lines 1..{last} as "
               f"rotated away: lines {last + 1}..{after - 1} were deleted")  # fmt: skip
    failed = ctl(tmp_path, "audit", "verify", "--path", str(path))
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.startswith(f"vaultctl: the audit log does not verify: {problem}"), failed.stderr
    report = json.loads(ctl(tmp_path, "audit", "verify", "--json", "--path", str(path)).stdout)
    assert report["ok"] is False and report["problem"] == problem and report["rotated"]["last_seq"] == last
    log = AuditLog(path, clock=lambda: T0 + 500, max_bytes=4096, keep=2)
    for _ in range(3):  # one second, one peer, one outcome: one line
        log.record(identity=ENGINE, method="token.sign", credential="binance", outcome="FORBIDDEN")
    log.flush()
    table = ctl(tmp_path, "audit", "--path", str(path))
    assert table.stdout.splitlines()[-1].split()[2:7] == ["token.sign", "binance", "FORBIDDEN", "3", "-"]


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (lambda lines: lines.pop(6), "audit.log line 7: its 'seq' is 8 where 7 was expected after line 6"),
        (lambda lines: lines.__setitem__(6, lines[6].replace(b"allow", b"deny!")), "audit.log line 8: its 'prev'"),
        (lambda lines: lines.__delitem__(slice(-3, None)), "audit.head counts 10 lines, but the log ends at seq 7"),
    ],
    ids=["delete", "edit", "truncate"],
)
def test_verify_fails_naming_the_first_bad_line(tmp_path: Path, path: Path, tamper: object, named: str) -> None:
    write(path, 10)
    lines = path.read_bytes().splitlines(keepends=True)
    tamper(lines)  # type: ignore[operator]
    path.write_bytes(b"".join(lines))
    result = ctl(tmp_path, "audit", "verify", "--path", str(path))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("vaultctl: the audit log does not verify: " + named), result.stderr
    assert result.stderr.count("\n") == 1
    report = ctl(tmp_path, "audit", "verify", "--json", "--path", str(path))
    assert report.returncode == 1 and json.loads(report.stdout)["problem"].startswith(named)


def test_missing_log_and_bad_usage(tmp_path: Path, path: Path) -> None:
    missing = ctl(tmp_path, "audit", "--path", str(path))
    assert missing.returncode == 1 and missing.stderr == f"vaultctl: no audit log at {path} (the daemon writes it; " \
        "--path names another)\n"  # fmt: skip
    nothing = ctl(tmp_path, "audit", "verify", "--path", str(path))
    assert nothing.returncode == 1 and "no audit log at" in nothing.stderr
    both = ctl(tmp_path, "audit", "--follow", "verify")
    assert both.returncode == 2 and "--follow" in both.stderr
    helped = ctl(tmp_path, "audit", "--help")
    assert helped.returncode == 0 and "verify" in helped.stdout and "fingerprint" in helped.stdout
    helped = ctl(tmp_path, "audit", "verify", "--help")
    assert helped.returncode == 0 and "usage: vaultctl audit verify" in helped.stdout


def _lines(proc: subprocess.Popen[str]) -> Iterator[str]:
    assert proc.stdout is not None
    yield from proc.stdout


def test_follow_prints_lines_written_later_also_after_a_rotation(tmp_path: Path, path: Path) -> None:
    log = write(path, 3, max_bytes=4096, keep=2)
    proc = subprocess.Popen(
        [BIN / "vaultctl", "audit", "--follow", "--json", "--path", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(tmp_path), start_new_session=True,
    )  # fmt: skip
    seen: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in _lines(proc):
            seen.put(line)

    threading.Thread(target=pump, daemon=True).start()

    def next_seq(deadline: float) -> int:
        return int(json.loads(seen.get(timeout=max(0.0, deadline - time.monotonic())))["seq"])

    try:
        deadline = time.monotonic() + 20
        assert [next_seq(deadline) for _ in range(3)] == [1, 2, 3]
        for n in range(40):  # about 10 KB: rotates audit.log twice while vaultctl follows
            log.record(identity=ENGINE, method="token.get", credential=f"later-{n}", outcome="allow")
            log.flush()
        assert path.with_name("audit.log.1").exists()
        assert [next_seq(deadline) for _ in range(40)] == list(range(4, 44))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def test_the_table_stays_in_line_for_long_methods_and_outcomes(tmp_path: Path, path: Path) -> None:
    log = AuditLog(path, clock=lambda: T0)
    rows = [("credential.login_wait", "schwab", "STORAGE_FAILED"), ("vault.unlock", None, "rollback_accepted"),
            ("credential.release", "a-rather-long-credential-name.main", "ok"), ("token.get", "x", "ok")]  # fmt: skip
    for method, credential, outcome in rows:
        log.record(identity=ENGINE, method=method, credential=credential, outcome=outcome, fingerprint=PRINT)
    log.flush()
    table = ctl(tmp_path, "audit").stdout.splitlines()
    header = table[0]
    starts = [header.index(name) for name in ("METHOD", "CREDENTIAL", "OUTCOME", "COUNT", "FINGERPRINT", "DETAIL")]
    for line, (method, credential, outcome) in zip(table[1:], rows, strict=True):
        cells = [method, credential or "-", outcome, "1", PRINT, "-"]
        assert [line[start : start + len(cell)] for start, cell in zip(starts, cells, strict=True)] == cells, "\n".join(
            table
        )
    # --follow cannot see the rows to come: its columns fit every method and outcome the daemon writes
    followed = _follow_first_lines(tmp_path, path, len(rows) + 1)
    head = followed[0]
    starts = [head.index(name) for name in ("METHOD", "CREDENTIAL", "OUTCOME", "COUNT")]
    for line, (method, credential, outcome) in zip(followed[1:], rows, strict=True):
        if credential is not None and len(credential) > 18:
            continue  # a long name pushes its own line out, and only it
        assert line[starts[0] : starts[0] + len(method)] == method and line[starts[2] :].startswith(outcome), followed


def _follow_first_lines(tmp_path: Path, path: Path, count: int) -> list[str]:
    proc = subprocess.Popen(
        [BIN / "vaultctl", "audit", "--follow", "--path", str(path)],
        stdout=subprocess.PIPE, text=True, env=env(tmp_path),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        return [proc.stdout.readline().rstrip("\n") for _ in range(count)]
    finally:
        proc.kill()
        proc.wait()
