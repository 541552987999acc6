"""RPC handlers: one function per method, from checked params to a result or an RpcError.

No transport here (see ``_server``) and no vault logic (see ``_vault``): this module
validates params against the protocol's schemas, wraps passphrases in :class:`Secret`
at once, and shapes results as SPEC.md describes them. It also applies the policy
(``_policy``) to the reader methods, against the identity each connection had at accept,
and passes every outcome to one audit hook, :meth:`Dispatcher._audit`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Any, NoReturn

import trio

from vaultd_protocol import (
    PROTOCOL_VERSION,
    SUPPORTED_PROTOCOLS,
    ErrorCode,
    InvalidParams,
    KdfProfile,
    Method,
    Request,
    VaultState,
    parse_params,
)

from . import __version__
from ._audit import AuditLog
from ._batch import Batch, answer, answer_now
from ._errors import RpcError
from ._harden import is_dumpable
from ._notify import Notifier
from ._peer import Peer
from ._policy import Access, Decision, Policy, PolicyError
from ._rpc_admin import OperatorMethods
from ._server import NOT_NOW, Session
from ._stats import Stats
from ._vault import Vault
from ._watch import Subscription

__all__ = ["Dispatcher"]

log = logging.getLogger("vaultd.rpc")

#: The methods :meth:`Dispatcher.immediate` may answer at once, by their wire names.
_FAST = {
    Method.TOKEN_GET.value: Method.TOKEN_GET,
    Method.TOKEN_SIGN.value: Method.TOKEN_SIGN,
    Method.TOKEN_SIGN_MANY.value: Method.TOKEN_SIGN_MANY,
}
_Params = dict[str, Any]
#: Method names as the metrics label them (any other name is ``unknown``: a peer's free text
#: never becomes a label).
_KNOWN = frozenset(method.value for method in Method)
#: What the policy calls each method it governs for every peer; ``hello`` is open to all.
_POLICED: dict[str, str] = {
    Method.TOKEN_GET: "get",
    Method.TOKEN_SIGN: "sign",
    Method.TOKEN_SIGN_MANY: "sign",  # for each request of the call, by its credential
    Method.TOKEN_WATCH: "watch",
    Method.STATUS: "status",
}
#: Methods open to the daemon's own uid (with the passphrase where they take one) that another
#: uid may call only where a rule allows them, by these names.
_OWNER_METHODS: dict[str, str] = {
    Method.VAULT_LOCK: "lock",
    Method.VAULT_INIT: "admin",
    Method.VAULT_UNLOCK: "admin",
    Method.CREDENTIAL_PUT: "admin",
    Method.CREDENTIAL_REMOVE: "admin",
    Method.CREDENTIAL_LIST: "admin",
    Method.CREDENTIAL_RENEW: "admin",
    Method.POLICY_GET: "admin",
    Method.POLICY_SET: "admin",
    Method.VAULT_REKEY: "admin",
    Method.UPSTREAM_PUT: "admin",
    Method.UPSTREAM_REMOVE: "admin",
    Method.UPSTREAM_LIST: "admin",
    Method.NOTIFY_TEST: "admin",
    Method.VAULT_BACKUP: "admin",
    Method.VAULT_RESTORE: "admin",
    Method.CREDENTIAL_RELEASE: "admin",
    Method.CREDENTIAL_LOGIN: "admin",
    Method.CREDENTIAL_LOGIN_WAIT: "admin",
}


@dataclass
class Dispatcher(OperatorMethods):
    """Routes each request to its handler. Call it as the server's ``Handler``."""

    vault: Vault
    socket_path: Path
    started_at: float = field(default_factory=time.monotonic)
    #: Whether the daemon locked its memory at start (``_harden``), for ``status``.
    memory_locked: bool = False
    #: The daemon's own uid, which the policy treats apart.
    own_uid: int = field(default_factory=os.getuid)
    #: Where every decision is written (None: nowhere, as in tests of the transport).
    audit: AuditLog | None = None
    #: Credential names one connection may watch at once (over all its ``token.watch`` calls).
    max_watch_names: int = 256
    #: Requests answered and connections open, for ``status`` and the metrics (``_stats``).
    stats: Stats = field(default_factory=Stats)
    #: The alerts (``_notify``), for ``notify.test``; None: no sink configured anywhere.
    notifier: Notifier | None = None

    def __post_init__(self) -> None:
        self._handlers: dict[Method, Callable[[_Params, Session], Awaitable[Any]]] = {
            Method.HELLO: self._hello,
            Method.STATUS: self._status,
            Method.VAULT_INIT: self._init,
            Method.VAULT_UNLOCK: self._unlock,
            Method.VAULT_LOCK: self._lock,
            Method.TOKEN_GET: self._token_get,
            Method.TOKEN_WATCH: self._token_watch,
            Method.TOKEN_SIGN: self._token_sign,
            Method.TOKEN_SIGN_MANY: self._token_sign_many,
            Method.CREDENTIAL_PUT: self._put,
            Method.CREDENTIAL_REMOVE: self._remove,
            Method.CREDENTIAL_LIST: self._list,
            Method.CREDENTIAL_RENEW: self._renew,
            Method.POLICY_GET: self._policy_get,
            Method.POLICY_SET: self._policy_set,
            Method.VAULT_REKEY: self._rekey,
            Method.UPSTREAM_PUT: self._upstream_put,
            Method.UPSTREAM_REMOVE: self._upstream_remove,
            Method.UPSTREAM_LIST: self._upstream_list,
            Method.NOTIFY_TEST: self._notify_test,
            Method.VAULT_BACKUP: self._backup,
            Method.VAULT_RESTORE: self._restore,
            Method.CREDENTIAL_RELEASE: self._release,
            Method.CREDENTIAL_LOGIN: self._login,
            Method.CREDENTIAL_LOGIN_WAIT: self._login_wait,
        }
        self._policy_source: object = None  # what vault.policy() gave (None: sealed), compared by identity
        self._policy: Policy | None = None
        #: Open connections of other uids: closed at once when a lock or a new policy shuts them out.
        self._foreign: set[Session] = set()
        self._standing: object = None
        self.vault.add_listener(self._vault_changed)

    def immediate(self, request: Request, session: Session) -> Any:
        """Answer ``token.get``, ``token.sign`` and ``token.sign_many`` at once when memory
        suffices; else :data:`NOT_NOW`.

        The hot path: no task, no extra deadline. Anything that may wait (a renewal, a Kraken
        nonce write) or that is refused for vault reasons goes the slow way.

        Raises:
            RpcError: the same errors the methods answer, when they are known at once.
        """
        started = perf_counter_ns()
        try:
            result = self._immediate(request, session)
        except RpcError as exc:  # only methods of _FAST raise: the label is a known name
            self.stats.answered(request.method, exc.code.name, started)
            raise
        if result is not NOT_NOW:
            self.stats.answered(request.method, "ok", started)
        return result

    def _immediate(self, request: Request, session: Session) -> Any:
        method = _FAST.get(request.method)
        if method is None:
            return NOT_NOW
        try:
            params = parse_params(method, request.params)
        except InvalidParams as exc:
            raise RpcError(ErrorCode.INVALID_PARAMS, str(exc)) from None
        if method is Method.TOKEN_SIGN_MANY:
            answered = answer_now(self._batch(session), params)
            return NOT_NOW if answered is None else answered
        name = params["name"]
        why = self._authorize(session, method, (name,))
        try:
            if method is Method.TOKEN_GET:
                result = self.vault.get_now(name, params["min_ttl"])
            else:
                result = self.vault.sign_now(name, params)
        except RpcError as exc:
            self._audit(session.identity, request.method, name, exc.code.name, why=why)
            raise
        if result is None:
            return NOT_NOW
        self._audit(session.identity, request.method, name, "ok", token=result.get("token"), why=why)
        return result

    async def __call__(self, request: Request, session: Session) -> Any:
        started = perf_counter_ns()
        outcome = "INTERNAL"  # what the server answers for anything but an RpcError
        try:
            result = await self._call(request, session)
            outcome = "ok"
            return result
        except RpcError as exc:
            outcome = exc.code.name
            raise
        except trio.Cancelled:  # the peer left, or the daemon stops: nobody gets an answer
            outcome = "cancelled"
            raise
        except ExceptionGroup as group:  # as the server answers it: one RpcError inside is the answer
            leaves = group.exceptions
            if len(leaves) == 1 and isinstance(leaves[0], RpcError):
                outcome = leaves[0].code.name
            raise
        finally:
            self.stats.answered(request.method if request.method in _KNOWN else "unknown", outcome, started)

    async def _call(self, request: Request, session: Session) -> Any:
        try:
            method = Method(request.method)
        except ValueError:
            shown = request.method if len(request.method) <= 64 and request.method.isprintable() else "?"
            raise RpcError(ErrorCode.UNKNOWN_METHOD, f"unknown method {shown!r}") from None
        try:
            params = parse_params(method, request.params)
        except InvalidParams as exc:
            raise RpcError(ErrorCode.INVALID_PARAMS, str(exc)) from None
        if method is Method.TOKEN_SIGN_MANY:  # judged and audited request by request
            return await self._token_sign_many(params, session)
        names: Sequence[str | None] = params["names"] if method is Method.TOKEN_WATCH else (params.get("name"),)
        credential = ",".join(filter(None, names)) or None
        if method in _POLICED:
            why = self._authorize(session, method, names)
        elif method in _OWNER_METHODS and session.peer.uid != self.own_uid:
            why = self._authorize_other_uid(session, method, credential, params)
        else:
            why = ""
        outcome, token = "INTERNAL", None
        try:
            result = await self._handlers[method](params, session)
            outcome = "ok"
            if method is Method.TOKEN_GET:
                token = result.get("token")
            return result
        except RpcError as exc:
            outcome = exc.code.name
            raise
        finally:
            self._audit(session.identity, method, credential, outcome, token=token, why=why)

    # -- policy and audit ----------------------------------------------------------------------

    def _audit(
        self,
        identity: dict[str, Any],
        method: str,
        credential: str | None,
        outcome: str,
        *,
        token: str | None = None,
        why: str = "",
    ) -> None:
        """The audit log's one entry point: every decision and outcome passes here.

        ``identity`` is the peer's wire form (``Session.identity``, or ``peer.to_wire()`` at
        accept), kept by the log as it is; ``method`` an RPC method, ``"accept"`` for a
        connection refused at accept, or ``token.updated`` for a token pushed to a watcher;
        ``credential`` the name asked for (several, comma-separated, for ``token.watch``);
        ``outcome`` ``"ok"``, ``"refused"`` (at accept) or the error's name (``FORBIDDEN``,
        ``LOCKED``, ...); ``token`` the token handed out, to fingerprint (``Vault.fingerprint``),
        never to write; ``why`` the policy's reason ("" where the policy does not govern the
        method: the passphrase does, or it is open to every connected peer). Called on the hot
        path: it must return at once and never raise (``AuditLog.record`` only queues the line).
        """
        audit = self.audit
        if audit is None:
            return
        audit.record(
            identity=identity,
            method=method,
            credential=credential,
            outcome=outcome,
            fingerprint=self.vault.fingerprint(token) if token else None,
            detail=why or None,
        )

    def admits(self, peer: Peer) -> bool:
        """At accept, for a peer of another uid: only while unlocked, and when a rule matches it."""
        policy = self._current_policy()
        return policy is not None and policy.match(peer, own_uid=self.own_uid) is not None

    def refused(self, peer: Peer) -> None:
        """The server refused ``peer`` at accept."""
        self._audit(peer.to_wire(), "accept", None, "refused", why="another uid, and no policy rule matches it")

    def _current_policy(self) -> Policy | None:
        """The policy in force, parsed once per change; None while it is sealed (locked)."""
        source = self.vault.policy()
        if source is not self._policy_source:
            self._policy_source, self._policy = source, None
            if source is not None:
                try:
                    self._policy = Policy.from_config(source)
                except PolicyError as exc:
                    log.error("the stored policy cannot be read (%s): every reader call is refused", exc)
                    self._policy = Policy(broken=str(exc))
        return self._policy

    def _access(self, session: Session) -> Access:
        """This connection's standing under the policy in force (rebuilt when the policy changes)."""
        access: Access | None = session.access
        if access is None or access.source is not self.vault.policy():
            policy = self._current_policy()
            access = session.access = Access(policy, session.peer, self.own_uid, self._policy_source)
        return access

    def _authorize(self, session: Session, method: Method, names: Sequence[str | None]) -> str:
        """Why ``method`` may go on for every one of ``names``.

        Raises:
            RpcError: FORBIDDEN (the message names the method and credential, never a secret);
                LOCKED for a token method of another uid while the policy is sealed.
        """
        access = self._access(session)
        why = ""
        for name in names:
            decision = access.check(_POLICED[method], name)
            if not decision.allowed:
                self._refuse(session, access, method, name, decision)
            why = decision.why
        return why

    def _authorize_other_uid(self, session: Session, method: Method, name: str | None, params: _Params) -> str:
        """Why another uid may call ``vault.lock`` or a passphrase method: a rule allows it.

        Raises:
            RpcError: FORBIDDEN (the passphrase in ``params`` is wiped first: it is never checked).
        """
        access = self._access(session)
        decision = access.check(_OWNER_METHODS[method], None)
        if not decision.allowed:
            for key in ("passphrase", "new_passphrase"):
                params.pop(key, None)
            self._refuse(session, access, method, name, decision)
        return decision.why

    def opened(self, session: Session) -> None:
        """The server's hook for a new connection: keep those of other uids, to close on revocation."""
        uid = session.peer.uid
        self.stats.connected(uid)
        session.on_close(lambda: self.stats.disconnected(uid))
        session.on_close(lambda: self._subscribe(session, frozenset()))  # its watch ends with it
        if session.peer.uid != self.own_uid:
            self._foreign.add(session)
            session.on_close(lambda: self._foreign.discard(session))
            if not self.admits(session.peer):  # a lock or a new policy came since its accept
                self._shut_out(session)

    def _vault_changed(self) -> None:
        """The vault's listener: a lock or a new policy closes each other-uid connection it shuts out."""
        standing = (self.vault.state, self.vault.policy())
        before = self._standing
        if isinstance(before, tuple) and before[0] == standing[0] and before[1] is standing[1]:
            return
        self._standing = standing
        for session in list(self._foreign):
            if not self.admits(session.peer):
                self._shut_out(session)

    def _shut_out(self, session: Session) -> None:
        """Close a connection of another uid that the lock or the policy in force no longer lets in."""
        log.info("closing a connection of another user (%s): the lock or the policy shuts it out", session.peer)
        self._audit(session.identity, "revoke", None, "closed", why="access withdrawn by a lock or a new policy")
        self._foreign.discard(session)
        session.close()

    def _refuse(
        self, session: Session, access: Access, method: Method, name: str | None, decision: Decision
    ) -> NoReturn:
        peer = session.peer
        if access.sealed and method is not Method.STATUS:
            self._audit(session.identity, method, name, "LOCKED", why=decision.why)
            raise RpcError(ErrorCode.LOCKED, "the vault is locked: an operator must run 'vaultctl unlock'")
        what = str(method) if name is None else f"{method} of {name!r}"
        if access.first_denial(str(method), name):
            log.info("forbidden: %s for %s: %s", what, peer, decision.why)
        self._audit(session.identity, method, name, "FORBIDDEN", why=decision.why)
        raise RpcError(ErrorCode.FORBIDDEN, f"{what} is not allowed for this process: {decision.why}")

    def _push(self, session: Session, method: str, params: dict[str, Any]) -> bool:
        """A watcher's sink: each notification about a credential is judged by the policy in force."""
        name = params.get("name")
        if name is not None:
            decision = self._access(session).check("watch", name)
            if not decision.allowed:  # the policy changed since token.watch: stop watching this name
                self._audit(session.identity, method, name, "FORBIDDEN", why=decision.why)
                held: Subscription | None = session.watch
                if held is not None:  # the names still allowed go on being watched
                    self._subscribe(session, held.names - {name})
                return True
            if "token" in params:
                self._audit(session.identity, method, name, "ok", token=params["token"], why=decision.why)
        return session.notify(method, params)

    # -- any peer --------------------------------------------------------------------------

    async def _hello(self, params: _Params, session: Session) -> Any:
        if params["protocol"] not in SUPPORTED_PROTOCOLS:
            raise RpcError(
                ErrorCode.UNSUPPORTED_PROTOCOL,
                f"protocol {params['protocol']} is not supported (this daemon speaks {list(SUPPORTED_PROTOCOLS)})",
            )
        log.debug("hello from %s (%s)", session.peer, params["client"][:64])
        return {
            "protocol": PROTOCOL_VERSION,
            "server": f"vaultd {__version__}",
            "state": str(self.vault.state),
            "peer": session.peer.to_wire(),
        }

    async def _status(self, params: _Params, session: Session) -> Any:
        vault, access = self.vault, self._access(session)
        profile = vault.kdf_profile()
        warnings = []
        if profile == KdfProfile.MIN:
            warnings.append("the vault uses the 'min' KDF profile: for tests only, never for real secrets")
        if vault.state is VaultState.UNINITIALIZED and vault.backup.exists():
            warnings.append(vault.missing_vault())
        if vault.last_write_error:
            warnings.append(f"the last vault write failed: {vault.last_write_error}")
        owner = session.peer.uid == self.own_uid
        upstreams = vault.upstream_list() if owner else []
        alarms = list(vault.alarms) if owner else []
        warnings.extend(f"ALARM: {alarm['message'].removeprefix('ALARM: ')}" for alarm in alarms)
        warnings.extend(
            f"upstream {u['name']!r} is {u['state']}: {u['last_error']}" for u in upstreams if u["last_error"]
        )
        return {
            "state": str(vault.state),
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "uptime": time.monotonic() - self.started_at,
            "socket": str(self.socket_path),
            "vault_path": str(vault.path),
            "generation": vault.generation,
            "kdf_profile": profile,
            "failed_unlocks": vault.failed_attempts,
            "last_write_error": vault.last_write_error,
            "memory_locked": self.memory_locked,
            "dumpable": is_dumpable(),
            "credentials": [c for c in vault.describe() if access.shows(c["name"])],
            "upstreams": upstreams,
            "alarms": alarms,
            "warnings": warnings,
            "requests_total": self.stats.requests_total,
            "connections": self.stats.open_connections,
        }

    async def _lock(self, params: _Params, session: Session) -> Any:
        self.vault.lock()
        return {"state": str(self.vault.state)}

    async def _token_get(self, params: _Params, session: Session) -> Any:
        return await self.vault.get(params["name"], params["min_ttl"])

    async def _token_sign(self, params: _Params, session: Session) -> Any:
        return await self.vault.sign(params["name"], params)

    async def _token_sign_many(self, params: _Params, session: Session) -> Any:
        return await answer(self._batch(session), params)

    def _batch(self, session: Session) -> Batch:
        """How each request of one ``token.sign_many`` call is judged and audited (``_batch``)."""
        method, identity = Method.TOKEN_SIGN_MANY, session.identity
        return Batch(
            self.vault,
            lambda name: self._authorize(session, method, (name,)),
            lambda name, outcome, why: self._audit(identity, method, name, outcome, why=why),
        )

    async def _token_watch(self, params: _Params, session: Session) -> Any:
        """One subscription per connection: a further call adds its names to it, up to
        :attr:`max_watch_names` (a lock ends it: the next call starts afresh; a name the policy
        no longer allows leaves it)."""
        names: list[str] = params["names"]
        self.vault.watchable(names)
        hub = self.vault.hub
        held: Subscription | None = session.watch
        if held is not None and not hub.active(held):
            held = session.watch = None
        wanted = frozenset(names) | (held.names if held is not None else frozenset())
        if len(wanted) > self.max_watch_names:
            raise RpcError(
                ErrorCode.INVALID_PARAMS,
                f"a connection may watch at most {self.max_watch_names} credentials: "
                f"this one would watch {len(wanted)} (nothing was added)",
            )
        self._subscribe(session, wanted)
        return {"watching": names}

    def _subscribe(self, session: Session, names: frozenset[str]) -> None:
        """Make ``names`` this connection's one subscription (none if empty), in place of any other."""
        hub = self.vault.hub
        if session.watch is not None:
            hub.unsubscribe(session.watch)
        session.watch = (
            hub.subscribe(names, lambda method, pushed: self._push(session, method, pushed)) if names else None
        )
