"""The audit log under a flood: folding, the budget of other uids, rotation recorded in the head."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from vaultd import _audit
from vaultd._audit import AuditLog, Budget, read, verify
from vaultd._audit_fold import DEFAULT_BUDGET, Entry, fold
from vaultd._audit_read import FIELDS_V1, GENESIS, Rotated

OWNER = 1000  # the daemon's uid in these tests (own_uid=OWNER), whoever runs them
ENGINE = {"pid": 4242, "uid": OWNER, "gid": OWNER, "unit": "engine-a.service", "exe": "/opt/engine/bin/engine"}
T0 = 1_800_000_000.0
PRINT = "0123456789abcdef"


class Clock:
    """A wall clock the test sets: ``now`` is what the log reads, until the test moves it."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def stranger(pid: int = 31337, uid: int = 65534) -> dict[str, Any]:
    return {"pid": pid, "uid": uid, "gid": uid, "unit": None, "exe": "/usr/bin/python3.11"}


def refused(log: AuditLog, identity: dict[str, Any]) -> None:
    log.record(identity=identity, method="accept", credential=None, outcome="refused",
               detail="another uid, and no policy rule matches it")  # fmt: skip


def owners(log: AuditLog, names: list[str]) -> None:
    for name in names:
        log.record(identity=ENGINE, method="token.get", credential=name, outcome="ok", fingerprint=PRINT)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "vaultd" / "audit.log"


def entries(path: Path) -> list[dict[str, Any]]:
    return list(read(path))


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


# -- folding ----------------------------------------------------------------------------------


def test_fold_joins_what_only_time_tells_apart_within_one_second() -> None:
    identity_json = _audit._Encoder().identity

    def entry(when: float, identity: dict[str, Any] = ENGINE, print_: str | None = PRINT, count: int = 1) -> Entry:
        return (when, identity, "token.get", "ex", "ok", print_, None, count)

    folded = fold(
        [
            entry(T0 + 0.1), entry(T0 + 0.5, count=4), entry(T0 + 0.9, identity=dict(ENGINE)),  # one line, count 6
            entry(T0 + 0.2, print_="fedcba9876543210"),  # another token: its own line
            entry(T0 + 1.0),  # the next second: its own line
            entry(T0 + 0.3, identity={**ENGINE, "uid": True}),  # true is not 1000... nor 1: its own line
            entry(float("nan")), entry(float("nan")),  # not a time: kept apart
        ],
        identity_json,
    )  # fmt: skip
    assert [(e[0], e[5], e[7]) for e in folded[:4]] == [
        (T0 + 0.1, PRINT, 6), (T0 + 0.2, "fedcba9876543210", 1), (T0 + 1.0, PRINT, 1), (T0 + 0.3, PRINT, 1),
    ]  # fmt: skip
    assert len(folded) == 6


def test_a_flood_of_refused_accepts_from_one_peer_gives_a_line_a_second_whose_counts_add_up(path: Path) -> None:
    clock = Clock()
    log = AuditLog(path, clock=clock, own_uid=OWNER)
    peer = stranger()
    attempts = 0
    for tick in range(20):  # 10 s, flushed every half second (not on the second): 2 000 attempts a second
        for _ in range(1000):
            refused(log, peer)
            clock.now += 0.0005
            attempts += 1
        log.flush()
        if tick == 0:  # the first of them is on disk at the first flush, as any line
            assert [(e["outcome"], e["count"]) for e in entries(path)] == [("refused", 1000)]
    log.close()
    lines = entries(path)
    assert len(lines) <= 20 + 10  # one per second and batch: at most one per batch, plus one per second
    assert {e["outcome"] for e in lines} == {"refused"} and sum(e["count"] for e in lines) == attempts == 20_000
    assert verify(path).ok


def test_a_flood_with_a_new_pid_each_time_is_held_to_the_budget_and_every_attempt_is_counted(path: Path) -> None:
    clock = Clock()
    log = AuditLog(path, clock=clock, own_uid=OWNER, max_bytes=512 * 1024, keep=1)
    owners(log, ["before-0", "before-1"])
    log.flush()
    attempts = 0
    for second in range(3600):  # an hour, 10 connections a second, each from a fresh process
        for _ in range(10):
            refused(log, stranger(pid=100_000 + attempts))
            clock.now += 0.1
            attempts += 1
        if second % 60 == 59:
            log.flush()
    owners(log, ["after"])
    log.close()
    lines = entries(path)
    theirs = [e for e in lines if e["identity"]["uid"] == 65534]
    budget = DEFAULT_BUDGET
    assert len(theirs) <= budget.burst + 3600 / budget.every + 1  # summaries included: they take from it
    assert sum(e["count"] for e in theirs) == attempts == 36_000
    counted = [e for e in theirs if e["outcome"] == "LINES_COUNTED"]
    assert counted and counted[0]["identity"] == {"uid": 65534} and counted[0]["method"] == "audit"
    assert "decisions from 2027-01-15T08:" in counted[0]["detail"] and "accept refused x" in counted[0]["detail"]
    assert [e["credential"] for e in lines if e["identity"]["uid"] == OWNER] == ["before-0", "before-1", "after"]
    result = verify(path)
    assert result.ok and result.first_seq == 1, result  # nothing of the owner's was rotated away


