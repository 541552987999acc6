"""The audit log: one hash-chained JSON line per decision, written in batches, capped and rotated.

Where: ``$XDG_STATE_HOME/vaultd/audit.log`` (platformdirs' user state folder, by default
``~/.local/state/vaultd/``; folder 0700, files 0600), with rotated files ``audit.log.1``
(newest) to ``audit.log.4`` (oldest) beside it, and ``audit.head``.

Each line is one JSON object (ASCII, no spaces, so one line whatever it holds), keys in this
order:

``time``
    epoch seconds (float) when the decision was recorded;
``identity``
    the peer as the daemon saw it, a map as given (``uid``, ``gid``, ``pid``, ``unit``, ``exe``...);
``method``
    the method asked for (``token.get``, ``token.sign``, ...);
``credential``
    the credential's name, or null;
``outcome``
    ``"ok"``, ``"refused"`` (at accept), or an error code's name (``"LOCKED"``, ...);
``count``
    how many decisions the line stands for: 1, or n for n identical ones (the same identity,
    method, credential, outcome, fingerprint and detail) within the second of ``time``, folded
    into one line (:mod:`vaultd._audit_fold`); for a ``LINES_COUNTED`` or ``LINES_DROPPED``
    line, how many decisions were counted or dropped instead of written. The sum over the
    lines is the number of decisions. Lines written before it existed have no ``count``: 1;
``fingerprint``
    for a token handed out, the first 16 hex digits of HMAC-SHA256(key, token)
    (:func:`fingerprint`), else null: it shows which lines handed out the same token (and,
    to whoever has the key, whether a given token is that one), never the token;
``detail``
    a short note (at most 200 characters), or null;
``seq``
    1 for the first line ever, then +1 per line: never goes back, across rotation and restarts;
``prev``
    hex SHA-256 of the previous line's bytes, newline included (of the last line of the next
    older file for a file's first line); 64 zeros before the first line ever.

``audit.head`` holds ``{"seq": N, "hash": H}``: the last line written and its SHA-256,
rewritten (atomically) after each batch, ``seq`` 0 and 64 zeros before any line; once a
rotation has deleted a file, also ``"rotated": {"first_seq", "last_seq", "first_time",
"last_time", "last_hash"}``: every line deleted so far (written before the deletion). So
:func:`verify` finds a deleted, edited, inserted or reordered line anywhere (the chain),
lines cut from the end (the head), and oldest files deleted by anything but rotation (the
oldest kept line must follow ``rotated``); and it says what rotation deleted, from when to
when. It needs no key and no passphrase.

What the chain cannot show: a process of the same user can rewrite the whole chain and the
head file consistently. The chain proves the log was not edited by someone who did not also
rewrite it from that point on; against a same-user attacker, ship the lines elsewhere as
they are written (journald, a log host) and compare.

A flood cannot write the owner's decisions away (:mod:`vaultd._audit_fold`): identical
decisions in one second and batch fold into one line with a ``count``, and the lines of
every uid but the daemon's own have a budget (:data:`DEFAULT_BUDGET`; beyond it they are
counted and a ``LINES_COUNTED`` line says how many). In the queue, other uids' lines stop at
half of :data:`MAX_QUEUED`, so they cannot crowd the owner's out of it either.

Writing never holds up an answer: :meth:`AuditLog.record` queues the entry in memory, and
:meth:`AuditLog.run` writes the queue every second from a worker thread (one ``os.write`` of
the whole batch with ``O_APPEND``, then ``fsync``; one per file when the batch crosses a
rotation), as does :meth:`AuditLog.flush` at lock and at stop. A crash loses at most the last
second; a line cut short by it is removed at the next start (with a warning), and what remains
verifies. When the log cannot be written, lines wait in memory (up to :data:`MAX_QUEUED`;
beyond that they are counted and one line says how many were lost) and each flush tries again.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _string
from pathlib import Path
from typing import Any

import platformdirs
import trio

from ._atomic import ensure_private_dir, fsync_dir, remove_stale_temps, write_atomic
from ._audit_fold import DEFAULT_BUDGET, Budget, Budgets, Entry, fold
from ._audit_read import (
    FIELDS,
    GENESIS,
    Head,
    Rotated,
    Verified,
    head_path,
    last_line,
    line_ends,
    parse_head,
    read,
    rotated_files,
    sha256_hex,
    verify,
)

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_KEEP",
    "DEFAULT_MAX_BYTES",
    "FIELDS",
    "MAX_QUEUED",
    "AuditLog",
    "Budget",
    "Verified",
    "default_audit_path",
    "fingerprint",
    "head_path",
    "read",
    "verify",
]

log = logging.getLogger("vaultd.audit")

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_KEEP = 4
#: Lines waiting in memory at most (while the disk refuses them); more are counted and dropped.
MAX_QUEUED = 100_000
_MAX_TEXT = 200
#: Lines encoded between two releases of the GIL, so that a big batch never holds up the event loop for
#: long: 32 lines are about 0.1 ms (256 held it 0.8 ms: a p99 of 790 us for requests during a flush).
_GIL_SLICE = 32
_JSON = json.JSONEncoder(separators=(",", ":"), default=str)
_VALUE_TYPES = frozenset({str, int, type(None)})

_Entry = Entry


def default_audit_path(env: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_STATE_HOME/vaultd/audit.log``, else ``~/.local/state/vaultd/audit.log``.

    With the process environment this is platformdirs' user state folder; with another
    mapping (for tests, or a service's environment) the same XDG rule is applied to it.
    """
    if env is os.environ:
        return platformdirs.user_state_path("vaultd", appauthor=False) / "audit.log"
    state = env.get("XDG_STATE_HOME", "")
    if not state.strip():
        state = str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(state) / "vaultd" / "audit.log"


