"""The vault's lifecycle: UNINITIALIZED, LOCKED, UNLOCKED, and every change to what it holds.

The one writer of the vault file. Slow work (Argon2id, file writes) runs in worker
threads; state changes happen on the trio thread. Passphrase checks are serialised under
one lock and pass the daemon's one gate (``_throttle``), so a failed passphrase costs a
growing delay that neither parallel guessing nor a cancelled request can skip;
file writes under another, so a rotated refresh token is never stuck behind that delay.
Each durable write is followed by its generation record, and unlock refuses a file older
than that record (``_rollback``).
Unlocking starts the renewer; locking stops it and never waits for either lock: it is the
emergency brake, and an operation in flight when the vault locked fails with LOCKED.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from vaultd_protocol import CredentialState, ErrorCode, KdfProfile, VaultState

from . import _vaultfile
from ._atomic import NotDurable, StorageError, write_atomic
from ._backup import VaultBackup
from ._credentials import ConfigError, Credential, from_config
from ._errors import RpcError
from ._login import Logins
from ._opened import OpenVault, new_audit_key, read_body, sealed_body
from ._providers.sign import Transit
from ._renewer import Renewer
from ._rollback import GenerationRecords, Verdict
from ._secret import Secret, scrub_freed_memory
from ._throttle import FailureDelay
from ._upstream import UpstreamConfig
from ._upstreams import Upstreams
from ._vault_admin import VaultAdmin
from ._vault_readers import VaultReaders
from ._watch import LOCKED, WatchHub

__all__ = ["FailureDelay", "Vault"]

log = logging.getLogger("vaultd.vault")


class Vault(VaultReaders, VaultBackup, VaultAdmin):
    """The in-memory vault and its file (``vault``, with ``vault.bak`` the previous one)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        nursery: trio.Nursery | None = None,
        clock: Callable[[], float] = time.time,
        failure_delay: FailureDelay | None = None,
        hub: WatchHub | None = None,
        renewer_options: dict[str, Any] | None = None,
        blocking: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync,
        on_change: Callable[[], None] | None = None,
        record_dirs: Sequence[Path] = (),
        transit: Transit | None = None,
    ) -> None:
        """``nursery`` runs the renewer while the vault is unlocked (required to unlock);
        ``clock`` is the wall clock; ``renewer_options`` go to :class:`Renewer`; ``blocking``
        runs the slow calls (KDF, file writes) off the event loop (tests on a virtual clock
        run them inline, so that time does not jump while a thread works); ``on_change`` is
        called (and must return at once) when the state, the credentials or one's renewal
        state may have changed: systemd's STATUS line follows it; ``record_dirs`` hold a copy
        of the generation record each, besides the one next to the vault (``_rollback``);
        ``transit`` signs for ``sign`` credentials whose key is in OpenBao transit (without
        it they answer UPSTREAM_UNAVAILABLE)."""
        self._blocking = blocking
        self._listeners: list[Callable[[], None]] = [on_change] if on_change is not None else []
        self.path = data_dir / "vault"
        self.backup = data_dir / "vault.bak"
        self._records = GenerationRecords.for_vault(self.path, record_dirs)
        self._records.remove_stale_temps()
        self._nursery = nursery
        self._clock = clock
        self._delay = failure_delay or FailureDelay()
        self.hub = hub or WatchHub()
        self._renewer_options = renewer_options or {}
        self._transit = transit
        self._renewer: Renewer | None = None
        self._logins: Logins | None = None
        self._lock = trio.Lock()
        self._write_lock = trio.Lock()
        self._nonce_locks: dict[str, trio.Lock] = {}
        self._open: OpenVault | None = None
        self._credentials: dict[str, Credential] = {}
        self._upstream_configs: dict[str, UpstreamConfig] = {}
        self._upstreams: Upstreams | None = None
        #: Alarms raised (a replayed wrapping token...), newest last, for the daemon's life.
        self.alarms: list[dict[str, Any]] = []
        #: Why the last unlock was refused as a rollback, until an unlock succeeds (for alerts).
        self.rollback_refused: str | None = None
        self._epoch = 0
        self._initialized = self.path.exists()
        self._generation = 0
        #: The last failed write, shown by ``status`` until a write succeeds.
        self.last_write_error: str | None = None
        self._kdf_profile: str | None = None
        self._peek_header()

    # -- state -----------------------------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (it must return at once) whenever ``on_change`` would be called."""
        self._listeners.append(callback)

    def _on_change(self) -> None:
        """Tell every listener (``on_change``, then :meth:`add_listener`'s) that something changed."""
        for callback in self._listeners:
            try:
                callback()
            except Exception as exc:  # a listener's bug must not fail the renewal or lock that told it
                log.error("a vault listener failed: %s", type(exc).__name__, exc_info=exc)

    @property
    def state(self) -> VaultState:
        if self._open is not None:
            return VaultState.UNLOCKED
        return VaultState.LOCKED if self._initialized else VaultState.UNINITIALIZED

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def failed_attempts(self) -> int:
        return self._delay.failures

    def kdf_profile(self) -> str | None:
        """The KDF profile named in the vault header (public), or None without a vault."""
        return self._kdf_profile

    def _peek_header(self) -> None:
        """Read the public header at start: the KDF profile and generation for ``status``."""
        try:
            header, _ = _vaultfile.read_header(self.path.read_bytes()[:4096])
        except FileNotFoundError:
            return
        except (OSError, _vaultfile.VaultFormatError) as exc:
            log.error("vault %s cannot be read: %s (unlock will fail until it is restored)", self.path, exc)
            return
        self._kdf_profile = header.kdf.profile_name()
        self._generation = header.generation

    def state_counts(self) -> Counter[CredentialState]:
        """How many credentials are in each state now (all zero unless unlocked)."""
        now = self._clock()
        return Counter(credential.state_at(now) for credential in self._credentials.values())

    def describe(self) -> list[dict[str, Any]]:
        """Every credential's public description, by name (empty unless unlocked)."""
        now = self._clock()
        return [self._credentials[name].describe(now) for name in sorted(self._credentials)]

    # -- operator methods ----------------------------------------------------------------

    async def init(self, passphrase: Secret, profile: KdfProfile) -> None:
        """Create the vault file, empty, sealed under ``passphrase``. Leaves it LOCKED.

        Raises:
            RpcError: ALREADY_INITIALIZED, or STORAGE_FAILED.
        """
        async with self._lock:
            if self._initialized or self.path.exists():
                raise RpcError(ErrorCode.ALREADY_INITIALIZED, f"a vault already exists at {self.path}")
            if self.backup.exists():
                raise RpcError(ErrorCode.ALREADY_INITIALIZED, f"{self.missing_vault()}; or move it away first")
            header, data_key = await self._blocking(_vaultfile.new_vault, passphrase, profile)
            try:
                body = {"credentials": {}, "policy": {"rules": []}, "audit_key": new_audit_key()}
                await self._write(header, data_key, body, generation=1)
            except NotDurable as exc:
                self._initialized = True
                self._kdf_profile = str(profile)
                self._on_change()
                raise RpcError(
                    ErrorCode.STORAGE_FAILED,
                    f"the vault was created and is in effect, but may not survive a power loss: {exc}",
                ) from None
            finally:
                data_key.wipe()
            self._initialized = True
            self._kdf_profile = str(profile)
            self._on_change()
            log.info("vault created (kdf profile %s)%s", profile, _min_warning(profile))

    async def unlock(self, passphrase: Secret, *, accept_rollback: bool = False) -> str:
        """Open the vault with ``passphrase``. Unlocking an unlocked vault checks the passphrase.

        Returns what was accepted with ``accept_rollback`` (for the audit log), else "".

        Raises:
            RpcError: NOT_INITIALIZED, BAD_PASSPHRASE (after the failure delay),
                VAULT_DAMAGED (a file this version cannot read; nothing changes), ROLLBACK
                (older than a generation recorded, or a record does not authenticate: see
                ``_rollback``), STORAGE_FAILED (an accepted rollback could not be written).
        """
        async with self._lock:
            if self._open is not None:
                await self._check_passphrase(passphrase)
                return ""
            if not self._initialized and self.path.exists():  # put back while we ran (mv vault.bak vault)
                self._initialized = True
                self._peek_header()
            if not self._initialized:
                raise RpcError(ErrorCode.NOT_INITIALIZED, self.missing_vault())
            epoch = self._epoch
            try:
                header, data_key, body = await self._delay.check(self._blocking, self._read_and_open, passphrase)
            except _vaultfile.VaultFormatError as exc:
                log.error("vault %s cannot be opened: %s", self.path, exc)
                raise RpcError(ErrorCode.VAULT_DAMAGED, f"{self.path}: {exc}") from None
            except FileNotFoundError:
                self._initialized = False
                raise RpcError(ErrorCode.NOT_INITIALIZED, f"the vault file {self.path} is gone") from None
            try:
                read = read_body(body, skip_bad_names=True)  # a crafted name: left out, logged by index
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                data_key.wipe()
                raise RpcError(
                    ErrorCode.VAULT_DAMAGED,
                    f"vault holds a record this version cannot read ({type(exc).__name__})",
                ) from None
            audit_key = read.audit_key or new_audit_key()  # an older vault: kept from its next write
            try:
                body = {**body, "audit_key": audit_key}
                accepted = await self._check_rollback(header, data_key, body, read.audit_key, accept_rollback)
                if self._epoch != epoch:  # 'vault.lock' arrived while the KDF ran: the brake wins
                    raise RpcError(ErrorCode.LOCKED, "the vault was locked while this unlock ran")
            except BaseException:
                data_key.wipe()
                read.wipe()
                raise
            del body
            credentials = read.credentials
            self._open = OpenVault(header, data_key, read.policy, Secret(audit_key))
            self._credentials = credentials
            self._upstream_configs = read.upstreams
            self._generation = max(self._generation, header.generation)
            self._kdf_profile = header.kdf.profile_name()
            self._epoch += 1
            await self._start_renewer()
            try:
                await self._start_upstreams()
            except Exception as exc:  # never half unlocked: credentials served, upstreams not
                log.error(
                    "the upstreams could not start (%s): the vault stays locked", type(exc).__name__, exc_info=exc
                )
                self.lock()
                raise RpcError(ErrorCode.INTERNAL, "the upstreams could not start; see the daemon's log") from None
            self.rollback_refused = None
            self._on_change()
            log.info("vault unlocked (%d credentials, generation %d)", len(credentials), self._generation)
            return accepted

    async def _check_rollback(
        self, header: _vaultfile.Header, data_key: Secret, body: dict[str, Any], sealed_key: bytes | None, accept: bool
    ) -> str:
        """Raises: RpcError: ROLLBACK (``_rollback``), STORAGE_FAILED (an accepted rollback not written)."""
        try:
            verdict: Verdict = await self._blocking(self._records.check, header.generation, sealed_key, accept)
        except RpcError as exc:
            if exc.code is ErrorCode.ROLLBACK:
                self.rollback_refused = str(exc)
                self._on_change()
            raise
        if verdict.rewrite_at is not None:  # accepted: written as the newest, so the generation goes on
            async with self._write_lock:
                with contextlib.suppress(NotDurable):  # in place, and logged: the check passes next time
                    await self._write(header, data_key, body, generation=verdict.rewrite_at)
        return verdict.accepted

    async def _start_renewer(self) -> None:
        if self._nursery is None:
            raise RuntimeError("a Vault needs a nursery to run its renewer")
        renewer = Renewer(
            lambda: self._credentials,
            wall=self._clock,
            persist=self._persist_current,
            hub=self.hub,
            on_change=self._on_change,
            **self._renewer_options,
        )
        self._renewer = renewer
        self._logins = Logins(lambda: self._credentials, lambda: self._renewer, self._clock)
        await self._nursery.start(renewer.run)

    def lock(self) -> None:
        """Stop renewing, drop the data key and every secret now, tell watchers. Never waits."""
        was_open = self._open is not None
        if self._logins is not None:
            self._logins.close()
            self._logins = None
        if self._renewer is not None:
            self._renewer.stop()
            self._renewer = None
        self._stop_upstreams()
        if self._open is not None:
            self._open.wipe()
        for credential in self._credentials.values():
            credential.wipe()
        self._open = None
        self._credentials = {}
        self._epoch += 1
        if was_open:
            log.info("vault locked")
            self.hub.end_all(LOCKED, {})
            self._on_change()
            scrub_freed_memory()  # after the lock took effect: it never waits for this

    # -- admin methods: passphrase in every call -----------------------------------------

    async def put(
        self,
        passphrase: Secret,
        name: str,
        kind: str,
        config: dict[str, Any] | None,
        *,
        replace: bool,
        source: dict[str, Any] | None = None,
    ) -> bool:
        """Add or (with ``replace``) replace a credential; return whether it was new. Its
        configuration is ``config``, or the record ``source`` names in an upstream, read now.

        Raises:
            RpcError: LOCKED, BAD_PASSPHRASE, INVALID_PARAMS, ALREADY_EXISTS, STORAGE_FAILED;
                with a source, FORBIDDEN and UPSTREAM_UNAVAILABLE too.
        """
        async with self._lock:
            _, epoch = await self._admin(passphrase)
            if (config is None) == (source is None):
                raise RpcError(ErrorCode.INVALID_PARAMS, "give exactly one of 'config' and 'source'")
            if config is not None:
                # The config is checked before the name: an operator fixing a mistake in it hears of the
                # mistake, not of the name they have not reached yet (_put_checked checks the name).
                return await self._put_checked(epoch, name, kind, self._from_config(name, kind, config), replace)
            self._check_name_free(name, replace)  # before the upstream is read: that read is slow
        assert source is not None
        # The record is read outside the admin lock: a hanging OpenBao holds no other admin call.
        credential = await self._sourced(name, kind, source)
        async with self._lock:
            return await self._put_checked(epoch, name, kind, credential, replace)

    def _check_name_free(self, name: str, replace: bool) -> None:
        """Raises: RpcError: ALREADY_EXISTS (a credential without ``replace``, or an upstream, has the name)."""
        if name in self._credentials and not replace:
            raise RpcError(ErrorCode.ALREADY_EXISTS, f"credential {name!r} exists (put with replace to overwrite)")
        if name in self._upstream_configs:
            raise RpcError(ErrorCode.ALREADY_EXISTS, f"an upstream is named {name!r}: give the credential another name")

    def _from_config(self, name: str, kind: str, config: dict[str, Any]) -> Credential:
        try:
            return from_config(name, kind, config, self._clock())
        except ConfigError as exc:
            raise RpcError(ErrorCode.INVALID_PARAMS, str(exc)) from None

    async def _put_checked(self, epoch: int, name: str, kind: str, credential: Credential, replace: bool) -> bool:
        """Under the admin lock, with the passphrase checked in ``epoch``: store ``credential``.

        Raises:
            RpcError: LOCKED (locked since the check), ALREADY_EXISTS, STORAGE_FAILED.
        """
        opened = self._open
        try:
            if opened is None or self._epoch != epoch:
                raise RpcError(ErrorCode.LOCKED, "the vault was locked while this call ran")
            self._check_name_free(name, replace)
            source = credential.source
            if source is not None and source.upstream not in self._upstream_configs:
                raise RpcError(
                    ErrorCode.INVALID_PARAMS, f"upstream {source.upstream!r} was removed while this call ran"
                )
        except RpcError:
            credential.wipe()
            raise
        existing = self._credentials.get(name)
        await self._swap_in(opened, epoch, existing, credential, end_hold=True)  # a new configuration
        log.info("credential %r %s (kind %s)", name, "replaced" if existing else "added", kind)
        return existing is None

    async def _swap_in(
        self,
        opened: OpenVault,
        epoch: int,
        existing: Credential | None,
        credential: Credential,
        *,
        end_hold: bool = False,
    ) -> None:
        """Write the vault with ``credential`` in place of ``existing`` (or added), then serve it.

        ``existing``'s hold (``_backup``) carries over unless ``end_hold``: only the operator
        ends one (a replacement with a configuration of their own), never a new copy of the same
        configuration (a new OpenBao version), which holds the refresh token the hold is about.

        Raises:
            RpcError: STORAGE_FAILED, LOCKED (as :meth:`_persist`).
        """
        if existing is not None:
            if not end_hold and existing.hold is not None:
                credential.hold = existing.hold
            credential.created_at = existing.created_at
            carry = getattr(credential.provider, "carry_nonce_from", None)
            if carry is not None and type(existing.provider) is type(credential.provider):
                carry(existing.provider)
        updated = {**self._credentials, credential.name: credential}
        try:
            await self._persist(opened, epoch, updated)
        finally:
            # Whatever the outcome, drop the secret that memory does not hold.
            committed = self._credentials is updated
            dropped = existing if committed else credential
            if dropped is not None:
                dropped.wipe()
            if committed and self._renewer is not None:
                if existing is not None:
                    self._renewer.forget(existing)
                self._renewer.start(credential)
            if committed and self._upstreams is not None:
                self._upstreams.track(credential)

    async def remove(self, passphrase: Secret, name: str) -> None:
        """Raises: RpcError: LOCKED, BAD_PASSPHRASE, UNKNOWN_CREDENTIAL, STORAGE_FAILED."""
        async with self._lock:
            opened, epoch = await self._admin(passphrase)
            existing = self._credentials.get(name)
            if existing is None:
                also = (
                    f" ({name!r} is an upstream: 'vaultctl upstream rm {name}')"
                    if name in self._upstream_configs
                    else ""
                )
                raise RpcError(ErrorCode.UNKNOWN_CREDENTIAL, f"no credential named {name!r}{also}")
            updated = {k: v for k, v in self._credentials.items() if k != name}
            try:
                await self._persist(opened, epoch, updated)
            finally:
                if self._credentials is updated:
                    existing.wipe()
                    if self._renewer is not None:
                        self._renewer.forget(existing)
            log.info("credential %r removed", name)

    def policy(self) -> dict[str, Any] | None:
        """The policy in force, or None while locked (it is sealed in the vault)."""
        return None if self._open is None else self._open.policy

    def fingerprint(self, token: str) -> str | None:
        """A short keyed fingerprint of ``token`` for the audit log (None while locked)."""
        opened = self._open
        return None if opened is None else opened.fingerprint(token)

    # -- internals -------------------------------------------------------------------------

    def _closed(self) -> RpcError:
        """The refusal while nothing is unlocked: NOT_INITIALIZED without a vault, else LOCKED."""
        if not self._initialized:
            return RpcError(ErrorCode.NOT_INITIALIZED, "no vault yet: create one with 'vaultctl init'")
        return RpcError(ErrorCode.LOCKED, "the vault is locked: an operator must run 'vaultctl unlock'")

    def _read_and_open(self, passphrase: Secret) -> tuple[_vaultfile.Header, Secret, dict[str, Any]]:
        return _vaultfile.decode(self.path.read_bytes(), passphrase)

    async def _check_passphrase(self, passphrase: Secret) -> None:
        """Check ``passphrase`` against the open vault.

        Raises:
            RpcError: BAD_PASSPHRASE (after the delay), or LOCKED if a lock landed meanwhile.
        """
        assert self._open is not None
        opened, epoch = self._open, self._epoch
        key: Secret = await self._delay.check(self._blocking, _vaultfile.unwrap, opened.header, passphrase)
        try:
            if self._epoch != epoch or self._open is not opened:
                raise RpcError(ErrorCode.LOCKED, "the vault was locked while this call ran")
            if not hmac.compare_digest(key.reveal(), opened.data_key.reveal()):
                raise AssertionError("passphrase unwrapped a different data key")
        finally:
            key.wipe()

    async def check_passphrase(self, passphrase: Secret) -> None:
        """For a method that needs the operator but changes nothing in the vault (``notify.test``).

        Raises:
            RpcError: NOT_INITIALIZED, LOCKED, BAD_PASSPHRASE (after the daemon-wide delay).
        """
        try:
            await self._admin(passphrase)
        finally:
            passphrase.wipe()

    async def _admin(self, passphrase: Secret) -> tuple[OpenVault, int]:
        """Check the vault is unlocked and ``passphrase`` opens it; return it and its epoch."""
        if self._open is None:
            raise RpcError(
                ErrorCode.LOCKED if self._initialized else ErrorCode.NOT_INITIALIZED,
                "the vault is locked: unlock it first" if self._initialized else "no vault yet",
            )
        epoch = self._epoch
        await self._check_passphrase(passphrase)
        if self._epoch != epoch or self._open is None:
            raise RpcError(ErrorCode.LOCKED, "the vault was locked while this call ran")
        return self._open, epoch

    async def _persist(
        self,
        opened: OpenVault,
        epoch: int,
        credentials: dict[str, Credential],
        *,
        upstreams: dict[str, UpstreamConfig] | None = None,
    ) -> None:
        """Write ``credentials`` (and ``upstreams``, if given) to the vault file, then make them
        the ones in memory.

        Memory always matches the file: it changes when the file did, including when only
        the final folder fsync failed (the change is in effect, its durability unknown).

        Raises:
            RpcError: STORAGE_FAILED; LOCKED if the vault was locked during the write.
        """
        if upstreams is None:
            upstreams = self._upstream_configs
        try:
            async with self._write_lock:
                body = sealed_body(opened, credentials, upstreams)
                await self._write(opened.header, opened.data_key, body, generation=self._generation + 1)
        except NotDurable as exc:
            if self._epoch == epoch:
                self._credentials, self._upstream_configs = credentials, upstreams
                self._on_change()
            raise RpcError(
                ErrorCode.STORAGE_FAILED,
                f"the change is in effect, but it may not survive a power loss: {exc}",
            ) from None
        if self._epoch != epoch:
            raise RpcError(ErrorCode.LOCKED, "the vault was locked while this call ran (the change was saved)")
        self._credentials, self._upstream_configs = credentials, upstreams
        self._on_change()

    async def _persist_current(self) -> None:
        """Write what memory holds now (a provider adopted a rotated secret).

        Raises:
            RpcError: LOCKED, or STORAGE_FAILED (also when written but not confirmed durable).
        """
        opened, epoch = self._open, self._epoch
        if opened is None:
            raise RpcError(ErrorCode.LOCKED, "the vault is locked")
        async with self._write_lock:
            if self._epoch != epoch:
                raise RpcError(ErrorCode.LOCKED, "the vault was locked before the write")
            body = sealed_body(opened, self._credentials, self._upstream_configs)
            try:
                await self._write(opened.header, opened.data_key, body, generation=self._generation + 1)
            except NotDurable as exc:
                message = f"written and in effect, but it may not survive a power loss: {exc}"
                raise RpcError(ErrorCode.STORAGE_FAILED, message) from None

    async def _write(
        self, header: _vaultfile.Header, data_key: Secret, body: dict[str, Any], *, generation: int
    ) -> None:
        """Raises: RpcError: STORAGE_FAILED (nothing changed). NotDurable: written, not synced."""
        # The generation is spent even if the write fails: it must never go back.
        self._generation = generation
        data = _vaultfile.encode(replace(header, generation=generation), data_key, body)
        # A write once begun is finished with its record, even if the request is cancelled (its
        # peer left): the callers adopt it in memory with no checkpoint after this returns.
        with trio.CancelScope(shield=True):
            try:
                await self._blocking(write_atomic, self.path, data, self.backup)
            except NotDurable as exc:
                self.last_write_error = str(exc)
                log.error("vault written, but not confirmed durable: %s", exc)
                raise
            except StorageError as exc:
                self.last_write_error = str(exc)
                log.error("vault write failed: %s", exc)
                raise RpcError(ErrorCode.STORAGE_FAILED, f"the change was not saved: {exc}") from None
            self.last_write_error = None
            await self._blocking(self._records.write, generation, body["audit_key"])  # after: durable


def _min_warning(profile: KdfProfile) -> str:
    return " -- the MIN profile is for tests only, never for real secrets" if profile is KdfProfile.MIN else ""
