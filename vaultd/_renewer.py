"""Keeps every credential of an unlocked vault fresh, and answers ``token.get`` from it.

One task sleeps until the earliest deadline (a renewal or an expiry) and wakes for nothing
else: no polling. Each renewal is single-flight (concurrent callers wait for the one in
progress), bounded in time, and charged to the credential's upstream budget; failures back
off with full jitter; a refused long-term credential stops the loop for good (NEEDS_REAUTH).
A rotated refresh token is written to the vault before the token that came with it is
served (write-ahead), and the provider adopts it before that write, so the old one is never
presented again. Timers run on trio's clock; expiry is always judged by the wall clock.
A credential on hold (restored from a backup, ``_backup``) starts no attempt, forced or not:
nothing is sent upstream for it until it is released.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from vaultd_protocol import CredentialState, ErrorCode

from ._credentials import Credential, utc_text
from ._errors import RpcError
from ._providers import FetchContext, Issued, UpstreamError
from ._providers.oauth2 import AWAITING_LOGIN
from ._renewal import RenewalPolicy
from ._stats import UPSTREAM, failure_reason
from ._watch import EXPIRED, UPDATED, WatchHub

__all__ = ["Renewer", "token_result"]

log = logging.getLogger("vaultd.renewer")

_RENEW, _EXPIRE = "renew", "expire"
#: The timer loop wakes at least this often (one comparison) to notice the wall clock jump.
_HEARTBEAT = 30.0
#: How far the wall clock may drift from trio's before the timers are re-mapped.
_DRIFT = 1.0


def token_result(name: str, issued: Issued, now: float) -> dict[str, Any]:
    """The ``token.get`` result (and ``token.updated`` params): the one place a token is revealed."""
    return {
        "name": name,
        "token": issued.token.reveal_str(),
        "type": issued.token_type,
        "expires_at": issued.expires_at,
        "ttl": None if issued.expires_at is None else issued.expires_at - now,
        "headers": issued.headers(),
        "extra": dict(issued.extra),
    }


class Renewer:
    """The renewal loop for one unlocked vault; lives from unlock to lock.

    ``credentials`` returns the vault's current credentials (the vault swaps the whole map
    when it changes); ``persist`` writes the vault as memory holds it now.
    """

    def __init__(
        self,
        credentials: Callable[[], Mapping[str, Credential]],
        *,
        wall: Callable[[], float],
        persist: Callable[[], Awaitable[None]],
        hub: WatchHub,
        policy: RenewalPolicy | None = None,
        rng: random.Random | None = None,
        http: Any = None,
        fetch_timeout: float = 30.0,
        get_wait: float = 30.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._credentials = credentials
        #: Called when a credential's state may have changed (returns at once).
        self._on_change = on_change or (lambda: None)
        self._wall = wall
        self._persist = persist
        self._hub = hub
        self._policy = policy or RenewalPolicy()
        self._rng = rng or random.SystemRandom()
        self._http = http
        self._fetch_timeout = fetch_timeout
        self._get_wait = get_wait
        self._heap: list[tuple[float, int, str, Credential, float]] = []
        self._latest: dict[tuple[int, str], int] = {}
        self._seq = itertools.count()
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._scope = trio.CancelScope()
        self._stopped = False
        #: wall clock minus trio's clock, when the timers were last mapped.
        self._offset = 0.0

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fetch every credential's first token, then keep them fresh until :meth:`stop`."""
        with self._scope:
            async with self._http_client() as http, trio.open_nursery() as nursery:
                self._http, self._nursery = http, nursery
                self._offset = self._wall() - trio.current_time()
                for credential in list(self._credentials().values()):
                    self.start(credential)
                task_status.started()
                await self._timer_loop()

    def stop(self) -> None:
        """Cancel every attempt and timer (the vault is locking)."""
        self._stopped = True
        self._scope.cancel()

    def _http_client(self) -> Any:
        if self._http is not None:
            return _Borrowed(self._http)
        import httpx  # noqa: PLC0415 - only a daemon with an unlocked vault needs it

        return httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False, headers={"User-Agent": "vaultd"})

    def start(self, credential: Credential) -> None:
        """Begin tracking a credential (at unlock, or when one is added): fetch its first token."""
        provider = credential.provider
        if self._nursery is None or getattr(provider, "per_get", False):
            return
        if getattr(provider, "issues_tokens", True):
            self._begin(credential)

    def adopt(self, credential: Credential, issued: Issued) -> None:
        """Begin tracking a credential whose first token the caller already got (no fetch now)."""
        if self._nursery is None:
            issued.wipe()
            return
        self._succeeded(credential, issued)

    async def logged_in(
        self, credential: Credential, issued: Issued, adopt: Callable[[], Callable[[bool], None]] | None = None
    ) -> None:
        """An operator's login (``_login``) brought a new refresh token and this token: the success path.

        ``adopt`` puts the login's refresh token into the provider (only now: the answer was checked
        whole and the credential is still the one logged in) and returns how to settle it: kept once
        the vault is written, the previous one put back if the write failed (memory and file agree).
        The vault is written first (write-ahead), then the token is served and renewals planned,
        whatever the state was (NEEDS_REAUTH too, and ON_HOLD: a restored copy logged in anew holds
        its own grant, which no other copy can race).

        Raises:
            RpcError: STORAGE_FAILED or LOCKED (the write failed: the token is not served),
                UNKNOWN_CREDENTIAL (replaced or removed meanwhile: nothing adopted).
        """
        await self.settled(credential)  # a renewal begun during the redemption must not adopt after us
        if not self._current(credential):
            issued.wipe()
            raise RpcError(ErrorCode.UNKNOWN_CREDENTIAL, f"credential {credential.name!r} was replaced or removed")
        settle = adopt() if adopt is not None else None
        held, credential.hold = credential.hold, None  # a new grant: no copy to race, so ON_HOLD ends
        try:
            await self._persist()
        except RpcError:
            credential.hold = held
            if settle is not None:
                settle(False)
            issued.wipe()
            raise
        if settle is not None:
            settle(True)
        if not self._current(credential):
            issued.wipe()
            raise RpcError(ErrorCode.UNKNOWN_CREDENTIAL, f"credential {credential.name!r} was replaced or removed")
        self._succeeded(credential, issued)

    def spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``fn(*args)`` in the renewer's nursery: it ends when the vault locks."""
        if self._nursery is None:
            raise RpcError(ErrorCode.LOCKED, "the vault is locked")
        self._nursery.start_soon(fn, *args)

    def http_context(self) -> FetchContext:
        """What a provider's calls use outside a renewal (a login): the wall clock and the HTTP client."""
        return FetchContext(self._wall, self._http)

    async def settled(self, credential: Credential) -> None:
        """Wait until no renewal of ``credential`` is in flight."""
        while credential.renewing is not None:
            await credential.renewing.wait()

    def forget(self, credential: Credential) -> None:
        """Stop tracking a credential (removed or replaced): its timers become no-ops."""
        for action in (_RENEW, _EXPIRE):
            self._latest.pop((id(credential), action), None)

    # -- timers ----------------------------------------------------------------------------------

    def _schedule(self, credential: Credential, action: str, at_wall: float) -> None:
        self._follow_the_wall_clock()  # map with the offset of now, not of the last wake
        deadline = max(trio.current_time(), at_wall - self._offset)
        seq = next(self._seq)
        self._latest[(id(credential), action)] = seq
        heapq.heappush(self._heap, (deadline, seq, action, credential, at_wall))
        if action == _RENEW:
            credential.next_renewal = at_wall
        if self._heap[0][1] == seq:
            self._wake.set()  # earlier than what the loop sleeps for

    def _cancel(self, credential: Credential, action: str) -> None:
        self._latest.pop((id(credential), action), None)
        if action == _RENEW:
            credential.next_renewal = None

    def _follow_the_wall_clock(self) -> None:
        """After a suspend, trio's clock lags the wall clock: re-map every pending deadline."""
        offset = self._wall() - trio.current_time()
        if abs(offset - self._offset) <= _DRIFT:
            return
        log.info("the wall clock moved %.0f s against the monotonic clock: rescheduling", offset - self._offset)
        self._offset = offset
        now = trio.current_time()
        self._heap = [(max(now, at - offset), seq, a, c, at) for _, seq, a, c, at in self._heap]
        heapq.heapify(self._heap)
        self._wake.set()

    async def _timer_loop(self) -> None:
        while True:
            self._follow_the_wall_clock()
            now = trio.current_time()
            while self._heap and self._heap[0][0] <= now:
                _, seq, action, credential, _ = heapq.heappop(self._heap)
                if self._latest.get((id(credential), action)) != seq or not self._current(credential):
                    continue  # superseded, cancelled, or the credential is gone
                del self._latest[(id(credential), action)]
                if action == _RENEW:
                    credential.next_renewal = None
                    if credential.state is CredentialState.FRESH:
                        credential.state = CredentialState.RENEW_DUE
                    self._begin(credential)
                else:
                    self._check_expiry(credential)
            # Sleep until the next deadline; wake at least every HEARTBEAT to notice a suspend
            # (one comparison, not a scan: nothing is polled).
            deadline = min(self._heap[0][0] if self._heap else math.inf, now + _HEARTBEAT)
            with trio.move_on_at(deadline):
                await self._wake.wait()
            self._wake = trio.Event()

    def _current(self, credential: Credential) -> bool:
        return not self._stopped and self._credentials().get(credential.name) is credential

    def _check_expiry(self, credential: Credential) -> None:
        issued = credential.issued
        if issued is None or issued.expires_at is None:
            return
        if issued.valid_at(self._wall()):  # the trio clock ran ahead of the wall clock
            self._schedule(credential, _EXPIRE, issued.expires_at)
            return
        if not credential.provider.renewable:
            credential.last_error = _past_not_after(issued.expires_at)
            log.warning("credential %r: %s", credential.name, credential.last_error)
        else:
            log.warning(
                "credential %r: its token expired without a renewal (%s)", credential.name, credential.last_error
            )
        self._on_change()
        self._hub.publish(EXPIRED, credential.name, lambda: {"name": credential.name})
        idle = credential.renewing is None and credential.next_renewal is None
        if credential.provider.renewable and idle and credential.state is not CredentialState.NEEDS_REAUTH:
            self._begin(credential)  # no attempt planned (e.g. after a suspend): try now

    # -- renewals ---------------------------------------------------------------------------------

    def _begin(self, credential: Credential, *, forced: bool = False) -> trio.Event:
        """Start an attempt in the renewer's own nursery, unless one runs; return its done event.

        Attempts never run in a caller's task, so a caller that gives up (a timeout, a
        closed connection) cannot cut an attempt short and leave it unrecorded.
        """
        if credential.hold is not None:  # on hold: nothing goes upstream, whoever asks
            held = trio.Event()
            held.set()
            return held
        if credential.renewing is None:
            assert self._nursery is not None
            done = credential.renewing = trio.Event()
            self._nursery.start_soon(self._attempt, credential, forced, done)
        return credential.renewing

    async def _attempt(self, credential: Credential, forced: bool, done: trio.Event) -> None:
        recorded = False
        try:
            recorded = await self._renew_once(credential, forced=forced)
        except Exception as exc:  # groups too: one attempt's bug must not stop the renewer (and the daemon)
            log.error("credential %r: renewal failed: %s", credential.name, type(exc).__name__, exc_info=exc)
        finally:
            credential.renewing = None
            done.set()
            if not recorded and self._current(credential):
                self._failed(credential, "the attempt was interrupted", reason="internal")

    async def _renew_once(self, credential: Credential, *, forced: bool) -> bool:
        """One attempt; True once its outcome is recorded (success, failure, or a deliberate skip)."""
        provider = credential.provider
        if credential.hold is not None:  # a restored copy: nothing goes upstream until released
            return True
        if getattr(provider, "awaiting_login", False):  # nothing to present upstream yet: no call
            self._failed(credential, AWAITING_LOGIN.format(name=credential.name), reauth=True)
            return True
        if credential.state is CredentialState.NEEDS_REAUTH and not forced:
            return True
        if provider.renewable:
            now = trio.current_time()
            if not credential.budget.try_spend(now) and not forced:
                wait = credential.budget.next_available(now) - now
                credential.last_error = credential.last_error or f"upstream call budget spent: next try in {wait:.0f} s"
                self._schedule(credential, _RENEW, self._wall() + wait)
                return True
            credential.upstream_calls += 1
        limit = self._limit(credential)
        try:
            with trio.fail_after(limit):
                issued = await provider.fetch(FetchContext(self._wall, self._http))
        except UpstreamError as exc:
            if exc.rotated:  # a new refresh token came with a bad answer: keep it anyway
                await self._save_rotation(credential)
            self._failed(credential, str(exc), reauth=exc.reauth, reason=failure_reason(exc))
            return True
        except trio.TooSlowError:
            self._failed(credential, f"no answer within {limit:.0f} s", reason="timeout")
            return True
        except Exception as exc:  # a provider bug must not kill the loop for everyone
            log.error("credential %r: fetch failed: %s", credential.name, type(exc).__name__, exc_info=exc)
            self._failed(credential, f"internal error ({type(exc).__name__}); see the daemon's log", reason="internal")
            return True
        if not self._current(credential):
            issued.wipe()
            return True
        if issued.rotated and not await self._save_rotation(credential):
            issued.wipe()
            self._failed(
                credential, f"the rotated refresh token could not be saved: {credential.last_error}", reason="storage"
            )
            return True
        if not self._current(credential):
            issued.wipe()
            return True
        self._succeeded(credential, issued)
        return True

    async def _save_rotation(self, credential: Credential) -> bool:
        """Write-ahead: the vault holding the rotated secret is on disk before anything uses it."""
        try:
            await self._persist()
        except RpcError as exc:
            credential.last_error = str(exc)
            log.error("credential %r: a rotated refresh token could not be saved: %s", credential.name, exc)
            return False
        return True

    def _limit(self, credential: Credential) -> float:
        # A provider with its own, longer timeout (an exec command) gets that, plus a margin.
        return max(self._fetch_timeout, float(getattr(credential.provider, "timeout", 0.0)) + 5.0)

    def _succeeded(self, credential: Credential, issued: Issued) -> None:
        now = self._wall()
        if not issued.valid_at(now):
            expires_at = issued.expires_at
            issued.wipe()
            if not credential.provider.renewable:  # a stored token past its not_after: no retry helps
                self._expired_for_good(credential, expires_at)
                return
            self._failed(credential, "the new token had already expired when it arrived (a slow endpoint?)")
            return
        credential.set_issued(issued)
        if credential.provider.renewable:
            UPSTREAM.renewed(credential.name)
        credential.state = CredentialState.FRESH
        credential.failures = 0
        credential.last_error = None
        self._cancel(credential, _RENEW)
        if issued.expires_at is not None:
            credential.last_lifetime = issued.expires_at - issued.issued_at
            self._schedule(credential, _EXPIRE, issued.expires_at)
            if credential.provider.renewable:
                self._schedule(
                    credential, _RENEW, self._policy.renew_at(issued.issued_at, issued.expires_at, self._rng.random())
                )
        self._hub.publish(UPDATED, credential.name, lambda: token_result(credential.name, issued, now))
        self._on_change()

    def _expired_for_good(self, credential: Credential, expires_at: float | None) -> None:
        """A token that cannot be renewed has passed its end: EXPIRED, with no retry planned."""
        credential.last_error = _past_not_after(expires_at)
        credential.failures = max(credential.failures, 1)  # no token and a failure: EXPIRED (Credential.state_at)
        self._cancel(credential, _RENEW)
        if self._current(credential):
            log.warning("credential %r: %s", credential.name, credential.last_error)
            self._on_change()
            self._hub.publish(EXPIRED, credential.name, lambda: {"name": credential.name})

    def _failed(self, credential: Credential, message: str, *, reauth: bool = False, reason: str = "other") -> None:
        """Record a failed attempt; ``reason`` is the metrics' label (``_stats.REASONS``)."""
        credential.last_error = message
        if not self._current(credential):
            return
        if credential.provider.renewable:
            UPSTREAM.failed(credential.name, reason)
        self._on_change()
        if reauth:
            credential.state = CredentialState.NEEDS_REAUTH
            self._cancel(credential, _RENEW)
            if _awaits_login(message):  # a new credential: no news
                log.info("credential %r: %s", credential.name, message)
            else:
                log.error("credential %r needs an operator: %s", credential.name, message)
            return
        if credential.state is CredentialState.NEEDS_REAUTH:
            credential.state = CredentialState.RENEW_DUE  # a forced attempt failed, but not by refusal
        credential.failures += 1
        if credential.valid_token(self._wall()) is not None:
            credential.state = CredentialState.DEGRADED
        delay = self._policy.backoff(credential.failures, self._rng.random())
        log.warning("credential %r: renewal failed (%s); retrying in %.1f s", credential.name, message, delay)
        self._schedule(credential, _RENEW, self._wall() + delay)

    # -- requests --------------------------------------------------------------------------------

    async def get(self, name: str, min_ttl: float) -> dict[str, Any]:
        """A token valid for at least ``min_ttl`` more seconds, renewing now if need be.

        Raises:
            RpcError: UNKNOWN_CREDENTIAL, NEEDS_REAUTH, TOKEN_EXPIRED, RENEWAL_FAILED, LOCKED.
        """
        credential = self._lookup(name)
        if credential.hold is not None:
            raise credential.hold_refusal()
        if not getattr(credential.provider, "issues_tokens", True):
            raise RpcError(
                ErrorCode.INVALID_PARAMS,
                f"credential {name!r} signs requests and has no token: ask for a signature (token.sign; "
                f"'vaultctl sign {name} METHOD URL')",
            )
        if getattr(credential.provider, "per_get", False):
            return await self._mint(credential)
        result = self._serve(credential, min_ttl)
        if result is not None:
            return result
        if self._may_try_now(credential, min_ttl):
            done = self._begin(credential)
            with trio.move_on_after(self._get_wait):
                await done.wait()
            if self._stopped:
                raise RpcError(ErrorCode.LOCKED, "the vault was locked while this call waited")
            result = self._serve(credential, min_ttl)
            if result is not None:
                return result
        raise self._refusal(credential, min_ttl)

    def _may_try_now(self, credential: Credential, min_ttl: float) -> bool:
        """Whether a get may start an attempt: never against a backoff, nor for a lifetime the
        endpoint never grants (engines asking in a loop must not become a retry storm)."""
        if credential.state is CredentialState.NEEDS_REAUTH or credential.hold is not None:
            return False
        if credential.source is not None and credential.source.blocked_state(self._wall()) is not None:
            return False  # no renewal brings back a pulled or stale copy
        if credential.renewing is not None or (credential.issued is None and not credential.failures):
            return True
        if not credential.provider.renewable:
            return False
        if credential.last_lifetime is not None and min_ttl > credential.last_lifetime:
            return False
        backoff_pending = credential.failures and (credential.next_renewal or 0) > self._wall()
        return not backoff_pending

    def serve_now(self, name: str, min_ttl: float) -> dict[str, Any] | None:
        """A valid token from memory, or None when ``get`` has to decide (and maybe wait)."""
        credential = self._credentials().get(name)
        if credential is None or getattr(credential.provider, "per_get", False):
            return None
        if not getattr(credential.provider, "issues_tokens", True):
            return None
        return self._serve(credential, min_ttl)

    async def _mint(self, credential: Credential) -> dict[str, Any]:
        """A local token made for this one call (a ``jwt`` without reuse)."""
        issued = await credential.provider.fetch(FetchContext(self._wall, self._http))
        try:
            return token_result(credential.name, issued, self._wall())
        finally:
            issued.wipe()

    async def renew(self, name: str) -> dict[str, Any]:
        """One upstream attempt now, whatever the state (``credential.renew``)."""
        credential = self._lookup(name)
        if credential.hold is not None:
            raise credential.hold_refusal()
        while credential.renewing is not None:
            await credential.renewing.wait()
        await self._begin(credential, forced=True).wait()
        return credential.describe(self._wall())

    async def attempt(self, name: str) -> None:
        """One attempt now unless one is under way (then wait for that one); none in NEEDS_REAUTH.

        For a caller that just learned the token is bad (an upstream session's 403): however
        many learn it at once, they share one attempt.
        """
        credential = self._lookup(name)
        if credential.state is CredentialState.NEEDS_REAUTH or self._nursery is None:
            return
        await self._begin(credential).wait()

    def _lookup(self, name: str) -> Credential:
        credential = self._credentials().get(name)
        if credential is None:
            raise RpcError(ErrorCode.UNKNOWN_CREDENTIAL, f"no credential named {name!r}")
        return credential

    def _serve(self, credential: Credential, min_ttl: float) -> dict[str, Any] | None:
        now = self._wall()  # the wall clock, on every get: a suspended machine serves nothing stale
        issued = credential.valid_token(now)
        if issued is None:
            return None
        if issued.expires_at is not None and issued.expires_at - now < min_ttl:
            return None
        return token_result(credential.name, issued, now)

    def _refusal(self, credential: Credential, min_ttl: float) -> RpcError:
        name, now = credential.name, self._wall()
        if credential.hold is not None:
            return credential.hold_refusal()
        refused = None if credential.source is None else credential.source.refusal(name, now)
        if refused is not None:
            return refused
        if credential.state is CredentialState.NEEDS_REAUTH:
            return RpcError(
                ErrorCode.NEEDS_REAUTH,
                f"credential {name!r} awaits its first login: {credential.last_error}"
                if _awaits_login(credential.last_error)
                else f"credential {name!r} was refused upstream and needs an operator: {credential.last_error}",
            )
        issued = credential.valid_token(now)
        if issued is not None and issued.expires_at is not None:
            left = issued.expires_at - now
            if not credential.provider.renewable:
                how = "and cannot be renewed"
            elif credential.last_lifetime is not None and min_ttl > credential.last_lifetime:
                how = f"and its tokens live {credential.last_lifetime:.0f} s"
            else:
                how = "even after renewing"
            return RpcError(
                ErrorCode.TOKEN_EXPIRED,
                f"token {name!r} has {left:.0f} s left, less than min_ttl {min_ttl:.0f} s, {how}",
            )
        if not credential.provider.renewable:
            return RpcError(ErrorCode.TOKEN_EXPIRED, f"token {name!r} expired (not_after passed)")
        if credential.renewing is not None:
            return RpcError(ErrorCode.RENEWAL_FAILED, f"token {name!r} is still being renewed; try again")
        planned = credential.next_renewal
        retry = f"; next attempt in {planned - now:.0f} s" if planned and planned > now else ""
        return RpcError(
            ErrorCode.RENEWAL_FAILED,
            f"no valid token for {name!r}: the last renewal failed: {credential.last_error}{retry}",
        )


class _Borrowed:
    """An injected HTTP client, used as a context manager without being closed."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def __aenter__(self) -> Any:
        return self._client

    async def __aexit__(self, *exc_info: object) -> None:
        return None


def _past_not_after(expires_at: float | None) -> str:
    """What ``status`` says of a stored token past its ``not_after`` (nothing can renew it)."""
    when = "" if expires_at is None else f" ({utc_text(expires_at)})"
    return f"its not_after{when} has passed: replace the credential"


def _awaits_login(message: str | None) -> bool:
    """Whether a NEEDS_REAUTH's message is a new credential's "awaiting login" (nothing refused yet)."""
    return (message or "").startswith(AWAITING_LOGIN.split("{", 1)[0])
