"""The vault's upstream half: adding and removing upstreams, and the writes sourced credentials need.

A base of :class:`vaultd._vault.Vault`, kept apart so that each file stays one reading: the
vault's lifecycle there, what OpenBao feeds it here. Everything that changes the file goes
through the vault's own ``_persist`` (memory follows the file), under its admin lock.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import trio

from vaultd_protocol import ErrorCode

from ._bao import BaoError, BaoForbidden, BaoNotFound, KvVersion
from ._credentials import ConfigError, Credential, from_config
from ._errors import RpcError
from ._opened import OpenVault
from ._secret import Secret
from ._source import Source, parse_source
from ._upstream import ALARMS_KEPT, UpstreamAlarm, UpstreamConfig, take_wrapped_secret_id
from ._upstreams import Upstreams
from ._watch import EXPIRED, UPDATED, WatchHub

__all__ = ["UNSOURCEABLE", "VaultUpstreams"]

log = logging.getLogger("vaultd.vault")

#: Kinds whose settings may not come from an upstream, and why.
UNSOURCEABLE = {
    "exec": (
        "an exec credential runs a command on this host: its settings cannot come from an upstream, "
        "or whoever may write that record could run commands on every host; add it from stdin"
    ),
}


class VaultUpstreams:
    """Upstream methods of the vault (``_vault.Vault`` defines what is declared here)."""

    hub: WatchHub
    alarms: list[dict[str, Any]]
    _lock: trio.Lock
    _open: OpenVault | None
    _epoch: int
    _clock: Callable[[], float]
    _credentials: dict[str, Credential]
    _upstream_configs: dict[str, UpstreamConfig]
    _upstreams: Upstreams | None
    _renewer_options: dict[str, Any]
    _nursery: trio.Nursery | None

    # Defined by Vault:
    _admin: Callable[[Secret], Awaitable[tuple[OpenVault, int]]]
    _persist: Callable[..., Awaitable[None]]
    _persist_current: Callable[[], Awaitable[None]]
    _swap_in: Callable[..., Awaitable[None]]
    _on_change: Callable[[], None]

    # -- lifecycle -------------------------------------------------------------------------

    async def _start_upstreams(self) -> None:
        assert self._nursery is not None
        upstreams = Upstreams(
            self._upstream_configs,
            self,
            wall=self._clock,
            renewer_options=self._renewer_options,
        )
        self._upstreams = upstreams
        await self._nursery.start(upstreams.run)

    def _stop_upstreams(self) -> None:
        if self._upstreams is not None:
            self._upstreams.wipe()
            self._upstreams = None
        for config in self._upstream_configs.values():
            config.wipe()
        self._upstream_configs = {}

    def has_upstream(self, name: str) -> bool:
        return name in self._upstream_configs and name not in self._credentials

    def upstream_list(self) -> list[dict[str, Any]]:
        """Each upstream's settings and state (never a secret); empty unless unlocked."""
        return [] if self._upstreams is None else self._upstreams.describe()

    # -- admin ---------------------------------------------------------------------------------

    async def put_upstream(
        self, passphrase: Secret, name: str, kind: str, config: dict[str, Any], *, replace: bool
    ) -> dict[str, Any]:
        """Add or (with ``replace``) replace an upstream, log in, and describe it.

        A wrapped secret_id is looked up (its ``creation_path`` checked) and unwrapped first. A
        login OpenBao refuses saves nothing; one it cannot answer saves the upstream, which
        keeps trying (the result's ``state`` and ``last_error`` say so).

        Raises:
            RpcError: LOCKED, BAD_PASSPHRASE, INVALID_PARAMS, ALREADY_EXISTS, STORAGE_FAILED,
                NEEDS_REAUTH (the login was refused), UPSTREAM_UNAVAILABLE (OpenBao could not be
                asked), :class:`UpstreamAlarm` (FORBIDDEN).
        """
        async with self._lock:
            _, epoch = await self._admin(passphrase)
            existing = self._upstream_configs.get(name)
            self._check_upstream_name(name, existing, replace)
            if existing is not None:  # what --replace leaves out stays as it was
                config = existing.merged(config)
            try:
                upstream, wrapped = UpstreamConfig.from_config(name, kind, config)
            except ConfigError as exc:
                raise RpcError(ErrorCode.INVALID_PARAMS, f"upstream: {exc}") from None
        # OpenBao is asked outside the admin lock: a hanging one holds no other admin call.
        committed, prepared = False, None
        try:
            if wrapped is not None:
                try:
                    await take_wrapped_secret_id(upstream, wrapped)
                except UpstreamAlarm as alarm:
                    self._alarm(name, str(alarm))
                    raise
                finally:
                    wrapped.wipe()
            upstreams = self._upstreams
            if upstreams is None:
                raise RpcError(ErrorCode.LOCKED, "the vault was locked while this call ran")
            prepared = await upstreams.prepare(upstream)
            async with self._lock:
                opened = self._open
                if opened is None or self._epoch != epoch or self._upstreams is not upstreams:
                    raise RpcError(ErrorCode.LOCKED, "the vault was locked while this call ran")
                if self._upstream_configs.get(name) is not existing:
                    raise RpcError(
                        ErrorCode.ALREADY_EXISTS, f"upstream {name!r} changed while this call ran: try again"
                    )
                self._check_upstream_name(name, existing, replace)
                now = self._clock()
                upstream.created_at = existing.created_at if existing is not None else now
                upstream.updated_at = now
                updated = {**self._upstream_configs, name: upstream}
                try:
                    await self._persist(opened, epoch, self._credentials, upstreams=updated)
                finally:
                    if self._upstream_configs is updated:  # in effect (even if not confirmed durable)
                        committed = True
                        described = upstreams.install(prepared)
                        if existing is not None:
                            existing.wipe()
                        self.alarms[:] = [a for a in self.alarms if a["upstream"] != name]  # the operator acted
        finally:
            if not committed:
                if upstream.secret_id_accessor:
                    log.warning(
                        "upstream %r was not added: the secret_id unwrapped for it (accessor %s) is of no use: "
                        "destroy it in OpenBao",
                        name,
                        upstream.secret_id_accessor,
                    )
                if prepared is not None:
                    await prepared.close()
                upstream.wipe()
        log.info("upstream %r %s (%s)", name, "replaced" if existing else "added", upstream.address)
        return described

    def _check_upstream_name(self, name: str, existing: UpstreamConfig | None, replace: bool) -> None:
        if existing is not None and not replace:
            raise RpcError(ErrorCode.ALREADY_EXISTS, f"upstream {name!r} exists (add with --replace to change it)")
        if name in self._credentials:
            raise RpcError(ErrorCode.ALREADY_EXISTS, f"a credential is named {name!r}: give the upstream another name")

    async def remove_upstream(self, passphrase: Secret, name: str) -> None:
        """Raises: RpcError: LOCKED, BAD_PASSPHRASE, UNKNOWN_CREDENTIAL (no such upstream),
        INVALID_PARAMS (credentials still use it: named), STORAGE_FAILED."""
        async with self._lock:
            opened, epoch = await self._admin(passphrase)
            existing = self._upstream_configs.get(name)
            if existing is None:
                raise RpcError(ErrorCode.UNKNOWN_CREDENTIAL, f"no upstream named {name!r}")
            users = sorted(n for n, c in self._credentials.items() if uses_upstream(c, name))
            if users:
                raise RpcError(
                    ErrorCode.INVALID_PARAMS,
                    f"upstream {name!r} is in use by: {', '.join(users)}: remove those first ('vaultctl rm NAME')",
                )
            updated = {k: v for k, v in self._upstream_configs.items() if k != name}
            try:
                await self._persist(opened, epoch, self._credentials, upstreams=updated)
            finally:
                if self._upstream_configs is updated:  # in effect (even if not confirmed durable)
                    if self._upstreams is not None:
                        self._upstreams.remove(name)
                    existing.wipe()
            log.info("upstream %r removed", name)

    async def renew_upstream(self, name: str) -> dict[str, Any] | None:
        """One login now for upstream ``name`` (after the passphrase was checked); None if no such upstream."""
        upstreams = self._upstreams
        if upstreams is None or name not in upstreams:
            return None
        log.info("upstream %r: login forced by an operator", name)
        return await upstreams.renew(name)

    def _alarm(self, upstream: str, message: str) -> None:
        log.error("%s", message)
        self.alarms.append({"at": self._clock(), "upstream": upstream, "message": message})
        del self.alarms[:-ALARMS_KEPT]
        self._on_change()

    # -- sourced credentials ----------------------------------------------------------------

    async def _sourced(self, name: str, kind: str, given: dict[str, Any]) -> Credential:
        """A credential built from the record ``given`` names, read now.

        Raises:
            RpcError: INVALID_PARAMS, FORBIDDEN, UPSTREAM_UNAVAILABLE.
        """
        upstream_name, path, refresh = parse_source(given)
        if kind in UNSOURCEABLE:
            raise RpcError(ErrorCode.INVALID_PARAMS, UNSOURCEABLE[kind])
        upstream = self._upstream_configs.get(upstream_name)
        if upstream is None or self._upstreams is None:
            raise RpcError(ErrorCode.INVALID_PARAMS, f"no upstream named {upstream_name!r} ('vaultctl upstream list')")
        where = f"{upstream_name}:{path}"
        try:
            record = await self._upstreams.read(upstream_name, path)
        except BaoNotFound as exc:
            why = "destroyed" if exc.destroyed else "deleted" if exc.deleted else "not found"
            raise RpcError(
                ErrorCode.INVALID_PARAMS,
                f"{where}: no current version ({why}) under mount {upstream.kv_mount!r}{_relative(path, upstream)}",
            ) from None
        except BaoForbidden as exc:
            raise RpcError(
                ErrorCode.FORBIDDEN,
                f"{where}: OpenBao refused the read ({exc}): does the role's policy allow read on "
                f"{upstream.kv_mount}/data/{path}?{_relative(path, upstream)}",
            ) from None
        except BaoError as exc:
            raise RpcError(ErrorCode.UPSTREAM_UNAVAILABLE, f"{where}: {exc}") from None
        now = self._clock()
        credential = _build(name, kind, record, now, where)
        credential.source = Source(
            upstream_name,
            path,
            refresh,
            record.version,
            confirmed_at=now,
            max_stale=upstream.max_stale,
            created_time=record.created_time,
        )
        return credential

    def sourced_credentials(self) -> Mapping[str, Credential]:
        return self._credentials

    def changed(self) -> None:
        self._on_change()

    async def adopt_version(self, credential: Credential, record: KvVersion) -> None:
        """Serve ``record`` (a higher version, or the held one after a pull) once it is written.

        Raises:
            RpcError: INVALID_PARAMS (not a valid configuration: the old copy stays),
                STORAGE_FAILED, LOCKED.
        """
        source = credential.source
        assert source is not None
        async with self._lock:
            opened, epoch = self._open, self._epoch
            if opened is None or self._credentials.get(credential.name) is not credential:
                return  # locked, removed or replaced meanwhile
            now = self._clock()
            where = f"{source.upstream}:{source.path} version {record.version}"
            fresh = _build(credential.name, credential.kind, record, now, where)
            fresh.source = replace(
                source,
                version=record.version,
                created_time=record.created_time,
                confirmed_at=now,
                pulled=None,
                last_error=None,
                failures=0,
            )
            fresh.updated_at = now
            fresh.hold = (
                credential.hold
            )  # a restored copy stays held: the new version's refresh token may be the live one's
            await self._swap_in(opened, epoch, credential, fresh)
            if not getattr(fresh.provider, "issues_tokens", True):  # a token kind publishes its first token
                self.hub.publish(UPDATED, fresh.name, lambda: {"name": fresh.name, "version": record.version})

    async def pull(self, credential: Credential, reason: str) -> None:
        """Stop serving ``credential`` at once, then write that down (a restart keeps it pulled).

        Raises:
            RpcError: STORAGE_FAILED, LOCKED (it is not served whatever the write did).
        """
        source = credential.source
        assert source is not None
        async with self._lock:
            if self._credentials.get(credential.name) is not credential:
                return
            source.pulled = reason
            self._on_change()
            self.hub.publish(EXPIRED, credential.name, lambda: {"name": credential.name, "pulled": reason})
            await self._persist_current()

    async def save_confirmation(self) -> None:
        await self._persist_current()


