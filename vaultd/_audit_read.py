"""Reading the audit log back: its file layout, the head, the chain check (``verify``), and ``read``.

The line format and what the chain proves are described in :mod:`vaultd._audit`, which writes
the log; this module needs no key and no passphrase, so ``vaultctl audit`` and ``vaultctl
audit verify`` work with the daemon stopped. Lines written before the ``count`` field was
added (:data:`FIELDS_V1`) still verify and read; they stand for one decision each.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, Any, TypeGuard

__all__ = [
    "FIELDS",
    "FIELDS_V1",
    "GENESIS",
    "Head",
    "Rotated",
    "Verified",
    "head_path",
    "last_line",
    "line_ends",
    "log_files",
    "parse_head",
    "read",
    "rotated_files",
    "sha256_hex",
    "verify",
]

#: Every line's keys, in this order.
FIELDS = ("time", "identity", "method", "credential", "outcome", "count", "fingerprint", "detail", "seq", "prev")
#: The keys of lines written before ``count`` was added: such a line stands for one decision.
FIELDS_V1 = tuple(key for key in FIELDS if key != "count")
#: The ``prev`` of the first line ever (and the head's hash before any line).
GENESIS = "0" * 64
_HEX = frozenset("0123456789abcdef")


def head_path(path: Path) -> Path:
    """The head file beside the log: ``audit.head`` for ``audit.log``."""
    return path.with_suffix(".head")


def sha256_hex(raw: bytes) -> str:
    """Hex SHA-256: a line's hash, as the next line's ``prev`` holds it."""
    return hashlib.sha256(raw).hexdigest()


def rotated_files(path: Path) -> list[tuple[int, Path]]:
    """The rotated files beside ``path`` (``audit.log.N``), newest (lowest N) first."""
    found = []
    prefix = path.name + "."
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in path.parent.iterdir():
            number = entry.name[len(prefix) :]
            if entry.name.startswith(prefix) and number.isdigit() and number[0] != "0" and number.isascii():
                found.append((int(number), entry))
    return sorted(found)


def log_files(path: Path) -> list[Path]:
    """The log's files, oldest first: ``audit.log.N`` .. ``audit.log.1``, ``audit.log``."""
    files = [p for _, p in reversed(rotated_files(path))]
    if path.exists():
        files.append(path)
    return files


def last_line(fd: int, size: int) -> tuple[int, bytes | None]:
    """The end of the last complete line in the first ``size`` bytes of ``fd``, and that line."""
    step = 8192
    while True:
        start = max(0, size - step)
        data = os.pread(fd, size - start, start)
        end = data.rfind(b"\n")
        if end >= 0:
            begin = data.rfind(b"\n", 0, end) + 1
            if begin > 0 or start == 0:
                return start + end + 1, data[begin : end + 1]
        elif start == 0:
            return 0, None
        step *= 4


def line_ends(path: Path) -> tuple[tuple[int, float | None, str] | None, tuple[int, float | None, str] | None]:
    """The (seq, time, hash) of a file's first and last lines, each None where it is not a valid line."""

    def parse(raw: bytes | None) -> tuple[int, float | None, str] | None:
        try:
            entry = json.loads(raw or b"")
            seq, when = entry["seq"], entry.get("time")
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        if type(seq) is not int or seq < 1:
            return None
        return seq, when if type(when) in (int, float) else None, sha256_hex(raw or b"")

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, min(size, 65536), 0)
        first = head[: head.find(b"\n") + 1] or None
        return parse(first), parse(last_line(fd, size)[1])
    finally:
        os.close(fd)


def _is_seq(value: object, least: int) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _is_hash(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) == 64 and _HEX.issuperset(value)


