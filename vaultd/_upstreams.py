"""The upstreams of an unlocked vault at work: their sessions, the refresh of sourced credentials, transit.

Lives from unlock to lock, beside the renewer. Each upstream's token is a credential of a
second, private :class:`Renewer` (never in the engines' map, never published to watchers),
so it renews at 2/3 of its TTL with jitter, backs off, and spends a budget of its own. Each
upstream has one refresh task: at most one read in flight per upstream, each sourced
credential read every ``refresh`` seconds (jittered), under the credential's own call budget.
What a read finds is applied by the vault (:class:`SourcedVault`): a higher version is
written before it is served; a lower one, or the same number written at another time, is not
taken (the copy is served, DEGRADED); a 404 pulls the credential. A 403 on any call means one
login (shared by whoever got it, and once per token) and one retry, never a loop. Transit
calls are bounded per upstream, so engines that sign faster than OpenBao answers are refused
rather than queued.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import trio

from vaultd_protocol import CredentialState, ErrorCode

from ._bao import BaoClient, BaoError, BaoForbidden, BaoNotFound, KvVersion
from ._credentials import Credential
from ._errors import RpcError
from ._providers import FetchContext, Issued, UpstreamError
from ._renewer import Renewer
from ._secret import Secret
from ._upstream import BaoSession, UpstreamConfig
from ._watch import WatchHub

__all__ = ["SourcedVault", "Upstreams"]

log = logging.getLogger("vaultd.upstreams")

_T = TypeVar("_T")
#: Transit signatures under way at once per upstream; beyond, UPSTREAM_UNAVAILABLE at once.
TRANSIT_IN_FLIGHT = 16
TRANSIT_IN_FLIGHT_PER_KEY = 8
#: Reads that find no session token start a login at most this often (seconds), per upstream.
_FORCED_LOGIN_GAP = 1.0


class SourcedVault(Protocol):
    """What the refresh needs of the vault: its credentials, and the writes it makes."""

    def sourced_credentials(self) -> Mapping[str, Credential]: ...

    async def adopt_version(self, credential: Credential, record: KvVersion) -> None:
        """Build the credential from ``record`` (a higher version, or the held one after a pull),
        write the vault, then serve it. Raises: RpcError (INVALID_PARAMS for a record that is
        not a valid configuration; STORAGE_FAILED; LOCKED)."""
        ...

    async def pull(self, credential: Credential, reason: str) -> None:
        """Stop serving ``credential`` and write that down. Raises: RpcError."""
        ...

    async def save_confirmation(self) -> None:
        """Write the vault as memory holds it (the copies' confirmation times). Raises: RpcError."""
        ...

    def changed(self) -> None: ...


class _Upstream:
    """One upstream at work: its settings, client, session and refresh queue."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.client: BaoClient = config.client()
        self.session = Credential(config.name, BaoSession(config, self.client), config.created_at, config.updated_at)
        self.heap: list[tuple[float, int, str]] = []
        self.due: dict[str, int] = {}
        self.wake = trio.Event()
        self.scope = trio.CancelScope()
        #: The token of the login :meth:`Upstreams.prepare` made, until the renewer takes it.
        self.first: Issued | None = None
        #: When a read last started a login out of the session's schedule (trio's clock).
        self.forced_at = -math.inf
        #: The login a 403 made the daemon make (its token, renewed or not, is not logged in for twice).
        self.relogged = -1
        #: Why the last call with the session's token failed (None after one that did not).
        self.call_error: str | None = None
        #: One read (or refresh) at a time per upstream, whoever asks.
        self.reading = trio.Lock()
        #: Transit calls under way at once, fewer than the client's connections: reads always get one.
        self.transit_slots = trio.Semaphore(TRANSIT_IN_FLIGHT)
        #: ... and per transit key, so that one key's flood leaves room for the others.
        self.key_slots: dict[str, trio.Semaphore] = {}

    async def close(self, revoke: Secret | None = None) -> None:
        """Drop the token and close the client; first revoke ``revoke`` (best effort, bounded)."""
        self.session.wipe()
        if self.first is not None:
            self.first.wipe()
        if revoke is not None:
            with trio.move_on_after(self.config.timeout):
                try:
                    await self.client.revoke_self(revoke)
                except BaoError as exc:
                    log.info("upstream %r: its old token was not revoked (%s): it expires", self.config.name, exc)
            revoke.wipe()
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await self.client.aclose()

    @property
    def provider(self) -> BaoSession:
        session = self.session.provider
        assert isinstance(session, BaoSession)
        return session


class Upstreams:
    """Every upstream of an unlocked vault (see the module docstring)."""

    def __init__(
        self,
        configs: Mapping[str, UpstreamConfig],
        vault: SourcedVault,
        *,
        wall: Callable[[], float],
        rng: random.Random | None = None,
        renewer_options: dict[str, Any] | None = None,
    ) -> None:
        self._vault = vault
        self._wall = wall
        self._rng = rng or random.SystemRandom()
        self._upstreams: dict[str, _Upstream] = {name: _Upstream(c) for name, c in configs.items()}
        options = dict(renewer_options or {})
        options.pop("http", None)
        self._renewer = Renewer(
            self._sessions,
            wall=wall,
            persist=_nothing_to_persist,
            hub=WatchHub(),  # private: nobody subscribes to an upstream's token
            http=_NO_SHARED_HTTP,
            on_change=vault.changed,
            **options,
        )
        self._nursery: trio.Nursery | None = None
        self._scope = trio.CancelScope()
        self._seq = itertools.count()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Log every upstream in and keep refreshing until cancelled (the vault locks)."""
        try:
            with self._scope:
                await self._run(task_status)
        finally:
            self._nursery = None
            for upstream in list(self._upstreams.values()):
                await upstream.close()

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._renewer.run)
            for upstream in self._upstreams.values():
                nursery.start_soon(self._refresh_loop, upstream)
            for credential in self._vault.sourced_credentials().values():
                if credential.source is not None:  # first reads soon: each copy confirmed (or not) at once
                    self.track(credential, delay=self._rng.random() * min(credential.source.refresh, 5.0))
            task_status.started()

    def wipe(self) -> None:
        """Drop every session token (the vault locked). Settings stay the vault's to wipe."""
        self._scope.cancel()
        self._renewer.stop()
        for upstream in self._upstreams.values():
            upstream.session.wipe()

    def __contains__(self, name: object) -> bool:
        return name in self._upstreams

    async def prepare(self, config: UpstreamConfig) -> _Upstream:
        """A new upstream, logged in if OpenBao answers, not yet at work (see :meth:`install`).

        Raises:
            RpcError: NEEDS_REAUTH: OpenBao refused the login (nothing is kept).
        """
        upstream = _Upstream(config)
        try:
            upstream.first = await upstream.provider.fetch(FetchContext(self._wall))
        except UpstreamError as exc:
            if exc.reauth:
                await upstream.close()
                retire = (
                    f"; the secret_id unwrapped for it (accessor {config.secret_id_accessor}) is of no use: "
                    f"destroy it (auth/{config.auth_mount}/role/{config.role}/secret-id-accessor/destroy)"
                    if config.secret_id_accessor
                    else ""
                )
                raise RpcError(
                    ErrorCode.NEEDS_REAUTH, f"upstream {config.name!r}: {exc} (nothing was saved{retire})"
                ) from None
            upstream.session.last_error, upstream.session.failures = str(exc), 1
        return upstream

    def install(self, upstream: _Upstream) -> dict[str, Any]:
        """Put a prepared upstream to work, in place of any of its name; describe it."""
        name = upstream.config.name
        old = self._upstreams.get(name)
        self._upstreams[name] = upstream
        if old is not None:
            self._stop(old)
            upstream.heap, upstream.due = old.heap, old.due
        for credential in self._vault.sourced_credentials().values():
            if credential.source is not None and credential.source.upstream == name:
                credential.source.max_stale = upstream.config.max_stale
        if self._nursery is not None:
            self._nursery.start_soon(self._refresh_loop, upstream)
            first, upstream.first = upstream.first, None
            if first is not None:
                self._renewer.adopt(upstream.session, first)
            else:
                self._renewer.start(upstream.session)
        return self.describe_one(upstream)

    def remove(self, name: str) -> None:
        upstream = self._upstreams.pop(name, None)
        if upstream is not None:
            self._stop(upstream)

    def _stop(self, upstream: _Upstream) -> None:
        """Stop an upstream removed or replaced, and revoke its token: it should not outlive it."""
        upstream.scope.cancel()
        self._renewer.forget(upstream.session)
        issued = upstream.session.valid_token(self._wall())
        token = None if issued is None else Secret(issued.token.reveal())
        upstream.session.wipe()
        if self._nursery is not None:
            self._nursery.start_soon(upstream.close, token)
        elif token is not None:
            token.wipe()

    def _sessions(self) -> Mapping[str, Credential]:
        return {name: upstream.session for name, upstream in self._upstreams.items()}

    async def renew(self, name: str) -> dict[str, Any]:
        """One login now, whatever the state (``vaultctl renew UPSTREAM``): the operator acted."""
        upstream = self._upstreams[name]
        upstream.provider.invalidate()
        await self._renewer.renew(name)
        upstream.call_error = None  # what the calls meet next tells afresh
        return self.describe_one(upstream)

    # -- calls with the session's token ------------------------------------------------------

    async def call(self, name: str, op: Callable[[BaoClient, Secret], Awaitable[_T]]) -> _T:
        """``op(client, token)`` with the upstream's token; on 403, one login and one retry.

        A token that a 403 already made the daemon log in for is not logged in for again: a
        path the role's policy denies costs one login, not one per read.

        Raises:
            BaoError: as ``op`` raises it (a second 403 included); :class:`RpcError`
                UPSTREAM_UNAVAILABLE when there is no upstream or no token.
        """
        upstream = self._upstreams.get(name)
        if upstream is None:
            raise RpcError(ErrorCode.UPSTREAM_UNAVAILABLE, f"no upstream named {name!r}")
        try:
            issued = await self._token(upstream)
            try:
                result = await op(upstream.client, issued.token)
            except BaoForbidden:
                if upstream.session.issued is not issued or upstream.provider.logins == upstream.relogged:
                    raise  # someone logged in since (retry below), or this token is that login's
                log.info("upstream %r: a call was refused (403): logging in again, then one retry", name)
                upstream.provider.invalidate()
                await self._renewer.attempt(name)
                issued = await self._token(upstream, wait=False)
                upstream.relogged = upstream.provider.logins
                result = await op(upstream.client, issued.token)
        except (BaoError, RpcError) as exc:
            upstream.call_error = str(exc)
            raise
        upstream.call_error = None
        return result

    async def _token(self, upstream: _Upstream, *, wait: bool = True) -> Issued:
        """The session's token; without one, a login attempt now first (or the one under way).

        A read that finds no token starts the attempt itself rather than wait out the session's
        backoff (up to 5 min): a credential then recovers within one refresh of OpenBao coming
        back. While OpenBao is down that costs one login attempt where a read would have been
        (at most one a second per upstream): no more calls than a healthy upstream gets. The
        session's own budget still bounds them; NEEDS_REAUTH waits for an operator.
        """
        session, now = upstream.session, trio.current_time()
        due = session.renewing is not None or now - upstream.forced_at >= _FORCED_LOGIN_GAP
        if wait and due and session.valid_token(self._wall()) is None:
            upstream.forced_at = now
            with trio.move_on_after(upstream.config.timeout + 1.0):
                await self._renewer.attempt(upstream.config.name)
        issued = session.valid_token(self._wall())
        if issued is None:
            why = session.last_error or "not logged in yet"
            if session.state is CredentialState.NEEDS_REAUTH:
                why = f"needs an operator: {why}"
            raise RpcError(ErrorCode.UPSTREAM_UNAVAILABLE, f"upstream {upstream.config.name!r} has no token: {why}")
        return issued

    async def read(self, name: str, path: str) -> KvVersion:
        """The current version of ``path`` under the upstream's KV v2 mount.

        Raises:
            BaoError, RpcError: as :meth:`call`.
        """
        mount = self._upstreams[name].config.kv_mount if name in self._upstreams else ""
        return await self.call(name, lambda client, token: client.kv_read(token, mount, path))

    # -- transit (vaultd._providers.sign's Transit) -------------------------------------------

    async def hmac(self, upstream: str, key: str, data: bytes, *, algorithm: str) -> bytes:
        """Raises: RpcError: UPSTREAM_UNAVAILABLE (unreachable, refused (403), or the key unknown)."""
        return await self._transit(upstream, key, lambda c, t: c.transit_hmac(t, key, data, algorithm=algorithm))

    async def sign(self, upstream: str, key: str, data: bytes, *, algorithm: str) -> bytes:
        """Raises: RpcError: as :meth:`hmac`."""
        if algorithm == "es256":
            return await self._transit(
                upstream,
                key,
                lambda c, t: c.transit_sign(t, key, data, hash_algorithm="sha2-256", marshaling_algorithm="jws"),
            )
        if algorithm == "rsa-pkcs1v15-sha256":
            return await self._transit(
                upstream,
                key,
                lambda c, t: c.transit_sign(t, key, data, hash_algorithm="sha2-256", signature_algorithm="pkcs1v15"),
            )
        return await self._transit(upstream, key, lambda c, t: c.transit_sign(t, key, data))

    async def _transit(self, upstream: str, key: str, op: Callable[[BaoClient, Secret], Awaitable[bytes]]) -> bytes:
        known = self._upstreams.get(upstream)
        if known is None:
            raise RpcError(ErrorCode.UPSTREAM_UNAVAILABLE, f"nothing signed: no upstream named {upstream!r}")
        per_key = known.key_slots.setdefault(key, trio.Semaphore(TRANSIT_IN_FLIGHT_PER_KEY))
        try:
            per_key.acquire_nowait()
        except trio.WouldBlock:  # engines that sign faster than OpenBao answers: refused, never queued
            raise RpcError(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                f"nothing signed: {TRANSIT_IN_FLIGHT_PER_KEY} signatures with transit key {key!r} are already "
                "under way; try again",
            ) from None
        try:
            known.transit_slots.acquire_nowait()
        except trio.WouldBlock:
            per_key.release()
            raise RpcError(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                f"nothing signed: {TRANSIT_IN_FLIGHT} signatures are already under way at upstream {upstream!r}; "
                "try again",
            ) from None
        try:
            return await self.call(upstream, op)
        except BaoForbidden as exc:
            raise RpcError(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                f"nothing signed: upstream {upstream!r} refused the transit call ({exc}): does the role's policy "
                "allow update on transit/hmac/KEY or transit/sign/KEY?",
            ) from None
        except BaoError as exc:
            raise RpcError(ErrorCode.UPSTREAM_UNAVAILABLE, f"nothing signed: upstream {upstream!r}: {exc}") from None
        finally:
            known.transit_slots.release()
            per_key.release()

    # -- refreshing sourced credentials -----------------------------------------------------

    def track(self, credential: Credential, *, delay: float | None = None) -> None:
        """Plan ``credential``'s next read (one refresh from now unless ``delay`` says otherwise)."""
        source = credential.source
        if source is None:
            return
        upstream = self._upstreams.get(source.upstream)
        if upstream is None:
            source.last_error = f"no upstream named {source.upstream!r}"
            return
        source.max_stale = upstream.config.max_stale
        if delay is None:
            delay = source.next_delay(self._rng.random())
        seq = next(self._seq)
        upstream.due[credential.name] = seq
        heapq.heappush(upstream.heap, (trio.current_time() + delay, seq, credential.name))
        source.next_read = self._wall() + delay
        upstream.wake.set()

    async def _refresh_loop(self, upstream: _Upstream) -> None:
        with upstream.scope:
            while True:
                now = trio.current_time()
                while upstream.heap and upstream.heap[0][0] <= now:
                    _, seq, name = heapq.heappop(upstream.heap)
                    if upstream.due.get(name) != seq:
                        continue
                    del upstream.due[name]
                    credential = self._vault.sourced_credentials().get(name)
                    if credential is None or credential.source is None:
                        continue
                    try:
                        async with upstream.reading:
                            await self._refresh(upstream, credential)
                    except Exception as exc:  # a bug in one refresh must not stop the others
                        log.error("credential %r: refresh failed: %s", name, type(exc).__name__, exc_info=exc)
                        self._failed(credential, f"internal error ({type(exc).__name__}); see the daemon's log")
                    now = trio.current_time()
                deadline = upstream.heap[0][0] if upstream.heap else math.inf
                with trio.move_on_at(deadline):
                    await upstream.wake.wait()
                upstream.wake = trio.Event()

    async def refresh_now(self, credential: Credential) -> None:
        """Read ``credential``'s record now (``vaultctl renew NAME`` of a sourced credential)."""
        source = credential.source
        upstream = None if source is None else self._upstreams.get(source.upstream)
        if upstream is None:
            return
        async with upstream.reading:
            await self._refresh(upstream, credential)

    async def _refresh(self, upstream: _Upstream, credential: Credential) -> None:
        source = credential.source
        assert source is not None
        name = credential.name
        now = trio.current_time()
        if not credential.budget.try_spend(now):  # pacing (a refresh under 2 s), not a failure
            self.track(credential, delay=credential.budget.next_available(now) - now)
            return
        credential.upstream_calls += 1
        try:
            record = await self.read(upstream.config.name, source.path)
        except BaoNotFound as exc:
            await self._pulled(credential, exc)
            return
        except (BaoError, RpcError) as exc:
            self._failed(credential, str(exc))
            return
        try:
            await self._apply(credential, record)
        except RpcError as exc:
            self._failed(credential, str(exc))
            return
        current = self._vault.sourced_credentials().get(name)
        if current is not None:
            self.track(current)

    async def _apply(self, credential: Credential, record: KvVersion) -> None:
        """Act on what a read found (SPEC.md section 12).

        Raises:
            RpcError: the read does not confirm the copy (a lower version, the same version of
                another record, an invalid record, a write that failed): the copy stays.
        """
        source = credential.source
        assert source is not None
        where = f"{source.upstream}:{source.path}"
        if record.version > source.version or (source.pulled is not None and record.version == source.version):
            await self._vault.adopt_version(credential, record)
            log.info("credential %r: version %d of %s adopted", credential.name, record.version, where)
            return
        fix = f"to take it: vaultctl add {credential.name} --kind {credential.kind} --from {where} --replace"
        if record.version < source.version:  # versions only go up: not served, not a confirmation
            raise RpcError(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                f"{where} answered version {record.version}, older than the {source.version} held: ignored (a "
                f"standby behind its leader, or an OpenBao rebuilt or restored; {fix})",
            )
        if source.created_time and record.created_time and record.created_time != source.created_time:
            raise RpcError(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                f"{where} version {record.version} was written at {record.created_time}, not at "
                f"{source.created_time} as the one held: another record (an OpenBao rebuilt or restored?); "
                f"the copy held is served until max_stale ({fix})",
            )
        was_degraded = source.degraded()
        source.confirmed_at, source.last_error, source.failures = self._wall(), None, 0
        if was_degraded:
            log.info("credential %r: %s answers again", credential.name, where)
            self._vault.changed()
        if source.confirm_due_write():
            await self._vault.save_confirmation()

    async def _pulled(self, credential: Credential, exc: BaoNotFound) -> None:
        source = credential.source
        assert source is not None
        reason = "destroyed" if exc.destroyed else "deleted" if exc.deleted else "not found (404)"
        if exc.version is not None:
            reason = f"version {exc.version} {reason}"
        source.last_error, source.failures = None, 0
        if source.pulled is None:
            try:
                await self._vault.pull(credential, reason)
            except RpcError as error:
                self._failed(credential, f"pulled upstream ({reason}), but not written: {error}")
                return
            log.warning("credential %r pulled: %s:%s %s", credential.name, source.upstream, source.path, reason)
        self.track(credential)

    def _failed(self, credential: Credential, message: str) -> None:
        source = credential.source
        assert source is not None
        source.last_error = message
        source.failures += 1
        log.warning("credential %r: refresh from %s failed: %s", credential.name, source.upstream, message)
        self._vault.changed()
        if self._vault.sourced_credentials().get(credential.name) is credential:
            self.track(credential)

    # -- status ------------------------------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        return [self.describe_one(self._upstreams[name]) for name in sorted(self._upstreams)]

    def describe_one(self, upstream: _Upstream) -> dict[str, Any]:
        session, now = upstream.session, self._wall()
        issued = session.issued
        sourced = sorted(
            name
            for name, credential in self._vault.sourced_credentials().items()
            if credential.source is not None and credential.source.upstream == upstream.config.name
        )
        state = session.state_at(now)
        if state is CredentialState.FRESH and upstream.call_error is not None:
            state = CredentialState.DEGRADED  # logged in, but its calls fail (sealed, down, refused)
        valid = issued is not None and state is not CredentialState.NEEDS_REAUTH and issued.valid_at(now)
        return {
            **upstream.config.describe(),
            "state": str(state),
            "token_expires_at": issued.expires_at if valid and issued is not None else None,
            "next_renewal": session.next_renewal,
            "last_error": session.last_error or upstream.call_error,
            "logins": upstream.provider.logins,
            "upstream_calls": session.upstream_calls,
            "sourced": sourced,
        }


async def _nothing_to_persist() -> None:
    """An upstream's session is never written: each unlock logs in again."""


#: The session renewer's providers bring their own HTTP client (each upstream its own CA).
_NO_SHARED_HTTP = object()
