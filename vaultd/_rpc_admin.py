"""The operator's methods: ``vault.init``/``unlock``/``rekey``/``backup``/``restore``, ``credential.*``
but the token methods, ``policy.*``, ``upstream.*`` and ``notify.test``: each one's params into a
call on the vault, and its result as SPEC.md shows it.

A mixin of :class:`vaultd._rpc.Dispatcher`, which routes, authorizes and audits; nothing here
decides who may call what. Passphrases leave the params map at once, as :class:`Secret`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaultd_protocol import ErrorCode, KdfProfile, Method

from ._errors import RpcError
from ._policy import Policy, PolicyError
from ._secret import Secret
from ._upstream import UpstreamAlarm

if TYPE_CHECKING:
    from ._notify import Notifier
    from ._server import Session
    from ._vault import Vault

__all__ = ["OperatorMethods", "take_secret"]

_MIN_PASSPHRASE = 8
#: ``credential.login``'s longest ``timeout`` (RFC 8628 device codes live about this long); a
#: ``credential.login_wait`` returns within ``_WAIT_MAX``, well inside the request timeout (120 s).
_LOGIN_MAX, _WAIT_MAX = 900.0, 90.0
_Params = dict[str, Any]


class OperatorMethods:
    """The operator's handlers; the dispatcher gives ``vault``, ``notifier`` and ``_audit``."""

    vault: Vault
    notifier: Notifier | None

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
        raise NotImplementedError  # the dispatcher's

    async def _init(self, params: _Params, session: Session) -> Any:
        try:
            profile = KdfProfile(params["kdf_profile"])
        except ValueError:
            known = ", ".join(p.value for p in KdfProfile)
            raise RpcError(ErrorCode.INVALID_PARAMS, f"kdf_profile must be one of: {known}") from None
        if len(params["passphrase"]) < _MIN_PASSPHRASE:
            raise RpcError(ErrorCode.INVALID_PARAMS, f"the passphrase must be at least {_MIN_PASSPHRASE} characters")
        await self.vault.init(take_secret(params), profile)
        return {"state": str(self.vault.state), "kdf_profile": str(profile)}

    async def _unlock(self, params: _Params, session: Session) -> Any:
        accepted = await self.vault.unlock(take_secret(params), accept_rollback=params["accept_rollback"])
        if accepted:  # the operator chose to unlock an older vault: its own line, beside the "ok"
            self._audit(session.identity, Method.VAULT_UNLOCK, None, "rollback_accepted", why=accepted)
            return {"state": str(self.vault.state), "rollback_accepted": accepted}
        return {"state": str(self.vault.state)}

    async def _put(self, params: _Params, session: Session) -> Any:
        created = await self.vault.put(
            take_secret(params),
            params["name"],
            params["kind"],
            params["config"],
            replace=params["replace"],
            source=params["source"],
        )
        return {"name": params["name"], "kind": params["kind"], "created": created}

    async def _remove(self, params: _Params, session: Session) -> Any:
        await self.vault.remove(take_secret(params), params["name"])
        return {"name": params["name"]}

    async def _list(self, params: _Params, session: Session) -> Any:
        return {"credentials": await self.vault.list(take_secret(params))}

    async def _renew(self, params: _Params, session: Session) -> Any:
        upstream = self.vault.has_upstream(params["name"])
        described = await self.vault.renew(take_secret(params), params["name"])
        return {"upstream": described} if upstream else {"credential": described}

    async def _policy_get(self, params: _Params, session: Session) -> Any:
        stored = await self.vault.get_policy(take_secret(params))
        return {"rules": stored.get("rules", [])}

    async def _policy_set(self, params: _Params, session: Session) -> Any:
        passphrase = take_secret(params)
        try:
            policy = Policy.from_config(params["policy"])
        except PolicyError as exc:
            passphrase.wipe()
            raise RpcError(ErrorCode.INVALID_PARAMS, f"policy: {exc}") from None
        await self.vault.set_policy(passphrase, policy.to_config())
        return {"rules": len(policy.rules)}

    async def _rekey(self, params: _Params, session: Session) -> Any:
        # Characters, as SPEC.md says and vault.init counts (the Secret's length is UTF-8 bytes).
        too_short = len(params["new_passphrase"]) < _MIN_PASSPHRASE
        new_passphrase = Secret(params.pop("new_passphrase"))
        try:
            if too_short:
                raise RpcError(
                    ErrorCode.INVALID_PARAMS, f"the new passphrase must be at least {_MIN_PASSPHRASE} characters"
                )
            await self.vault.rekey(take_secret(params), new_passphrase)
        finally:
            new_passphrase.wipe()
        return {}

    async def _upstream_put(self, params: _Params, session: Session) -> Any:
        name = params["name"]
        created = not self.vault.has_upstream(name)
        try:
            described = await self.vault.put_upstream(
                take_secret(params), name, params["kind"], params["config"], replace=params["replace"]
            )
        except UpstreamAlarm as alarm:  # its own line, beside the FORBIDDEN the call gets
            self._audit(session.identity, Method.UPSTREAM_PUT, name, "alarm", why=str(alarm))
            raise
        return {"upstream": described, "created": created}

    async def _login(self, params: _Params, session: Session) -> Any:
        if not 1 <= params["timeout"] <= _LOGIN_MAX:
            take_secret(params).wipe()
            raise RpcError(ErrorCode.INVALID_PARAMS, f"'timeout' must be between 1 and {_LOGIN_MAX:.0f} seconds")
        return await self.vault.login(
            take_secret(params), params["name"], device=params["device"], lifetime=params["timeout"]
        )

    async def _login_wait(self, params: _Params, session: Session) -> Any:
        if params["wait"] > _WAIT_MAX:
            take_secret(params).wipe()
            raise RpcError(ErrorCode.INVALID_PARAMS, f"'wait' must be at most {_WAIT_MAX:.0f} seconds")
        return await self.vault.login_wait(take_secret(params), params["login_id"], params["wait"])

    async def _upstream_remove(self, params: _Params, session: Session) -> Any:
        await self.vault.remove_upstream(take_secret(params), params["name"])
        return {"name": params["name"]}

    async def _upstream_list(self, params: _Params, session: Session) -> Any:
        return {
            "state": str(self.vault.state),
            "upstreams": self.vault.upstream_list(),
            "alarms": list(self.vault.alarms),
        }

    async def _notify_test(self, params: _Params, session: Session) -> Any:
        """A sample notice to every ``[[notify]]`` sink; each one's outcome (no sink: an empty list).

        The passphrase first: an engine must not be able to make the operator's pager ring, nor start
        the sinks' commands at will."""
        await self.vault.check_passphrase(take_secret(params))
        notifier = self.notifier
        if notifier is None:
            return {"event": params["event"], "sinks": []}
        try:
            sample = notifier.sample(params["event"])
        except ValueError as exc:
            raise RpcError(ErrorCode.INVALID_PARAMS, f"parameter 'event': {exc}") from None
        return {"event": sample["event"], "sinks": await notifier.test(params["event"])}

    async def _backup(self, params: _Params, session: Session) -> Any:
        path = Path(params["path"])
        return await self.vault.backup_to(take_secret(params), path, force=params["force"], then_lock=params["lock"])

    async def _restore(self, params: _Params, session: Session) -> Any:
        backup_passphrase = params.pop("backup_passphrase", None)
        result = await self.vault.restore_from(
            take_secret(params),
            Path(params["path"]),
            None if backup_passphrase is None else Secret(backup_passphrase),
        )
        # A rollback the operator asked for: its own line, beside the "ok", as an accepted unlock has.
        self._audit(session.identity, Method.VAULT_RESTORE, None, "rollback_accepted", why=result["rollback_accepted"])
        return result

    async def _release(self, params: _Params, session: Session) -> Any:
        return {"credential": await self.vault.release(take_secret(params), params["name"])}


def take_secret(params: _Params) -> Secret:
    """Move the passphrase out of the params map into a Secret."""
    return Secret(params.pop("passphrase"))
