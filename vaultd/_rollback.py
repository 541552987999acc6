"""The rollback guard: the highest vault generation seen, recorded outside the vault file.

A restored backup or a copied-back file is a valid vault: it opens with the passphrase and
authenticates, so by itself it cannot tell that a newer one was written since (a tighter
policy, a removed credential, a rotated refresh token). So every durable vault write is
followed by a small record of its generation, ``vault.generation`` beside the vault (and a
second copy in the daemon's state folder, beside the audit log, when there is one), and at
unlock a vault older than the newest record is refused (``ROLLBACK``) unless the operator
accepts it.

Record format: one line of ASCII JSON, ``{"format": 1, "generation": N, "mac": H}``, where
``H`` is the hex HMAC-SHA256 of ``b"vaultd generation record\\x00" + N`` (8 bytes, big
endian) under a record key. The record key is HMAC-SHA256(audit key, ``b"vaultd generation
record key v1"``): the audit key is a random 32-byte key sealed inside the vault body, kept
across ``vault.rekey``, so the record needs no key of its own, survives a passphrase change
(and a crash between the vault write and the record write during one), and cannot be forged
without opening the vault. A record that does not authenticate was altered, or belongs to
another vault: it is reported, never silently replaced.

Files 0600 in 0700 folders, written with ``_atomic.write_atomic``; a record write that fails
is logged and never fails the vault write before it (a record that lags is safe: it only
makes the check weaker by that much). No trio here: the vault calls these in a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vaultd_protocol import ErrorCode

from ._atomic import StorageError, ensure_private_dir, remove_stale_temps, write_atomic
from ._errors import RpcError

__all__ = ["RECORD_NAME", "GenerationRecords", "Verdict", "record_key"]

log = logging.getLogger("vaultd.vault")

#: The record's name beside the vault file.
RECORD_NAME = "vault.generation"
_FORMAT = 1
_KEY_CONTEXT = b"vaultd generation record key v1"
_MAC_CONTEXT = b"vaultd generation record\x00"
#: A record is a few dozen bytes; anything longer is not one (read no more than this).
_MAX_RECORD = 256


def record_key(audit_key: bytes) -> bytes:
    """The key that authenticates generation records, derived from the vault's audit key."""
    return hmac.new(audit_key, _KEY_CONTEXT, hashlib.sha256).digest()


def _mac(key: bytes, generation: int) -> str:
    return hmac.new(key, _MAC_CONTEXT + generation.to_bytes(8, "big"), hashlib.sha256).hexdigest()


def encode(key: bytes, generation: int) -> bytes:
    """One record's bytes."""
    record = {"format": _FORMAT, "generation": generation, "mac": _mac(key, generation)}
    return json.dumps(record, separators=(",", ":")).encode("ascii") + b"\n"


def decode(key: bytes, data: bytes) -> int:
    """The generation a record holds.

    Raises:
        ValueError: not a record of this format, or its MAC does not match under ``key``.
    """
    if len(data) > _MAX_RECORD:
        raise ValueError("too long to be a generation record")
    try:
        record = json.loads(data)
    except ValueError:
        raise ValueError("not a generation record (not JSON)") from None
    if not isinstance(record, dict) or record.get("format") != _FORMAT:
        raise ValueError("not a generation record of format 1")
    generation, mac = record.get("generation"), record.get("mac")
    if type(generation) is not int or not isinstance(mac, str) or not 0 <= generation < 2**63:
        raise ValueError("a generation record with a malformed field")
    if not hmac.compare_digest(mac.encode("ascii", "replace"), _mac(key, generation).encode("ascii")):
        raise ValueError("its MAC does not match this vault's key (altered, or another vault's record)")
    return generation


@dataclass
class Verdict:
    """What :meth:`GenerationRecords.check` decided about a vault it let through."""

    #: The generation the vault must be written at now (an accepted rollback), else None.
    rewrite_at: int | None = None
    #: For the audit log and the daemon log when a rollback was accepted, else "".
    accepted: str = ""


