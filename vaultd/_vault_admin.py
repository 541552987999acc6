"""The vault's admin calls that change no credential's config: list, forced renewal, login, policy, passphrase.

A base of :class:`vaultd._vault.Vault`, kept apart so that each file stays one reading. Every
method here checks the passphrase first (``Vault._admin``) and writes through the vault's own
write lock, so a renewer's write never mixes the old and the new.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import trio

from vaultd_protocol import ErrorCode

from . import _vaultfile
from ._atomic import NotDurable
from ._errors import RpcError
from ._login import Logins
from ._opened import OpenVault, adopt, sealed_body
from ._renewer import Renewer
from ._secret import Secret
from ._vault_upstreams import VaultUpstreams

__all__ = ["VaultAdmin"]

log = logging.getLogger("vaultd.vault")


class VaultAdmin(VaultUpstreams):
    """Admin methods of the vault (``_vault.Vault`` defines what is declared here)."""

    _write_lock: trio.Lock
    _generation: int
    _renewer: Renewer | None
    _logins: Logins | None
    _blocking: Callable[..., Awaitable[Any]]

    # Defined by Vault:
    _write: Callable[..., Awaitable[None]]
    describe: Callable[[], list[dict[str, Any]]]

    async def list(self, passphrase: Secret) -> list[dict[str, Any]]:
        """Raises: RpcError: LOCKED, BAD_PASSPHRASE."""
        async with self._lock:
            await self._admin(passphrase)
            return self.describe()

    async def renew(self, passphrase: Secret, name: str) -> dict[str, Any]:
        """One upstream attempt now for ``name``, even in NEEDS_REAUTH; its description after.

        For a credential sourced from an upstream, its record is read first; for an upstream,
        the attempt is a login.

        Raises:
            RpcError: LOCKED, BAD_PASSPHRASE, UNKNOWN_CREDENTIAL, INVALID_PARAMS (a signing
                credential of its own: it has nothing to renew).
        """
        async with self._lock:
            await self._admin(passphrase)
        renewer = self._renewer
        if renewer is None:
            raise RpcError(ErrorCode.LOCKED, "the vault was locked while this call ran")
        credential = self._credentials.get(name)
        if credential is None:
            described = await self.renew_upstream(name)
            if described is not None:
                return described
        elif credential.source is not None and self._upstreams is not None:
            log.info("credential %r: a read of its record forced by an operator", name)
            await self._upstreams.refresh_now(credential)
            credential = self._credentials.get(name, credential)
        if credential is not None and not getattr(credential.provider, "issues_tokens", True):
            if credential.source is not None:
                return credential.describe(self._clock())
            raise RpcError(ErrorCode.INVALID_PARAMS, f"credential {name!r} signs requests: it has no token to renew")
        log.info("credential %r: renewal forced by an operator", name)
        return await renewer.renew(name)

    async def login(self, passphrase: Secret, name: str, *, device: bool, lifetime: float) -> dict[str, Any]:
        """Begin an operator's login of an oauth2 credential (``_login``); what to show the operator.

        Raises:
            RpcError: LOCKED, BAD_PASSPHRASE, UNKNOWN_CREDENTIAL, INVALID_PARAMS, UPSTREAM_UNAVAILABLE.
        """
        async with self._lock:
            await self._admin(passphrase)
        return await self._login_desk().start(name, device=device, lifetime=lifetime)

    async def login_wait(self, passphrase: Secret, login_id: str, wait: float) -> dict[str, Any]:
        """Wait up to ``wait`` seconds for a login's outcome.

        Raises:
            RpcError: LOCKED, BAD_PASSPHRASE, INVALID_PARAMS (no such login).
        """
        async with self._lock:
            await self._admin(passphrase)
        return await self._login_desk().wait(login_id, wait)

    def _login_desk(self) -> Logins:
        if self._renewer is None or self._logins is None:
            raise RpcError(ErrorCode.LOCKED, "the vault was locked while this call ran")
        return self._logins

    async def get_policy(self, passphrase: Secret) -> dict[str, Any]:
        """The policy as stored (``{"rules": [...]}``).

        Raises:
            RpcError: LOCKED, NOT_INITIALIZED, BAD_PASSPHRASE.
        """
        async with self._lock:
            opened, _ = await self._admin(passphrase)
            return dict(opened.policy)

    async def set_policy(self, passphrase: Secret, policy: dict[str, Any]) -> None:
        """Replace the policy (already checked by the caller) and write the vault.

        Raises:
            RpcError: LOCKED, NOT_INITIALIZED, BAD_PASSPHRASE, STORAGE_FAILED.
        """
        async with self._lock:
            opened, epoch = await self._admin(passphrase)
            await self._write_open(opened, epoch, replace(opened, policy=policy), "the new policy")
            log.info("policy replaced (%d rules)", len(policy.get("rules", [])))

    async def rekey(self, passphrase: Secret, new_passphrase: Secret) -> None:
        """Seal the vault under ``new_passphrase`` with a fresh data key (and salt; the same KDF
        limits); the old passphrase opens neither the vault nor its backup afterwards. Tokens
        keep being served throughout: only admin calls wait.

        Raises:
            RpcError: LOCKED, NOT_INITIALIZED, BAD_PASSPHRASE, STORAGE_FAILED.
        """
        async with self._lock:
            opened, epoch = await self._admin(passphrase)
            header, data_key = await self._blocking(_vaultfile.rekey, opened.header, new_passphrase)
            changed = replace(opened, header=header, data_key=data_key)
            try:
                await self._write_open(opened, epoch, changed, "the new passphrase")
                # Once more, so that vault.bak is not the last file the old passphrase opens.
                try:
                    await self._write_open(opened, epoch, changed, "the new passphrase")
                except RpcError as exc:
                    raise RpcError(
                        exc.code,
                        f"the new passphrase is in effect, but vault.bak may still open with the old one: {exc}",
                    ) from None
            finally:
                if opened.data_key is not data_key:
                    data_key.wipe()  # not adopted: nothing was written with it
            log.info("passphrase changed: the vault is sealed under a new key")

    async def _write_open(self, opened: OpenVault, epoch: int, changed: OpenVault, what: str) -> None:
        """Write the vault as ``changed`` says (a new key and header, or policy), then adopt it.

        Under the write lock, so that a renewer's write never mixes the old and the new.

        Raises:
            RpcError: LOCKED, STORAGE_FAILED (not written: nothing changed; or written but not
                synced: in effect).
        """
        async with self._write_lock:
            if self._epoch != epoch or self._open is not opened:
                raise RpcError(ErrorCode.LOCKED, "the vault was locked while this call ran")
            body = sealed_body(changed, self._credentials, self._upstream_configs)
            try:
                await self._write(changed.header, changed.data_key, body, generation=self._generation + 1)
            except NotDurable as exc:
                adopt(opened, changed)
                self._on_change()
                raise RpcError(
                    ErrorCode.STORAGE_FAILED, f"{what} is in effect, but it may not survive a power loss: {exc}"
                ) from None
            adopt(opened, changed)
            self._on_change()  # a new policy: connections it shuts out are closed at once