def test_other_uids_together_are_held_to_the_shared_budget(path: Path) -> None:
    clock = Clock()
    budget = Budget(burst=10, every=1.0, all_burst=20, all_every=2.0)
    log = AuditLog(path, clock=clock, own_uid=OWNER, budget=budget)
    attempts = 0
    for _ in range(100):  # 100 s; twelve uids, 5 attempts a second each
        for uid in range(2000, 2012):
            for _ in range(5):
                refused(log, stranger(pid=attempts + 2, uid=uid))
                attempts += 1
        clock.now += 1.0
        owners(log, [f"owner-{attempts}"])  # the owner is never budgeted: one line a second, all kept
        log.flush()
    written = entries(path)
    foreign = [e for e in written if e["identity"]["uid"] != OWNER]
    assert len(foreign) <= budget.all_burst + 100 / budget.all_every + 1
    assert len([e for e in written if e["identity"]["uid"] == OWNER]) == 100
    log.close()  # and at stop, every count untold so far
    foreign = [e for e in entries(path) if e["identity"]["uid"] != OWNER]
    assert sum(e["count"] for e in foreign) == attempts


def test_a_repeated_forbidden_is_not_erased_by_the_same_peers_flood_of_hellos(path: Path) -> None:
    clock = Clock()
    log = AuditLog(path, clock=clock, own_uid=OWNER, max_bytes=16 * 1024, keep=1)
    for peer in (ENGINE, stranger(uid=2001)):  # the owner's uid, and another admitted by a rule
        for _ in range(3):
            log.record(identity=peer, method="token.sign", credential="binance", outcome="FORBIDDEN",
                       detail="rule 1 allows get only")  # fmt: skip
        for second in range(20):  # 20 s of pipelined hellos, 1 000 a second
            for _ in range(1000):
                log.record(identity=peer, method="hello", credential=None, outcome="ok")
                clock.now += 0.001
            if second % 2:
                log.flush()
    log.close()
    kept = entries(path)
    forbidden = [(e["identity"]["uid"], e["count"]) for e in kept if e["outcome"] == "FORBIDDEN"]
    assert forbidden == [(OWNER, 3), (2001, 3)]
    hellos = [e for e in kept if e["method"] == "hello"]
    assert sum(e["count"] for e in hellos) == 40_000 and len(hellos) <= 80
    assert verify(path).ok


def test_other_uids_stop_at_half_the_queue_and_the_owners_lines_still_fit(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_audit, "MAX_QUEUED", 10)
    log = AuditLog(path, clock=Clock(), own_uid=OWNER)
    for pid in range(10):
        refused(log, stranger(pid=pid))
    assert log.pending == 5
    owners(log, [f"owner-{n}" for n in range(6)])
    assert log.pending == 10  # the sixth did not fit
    log.flush()
    kept = entries(path)
    assert [e["credential"] for e in kept if e["method"] == "token.get"] == [f"owner-{n}" for n in range(5)]
    assert kept[-1]["outcome"] == "LINES_DROPPED" and kept[-1]["count"] == 6
    assert kept[-1]["identity"]["uid"] == OWNER  # the daemon's own line: never held back by the budget


# -- rotation, recorded -----------------------------------------------------------------------


