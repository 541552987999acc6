"""RPC handlers: one function per method, from checked params to a result or an RpcError.

No transport here (see ``_server``) and no vault logic (see ``_vault``): this module
validates params against the protocol's schemas, wraps passphrases in :class:`Secret`
at once, and shapes results as SPEC.md describes them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaultd_protocol import (
    PROTOCOL_VERSION,
    SUPPORTED_PROTOCOLS,
    ErrorCode,
    InvalidParams,
    KdfProfile,
    Method,
    Request,
    parse_params,
)

from . import __version__
from ._errors import RpcError
from ._harden import is_dumpable
from ._secret import Secret
from ._server import NOT_NOW, Session
from ._vault import Vault

__all__ = ["Dispatcher"]

log = logging.getLogger("vaultd.rpc")

_MIN_PASSPHRASE = 8
_Params = dict[str, Any]


@dataclass
class Dispatcher:
    """Routes each request to its handler. Call it as the server's ``Handler``."""

    vault: Vault
    socket_path: Path
    started_at: float = field(default_factory=time.monotonic)
    #: Whether the daemon locked its memory at start (``_harden``), for ``status``.
    memory_locked: bool = False

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
            Method.CREDENTIAL_PUT: self._put,
            Method.CREDENTIAL_REMOVE: self._remove,
            Method.CREDENTIAL_LIST: self._list,
            Method.CREDENTIAL_RENEW: self._renew,
        }

    def immediate(self, request: Request, session: Session) -> Any:
        """Answer ``token.get`` and ``token.sign`` at once when memory suffices; else :data:`NOT_NOW`.

        The hot path: no task, no extra deadline. Anything that may wait (a renewal, a Kraken
        nonce write) or that is refused for vault reasons goes the slow way.

        Raises:
            RpcError: the same errors the methods answer, when they are known at once.
        """
        if request.method not in (Method.TOKEN_GET, Method.TOKEN_SIGN):
            return NOT_NOW
        method = Method(request.method)
        try:
            params = parse_params(method, request.params)
        except InvalidParams as exc:
            raise RpcError(ErrorCode.INVALID_PARAMS, str(exc)) from None
        if method is Method.TOKEN_GET:
            result = self.vault.get_now(params["name"], params["min_ttl"])
        else:
            result = self.vault.sign_now(params["name"], params)
        return NOT_NOW if result is None else result

    async def __call__(self, request: Request, session: Session) -> Any:
        try:
            method = Method(request.method)
        except ValueError:
            shown = request.method if len(request.method) <= 64 and request.method.isprintable() else "?"
            raise RpcError(ErrorCode.UNKNOWN_METHOD, f"unknown method {shown!r}") from None
        try:
            params = parse_params(method, request.params)
        except InvalidParams as exc:
            raise RpcError(ErrorCode.INVALID_PARAMS, str(exc)) from None
        return await self._handlers[method](params, session)

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
        vault = self.vault
        profile = vault.kdf_profile()
        warnings = []
        if profile == KdfProfile.MIN:
            warnings.append("the vault uses the 'min' KDF profile: for tests only, never for real secrets")
        if vault.last_write_error:
            warnings.append(f"the last vault write failed: {vault.last_write_error}")
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
            "credentials": vault.describe(),
            "warnings": warnings,
        }

    async def _lock(self, params: _Params, session: Session) -> Any:
        self.vault.lock()
        return {"state": str(self.vault.state)}

    async def _token_get(self, params: _Params, session: Session) -> Any:
        return await self.vault.get(params["name"], params["min_ttl"])

    async def _token_sign(self, params: _Params, session: Session) -> Any:
        return await self.vault.sign(params["name"], params)

    async def _token_watch(self, params: _Params, session: Session) -> Any:
        names: list[str] = params["names"]
        self.vault.watchable(names)
        hub = self.vault.hub
        subscription = hub.subscribe(names, session.notify)
        session.on_close(lambda: hub.unsubscribe(subscription))
        return {"watching": names}

    # -- passphrase methods ------------------------------------------------------------------

    async def _init(self, params: _Params, session: Session) -> Any:
        try:
            profile = KdfProfile(params["kdf_profile"])
        except ValueError:
            known = ", ".join(p.value for p in KdfProfile)
            raise RpcError(ErrorCode.INVALID_PARAMS, f"kdf_profile must be one of: {known}") from None
        if len(params["passphrase"]) < _MIN_PASSPHRASE:
            raise RpcError(ErrorCode.INVALID_PARAMS, f"the passphrase must be at least {_MIN_PASSPHRASE} characters")
        await self.vault.init(_secret(params), profile)
        return {"state": str(self.vault.state), "kdf_profile": str(profile)}

    async def _unlock(self, params: _Params, session: Session) -> Any:
        await self.vault.unlock(_secret(params))
        return {"state": str(self.vault.state)}

    async def _put(self, params: _Params, session: Session) -> Any:
        created = await self.vault.put(
            _secret(params), params["name"], params["kind"], params["config"], replace=params["replace"]
        )
        return {"name": params["name"], "kind": params["kind"], "created": created}

    async def _remove(self, params: _Params, session: Session) -> Any:
        await self.vault.remove(_secret(params), params["name"])
        return {"name": params["name"]}

    async def _list(self, params: _Params, session: Session) -> Any:
        return {"credentials": await self.vault.list(_secret(params))}

    async def _renew(self, params: _Params, session: Session) -> Any:
        return {"credential": await self.vault.renew(_secret(params), params["name"])}


def _secret(params: _Params) -> Secret:
    """Move the passphrase out of the params map into a Secret."""
    return Secret(params.pop("passphrase"))