def fingerprint(key: bytes, token: str) -> str:
    """A short keyed fingerprint: the first 16 hex digits of HMAC-SHA256(key, token)."""
    return hmac.new(key, token.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def _short(text: str | None) -> str | None:
    return None if text is None else str(text)[:_MAX_TEXT]


def _slow_encode(entry: _Entry, seq: int, prev: str) -> bytes:
    when, identity, method, credential, outcome, print_, detail, count = entry
    line = {
        "time": when, "identity": identity, "method": method, "credential": credential, "outcome": outcome,
        "count": count, "fingerprint": print_, "detail": detail, "seq": seq, "prev": prev,
    }  # fmt: skip
    try:
        text = _JSON.encode(line)
    except (TypeError, ValueError) as exc:  # an identity json cannot take (a circular map, odd keys)
        line["identity"] = {}
        line["detail"] = f"identity not encodable ({type(exc).__name__}); dropped from this line"
        text = _JSON.encode(line)
    return text.encode("ascii") + b"\n"


def _text(value: str | None) -> str:
    return "null" if value is None else _string(value)


class _Encoder:
    """Lines as ``json.dumps(line, separators=(",", ":"))`` gives them, about four times faster.

    The flush runs in a thread but holds the GIL while it encodes, so its cost is the event
    loop's too. Most of it is the identity, the same for every request of a connection: its
    JSON is cached, for maps of str keys and str, int or None values (looked up with the values'
    types, so that ``True`` does not pass for ``1``; a float, ``-0.0`` for ``0.0``, is never cached).
    """

    def __init__(self) -> None:
        self._identities: dict[tuple[tuple[Any, ...], ...], str] = {}

    def __call__(self, entry: _Entry, seq: int, prev: str) -> bytes:
        when, identity, method, credential, outcome, print_, detail, count = entry
        if type(when) is not float or not math.isfinite(when) or type(count) is not int:
            return _slow_encode(entry, seq, prev)
        try:
            who = self.identity(identity)
        except (TypeError, ValueError):
            return _slow_encode(entry, seq, prev)
        return (
            f'{{"time":{when!r},"identity":{who},"method":{_string(method)},"credential":{_text(credential)},'
            f'"outcome":{_string(outcome)},"count":{count},"fingerprint":{_text(print_)},"detail":{_text(detail)},'
            f'"seq":{seq},"prev":"{prev}"}}\n'
        ).encode("ascii")

    def identity(self, identity: dict[str, Any]) -> str:
        """The identity's JSON (cached); TypeError or ValueError when json cannot encode it."""
        keys, values = tuple(identity), tuple(identity.values())
        key = (keys, values, tuple(map(type, values)))
        try:
            cached = self._identities.get(key)
        except TypeError:  # an unhashable value (a list): not cached
            return _JSON.encode(identity)
        if cached is None:
            cached = _JSON.encode(identity)
            if _VALUE_TYPES.issuperset(key[2]) and all(type(k) is str for k in keys):
                if len(self._identities) >= 256:
                    self._identities.clear()
                self._identities[key] = cached
        return cached


@dataclass(frozen=True)
class _Tail:
    seq: int
    hash: str


class AuditLog:
    """The daemon's audit log: :meth:`record` queues, :meth:`flush` and :meth:`run` write.

    ``blocking`` runs :meth:`flush` for :meth:`run` (``trio.to_thread.run_sync`` unless a
    test runs it inline). Thread-safe: :meth:`record` may be called from any thread.

    Raises:
        ValueError: ``max_bytes`` under 4096 or ``keep`` under 1. Never an I/O error: a
            log that cannot be read or written at start is counted in :attr:`write_errors`
            and tried again at each flush.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        keep: int = DEFAULT_KEEP,
        clock: Callable[[], float] = time.time,
        blocking: Callable[[Callable[[], None]], Awaitable[None]] | None = None,
        own_uid: int | None = None,
        budget: Budget = DEFAULT_BUDGET,
    ) -> None:
        if max_bytes < 4096:
            raise ValueError("max_bytes must be at least 4096")
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self._clock = clock
        self._blocking = blocking
        self._head = head_path(self.path)
        self._own_uid = os.getuid() if own_uid is None else own_uid
        self._half_queue = MAX_QUEUED // 2  # where other uids' lines stop
        self._budgets = Budgets(self._own_uid, budget)
        self._rotated: Rotated | None = None  # what rotation deleted so far, as the head says
        self._encode = _Encoder()
        # Appended to by record() and emptied from the left by flush(), without a lock: deque's
        # append and popleft are each atomic. The lock guards the dropped count only.
        self._queue: deque[_Entry] = deque()
        self._queue_lock = threading.Lock()
        self._dropped = 0
        #: Lines dropped since the daemon started (the metrics' counter; ``_dropped`` restarts
        #: once the log has said how many it lost).
        self.dropped_total = 0
        self._write_lock = threading.Lock()
        self._unwritten: list[_Entry] = []  # taken from the queue, not yet on disk
        self._attempt_seq: int | None = None  # the seq the first of them was given last time
        self._errors = 0
        self._failing = False
        self._record_failed = False
        self._tail: _Tail | None = None  # None: read the end of the log before writing
        with self._write_lock:
            try:
                self._tail = self._recover()
            except OSError as exc:
                self._failed(exc)

    # -- the daemon's side ------------------------------------------------------------------

    def record(
        self,
        *,
        identity: dict[str, Any],
        method: str,
        credential: str | None,
        outcome: str,
        fingerprint: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Queue one line. Never blocks, never raises (an I/O failure is logged once and counted).

        ``identity`` is kept as given, not copied (this is the hot path of every request): pass
        a map that nobody changes afterwards. ``fingerprint`` must be :func:`fingerprint`'s
        output, never a token. ``method``, ``credential`` and ``detail`` are cut to 200 characters.
        Folding and the budget of other uids are the flush's work, not this one's.
        """
        try:
            if type(identity) is not dict:  # the encoder reads it as one, later, in another thread
                raise TypeError(f"identity must be a dict, not {type(identity).__name__}")
            queued = len(self._queue) + len(self._unwritten)
            if queued >= self._half_queue and (queued >= MAX_QUEUED or identity.get("uid") != self._own_uid):
                with self._queue_lock:  # other uids stop at half: the rest is the owner's
                    self._dropped += 1
                    self.dropped_total += 1
                return
            self._queue.append(
                (self._clock(), identity, str(method)[:_MAX_TEXT], _short(credential), str(outcome),
                 _short(fingerprint), _short(detail), 1)
            )  # fmt: skip
        except Exception:  # a caller's odd argument must not break an answer
            with self._queue_lock:
                self._dropped += 1
                self.dropped_total += 1
            if not self._record_failed:
                self._record_failed = True
                log.exception("an audit entry could not be queued (counted as dropped; logged once)")

    def flush(self) -> None:
        """Write everything queued now (synchronous; called at lock and at stop).

        Folds identical entries and applies the budget of other uids first, adding the
        ``LINES_COUNTED`` lines it allows. Waits for a flush in progress in another thread.
        Never raises an I/O error: a failed write is logged (once until one succeeds
        again), counted, and retried later.
        """
        self._flush(final=False)

    def _flush(self, *, final: bool) -> None:
        with self._write_lock:
            entries, queue = self._unwritten, self._queue
            taken = [queue.popleft() for _ in range(len(queue))]
            if taken:
                entries.extend(self._budgets.admit(fold(taken, self._encode.identity)))
            if self._budgets.counting:
                entries.extend(self._budgets.summaries(self._clock(), final=final))
            if not entries and not self._dropped:
                return
            try:
                self._write(entries)
            except OSError as exc:
                self._failed(exc)
                return
            if self._failing:
                self._failing = False
                log.warning("the audit log %s is written again (%d failed attempts so far)", self.path, self._errors)

    async def run(
        self, *, interval: float = 1.0, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Flush at least every ``interval`` seconds until cancelled, then flush once more.

        Writes in a worker thread (trio.to_thread) so the event loop never waits on the disk.
        """
        if not interval > 0:
            raise ValueError("interval must be above 0")
        blocking = self._blocking or trio.to_thread.run_sync
        task_status.started()
        try:
            due = trio.current_time() + interval
            while True:
                await trio.sleep_until(due)
                if self._queue or self._unwritten or self._dropped or self._budgets.counting:
                    await blocking(self.flush)
                due = max(due + interval, trio.current_time())
        finally:
            with trio.CancelScope(shield=True):
                await blocking(self.flush)

    @property
    def write_errors(self) -> int:
        """Failed attempts to read or write the log (or its head) since start."""
        return self._errors

    @property
    def pending(self) -> int:
        """Lines waiting to be written (queued, or kept after a failed write)."""
        return len(self._queue) + len(self._unwritten)

    def close(self) -> None:
        """Flush, with every count still untold (``final``). Nothing stays open between flushes."""
        self._flush(final=True)
        if self._queue:  # a LINES_MISSING line that the last rotation queued
            self._flush(final=True)

    # -- writing (under the write lock) -----------------------------------------------------

    def _lost(self, count: int) -> _Entry:
        identity = {"uid": self._own_uid, "pid": os.getpid()}
        detail = f"{count} audit lines were dropped: the queue of lines not yet written was full"
        return (self._clock(), identity, "audit", None, "LINES_DROPPED", None, detail, count)

    def _failed(self, exc: OSError) -> None:
        self._errors += 1
        self._tail = None
        if not self._failing:
            self._failing = True
            log.error(
                "cannot write the audit log %s: %s; lines wait in memory (up to %d) and each flush tries again",
                self.path, exc.strerror or exc, MAX_QUEUED,
            )  # fmt: skip

    def _write(self, entries: list[_Entry]) -> None:
        """Append ``entries`` (the list in ``_unwritten``), rotating as needed, then the head."""
        if self._tail is None:
            tail = self._recover()
            if self._attempt_seq is not None:  # a failed write may have landed some of them
                landed = max(0, min(len(entries), tail.seq - self._attempt_seq + 1))
                del entries[:landed]
            self._tail = tail
        with self._queue_lock:
            dropped, self._dropped = self._dropped, 0
        if dropped:  # said once the log can be written again
            entries.append(self._lost(dropped))
        tail = self._tail
        self._attempt_seq = tail.seq + 1
        lines: list[bytes] = []
        hashes: list[str] = []
        prev = tail.hash
        for offset, entry in enumerate(entries, start=1):
            raw = self._encode(entry, tail.seq + offset, prev)
            if offset % _GIL_SLICE == 0:
                time.sleep(0)  # lets the event loop's thread take the GIL
            prev = sha256_hex(raw)
            lines.append(raw)
            hashes.append(prev)
        ensure_private_dir(self.path.parent)
        done = 0
        while done < len(lines):
            fd = self._open()
            try:
                size = total = os.fstat(fd).st_size
                take = done
                while take < len(lines) and (total == 0 or total + len(lines[take]) <= self.max_bytes):
                    total += len(lines[take])
                    take += 1
                if take > done:
                    data = memoryview(b"".join(lines[done:take]))
                    while data:
                        data = data[os.write(fd, data) :]
                    os.fsync(fd)
            finally:
                os.close(fd)
            if size == 0 and take > done:
                fsync_dir(self.path.parent)  # a new file's name must survive a power loss too
            if take > done:
                self._tail = _Tail(tail.seq + take, hashes[take - 1])
                self._attempt_seq = self._tail.seq + 1
                del entries[: take - done]
                done = take
            if done < len(lines):
                self._rotate()
        self._write_head()

    def _write_head(self) -> None:
        assert self._tail is not None
        write_atomic(self._head, Head(self._tail.seq, self._tail.hash, self._rotated).to_bytes())

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.path, flags, 0o600)
        try:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
        except OSError:
            os.close(fd)
            raise
        return fd

    def _numbered(self, number: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{number}")

    def _rotate(self) -> None:
        """audit.log.(keep-1) -> audit.log.keep, ..., audit.log -> audit.log.1; older ones go.

        What goes is added to the head's ``rotated`` and the head written first: a crash in
        between leaves a head that says a little too much (``verify`` allows that), never less.
        """
        doomed = [stale for number, stale in reversed(rotated_files(self.path)) if number >= self.keep]
        for stale in doomed:
            with contextlib.suppress(FileNotFoundError):
                self._note_rotated(stale)
        if doomed:
            self._write_head()
        for number in range(self.keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self._numbered(number), self._numbered(number + 1))
        os.replace(self.path, self._numbered(1))
        for number, stale in rotated_files(self.path):
            if number > self.keep:
                stale.unlink(missing_ok=True)
        fsync_dir(self.path.parent)

    def _note_rotated(self, stale: Path) -> None:
        """Add what ``stale`` holds to the head's ``rotated``; lines missing before it get a line."""
        first, last = line_ends(stale)
        if last is None:
            log.warning("%s is about to be rotated away, but its last line is not valid: not recorded", stale)
            return
        before = self._rotated
        seq = first[0] if first is not None and first[0] <= last[0] else last[0]
        gone = Rotated(seq, last[0], first[1] if first is not None else None, last[1], last[2])
        if before is None:
            self._rotated = gone
        elif gone.last_seq > before.last_seq:
            self._rotated = before.merged(gone)
            if gone.first_seq > before.last_seq + 1:  # deleted by hand: said in the chain, for good
                detail = (f"lines {before.last_seq + 1}..{gone.first_seq - 1} were gone before rotation reached "
                          "them: deleted by something else")  # fmt: skip
                self._queue.append((self._clock(), {"uid": self._own_uid, "pid": os.getpid()}, "audit", None,
                                    "LINES_MISSING", None, detail, 1))  # fmt: skip
                log.warning("audit: %s", detail)

    def _recover(self) -> _Tail:
        """Where the chain goes on: the last complete line, after cutting off a torn one."""
        directory = self.path.parent
        ensure_private_dir(directory)
        remove_stale_temps(directory, (self._head.name,))
        head: Head | None = None
        try:
            head = parse_head(self._head.read_bytes())
            self._rotated = head.rotated
        except FileNotFoundError:
            pass
        except ValueError as exc:
            log.warning("%s is not a valid audit head (%s); 'vaultctl audit verify' will say so", self._head, exc)
        line = self._repair()
        if line is None:
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(self._numbered(1), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                try:
                    line = last_line(fd, os.fstat(fd).st_size)[1]
                finally:
                    os.close(fd)
        if line is not None and not self._head.exists():
            log.warning("%s is missing but the audit log has lines: it was deleted", self._head)
        if line is None:
            if head is None:
                write_atomic(self._head, Head(0, GENESIS).to_bytes())
                return _Tail(0, GENESIS)
            if head.seq > 0:
                log.warning("no audit log is left in %s, but %s counts %d lines: the log was deleted",
                            directory, self._head.name, head.seq)  # fmt: skip
            return _Tail(head.seq, head.hash)
        seq = 0
        try:
            seq = int(json.loads(line)["seq"])
        except (ValueError, TypeError, KeyError):
            log.warning("the last line of the audit log is not a valid entry; 'vaultctl audit verify' will say more")
        if head is not None and head.seq > seq:
            log.warning(
                "%s counts %d lines but the audit log ends at seq %d: lines were removed from its end; "
                "the next line's seq continues from the head, so 'vaultctl audit verify' keeps reporting it",
                self._head.name, head.seq, seq,
            )  # fmt: skip
            seq = head.seq
        return _Tail(seq, sha256_hex(line))

    def _repair(self) -> bytes | None:
        """Cut a torn last line off audit.log; its last complete line, or None if it has none."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            end, line = last_line(fd, size)
            if end < size:
                log.warning(
                    "the audit log %s ended with an incomplete line (%d bytes, a write cut short by a crash "
                    "or power loss): cut off at the last complete line",
                    self.path, size - end,
                )  # fmt: skip
                os.ftruncate(fd, end)
                os.fsync(fd)
            return line
        finally:
            os.close(fd)
