"""The audit log: line format, hash chain, rotation, crash repair, batching on trio's clock, failures."""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

from vaultd import _audit
from vaultd._audit import FIELDS, AuditLog, default_audit_path, fingerprint, read, verify

ENGINE = {"uid": 1000, "gid": 1000, "pid": 4242, "unit": "engine-a.service", "exe": "/opt/engine/bin/engine"}
TOKEN = "fake-token-audit-0123456789"
KEY = b"fake fingerprint key, 32 bytes!!"


async def inline(fn: Callable[[], None]) -> None:
    """Flush in the trio thread: the autojump clock cannot skip ahead while a thread works."""
    fn()


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "vaultd" / "audit.log"


def add(log: AuditLog, count: int, *, outcome: str = "allow", flush: bool = True) -> None:
    for n in range(count):
        log.record(identity=ENGINE, method="token.get", credential=f"cred-{n}", outcome=outcome)
    if flush:
        log.flush()


def raw_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def all_text(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


# -- format and chain -------------------------------------------------------------------------


def test_public_surface() -> None:
    assert set(_audit.__all__) == {
        "DEFAULT_BUDGET", "DEFAULT_KEEP", "DEFAULT_MAX_BYTES", "FIELDS", "MAX_QUEUED", "AuditLog", "Budget",
        "Verified", "default_audit_path", "fingerprint", "head_path", "read", "verify",
    }  # fmt: skip
    assert (_audit.DEFAULT_MAX_BYTES, _audit.DEFAULT_KEEP) == (8 * 1024 * 1024, 4)


def test_each_line_has_the_fields_in_order_and_chains_to_the_one_before(path: Path) -> None:
    log = AuditLog(path, clock=Clock())
    log.record(identity=ENGINE, method="token.get", credential="deribit", outcome="allow",
               fingerprint=fingerprint(KEY, TOKEN))  # fmt: skip
    log.record(identity={"uid": 1001, "exe": "/tmp/odd\nname\x1b[2J"}, method="token.sign", credential="binance",
               outcome="deny", detail="x" * 500)  # fmt: skip
    log.record(identity=ENGINE, method="vault.status", credential=None, outcome="LOCKED")
    log.flush()
    lines = raw_lines(path)
    assert len(lines) == 3
    entries = [json.loads(raw) for raw in lines]
    assert all(tuple(e) == FIELDS for e in entries)
    assert all(raw.isascii() and raw.count(b"\n") == 1 for raw in lines)  # a newline in a value stays escaped
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert entries[0]["prev"] == "0" * 64
    assert entries[1]["prev"] == sha(lines[0]) and entries[2]["prev"] == sha(lines[1])
    assert entries[0]["identity"] == ENGINE and entries[1]["identity"]["exe"] == "/tmp/odd\nname\x1b[2J"
    assert entries[0]["time"] == pytest.approx(1_800_000_000.001)
    assert entries[0]["fingerprint"] == fingerprint(KEY, TOKEN) and entries[1]["fingerprint"] is None
    assert entries[1]["detail"] == "x" * 200 and entries[0]["detail"] is None
    assert [e["outcome"] for e in entries] == ["allow", "deny", "LOCKED"] and entries[2]["credential"] is None
    head = json.loads((path.parent / "audit.head").read_bytes())
    assert head == {"seq": 3, "hash": sha(lines[2])}
    result = verify(path)
    assert result.ok and (result.lines, result.files, result.first_seq, result.last_seq) == (3, 1, 1, 3)
    assert result.note == "the chain starts at the first line ever written"


ODD_IDENTITIES: list[Any] = [  # in this order through one encoder: equal keys and values of other types collide
    ENGINE,
    {"uid": 1000, "gid": 1000, "pid": 4242, "unit": "engine-a.service", "exe": "/opt/engine/bin/engine"},
    {"uid": 1, "pid": 0},
    {"uid": True, "pid": -0.0},
    {"uid": 1.0, "pid": 0.0},
    {"uid": 1.0, "pid": -0.0},
    {1: "int key"},
    {True: "int key"},
    {"uid": 1000, "unit": '\u00e9t\u00e9 \U0001f600 \x00\x1b"\\', "exe": "/x\ny"},
    {"uid": 1000, "groups": [1, 2], "cgroup": {"path": "/user.slice"}},
    {"uid": 1000, "path": Path("/opt/engine")},  # not JSON: default=str
    {"uid": float("nan")},
    {},
]


def test_the_fast_encoder_writes_what_json_dumps_would() -> None:
    encode = _audit._Encoder()
    cases = [
        (1_800_000_000.123456, "token.get", "deribit", None),
        (1_800_000_000.0, "t\u00f6ken.\x7f", None, 'a "quoted" \\ detail\n'),
        (float("inf"), "token.get", "x", None),
    ]
    for identity in ODD_IDENTITIES * 2:  # cache misses, then hits
        for when, method, credential, detail in cases:
            entry = (when, identity, method, credential, "allow", "0123456789abcdef", detail, 3)
            line = {
                "time": when, "identity": identity, "method": method, "credential": credential, "outcome": "allow",
                "count": 3, "fingerprint": "0123456789abcdef", "detail": detail, "seq": 7, "prev": "ab" * 32,
            }  # fmt: skip
            expected = json.dumps(line, separators=(",", ":"), default=str) + "\n"
            assert encode(entry, 7, "ab" * 32) == expected.encode("ascii"), identity
    circular: dict[str, Any] = {"uid": 1}
    circular["self"] = circular
    raw = encode((1.5, circular, "token.get", "x", "allow", None, None, 1), 1, "0" * 64)
    assert json.loads(raw)["identity"] == {} and "identity not encodable" in json.loads(raw)["detail"]


def test_a_restart_continues_seq_and_chain(path: Path) -> None:
    add(AuditLog(path), 3)
    add(AuditLog(path), 2)
    entries = [json.loads(raw) for raw in raw_lines(path)]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[3]["prev"] == sha(raw_lines(path)[2])
    assert verify(path).ok


def test_the_chain_holds_across_rotation_and_files_stay_under_the_cap(path: Path) -> None:
    log = AuditLog(path, max_bytes=4096, keep=2)
    for _ in range(12):
        add(log, 7)
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["audit.head", "audit.log", "audit.log.1", "audit.log.2"]
    for name in ("audit.log", "audit.log.1", "audit.log.2"):
        assert 0 < (path.parent / name).stat().st_size <= 4096
    older, newer = raw_lines(path.with_name("audit.log.1")), raw_lines(path)
    assert json.loads(newer[0])["prev"] == sha(older[-1])
    assert json.loads(newer[0])["seq"] == json.loads(older[-1])["seq"] + 1
    result = verify(path)
    assert result.ok, result.problem
    assert result.files == 3 and result.last_seq == 84 and result.first_seq is not None and result.first_seq > 1
    assert result.lines == result.last_seq - result.first_seq + 1
    assert (
        result.note == f"the chain starts at seq {result.first_seq} in audit.log.2, right after the lines rotated away"
    )
    assert result.rotated is not None and (result.rotated.first_seq, result.rotated.last_seq) == (
        1,
        result.first_seq - 1,
    )
    log = AuditLog(path, max_bytes=4096, keep=1)  # keep lowered: a rotation drops what is beyond it
    add(log, 20)
    assert sorted(p.name for p in path.parent.iterdir()) == ["audit.head", "audit.log", "audit.log.1"]
    assert verify(path).ok


def test_a_restart_right_after_a_rotation_chains_to_the_rotated_file(path: Path) -> None:
    log = AuditLog(path)
    add(log, 4)
    head = path.with_name("audit.head")
    stale = head.read_bytes()
    add(log, 2)
    head.write_bytes(stale)  # a crash after rotating, before the head caught up with the last batch
    path.rename(path.with_name("audit.log.1"))
    add(AuditLog(path), 1)
    assert json.loads(raw_lines(path)[0])["seq"] == 7
    assert verify(path).ok and verify(path).files == 2


def test_a_lost_head_or_truncated_tail_is_noticed_and_a_restart_keeps_it_visible(path: Path) -> None:
    add(AuditLog(path), 6)
    head = path.with_name("audit.head")
    saved = head.read_bytes()
    head.unlink()
    assert verify(path).problem == "audit.head is missing, so lines removed from the end of the log would go unseen"
    head.write_bytes(saved)
    path.write_bytes(b"".join(raw_lines(path)[:4]))
    result = verify(path)
    assert not result.ok and "audit.head counts 6 lines, but the log ends at seq 4 (audit.log line 4)" in (
        result.problem or ""
    )
    add(AuditLog(path), 1)  # the next line's seq continues from the head: the gap stays in the chain
    result = verify(path)
    assert not result.ok and (result.problem or "").startswith("audit.log line 5: its 'seq' is 7 where 5")


# -- tampering --------------------------------------------------------------------------------


def _delete(lines: list[bytes]) -> None:
    del lines[4]


def _edit(lines: list[bytes]) -> None:
    lines[4] = lines[4].replace(b'"allow"', b'"deny"')


def _insert(lines: list[bytes]) -> None:
    lines.insert(5, lines[2])


def _reorder(lines: list[bytes]) -> None:
    lines[4], lines[5] = lines[5], lines[4]


def _truncate(lines: list[bytes]) -> None:
    del lines[-2:]


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (_delete, "audit.log line 5: its 'seq' is 6 where 5 was expected after line 4"),
        (_edit, "audit.log line 6: its 'prev' does not match line 5"),
        (_insert, "audit.log line 6: its 'seq' is 3 where 6 was expected"),
        (_reorder, "audit.log line 5: its 'seq' is 6 where 5 was expected"),
        (_truncate, "audit.head counts 8 lines, but the log ends at seq 6 (audit.log line 6)"),
    ],
    ids=["delete", "edit", "insert", "reorder", "truncate-last-lines"],
)
def test_tampering_fails_and_names_the_line(path: Path, tamper: Callable[[list[bytes]], None], problem: str) -> None:
    add(AuditLog(path), 8)
    assert verify(path).ok
    lines = raw_lines(path)
    tamper(lines)
    path.write_bytes(b"".join(lines))
    result = verify(path)
    assert not result.ok
    assert (result.problem or "").startswith(problem), result.problem