def _is_time(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


@dataclass(frozen=True)
class Rotated:
    """What rotation has deleted so far: lines ``first_seq`` to ``last_seq``, from ``first_time``
    to ``last_time`` (epoch seconds, None where the line could not be read), the last of them
    hashing to ``last_hash`` (so the oldest kept line's ``prev`` is checked, not trusted)."""

    first_seq: int
    last_seq: int
    first_time: float | None
    last_time: float | None
    last_hash: str

    def merged(self, later: Rotated) -> Rotated:
        """This range followed by a later rotation's."""
        return Rotated(self.first_seq, later.last_seq, self.first_time, later.last_time, later.last_hash)


@dataclass(frozen=True)
class Head:
    """``audit.head``: the last line written (``seq``, its ``hash``) and what rotation deleted."""

    seq: int
    hash: str
    rotated: Rotated | None = None

    def to_bytes(self) -> bytes:
        head: dict[str, Any] = {"seq": self.seq, "hash": self.hash}
        if self.rotated is not None:
            head["rotated"] = asdict(self.rotated)
        return json.dumps(head, separators=(",", ":")).encode("ascii") + b"\n"


def parse_head(data: bytes) -> Head:
    """``audit.head``'s bytes as a :class:`Head`; ValueError when they are not one.

    A head written before rotation was recorded has no ``rotated``: it still parses.
    """
    head = json.loads(data)
    if not isinstance(head, dict):
        raise ValueError("not a JSON object")
    seq, digest = head.get("seq"), head.get("hash")
    if not _is_seq(seq, 0):
        raise ValueError("no valid 'seq'")
    if not _is_hash(digest):
        raise ValueError("no valid 'hash'")
    rotated = head.get("rotated")
    if rotated is None:
        return Head(seq, digest)
    if not isinstance(rotated, dict) or set(rotated) != {f.name for f in fields(Rotated)}:
        raise ValueError("no valid 'rotated'")
    first, last = rotated["first_seq"], rotated["last_seq"]
    if not (_is_seq(first, 1) and _is_seq(last, first) and last <= seq and _is_hash(rotated["last_hash"])):
        raise ValueError("no valid 'rotated'")
    if not (_is_time(rotated["first_time"]) and _is_time(rotated["last_time"])):
        raise ValueError("no valid 'rotated'")
    return Head(seq, digest, Rotated(**rotated))


@dataclass(frozen=True)
class Verified:
    """What :func:`verify` found. ``lines`` counts the lines that checked out."""

    ok: bool
    lines: int
    files: int
    problem: str | None
    #: The first and last ``seq`` checked (None with no line).
    first_seq: int | None = None
    last_seq: int | None = None
    #: What was taken on trust or noticed without failing (a chain that starts after rotation...).
    note: str | None = None
    #: The lines rotation deleted, as audit.head records them (None: none, or not recorded).
    rotated: Rotated | None = None


def _check_line(raw: bytes) -> tuple[int, str]:
    """A line's ``seq`` and ``prev``; ValueError saying what is wrong with it."""
    try:
        entry = json.loads(raw)
    except ValueError:
        raise ValueError("not valid JSON") from None
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    keys = tuple(entry)
    if keys not in (FIELDS, FIELDS_V1):
        raise ValueError(f"its keys are {list(entry)}, not {list(FIELDS)}")
    seq, prev = entry["seq"], entry["prev"]
    if not _is_seq(seq, 1):
        raise ValueError("its 'seq' is not a positive integer")
    if not _is_hash(prev):
        raise ValueError("its 'prev' is not 64 hex digits")
    if "count" in entry and not _is_seq(entry["count"], 1):
        raise ValueError("its 'count' is not a positive integer")
    return seq, prev


def verify(path: Path) -> Verified:
    """Check the chain from the oldest kept file (``audit.log.N``) to ``audit.log``, and the head.

    Where ``audit.head`` records what rotation deleted (:class:`Rotated`), the oldest kept
    line must come right after it (seq and ``prev``), and :attr:`Verified.rotated` says what
    is gone; in a log written before that was recorded, the oldest kept line's ``prev`` is
    taken on trust, and the note says so. From there every line must be a JSON object with
    the keys in order, ``seq`` one more than the line before and ``prev`` that line's
    SHA-256. ``audit.head`` must name a line that is there, with the same hash (it may trail
    the log after a crash, never lead it).
    """
    head: Head | None = None
    head_name = head_path(path).name
    try:  # the head first: it is written after the lines, so it can trail them but not lead
        head = parse_head(head_path(path).read_bytes())
    except FileNotFoundError:
        pass
    except (ValueError, OSError) as exc:
        return Verified(False, 0, 0, f"{head_name}: unreadable ({exc})")
    with contextlib.ExitStack() as stack:
        opened: list[tuple[Path, IO[bytes]]] = []
        for file in log_files(path):  # all opened at once: a rotation meanwhile changes nothing
            with contextlib.suppress(FileNotFoundError):
                opened.append((file, stack.enter_context(open(file, "rb"))))
        return _verify_chain(path, head, opened)


def _verify_chain(path: Path, head: Head | None, opened: list[tuple[Path, IO[bytes]]]) -> Verified:
    head_name = head_path(path).name
    files = [file for file, _ in opened]
    notes: list[str] = []
    if not files:
        if head is None:
            return Verified(False, 0, 0, f"no audit log at {path} (never written, or deleted)")
        if head.seq > 0:
            return Verified(False, 0, 0, f"{head_name} counts {head.seq} lines, but no audit log file is left")
        return Verified(True, 0, 0, None, note="no line written yet")
    lines = 0
    first: tuple[str, int, str] | None = None  # file, seq, prev of the first line
    last: tuple[str, int, int, str] | None = None  # file, line number, seq, hash
    head_found: str | None = None
    rotated = head.rotated if head is not None else None
    rotated_found: str | None = None  # the hash of the line with seq rotated.last_seq, if still kept
    for file, handle in opened:
        name = file.name
        for number, raw in enumerate(handle, start=1):
            where = f"{name} line {number}"
            if not raw.endswith(b"\n"):
                if file == path:
                    notes.append(f"{where} is incomplete (a write cut short by a crash) and was not counted")
                    break
                return Verified(False, lines, len(files), f"{where}: incomplete (no newline)", *_seqs(first, last))
            try:
                seq, prev = _check_line(raw)
            except ValueError as exc:
                return Verified(False, lines, len(files), f"{where}: {exc}", *_seqs(first, last))
            if last is None:
                first = (name, seq, prev)
                if seq == 1 and prev != GENESIS:
                    return Verified(False, 0, len(files), f"{where}: seq 1 must have 'prev' 64 zeros")
            else:
                before = f"line {last[1]}" if last[0] == name else f"the last line of {last[0]}"
                if seq != last[2] + 1:
                    problem = (f"{where}: its 'seq' is {seq} where {last[2] + 1} was expected after {before} "
                               "(a line was deleted, inserted or moved)")  # fmt: skip
                    return Verified(False, lines, len(files), problem, *_seqs(first, last))
                if prev != last[3]:
                    problem = (f"{where}: its 'prev' does not match {before} "
                               "(a line was deleted or edited)")  # fmt: skip
                    return Verified(False, lines, len(files), problem, *_seqs(first, last))
            digest = sha256_hex(raw)
            if head is not None and seq == head.seq:
                head_found = digest
            if rotated is not None and seq == rotated.last_seq:
                rotated_found = digest
            last = (name, number, seq, digest)
            lines += 1
    seqs = _seqs(first, last)
    if first is not None and last is not None:
        if rotated is not None:
            wrong = _check_rotated(rotated, head_name, first=first, found=rotated_found, notes=notes)
            if wrong is not None:
                return Verified(False, lines, len(files), wrong, *seqs, rotated=rotated)
        elif first[1] == 1:
            notes.insert(0, "the chain starts at the first line ever written")
        else:
            notes.insert(0, f"the chain starts at seq {first[1]} in {first[0]}: the lines before it are gone "
                            "(rotated away, or deleted) and its link to them is taken on trust")  # fmt: skip
    head_problem = _check_head(head, head_name, found=head_found, first=first, last=last, notes=notes)
    if head_problem is not None:
        return Verified(False, lines, len(files), head_problem, *seqs, rotated=rotated)
    return Verified(True, lines, len(files), None, *seqs, note="; ".join(notes) or None, rotated=rotated)


def _check_rotated(
    rotated: Rotated, name: str, *, first: tuple[str, int, str], found: str | None, notes: list[str]
) -> str | None:
    """What is wrong between what the head says rotation deleted and the oldest kept line."""
    gone = f"{name} records lines {rotated.first_seq}..{rotated.last_seq} as rotated away"
    where, seq, prev = first
    if seq > rotated.last_seq + 1:
        return (f"{where} line 1: the log starts at seq {seq}, but {gone}: lines {rotated.last_seq + 1}.."
                f"{seq - 1} were deleted")  # fmt: skip
    if rotated.first_seq > 1:
        notes.append(f"lines 1..{rotated.first_seq - 1} were gone before {name} recorded rotation")
    if seq == rotated.last_seq + 1:
        if prev != rotated.last_hash:
            return f"{where} line 1: its 'prev' does not match the last line rotated away ({gone})"
        notes.insert(0, f"the chain starts at seq {seq} in {where}, right after the lines rotated away")
        return None
    if found is not None and found != rotated.last_hash:
        return f"{name} does not match the line with seq {rotated.last_seq}: the log or the head was rewritten"
    notes.insert(0, f"{gone}, but they are still there from seq {seq} (a rotation cut short)")
    return None


def _seqs(first: tuple[str, int, str] | None, last: tuple[str, int, int, str] | None) -> tuple[int | None, int | None]:
    return (first[1] if first else None, last[2] if last else None)


def _check_head(
    head: Head | None,
    name: str,
    *,
    found: str | None,
    first: tuple[str, int, str] | None,
    last: tuple[str, int, int, str] | None,
    notes: list[str],
) -> str | None:
    """What is wrong between the head and the chain, or None (adding to ``notes``)."""
    if head is None:
        if last is None:
            return None
        return f"{name} is missing, so lines removed from the end of the log would go unseen"
    seq, digest = head.seq, head.hash
    if first is None or last is None:
        return None if seq == 0 else f"{name} counts {seq} lines, but the log holds none"
    if seq > last[2]:
        return (f"{name} counts {seq} lines, but the log ends at seq {last[2]} ({last[0]} line {last[1]}): "
                "lines were removed from its end")  # fmt: skip
    if seq < first[1] - 1:
        return f"{name} names seq {seq}, older than every line kept (from seq {first[1]})"
    expected = first[2] if seq == first[1] - 1 else found
    if expected != digest:
        return f"{name} does not match the line with seq {seq}: the log or the head was rewritten"
    if seq < last[2]:
        notes.append(f"{name} trails the log by {last[2] - seq} lines (the daemon stopped before updating it)")
    return None


def _entry(where: str, raw: bytes) -> dict[str, Any]:
    """A line as a dict, or an ``{"error": ...}`` entry saying why it is not one."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return {"error": f"{where}: not valid JSON"}
    if not isinstance(entry, dict):
        return {"error": f"{where}: not a JSON object"}
    return entry


def _lines(handle: IO[bytes], name: str) -> Iterator[dict[str, Any]]:
    for number, raw in enumerate(handle, start=1):
        if not raw.endswith(b"\n"):
            return
        yield _entry(f"{name} line {number}", raw)


def read(path: Path, *, follow: bool = False, poll: float = 0.25) -> Iterator[dict[str, Any]]:
    """The log's entries, oldest first (``audit.log.N`` .. ``audit.log``).

    A line that is not a JSON object comes as ``{"error": "audit.log line 3: not valid
    JSON"}``; an incomplete last line is left out. With ``follow``, keep going as
    ``tail -F`` does: poll every ``poll`` seconds, go on into the new file after a
    rotation (through every file rotated since the last poll), and wait for the log to
    appear if it does not exist yet.
    """
    handles: list[tuple[str, IO[bytes]]] = []
    current: IO[bytes] | None = None
    try:
        for file in log_files(path):
            with contextlib.suppress(FileNotFoundError):
                handle: IO[bytes] = open(file, "rb")  # noqa: SIM115 - all opened first, so a rotation cannot skip one
                if file == path:
                    current = handle
                else:
                    handles.append((file.name, handle))
        for name, handle in handles:
            yield from _lines(handle, name)
        if not follow:
            if current is not None:
                yield from _lines(current, path.name)
            return
        yield from _follow(path, current, poll)
    finally:
        for _, handle in handles:
            handle.close()
        if current is not None:
            current.close()


def _follow(path: Path, current: IO[bytes] | None, poll: float) -> Iterator[dict[str, Any]]:
    pending = b""
    number = 0
    last_seq: int | None = None
    try:
        while True:
            chunk = current.read() if current is not None else b""
            if chunk:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    number += 1
                    entry = _entry(f"{path.name} line {number}", raw + b"\n")
                    last_seq = _seq(entry, last_seq)
                    yield entry
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            if current is None:
                if st is not None:
                    current = open(path, "rb")  # noqa: SIM115 - kept open across polls, closed below
                    pending, number = b"", 0
                    continue
            else:
                mine = os.fstat(current.fileno())
                if st is None or (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
                    current.close()  # rotated, and read to its end above
                    current = None
                    last_seq = yield from _catch_up(path, (mine.st_dev, mine.st_ino), last_seq)
                    continue
                if mine.st_size < current.tell():  # a torn line was cut off at a restart
                    current.seek(mine.st_size)
                    pending = b""
            time.sleep(poll)
    finally:
        if current is not None:
            current.close()


def _seq(entry: dict[str, Any], last: int | None) -> int | None:
    seq = entry.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else last


def _catch_up(
    path: Path, followed: tuple[int, int], last_seq: int | None
) -> Generator[dict[str, Any], None, int | None]:
    """After the followed file was rotated: the files rotated after it (several rotations
    may have happened within one poll), skipping lines already seen."""
    rotated = [file for file in log_files(path) if file != path]
    for index, file in enumerate(rotated):
        with contextlib.suppress(FileNotFoundError):
            st = file.stat()
            if (st.st_dev, st.st_ino) == followed:
                rotated = rotated[index + 1 :]
                break
    for file in rotated:
        with contextlib.suppress(FileNotFoundError), open(file, "rb") as handle:
            for entry in _lines(handle, file.name):
                seq = _seq(entry, None)
                if seq is not None and last_seq is not None and seq <= last_seq:
                    continue
                last_seq = _seq(entry, last_seq)
                yield entry
    return last_seq
