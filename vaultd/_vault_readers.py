"""The vault's reader methods: ``token.get``, ``token.sign`` and ``token.watch``'s check, from memory.

A mixin of :class:`vaultd._vault.Vault`, which declares what is annotated here; the fast paths
(``get_now``, ``sign_now``) answer without waiting or say None, and the slow ones may wait for a
renewal, a Kraken nonce write or OpenBao transit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from vaultd_protocol import ErrorCode

from ._errors import RpcError
from ._signing import answers_now, sign_now, sign_request

if TYPE_CHECKING:
    from ._credentials import Credential
    from ._opened import OpenVault
    from ._providers.sign import Transit
    from ._renewer import Renewer
    from ._upstreams import Upstreams

__all__ = ["VaultReaders"]


class VaultReaders:
    """What engines call; ``_vault.Vault`` defines what is declared."""

    _open: OpenVault | None
    _epoch: int
    _renewer: Renewer | None
    _credentials: dict[str, Credential]
    _clock: Callable[[], float]
    _nonce_locks: dict[str, trio.Lock]
    _transit: Transit | None
    _upstreams: Upstreams | None
    _persist_current: Callable[[], Awaitable[None]]
    _closed: Callable[[], RpcError]

    def get_now(self, name: str, min_ttl: float) -> dict[str, Any] | None:
        """``token.get`` from memory: the result if a token is ready, None if it needs waiting.

        Raises:
            RpcError: LOCKED, NOT_INITIALIZED, UNKNOWN_CREDENTIAL.
        """
        renewer = self._renewer
        if self._open is None or renewer is None:
            return None  # the slow path says which refusal
        return renewer.serve_now(name, min_ttl)

    async def get(self, name: str, min_ttl: float) -> dict[str, Any]:
        """The ``token.get`` result for ``name``.

        Raises:
            RpcError: LOCKED, NOT_INITIALIZED, UNKNOWN_CREDENTIAL, TOKEN_EXPIRED,
                RENEWAL_FAILED, NEEDS_REAUTH.
        """
        renewer = self._renewer
        if self._open is None or renewer is None:
            raise self._closed()
        return await renewer.get(name, min_ttl)

    def sign_now(self, name: str, request: dict[str, Any]) -> dict[str, Any] | None:
        """``token.sign`` at once when no vault write is needed; None otherwise (or when locked).

        Raises:
            RpcError: INVALID_PARAMS, FORBIDDEN, PULLED, TOKEN_EXPIRED (as :meth:`sign`).
        """
        credential = self._credentials.get(name) if self._open is not None else None
        if credential is None:
            return None  # the slow path says which refusal
        if credential.source is not None:
            refused = credential.source.refusal(name, self._clock())
            if refused is not None:
                raise refused
        return sign_now(credential, request, self._clock)

    def signs_now(self, name: str) -> bool:
        """Whether :meth:`sign_now` answers for ``name`` now (a result or an error), never None:
        unlocked, held, and signed in memory (no Kraken nonce, no key in OpenBao transit)."""
        credential = self._credentials.get(name) if self._open is not None else None
        return credential is not None and answers_now(credential)

    async def sign(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        """Sign one request with credential ``name`` (``token.sign``); see ``_signing``.

        Raises:
            RpcError: LOCKED, NOT_INITIALIZED, UNKNOWN_CREDENTIAL, INVALID_PARAMS, FORBIDDEN,
                STORAGE_FAILED (a Kraken nonce mark could not be saved: nothing was signed),
                UPSTREAM_UNAVAILABLE (a key in OpenBao transit that could not sign now).
        """
        if self._open is None:
            raise self._closed()
        credential = self._credentials.get(name)
        if credential is None:
            raise RpcError(ErrorCode.UNKNOWN_CREDENTIAL, f"no credential named {name!r}")
        refused = None if credential.source is None else credential.source.refusal(name, self._clock())
        if refused is not None:
            raise refused
        lock = self._nonce_locks.setdefault(name, trio.Lock())
        epoch = self._epoch
        try:
            return await sign_request(
                credential, request, self._clock, lock, self._persist_current, transit=self._transit or self._upstreams
            )
        except RpcError as exc:
            if exc.code is ErrorCode.UNKNOWN_CREDENTIAL and self._epoch != epoch:
                # Gone during a round trip to OpenBao: locked away, not removed.
                raise RpcError(ErrorCode.LOCKED, "the vault was locked while this call ran: nothing signed") from None
            raise

    def watchable(self, names: Sequence[str]) -> None:
        """Raises: RpcError: LOCKED, NOT_INITIALIZED, UNKNOWN_CREDENTIAL (for ``token.watch``)."""
        if self._open is None:
            raise self._closed()
        missing = [name for name in names if name not in self._credentials]
        if missing:
            raise RpcError(ErrorCode.UNKNOWN_CREDENTIAL, f"no credential named {missing[0]!r}")