def test_an_edit_that_keeps_seq_and_prev_is_caught_by_the_next_line_and_the_last_by_the_head(path: Path) -> None:
    add(AuditLog(path), 3)
    original = path.read_bytes()
    path.write_bytes(original.replace(b'"cred-2"', b'"cred-X"'))  # the last line: no line after it
    assert verify(path).problem == "audit.head does not match the line with seq 3: the log or the head was rewritten"
    path.write_bytes(original.replace(b"engine-a.service", b"engine-b.service", 1))
    assert (verify(path).problem or "").startswith("audit.log line 2: its 'prev' does not match line 1")
    path.write_bytes(original.replace(b'"seq":2', b'"seq":2.0'))
    assert verify(path).problem == "audit.log line 2: its 'seq' is not a positive integer"
    path.write_bytes(original.replace(b"{", b"[", 1))
    assert verify(path).problem == "audit.log line 1: not valid JSON"


def test_tampering_in_a_rotated_file_or_across_files_is_named(path: Path) -> None:
    log = AuditLog(path, max_bytes=4096, keep=3)
    for _ in range(6):
        add(log, 10)
    rotated = path.with_name("audit.log.1")
    lines = raw_lines(rotated)
    rotated.write_bytes(b"".join([*lines[:3], lines[3].replace(b"token.get", b"token.put"), *lines[4:]]))
    assert (verify(path).problem or "").startswith("audit.log.1 line 5: its 'prev' does not match line 4")
    rotated.write_bytes(b"".join(lines[:-1]))  # the last line of audit.log.1 deleted
    assert (verify(path).problem or "").startswith(
        "audit.log line 1: its 'seq' is "
    ) and "after the last line of audit.log.1" in (verify(path).problem or "")
    rotated.unlink()  # a whole file in the middle
    assert (verify(path).problem or "").startswith("audit.log line 1: its 'seq' is ")