@dataclass
class GenerationRecords:
    """The records of one vault: ``paths[0]`` beside it, any others elsewhere (state folder)."""

    paths: Sequence[Path]
    #: The highest generation this process saw in a file it wrote or opened.
    highest_seen: int = 0
    _warned: set[Path] = field(default_factory=set, init=False, repr=False)

    @classmethod
    def for_vault(cls, vault_path: Path, elsewhere: Sequence[Path] = ()) -> GenerationRecords:
        """Records for ``vault_path``: beside it, and one in each folder of ``elsewhere``,
        named after the vault's folder (so vaults sharing a state folder stay apart)."""
        tag = hashlib.sha256(str(vault_path.parent.absolute()).encode()).hexdigest()[:16]
        others = [folder / f"vault-{tag}.generation" for folder in elsewhere if folder != vault_path.parent]
        return cls([vault_path.with_name(RECORD_NAME), *others])

    def check(self, found: int, audit_key: bytes | None, accept: bool) -> Verdict:
        """Decide whether a vault at generation ``found`` may be unlocked (blocking: reads files).

        ``audit_key`` is None for a vault written before audit keys existed: no record can have
        been made for it by this version, so one found means the file was replaced.

        Raises:
            RpcError: ROLLBACK: ``found`` is older than the newest record (or than a vault this
                process wrote or opened), or a record does not authenticate; not with ``accept``.
                The message says what was found and expected and how to accept it.
        """
        key = None if audit_key is None else record_key(audit_key)
        recorded, problems, missing = self._read(key)
        expected = max([self.highest_seen, *recorded.values()])
        if problems and not accept:
            where, why = problems[0]
            raise _refuse(
                f"the generation record {where} cannot be trusted: {why}. The vault file (generation "
                f"{found}) cannot be shown to be the newest. If you restored or replaced the vault on "
                "purpose, unlock with --accept-rollback to record it as the newest"
            )
        if found < expected and not accept:
            raise _refuse(
                f"the vault file holds generation {found}, but generation {expected} was written before: "
                "it was rolled back (a backup, vault.bak or an older copy was put in its place), so a "
                "tighter policy, a removed credential or a rotated refresh token may be undone. Put the "
                "newest vault file back, or accept this one with 'vaultctl unlock --accept-rollback'"
            )
        if found < expected or problems:
            what = f"generation {found} accepted" + (f"; {expected} was recorded" if found < expected else "")
            if problems:
                what += f"; untrusted record {problems[0][0].name} replaced"
            log.warning("rollback accepted by the operator: %s", what)
            return Verdict(rewrite_at=max(expected, found) + 1, accepted=what)
        self.highest_seen = found
        if found > min(recorded.values(), default=-1) or missing:
            if recorded and missing:
                log.warning("generation record %s was missing: written again", ", ".join(map(str, missing)))
            if audit_key is not None:
                self.write(found, audit_key)
            else:
                log.info("this vault predates generation records: the next write starts them")
        return Verdict()

    def write(self, generation: int, audit_key: bytes) -> None:
        """Record ``generation`` everywhere, keyed by the vault's ``audit_key``; log, never
        raise, on failure (blocking). Call only once the vault file at ``generation`` is durable.

        The newest durable write is the highest generation there is, also when it is lower than
        what was recorded before: only ``vault.init`` writes a lower one, for a new vault."""
        self.highest_seen = generation
        data = encode(record_key(audit_key), generation)
        for path in self.paths:
            try:
                ensure_private_dir(path.parent, tighten=False)
                write_atomic(path, data)
            except (StorageError, OSError) as exc:
                if path not in self._warned:
                    self._warned.add(path)
                    log.error("cannot write the generation record %s: %s (rollback checks weaken)", path, exc)
            else:
                self._warned.discard(path)

    def newest(self, audit_key: bytes) -> int:
        """The highest generation recorded under ``audit_key``'s record key, or seen by this
        process (blocking: reads the records, writes nothing). Records of another vault count
        for nothing here: the next :meth:`write` replaces them."""
        recorded, _, _ = self._read(record_key(audit_key))
        return max([self.highest_seen, *recorded.values()])

    def remove_stale_temps(self) -> None:
        """Delete temp files a crashed record write left (names ``_atomic`` makes only)."""
        for path in self.paths:
            with contextlib.suppress(OSError):
                remove_stale_temps(path.parent, (path.name,))

    def _read(self, key: bytes | None) -> tuple[dict[Path, int], list[tuple[Path, str]], list[Path]]:
        """Each record's generation, the records that cannot be trusted (and why), the missing ones."""
        recorded: dict[Path, int] = {}
        problems: list[tuple[Path, str]] = []
        missing: list[Path] = []
        for path in self.paths:
            try:
                with path.open("rb") as file:
                    data = file.read(_MAX_RECORD + 1)
            except FileNotFoundError:
                missing.append(path)
                continue
            except OSError as exc:
                problems.append((path, f"it cannot be read ({exc.strerror})"))
                continue
            if key is None:
                problems.append((path, "it exists, but the vault file predates generation records"))
                continue
            try:
                recorded[path] = decode(key, data)
            except ValueError as exc:
                problems.append((path, str(exc)))
        return recorded, problems, missing


def _refuse(message: str) -> RpcError:
    log.error("unlock refused: %s", message)
    return RpcError(ErrorCode.ROLLBACK, message)
