"""``token.sign_many``: many ``token.sign`` requests in one call, each judged, signed and audited alone.

Each request is checked against ``token.sign``'s schema, then the policy (the peer must be
allowed ``sign`` on its credential, SPEC.md section 11), then the credential's allow-list and
scheme, exactly as one ``token.sign`` call would be, and gets one audit line of its own (method
``token.sign_many``). A refusal is that request's answer only: the others are signed all the same.

A call of at most :data:`HOT_MAX` requests, every one of which the vault answers from memory,
is answered at once, on the server's hot path (:func:`answer_now`): a larger one would hold the
event loop (and every other engine) for as long as all its signatures take. Any other call (more
requests, a Kraken nonce, a key in OpenBao transit, a credential not there, a locked vault) goes
to a task (:func:`answer`): there the requests of one credential are signed one after another in
the call's order, so a Kraken credential's nonces increase in that order, and those of different
credentials side by side, with a checkpoint between two requests so that other engines are
answered meanwhile.

A request that fails in a way no check foresaw is that request's INTERNAL error (logged by its
type, never its text), not the whole call's: one refusal does not sink the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from vaultd_protocol import ErrorCode, InvalidParams, Method, parse_params

from ._errors import RpcError
from ._vault import Vault

__all__ = ["HOT_MAX", "Batch", "answer", "answer_now"]

log = logging.getLogger("vaultd.batch")

#: The most requests a call may have to be answered on the hot path (at once, without a task).
HOT_MAX = 8

#: One request of the call: the credential it names (when it names one) and its checked params,
#: or the error its params earned.
_Item = tuple[str | None, dict[str, Any] | RpcError]


@dataclass(frozen=True, slots=True)
class Batch:
    """What one call's requests are judged and recorded with, bound to the caller's connection."""

    vault: Vault
    #: Why the policy lets this peer have ``name`` signed; raises RpcError (FORBIDDEN, LOCKED)
    #: after writing the refusal's audit line itself.
    authorize: Callable[[str], str]
    #: Write one audit line: (credential, outcome, the policy's reason).
    audit: Callable[[str | None, str, str], None]


def _items(params: dict[str, Any]) -> list[_Item]:
    items: list[_Item] = []
    for raw in params["requests"]:
        try:
            parsed = parse_params(Method.TOKEN_SIGN, [raw])
            items.append((parsed["name"], parsed))
        except InvalidParams as exc:  # audited without a name: no policy has judged it
            items.append((None, RpcError(ErrorCode.INVALID_PARAMS, f"request: {exc}")))
    return items


def _error(exc: RpcError) -> dict[str, Any]:
    return {"error": exc.to_error_info().to_wire()}


def _malformed(batch: Batch, name: str | None, exc: RpcError) -> dict[str, Any]:
    batch.audit(name, exc.code.name, "")
    return _error(exc)


def answer_now(batch: Batch, params: dict[str, Any]) -> dict[str, Any] | None:
    """The ``token.sign_many`` result at once, or None when a request needs the slow path
    (then nothing was signed, judged or audited yet)."""
    if len(params["requests"]) > HOT_MAX:
        return None
    items = _items(params)
    signs_now = batch.vault.signs_now
    if not all(isinstance(item, RpcError) or signs_now(item["name"]) for _, item in items):
        return None
    return {"results": [_one_now(batch, name, item) for name, item in items]}


def _one_now(batch: Batch, name: str | None, item: dict[str, Any] | RpcError) -> dict[str, Any]:
    if isinstance(item, RpcError):
        return _malformed(batch, name, item)
    name = item["name"]
    try:
        why = batch.authorize(name)
    except RpcError as exc:  # audited by the policy check itself
        return _error(exc)
    outcome = "INTERNAL"
    try:
        result = batch.vault.sign_now(name, item)
        if result is None:  # not after signs_now said yes, with no await between: a bug
            raise RpcError(ErrorCode.INTERNAL, "the request could not be signed at once (see the daemon's log)")
        outcome = "ok"
        return result
    except RpcError as exc:
        outcome = exc.code.name
        return _error(exc)
    except Exception as exc:
        return _unforeseen(exc)
    finally:
        batch.audit(name, outcome, why)


def _unforeseen(exc: Exception) -> dict[str, Any]:
    log.error("token.sign_many: a request failed unexpectedly (%s)", type(exc).__name__)
    return _error(RpcError(ErrorCode.INTERNAL, "this request failed unexpectedly (see the daemon's log)"))


async def answer(batch: Batch, params: dict[str, Any]) -> dict[str, Any]:
    """The ``token.sign_many`` result, waiting where a request must (a nonce mark, OpenBao)."""
    items = _items(params)
    results: list[dict[str, Any] | None] = [None] * len(items)
    by_credential: dict[str, list[int]] = {}
    for index, (name, item) in enumerate(items):
        if isinstance(item, RpcError):
            results[index] = _malformed(batch, name, item)
        else:
            by_credential.setdefault(item["name"], []).append(index)

    async def sign_in_order(indices: list[int]) -> None:
        for index in indices:
            await trio.lowlevel.checkpoint()  # other engines are answered between two signatures
            item = items[index][1]
            assert not isinstance(item, RpcError)
            results[index] = await _one(batch, item)

    groups = list(by_credential.values())
    if len(groups) == 1:
        await sign_in_order(groups[0])
    else:
        async with trio.open_nursery() as nursery:
            for indices in groups:
                nursery.start_soon(sign_in_order, indices)
    return {"results": results}


async def _one(batch: Batch, item: dict[str, Any]) -> dict[str, Any]:
    name = item["name"]
    try:
        why = batch.authorize(name)
    except RpcError as exc:  # audited by the policy check itself
        return _error(exc)
    outcome = "INTERNAL"
    try:
        result = await batch.vault.sign(name, item)
        outcome = "ok"
        return result
    except RpcError as exc:
        outcome = exc.code.name
        return _error(exc)
    except Exception as exc:
        return _unforeseen(exc)
    finally:
        batch.audit(name, outcome, why)