def write(log: AuditLog, clock: Clock, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        clock.now = T0 + n
        owners(log, [f"cred-{n}"])
        if n % 5 == 4:
            log.flush()
    log.flush()


def test_rotation_records_what_it_deleted_in_the_head_and_verify_reports_it(path: Path) -> None:
    clock = Clock()
    log = AuditLog(path, clock=clock, own_uid=OWNER, max_bytes=4096, keep=1)
    write(log, clock, 12)
    assert "rotated" not in json.loads(path.with_name("audit.head").read_bytes())
    write(log, clock, 40, start=12)  # rotates a file away at least once: line n (seq n + 1) is at T0 + n
    head = json.loads(path.with_name("audit.head").read_bytes())
    gone = head["rotated"]
    first_kept = json.loads(path.with_name("audit.log.1").read_bytes().splitlines()[0])
    assert (gone["first_seq"], gone["first_time"]) == (1, T0)
    assert gone["last_seq"] == first_kept["seq"] - 1 and gone["last_time"] == T0 + gone["last_seq"] - 1
    assert gone["last_hash"] == first_kept["prev"]
    result = verify(path)
    assert result.ok and result.rotated == Rotated(**gone) and result.first_seq == gone["last_seq"] + 1
    assert (
        result.note == f"the chain starts at seq {result.first_seq} in audit.log.1, right after the lines rotated away"
    )
    assert entries(path)[0]["seq"] == gone["last_seq"] + 1


def test_an_oldest_file_deleted_by_hand_is_not_taken_for_rotation(path: Path) -> None:
    clock = Clock()
    log = AuditLog(path, clock=clock, own_uid=OWNER, max_bytes=4096, keep=2)
    write(log, clock, 60)
    assert verify(path).ok and verify(path).rotated is not None
    doomed = path.with_name("audit.log.2")
    first_seq = json.loads(doomed.read_bytes().splitlines()[0])["seq"]
    after = json.loads(path.with_name("audit.log.1").read_bytes().splitlines()[0])["seq"]
    doomed.unlink()  # what a same-uid process hiding its traces might do: it looked like rotation
    result = verify(path)
    assert not result.ok
    assert result.problem == (
        f"audit.log.1 line 1: the log starts at seq {after}, but audit.head records lines 1..{first_seq - 1} "
        f"as rotated away: lines {first_seq}..{after - 1} were deleted"
    )
    write(log, clock, 40, start=60)  # the next rotations say so in the chain itself
    missing = [e for e in read(path) if e["outcome"] == "LINES_MISSING"]
    assert [e["detail"] for e in missing] == [
        f"lines {first_seq}..{after - 1} were gone before rotation reached them: deleted by something else"
    ]


def test_a_rotation_cut_short_after_the_head_was_written_still_verifies_and_a_wrong_hash_does_not(path: Path) -> None:
    clock = Clock()
    log = AuditLog(path, clock=clock, own_uid=OWNER, max_bytes=4096, keep=2)
    write(log, clock, 40)
    head = path.with_name("audit.head")
    recorded = json.loads(head.read_bytes())
    oldest = path.with_name("audit.log.2").read_bytes().splitlines(keepends=True)
    last = json.loads(oldest[-1])
    # What a crash between writing the head and deleting audit.log.2 leaves: the head says it is gone.
    recorded["rotated"].update(last_seq=last["seq"], last_time=last["time"], last_hash=sha(oldest[-1]))
    head.write_text(json.dumps(recorded))
    result = verify(path)
    assert result.ok, result.problem
    assert (result.note or "").startswith(f"audit.head records lines 1..{last['seq']} as rotated away, but they are "
                                          "still there from seq ")  # fmt: skip
    recorded["rotated"]["last_hash"] = sha(oldest[-2])
    head.write_text(json.dumps(recorded))
    assert verify(path).problem == (
        f"audit.head does not match the line with seq {last['seq']}: the log or the head was rewritten"
    )


def test_folded_and_rotated_lines_still_show_an_edit_a_cut_and_a_forged_head(path: Path) -> None:
    clock = Clock()
    log = AuditLog(path, clock=clock, own_uid=OWNER, max_bytes=4096, keep=1)
    for n in range(30):
        clock.now = T0 + n
        for _ in range(50):
            log.record(identity=ENGINE, method="token.sign", credential=f"c{n % 3}", outcome="FORBIDDEN")
        owners(log, [f"cred-{n}"])
        log.flush()
        log.record(identity=ENGINE, method="token.sign", credential=f"c{n % 3}", outcome="FORBIDDEN")
        log.flush()
    result = verify(path)
    assert result.ok and result.rotated is not None, result
    lines = path.read_bytes().splitlines(keepends=True)
    at = next(n for n, raw in enumerate(lines[:-1]) if b'"count":50' in raw)
    head = path.with_name("audit.head")
    saved_log, saved_head = path.read_bytes(), head.read_bytes()

    path.write_bytes(b"".join([*lines[:at], lines[at].replace(b'"count":50', b'"count":5'), *lines[at + 1 :]]))
    assert (verify(path).problem or "").startswith(f"audit.log line {at + 2}: its 'prev' does not match line {at + 1}")
    path.write_bytes(b"".join(lines[:-2]))
    assert "lines were removed from its end" in (verify(path).problem or "")
    path.write_bytes(saved_log)
    forged = json.loads(saved_head)
    forged["rotated"]["last_seq"] -= 3  # hiding that three more lines are gone
    head.write_text(json.dumps(forged))
    assert "were deleted" in (verify(path).problem or "")
    forged["rotated"]["last_seq"] += 3
    forged["rotated"]["last_hash"] = "0" * 64
    head.write_text(json.dumps(forged))
    assert "its 'prev' does not match the last line rotated away" in (verify(path).problem or "")
    head.write_bytes(saved_head)
    assert verify(path).ok


def test_a_log_written_before_count_still_verifies_reads_and_goes_on(path: Path) -> None:
    path.parent.mkdir(parents=True, mode=0o700)
    prev, raw = GENESIS, b""
    for seq in (1, 2):
        line = dict(zip(FIELDS_V1, (T0 + seq, ENGINE, "token.get", "old", "ok", None, None, seq, prev), strict=True))
        data = json.dumps(line, separators=(",", ":")).encode() + b"\n"
        raw, prev = raw + data, sha(data)
    path.write_bytes(raw)
    path.with_name("audit.head").write_text(json.dumps({"seq": 2, "hash": prev}))
    assert verify(path).ok
    log = AuditLog(path, clock=Clock(), own_uid=OWNER)
    owners(log, ["new"])
    log.flush()
    assert verify(path).ok
    assert [(e["seq"], e.get("count", 1), e["credential"]) for e in read(path)] == [(1, 1, "old"), (2, 1, "old"),
                                                                                   (3, 1, "new")]  # fmt: skip
