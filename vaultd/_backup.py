"""Backup and restore of the vault file, and the hold a restored copy puts on rotating credentials.

A backup is the live vault file's bytes, copied by the daemon under its write lock (so it is
exactly the newest write), written to the operator's path (0600, never through a symbolic
link, never over an existing file unless forced, and then only over a vault file), then read
back and opened with the data key in memory, every record parsed: no decrypted byte leaves the
daemon. Its fingerprint is the SHA-256 of the whole file (header and sealed body), the same as
``sha256sum FILE`` prints.

A restore (vault LOCKED or not created yet) first needs the passphrase of the vault there, if
one is (any process of the user may lock it: the backup's own passphrase must not be enough to
replace it), then checks the file whole before anything changes: format, the backup's
passphrase, the sealed body, every record and credential name. Then it keeps the vault replaced
as ``vault.pre-restore-<UTC time>`` (no later write rotates it away) and writes the file, as it
is, as the vault (``vault.bak`` keeping the old one too) at a generation above every one recorded,
so the next unlock does not refuse it as a rollback: the operator asked for it. Every
credential whose upstream may rotate refresh tokens (:func:`needs_hold`) is sealed ON_HOLD in
the restored file: a copy of a refresh token that the live vault may have rotated since must
never be presented while the live copy runs, or the provider's reuse detection revokes both.
The hold is part of the credential's sealed record, so it survives locks and restarts; it ends
with ``credential.release`` (:meth:`VaultBackup.release`), a new login (:meth:`VaultBackup.clear_hold`)
or a replacement of the credential.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import trio

from vaultd_protocol import ErrorCode

from . import _vaultfile
from ._atomic import NotDurable, StorageError, write_atomic
from ._credentials import Credential, utc_text
from ._errors import RpcError
from ._opened import BadRecordName, OpenVault, new_audit_key, read_body, sealed_body
from ._renewer import Renewer
from ._rollback import GenerationRecords
from ._sealing import OpenFailed
from ._secret import Secret
from ._throttle import FailureDelay
from ._upstream import UpstreamConfig

__all__ = ["MAX_VAULT_BYTES", "VaultBackup", "fingerprint", "needs_hold"]

log = logging.getLogger("vaultd.vault")

#: The largest file ``restore`` reads (a vault holds a few kilobytes per credential).
MAX_VAULT_BYTES = 64 * 1024 * 1024
#: Kinds whose renewal never presents a secret that upstream rotates: never held.
_NEVER_HELD = frozenset({"static", "jwt", "sign", "keepalive"})
#: How long ``backup --lock`` waits at a time for a renewal in flight to be written.
_RENEWAL_WAIT = 60.0
#: Names in the vault's folder a backup must not take.
_LIVE_NAMES = ("vault", "vault.bak", "vault.generation")
#: The vault a restore replaced is kept under this name plus the UTC time (never overwritten).
PRE_RESTORE = "vault.pre-restore-"


def needs_hold(record: Mapping[str, Any]) -> bool:
    """Whether a restored credential's sealed record is put on hold.

    Conservative: held unless its kind is known never to present a rotating secret. ``static``,
    ``jwt`` and ``sign`` call nothing upstream to renew; ``keepalive`` keeps a session handle
    created afresh with a fixed API key; ``oauth2`` with ``grant_type: client_credentials``
    and no refresh token authenticates with its client credentials only. Every other ``oauth2``
    (a refresh token, whatever the grant or dialect), every ``exec`` (its command may refresh
    a token it keeps elsewhere) and any kind this version does not know is held.
    """
    kind = record.get("kind")
    if kind in _NEVER_HELD:
        return False
    config = record.get("config")
    if kind == "oauth2" and isinstance(config, Mapping):
        return not (config.get("grant_type") == "client_credentials" and not config.get("refresh_token"))
    return True


def hold_reason(name: str, now: float) -> str:
    """What ``status`` shows for a credential put on hold by a restore."""
    return (
        f"restored from a backup on {utc_text(now)}: run 'vaultctl release {name}' once the live copy is "
        "stopped (or log in again)"
    )


def fingerprint(data: bytes) -> str:
    """The fingerprint of a vault file: SHA-256 of all its bytes, hex (as ``sha256sum`` prints)."""
    return hashlib.sha256(data).hexdigest()


class VaultBackup:
    """``vault.backup``, ``vault.restore``, ``credential.release`` (``_vault.Vault`` defines what is declared)."""

    path: Path
    backup: Path
    _lock: trio.Lock
    _write_lock: trio.Lock
    _open: OpenVault | None
    _epoch: int
    _initialized: bool
    _generation: int
    _kdf_profile: str | None
    _credentials: dict[str, Credential]
    _upstream_configs: dict[str, UpstreamConfig]
    _renewer: Renewer | None
    _records: GenerationRecords
    _delay: FailureDelay
    _clock: Callable[[], float]
    _blocking: Callable[..., Awaitable[Any]]
    _admin: Callable[[Secret], Awaitable[tuple[OpenVault, int]]]
    _write: Callable[..., Awaitable[None]]
    _on_change: Callable[[], None]
    last_write_error: str | None
    lock: Callable[[], None]

    def missing_vault(self) -> str:
        """Why there is no vault, and what to do (a lone ``vault.bak`` says how to restore it)."""
        if self.backup.exists() and not self.path.exists():
            return (
                f"no vault, but {self.backup} is there: restore it (mv {self.backup} {self.path}), then "
                "'vaultctl unlock --accept-rollback' (it is older than the last vault written)"
            )
        return "no vault yet: create one with 'vaultctl init'"

    # -- backup ----------------------------------------------------------------------------------

    async def backup_to(
        self, passphrase: Secret, target: Path, *, force: bool = False, then_lock: bool = False
    ) -> dict[str, Any]:
        """Write a verified copy of the vault file to ``target``; its generation and fingerprint.

        With ``then_lock`` the vault is locked at the moment of the copy, with no renewal in
        flight, so no refresh token can rotate after it: the copy is the last word (moving a
        vault to another host).

        Raises:
            RpcError: LOCKED, NOT_INITIALIZED, BAD_PASSPHRASE, INVALID_PARAMS (a relative path,
                a missing folder, a symbolic link, a folder or the vault's own file at it),
                ALREADY_EXISTS (a file is there and ``force`` is off), STORAGE_FAILED (not
                written, not durable, or it did not read back as written: nothing to keep).
        """
        async with self._lock:
            opened, epoch = await self._admin(passphrase)
            await self._blocking(self._check_target, target, force)  # a hung mount must not stall the loop
            # The copy, its write and its check finish together even if the caller leaves: a
            # backup half made would be a temp file left in the operator's folder.
            with trio.CancelScope(shield=True):
                data, key = await self._copy(opened, epoch, then_lock)
                header = opened.header
                try:
                    generation = await self._blocking(_write_and_verify, target, data, header, key, force)
                finally:
                    key.wipe()
        digest = fingerprint(data)
        log.info("backup written to %s (generation %d, sha256 %s)", target, generation, digest)
        return {
            "path": str(target),
            "generation": generation,
            "fingerprint": digest,
            "bytes": len(data),
            "locked": then_lock,
        }

    async def _copy(self, opened: OpenVault, epoch: int, then_lock: bool) -> tuple[bytes, Secret]:
        """The vault file's bytes as last written, and a copy of the data key; with ``then_lock``,
        the vault locked with them, no renewal in flight (one is waited for, then tried again).

        Raises:
            RpcError: LOCKED (locked meanwhile), STORAGE_FAILED (the file cannot be read).
        """
        while True:
            async with self._write_lock:  # the newest write, not one half made
                if self._epoch != epoch or self._open is not opened:
                    raise RpcError(ErrorCode.LOCKED, "the vault was locked while this call ran")
                try:
                    data = await self._blocking(self.path.read_bytes)
                except OSError as exc:
                    raise RpcError(ErrorCode.STORAGE_FAILED, f"the vault file cannot be read: {exc}") from None
                if self._epoch != epoch or self._open is not opened:
                    raise RpcError(ErrorCode.LOCKED, "the vault was locked while this call ran")
                in_flight = [c.renewing for c in self._credentials.values() if c.renewing is not None]
                if not then_lock or not in_flight:
                    key = Secret(opened.data_key.reveal())  # the lock below wipes the vault's own
                    if then_lock:  # no checkpoint since the check: nothing can have started
                        log.info("the vault locks with its backup: nothing renews after the copy")
                        self.lock()
                    return data, key
            with trio.move_on_after(_RENEWAL_WAIT):
                await in_flight[0].wait()  # its rotated refresh token, if any, must be in the copy

    def _check_target(self, target: Path, force: bool) -> None:
        """Raises: RpcError: INVALID_PARAMS or ALREADY_EXISTS, as :meth:`backup_to` says."""
        _check_path(target)
        folder = target.parent
        if not folder.is_dir():
            raise RpcError(
                ErrorCode.INVALID_PARAMS,
                f"'path': the folder {folder} does not exist (or is not a folder): create it first "
                f"(mkdir -m 700 {folder})",
            )
        with contextlib.suppress(OSError):
            if folder.resolve() == self.path.parent.resolve() and (
                target.name in _LIVE_NAMES or target.name.startswith((".vault", PRE_RESTORE))
            ):
                raise RpcError(
                    ErrorCode.INVALID_PARAMS,
                    f"'path' {target} is one of the live vault's own files: write the backup elsewhere",
                )
        try:
            st = target.lstat()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise RpcError(ErrorCode.INVALID_PARAMS, f"'path' {target} cannot be checked: {exc.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            raise RpcError(
                ErrorCode.INVALID_PARAMS,
                f"'path' {target} is a symbolic link: vaultd never follows one; give the real path",
            )
        if not stat.S_ISREG(st.st_mode):
            raise RpcError(ErrorCode.INVALID_PARAMS, f"'path' {target} exists and is not a regular file")
        if not force:
            raise RpcError(
                ErrorCode.ALREADY_EXISTS, f"{target} exists: choose another name, or overwrite it with --force"
            )
        if not _is_vault_file(target):
            raise RpcError(
                ErrorCode.INVALID_PARAMS,
                f"'path' {target} exists and is not a vault file (it does not begin as one): 'force' replaces only "
                "an older backup, never another file; choose another name",
            )

    # -- restore ---------------------------------------------------------------------------------

    async def restore_from(
        self, passphrase: Secret, source: Path, backup_passphrase: Secret | None = None
    ) -> dict[str, Any]:
        """Make the backup at ``source`` the vault, after checking it whole; the vault stays LOCKED.

        With a vault there, ``passphrase`` must open it, checked (through the failure delay)
        before ``source`` is even opened; the backup must open with ``backup_passphrase``
        (default: ``passphrase``). The file is installed as it is: it opens with the passphrase
        that opened the backup. The vault replaced is kept as ``vault.pre-restore-<UTC time>``.

        Raises:
            RpcError: INVALID_PARAMS (the vault is unlocked; a relative path; a file that is not
                a whole vault this version can read), BAD_PASSPHRASE (after the failure delay:
                ``'passphrase'`` or ``'backup_passphrase'`` at the start of the message says which),
                STORAGE_FAILED (not written: the vault is as it was; or written, not durable).
        """
        async with self._lock:
            if self._open is not None:
                raise RpcError(
                    ErrorCode.INVALID_PARAMS,
                    "the vault is unlocked: lock it first ('vaultctl lock'; engines are refused until the next "
                    "unlock), then restore",
                )
            current = await self._check_current(passphrase)
            _check_path(source)
            data = await self._blocking(_read_vault_file, source)
            try:
                header, end = _vaultfile.read_header(data)
            except _vaultfile.VaultFormatError as exc:
                raise RpcError(ErrorCode.INVALID_PARAMS, f"{source} cannot be restored: {exc}") from None
            opens_with = passphrase if backup_passphrase is None else backup_passphrase
            data_key = await self._unwrap(
                header,
                opens_with,
                f"'backup_passphrase': {source} does not open with "
                + ("it" if backup_passphrase is not None else "the vault's passphrase")
                + " (a backup taken before 'vaultctl passwd' opens with the passphrase of its day: give that "
                "as the backup's passphrase)",
            )
            changed = current is not None and not hmac.compare_digest(opens_with.reveal(), passphrase.reveal())
            try:
                result = await self._restore_checked(source, data, header, end, data_key, current=current)
            finally:
                data_key.wipe()
            result["passphrase_changed"] = changed
            return result

    async def _unwrap(self, header: _vaultfile.Header, passphrase: Secret, refused: str) -> Secret:
        """The data key ``passphrase`` unwraps from ``header``, through the daemon-wide failure delay.

        Raises:
            RpcError: BAD_PASSPHRASE saying ``refused`` (which passphrase, and what to give instead).
        """
        try:
            key: Secret = await self._delay.check(self._blocking, _vaultfile.unwrap, header, passphrase)
        except RpcError as exc:
            if exc.code is not ErrorCode.BAD_PASSPHRASE:
                raise
            raise RpcError(ErrorCode.BAD_PASSPHRASE, refused) from None
        return key

    async def _check_current(self, passphrase: Secret) -> bytes | None:
        """The vault file there now, once ``passphrase`` opens it (None: there is none).

        A file that is not a readable vault (VAULT_DAMAGED) cannot check a passphrase: it is
        returned unchecked, so that a backup can replace it (it is kept as the pre-restore copy).

        Raises:
            RpcError: BAD_PASSPHRASE (after the failure delay), STORAGE_FAILED (unreadable).
        """
        try:
            data: bytes = await self._blocking(self.path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RpcError(
                ErrorCode.STORAGE_FAILED, f"the vault there now cannot be read ({exc.strerror}): nothing restored"
            ) from None
        try:
            header, _ = _vaultfile.read_header(data)
        except _vaultfile.VaultFormatError as exc:
            log.warning("the vault replaced by this restore is damaged (%s): no passphrase can check it", exc)
            return data
        key = await self._unwrap(
            header,
            passphrase,
            "'passphrase' does not open the vault there now: a restore replaces a vault only with its "
            "passphrase (the backup's, if another, goes in 'backup_passphrase')",
        )
        key.wipe()
        return data

    async def _restore_checked(
        self,
        source: Path,
        data: bytes,
        header: _vaultfile.Header,
        end: int,
        data_key: Secret,
        *,
        current: bytes | None,
    ) -> dict[str, Any]:
        """With the passphrases checked: open the body, check every record, keep ``current`` (the
        vault replaced), hold, write."""
        try:
            body = _vaultfile.decode_body(data, end, data_key)
        except (OpenFailed, _vaultfile.VaultFormatError):
            raise RpcError(
                ErrorCode.INVALID_PARAMS,
                f"{source} cannot be restored: it opens with this passphrase, but its sealed body is damaged "
                "or cut off",
            ) from None
        try:
            read_body(body).wipe()  # every record parses, or nothing is restored
        except BadRecordName as exc:
            raise RpcError(ErrorCode.INVALID_PARAMS, f"{source} cannot be restored: {exc}") from None
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise RpcError(
                ErrorCode.INVALID_PARAMS,
                f"{source} cannot be restored: it holds a record this version cannot read ({type(exc).__name__})",
            ) from None
        now = self._clock()
        held = []
        for name, record in sorted(body["credentials"].items()):
            if record.get("hold") is None and needs_hold(record):
                record["hold"] = hold_reason(name, now)
            if record.get("hold") is not None:
                held.append(name)
        audit_key = body.get("audit_key") or new_audit_key()
        body["audit_key"] = audit_key
        body.pop("version", None)
        newest = await self._blocking(self._records.newest, audit_key)
        replaced = self._generation if current is not None else None
        generation = max(header.generation, self._generation, newest) + 1
        previous = None if current is None else await self._blocking(_keep_previous, self.path, current, now)
        durable = True
        async with self._write_lock:
            try:
                await self._write(header, data_key, body, generation=generation)
            except NotDurable:
                durable = False
        self._initialized = True
        self._kdf_profile = header.kdf.profile_name()
        self._on_change()
        accepted = (
            f"restored {source} (generation {header.generation}"
            + ("" if replaced is None else f"; the vault replaced was at generation {replaced}, kept as {previous}")
            + f"), written as generation {generation}; on hold: {', '.join(held) or 'none'}"
        )
        log.warning("rollback accepted by the operator: %s", accepted)
        if not durable:
            raise RpcError(
                ErrorCode.STORAGE_FAILED,
                f"the backup was restored, but it may not survive a power loss: {self.last_write_error}",
            )
        return {
            "path": str(source),
            "generation": generation,
            "restored_generation": header.generation,
            "fingerprint": fingerprint(data),
            "held": held,
            "previous": None if previous is None else str(previous),
            "rollback_accepted": accepted,
        }

    # -- holds -----------------------------------------------------------------------------------

    async def release(self, passphrase: Secret, name: str) -> dict[str, Any]:
        """End the hold on ``name`` (the operator checked the live copy is stopped); renew it now.

        Raises:
            RpcError: LOCKED, NOT_INITIALIZED, BAD_PASSPHRASE, UNKNOWN_CREDENTIAL, INVALID_PARAMS
                (it is not on hold), STORAGE_FAILED.
        """
        async with self._lock:
            await self._admin(passphrase)
            credential = self._credentials.get(name)
            if credential is None:
                raise RpcError(ErrorCode.UNKNOWN_CREDENTIAL, f"no credential named {name!r}")
            if credential.hold is None:
                raise RpcError(ErrorCode.INVALID_PARAMS, f"credential {name!r} is not on hold")
            await self.clear_hold(name)
            return credential.describe(self._clock())

    async def clear_hold(self, name: str) -> bool:
        """End the hold on ``name`` without a passphrase (for a caller that checked one, or a new
        login that just replaced the refresh token): sealed first, then renewed. Whether it was held.

        Raises:
            RpcError: LOCKED, UNKNOWN_CREDENTIAL, STORAGE_FAILED (not saved: still held; or saved,
                not durable: released).
        """
        opened, epoch = self._open, self._epoch
        if opened is None:
            raise RpcError(ErrorCode.LOCKED, "the vault is locked")
        credential = self._credentials.get(name)
        if credential is None:
            raise RpcError(ErrorCode.UNKNOWN_CREDENTIAL, f"no credential named {name!r}")
        if credential.hold is None:
            return False
        durable = True
        async with self._write_lock:
            if self._epoch != epoch or self._credentials.get(name) is not credential:
                raise RpcError(ErrorCode.LOCKED, "the vault was locked while this call ran")
            body = sealed_body(opened, self._credentials, self._upstream_configs)
            body["credentials"][name].pop("hold", None)  # released in the file before in memory
            try:
                await self._write(opened.header, opened.data_key, body, generation=self._generation + 1)
            except NotDurable:
                durable = False
            credential.hold = None
        log.warning("credential %r released from its hold by the operator: it renews now", name)
        self._on_change()
        if self._renewer is not None and self._epoch == epoch:
            self._renewer.start(credential)
        if not durable:
            raise RpcError(
                ErrorCode.STORAGE_FAILED,
                f"released, but the release may not survive a power loss: {self.last_write_error}",
            )
        return True


def _check_path(path: Path) -> None:
    """Raises: RpcError: INVALID_PARAMS: ``path`` is relative, or holds a NUL byte."""
    if "\x00" in str(path):
        raise RpcError(ErrorCode.INVALID_PARAMS, "'path' must not hold a NUL byte")
    if not path.is_absolute():
        raise RpcError(ErrorCode.INVALID_PARAMS, f"'path' must be absolute, not {str(path)[:200]!r}")


def _is_vault_file(path: Path) -> bool:
    """Whether the regular file at ``path`` begins with the vault magic (blocking; never follows a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, len(_vaultfile.MAGIC)) == _vaultfile.MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


def _read_vault_file(source: Path) -> bytes:
    """The bytes of a regular file of at most :data:`MAX_VAULT_BYTES` (blocking).

    Raises:
        RpcError: INVALID_PARAMS: missing, unreadable, not a regular file, or too large.
    """
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise RpcError(ErrorCode.INVALID_PARAMS, f"'path' {source} cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RpcError(ErrorCode.INVALID_PARAMS, f"'path' {source} is not a regular file")
        if st.st_size > MAX_VAULT_BYTES:
            raise RpcError(
                ErrorCode.INVALID_PARAMS, f"'path' {source} is larger than a vault may be ({MAX_VAULT_BYTES} bytes)"
            )
        with os.fdopen(os.dup(fd), "rb") as file:
            data = file.read(MAX_VAULT_BYTES + 1)
    except OSError as exc:
        raise RpcError(ErrorCode.INVALID_PARAMS, f"'path' {source} cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_VAULT_BYTES:
        raise RpcError(ErrorCode.INVALID_PARAMS, f"'path' {source} is larger than a vault may be")
    return data


def _keep_previous(vault: Path, data: bytes, now: float) -> Path:
    """Keep ``data`` (the vault a restore replaces) as ``vault.pre-restore-<UTC time>`` beside it
    (0600, never overwritten: a name taken gets a suffix); its path (blocking).

    Raises:
        RpcError: STORAGE_FAILED: not kept (durably), so nothing is restored.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    for attempt in range(100):
        kept = vault.with_name(f"{PRE_RESTORE}{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            write_atomic(kept, data, overwrite=False)
        except StorageError as exc:
            if exc.errno == errno.EEXIST:
                continue
            raise RpcError(
                ErrorCode.STORAGE_FAILED, f"the vault there now could not be kept ({exc}): nothing restored"
            ) from None
        except NotDurable as exc:
            raise RpcError(
                ErrorCode.STORAGE_FAILED, f"the vault there now was not kept durably ({exc}): nothing restored"
            ) from None
        log.warning("the vault a restore replaces is kept as %s", kept)
        return kept
    raise RpcError(ErrorCode.STORAGE_FAILED, f"no free name for {PRE_RESTORE}{stamp}: nothing restored")


def _write_and_verify(target: Path, data: bytes, header: _vaultfile.Header, data_key: Secret, force: bool) -> int:
    """Write ``data`` (a vault file) at ``target``, read it back and open it; its generation (blocking).

    Raises:
        RpcError: ALREADY_EXISTS (created meanwhile), STORAGE_FAILED (not written, not durable,
            or not read back whole and opening: then it is removed).
    """
    try:
        write_atomic(target, data, overwrite=force)
    except NotDurable as exc:
        message = f"the backup was written, but may not survive a power loss: {exc}"
        raise RpcError(ErrorCode.STORAGE_FAILED, message) from None
    except StorageError as exc:
        if exc.errno == errno.EEXIST:
            raise RpcError(ErrorCode.ALREADY_EXISTS, f"{target} exists: choose another name, or --force") from None
        raise RpcError(ErrorCode.STORAGE_FAILED, f"the backup was not written: {exc}") from None
    try:
        _verify(target, data, header, data_key)
    except RpcError:
        with contextlib.suppress(OSError):
            target.unlink()
        raise
    written, _ = _vaultfile.read_header(data)
    return written.generation


def _verify(target: Path, data: bytes, header: _vaultfile.Header, data_key: Secret) -> None:
    """Read ``target`` back: the same bytes, a header the passphrase opens, a body every record of
    which parses under the data key in memory (no second KDF run).

    Raises:
        RpcError: STORAGE_FAILED, saying what did not match.
    """
    try:
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as file:
            back = file.read(len(data) + 1)
    except OSError as exc:
        raise RpcError(ErrorCode.STORAGE_FAILED, f"the backup cannot be read back: {exc.strerror}") from None
    if not hmac.compare_digest(hashlib.sha256(back).digest(), hashlib.sha256(data).digest()):
        raise RpcError(ErrorCode.STORAGE_FAILED, "the backup did not read back as written: it was removed")
    try:
        written, end = _vaultfile.read_header(back)
        if (written.kdf, written.wrapped_key) != (header.kdf, header.wrapped_key):
            raise RpcError(
                ErrorCode.STORAGE_FAILED,
                "the vault file changed under the daemon (not sealed under this passphrase): no backup kept",
            )
        read_body(_vaultfile.decode_body(back, end, data_key), skip_bad_names=True).wipe()
    except (_vaultfile.VaultFormatError, OpenFailed, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise RpcError(
            ErrorCode.STORAGE_FAILED, f"the backup does not open as a vault ({type(exc).__name__}): it was removed"
        ) from None