# -- crashes ----------------------------------------------------------------------------------


def test_a_torn_last_line_is_cut_off_at_the_next_start_and_the_rest_verifies(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    add(AuditLog(path), 3)
    whole = path.read_bytes()
    path.write_bytes(whole + raw_lines(path)[-1][:40])  # what a crash in the middle of a write leaves
    before = verify(path)
    assert before.ok and before.lines == 3 and "audit.log line 4 is incomplete" in (before.note or "")
    with caplog.at_level(logging.WARNING, logger="vaultd.audit"):
        log = AuditLog(path)
    assert path.read_bytes() == whole
    assert any("ended with an incomplete line (40 bytes" in r.getMessage() for r in caplog.records)
    add(log, 2)
    result = verify(path)
    assert result.ok and result.lines == 5 and result.note == "the chain starts at the first line ever written"


_CRASHING_WRITER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from vaultd._audit import AuditLog

    log = AuditLog(Path(sys.argv[1]))
    for n in range(3):
        log.record(identity={"uid": 1}, method="token.get", credential=f"kept-{n}", outcome="allow")
    log.flush()
    real = os.write

    def dying(fd, data):
        real(fd, bytes(data)[: len(data) // 2])
        os._exit(137)  # killed half way through the second batch

    os.write = dying
    for n in range(5):
        log.record(identity={"uid": 1}, method="token.get", credential=f"lost-{n}", outcome="allow")
    log.flush()
    """
)


def test_a_process_killed_mid_write_loses_only_that_batch(path: Path) -> None:
    child = subprocess.run([sys.executable, "-c", _CRASHING_WRITER, str(path)], capture_output=True, timeout=60)
    assert child.returncode == 137, child.stderr
    assert not path.read_bytes().endswith(b"\n")
    log = AuditLog(path)
    add(log, 1)
    result = verify(path)
    assert result.ok, result.problem
    credentials = [e["credential"] for e in read(path)]
    assert credentials[:3] == ["kept-0", "kept-1", "kept-2"] and credentials[-1] == "cred-0"
    assert [e["seq"] for e in read(path)] == list(range(1, len(credentials) + 1))


def test_a_failed_write_is_retried_without_losing_or_repeating_a_line(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(path)
    add(log, 2)
    real = os.write

    def half_then_full_disk(fd: int, data: Any) -> int:
        real(fd, bytes(data)[: len(data) // 2 + 3])
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", half_then_full_disk)
        add(log, 4)
    assert log.write_errors == 1 and log.pending == 4
    add(log, 1)
    assert log.pending == 0
    assert [e["seq"] for e in read(path)] == [1, 2, 3, 4, 5, 6, 7]
    assert [e["credential"] for e in read(path)][2:] == ["cred-0", "cred-1", "cred-2", "cred-3", "cred-0"]
    assert verify(path).ok


# -- batching on trio's clock -----------------------------------------------------------------


async def test_run_writes_within_interval_of_a_record_and_not_before(path: Path, autojump_clock: Any) -> None:
    log = AuditLog(path, blocking=inline)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)  # flushes at 1, 2, 3... (virtual seconds)
        for n, at in enumerate([0.1, 1.5, 2.999, 5.0]):
            await trio.sleep_until(at)
            log.record(identity=ENGINE, method="token.get", credential=f"c{n}", outcome="allow")
            assert len(list(read(path))) == n  # queued, not written: record never touches the disk
            await trio.sleep_until(at + 1.0 + 1e-6)  # at 5.0 it may just miss the tick of 5.0: then 6.0
            assert len(list(read(path))) == n + 1, f"not on disk 1 s after being recorded at {at}"
        nursery.cancel_scope.cancel()
    assert verify(path).ok


async def test_run_flushes_once_more_when_cancelled(path: Path, autojump_clock: Any) -> None:
    log = AuditLog(path, blocking=inline)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(log.run, interval=60.0))
        await trio.sleep(5)
        add(log, 2, flush=False)
        nursery.cancel_scope.cancel()
    assert [e["credential"] for e in read(path)] == ["cred-0", "cred-1"]
    assert trio.current_time() < 6  # the cancel, not the next 60 s tick, wrote them


async def test_run_writes_in_a_worker_thread_while_the_event_loop_goes_on(path: Path) -> None:
    log = AuditLog(path)
    real_flush = log.flush
    entered, release = threading.Event(), threading.Event()
    threads: list[int] = []

    def slow_flush() -> None:
        threads.append(threading.get_ident())
        entered.set()
        assert release.wait(10)
        real_flush()

    log.flush = slow_flush  # type: ignore[method-assign]
    add(log, 1, flush=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(log.run, interval=0.01))
        with trio.fail_after(10):
            while not entered.is_set():  # noqa: ASYNC110 - set from a thread: no trio.Event
                await trio.sleep(0.005)
        ticks = 0
        for _ in range(5):  # the loop runs while the disk is "slow"
            await trio.lowlevel.checkpoint()
            ticks += 1
        release.set()
        nursery.cancel_scope.cancel()
    assert ticks == 5 and threads and threading.get_ident() not in threads
    assert len(list(read(path))) == 1


# -- failures ---------------------------------------------------------------------------------


def test_an_unwritable_folder_never_raises_is_counted_logged_once_and_caught_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the folder should be")  # unwritable even for root
    path = blocker / "vaultd" / "audit.log"
    monkeypatch.setattr(_audit, "MAX_QUEUED", 5)
    with caplog.at_level(logging.WARNING, logger="vaultd.audit"):
        log = AuditLog(path, own_uid=1000)  # ENGINE's uid: the owner's lines may fill the whole queue
        assert log.write_errors == 1
        add(log, 3)
        add(log, 3)
        log.record(identity=None, method="token.get", credential="x", outcome="allow")  # type: ignore[arg-type]
        log.flush()
        assert log.write_errors == 4 and log.pending == 5  # 3 + 2 kept; 1, then the odd one, dropped
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "cannot write" in r.getMessage()]
        assert len(errors) == 1
        blocker.unlink()
        log.flush()
    assert log.pending == 0 and log.write_errors == 4
    assert any("written again" in r.getMessage() for r in caplog.records)
    entries = list(read(path))
    assert len(entries) == 6 and entries[-1]["outcome"] == "LINES_DROPPED"
    assert entries[-1]["detail"].startswith("2 audit lines were dropped")
    assert verify(path).ok


def test_an_identity_that_is_not_a_map_is_dropped_at_once_and_later_lines_still_flush(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # record() keeps the identity it is given and encodes it later, in the flush thread: a
    # list there would fail every flush from then on. It is counted as dropped instead.
    log = AuditLog(path)
    with caplog.at_level(logging.ERROR, logger="vaultd.audit"):
        for odd in (["uid", 0], None):
            log.record(identity=odd, method="token.get", credential="x", outcome="ok")  # type: ignore[arg-type]
    assert log.pending == 0
    assert len([r for r in caplog.records if "could not be queued" in r.getMessage()]) == 1  # logged once
    add(log, 2)
    entries = list(read(path))
    assert [e["outcome"] for e in entries] == ["allow", "allow", "LINES_DROPPED"]
    assert entries[-1]["detail"].startswith("2 audit lines were dropped")
    assert verify(path).ok


def test_files_are_0600_and_the_folder_0700_whatever_the_umask(path: Path) -> None:
    old = os.umask(0)
    try:
        log = AuditLog(path, max_bytes=4096, keep=2)
        for _ in range(4):
            add(log, 10)
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        for name in ("audit.log", "audit.log.1", "audit.head"):
            assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name
        shutil.rmtree(path.parent)  # removed under a running daemon: made again, private
        add(log, 1)
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_loose_folder_and_file_are_tightened(path: Path) -> None:
    path.parent.mkdir(parents=True, mode=0o755)
    path.parent.chmod(0o755)
    path.touch(mode=0o644)
    path.chmod(0o644)
    add(AuditLog(path), 1)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- fingerprints, secrets, paths, reading ----------------------------------------------------


def test_the_fingerprint_is_a_stable_keyed_hmac_never_the_token(path: Path) -> None:
    print_ = fingerprint(KEY, TOKEN)
    assert print_ == hmac.new(KEY, TOKEN.encode(), hashlib.sha256).hexdigest()[:16]
    assert len(print_) == 16 and set(print_) <= set("0123456789abcdef")
    assert print_ == fingerprint(KEY, TOKEN) and print_ != fingerprint(b"another key", TOKEN)
    assert print_ != fingerprint(KEY, TOKEN + "x") and TOKEN not in print_
    log = AuditLog(path, max_bytes=4096, keep=1)
    for _ in range(30):
        log.record(identity=ENGINE, method="token.get", credential="ex", outcome="allow", fingerprint=print_)
    log.flush()
    text = all_text(path.parent)
    assert TOKEN.encode() not in text and text.count(print_.encode()) >= 1


def test_default_path_is_platformdirs_state_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_audit_path({"XDG_STATE_HOME": "/srv/state", "HOME": "/home/x"}) == Path(
        "/srv/state/vaultd/audit.log"
    )
    assert default_audit_path({"HOME": "/home/x"}) == Path("/home/x/.local/state/vaultd/audit.log")
    assert default_audit_path({"XDG_STATE_HOME": " ", "HOME": "/home/x"}) == Path(
        "/home/x/.local/state/vaultd/audit.log"
    )
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_audit_path() == tmp_path / "vaultd" / "audit.log" == default_audit_path(dict(os.environ))
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_audit_path() == default_audit_path(dict(os.environ))


def test_read_gives_entries_oldest_first_and_reports_a_bad_line(path: Path) -> None:
    log = AuditLog(path, max_bytes=4096, keep=3)
    for _ in range(5):
        add(log, 10)
    assert [e["seq"] for e in read(path)] == list(range(verify(path).first_seq or 0, 51))
    with path.open("ab") as handle:
        handle.write(b'not json\n{"partial')
    *_, bad = read(path)
    assert bad == {"error": f"audit.log line {len(raw_lines(path)) - 1}: not valid JSON"}


def test_bad_settings_are_refused(path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        AuditLog(path, max_bytes=100)
    with pytest.raises(ValueError, match="keep"):
        AuditLog(path, keep=0)