def uses_upstream(credential: Credential, upstream: str) -> bool:
    """Whether ``credential`` is sourced from ``upstream`` or signs through its transit engine."""
    if credential.source is not None and credential.source.upstream == upstream:
        return True
    return getattr(credential.provider, "backend_upstream", None) == upstream


def _relative(path: str, upstream: UpstreamConfig) -> str:
    """A hint when PATH repeats the KV mount (``--from bao:secret/desk/x``)."""
    prefix = upstream.kv_mount + "/"
    if not path.startswith(prefix):
        return ""
    return f" (PATH is relative to the KV mount {upstream.kv_mount!r}: try {upstream.name}:{path[len(prefix) :]})"


def _build(name: str, kind: str, record: KvVersion, now: float, where: str) -> Credential:
    """Raises: RpcError: INVALID_PARAMS, naming the record and the field (never a value); a record
    that names a transit key (``backend``)."""
    if "backend" in record.data:
        raise RpcError(
            ErrorCode.INVALID_PARAMS,
            f"{where} names a transit key ('backend'): a record may not, or whoever may write it could sign "
            "with any key vaultd's role may use; add a transit-backed credential from stdin",
        )
    try:
        return from_config(name, kind, record.data, now)
    except ConfigError as exc:
        raise RpcError(ErrorCode.INVALID_PARAMS, f"{where} is not a valid {kind} configuration: {exc}") from None
