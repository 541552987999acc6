"""Hyperliquid exchange actions: an EIP-712 secp256k1 signature over the hash of the msgpack'd action.

As Hyperliquid's Python SDK signs "L1" actions (``hyperliquid/utils/signing.py``,
``sign_l1_action``): ``connectionId`` = keccak256(msgpack(action) + nonce as 8 bytes big-endian
+ (``00`` | ``01`` + the 20 vault address bytes) [+ ``00`` + ``expiresAfter`` as 8 bytes]);
the phantom agent ``{source: "a" (mainnet) | "b" (testnet), connectionId}`` is signed as EIP-712
typed data ``Agent(string source,bytes32 connectionId)`` in the domain ``{name: "Exchange",
version: "1", chainId: 1337, verifyingContract: 0x0...0}``, by RFC 6979 ECDSA on secp256k1:
``{r, s, v}`` with ``v`` = 27 + the recovery id.

The engine posts its JSON body ``{"action": {...}, "nonce": ms, "vaultAddress"?: "0x..",
"expiresAfter"?: ms}`` to ``https://api.hyperliquid.xyz/exchange`` (mainnet) or
``api.hyperliquid-testnet.xyz`` (testnet: the host picks the ``source``); the ``extra`` knob
``network`` ("mainnet" or "testnet") may be given there but must agree with the host. Any other
host must be a loopback address (a local test server or proxy) and then needs ``network``, which
picks the ``source``: a public host that is not Hyperliquid's is refused. The scheme answers the
same body (re-serialized, keys in their order) with ``"signature"`` added, and ``nonce`` set to
the request's timestamp if it was absent. The action is packed exactly as parsed, keys in the
engine's order: Hyperliquid re-packs the action in its own field order, so the engine must send
the fields in the SDK's order, as the SDK does.

Every action posts to ``/exchange``: the allow-list judges ``/exchange/<action type>`` instead
(:func:`judged_path`), so that transfers and withdrawals can be refused by type.
"User-signed" actions (withdrawals, transfers, agent approvals: another EIP-712 domain,
``HyperliquidSignTransaction``) are never signed by this scheme.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from typing import Any
from urllib.parse import urlsplit

import msgpack
from Crypto.Hash import keccak

from ._base import JSON, Keys, Signed, SignError, SignRequest, body_headers, check_extra, check_request
from ._keys import Secp256k1Key

__all__ = ["NETWORKS", "USER_SIGNED", "Hyperliquid", "action_hash", "is_mainnet", "judged_path", "l1_digest"]

HOSTS = {"api.hyperliquid.xyz": True, "api.hyperliquid-testnet.xyz": False}
#: The ``extra`` knob ``network``: whether it names mainnet (``source`` "a") or testnet ("b").
NETWORKS = {"mainnet": True, "testnet": False}
PATH = "/exchange"
#: Actions signed in the ``HyperliquidSignTransaction`` domain (the SDK's ``sign_user_signed_action``
#: and ``sign_multi_sig_action`` callers, and ccxt's ``cDeposit``/``cWithdraw``): never signed here.
USER_SIGNED = frozenset({
    "usdSend", "spotSend", "withdraw3", "usdClassTransfer", "sendAsset", "tokenDelegate", "approveAgent",
    "approveBuilderFee", "convertToMultiSigUser", "multiSig", "userDexAbstraction", "userSetAbstraction",
    "cDeposit", "cWithdraw",
})  # fmt: skip
#: Hyperliquid accepts a nonce within (T - 2 days, T + 1 day) of its block time T.
NONCE_VALID_FOR_S = 2 * 86_400
#: How far a body's own nonce may stray from the request's timestamp (as ``token.sign`` allows).
_NONCE_PAST_MS, _NONCE_AHEAD_MS = 300_000, 60_000
_FIELDS = ("action", "nonce", "vaultAddress", "expiresAfter")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_TYPE = re.compile(r"[A-Za-z0-9_]{1,64}")
_UINT64 = 2**64
_KNOBS = frozenset({"network"})


def _keccak(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


_DOMAIN_SEPARATOR = _keccak(
    _keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    + _keccak(b"Exchange")
    + _keccak(b"1")
    + (1337).to_bytes(32, "big")
    + bytes(32)  # verifyingContract 0x0000000000000000000000000000000000000000
)
_AGENT_TYPEHASH = _keccak(b"Agent(string source,bytes32 connectionId)")


def action_hash(action: Any, nonce: int, vault_address: str | None, expires_after: int | None) -> bytes:
    """keccak256(msgpack(action) + nonce + vault flag/address [+ 0x00 + expiresAfter]): ``connectionId``.

    Raises:
        SignError: the action holds something msgpack cannot pack (an integer beyond 64 bits).
    """
    try:
        data = msgpack.packb(action)
    except (OverflowError, TypeError, ValueError):
        raise SignError("hyperliquid: the 'action' holds a value msgpack cannot pack (integers fit 64 bits)") from None
    data += nonce.to_bytes(8, "big")
    data += b"\x00" if vault_address is None else b"\x01" + bytes.fromhex(vault_address[2:])
    if expires_after is not None:
        data += b"\x00" + expires_after.to_bytes(8, "big")
    return _keccak(data)


def l1_digest(connection_id: bytes, mainnet: bool) -> bytes:
    """The EIP-712 digest of the phantom agent ``{source, connectionId}`` in the "Exchange" domain."""
    source = b"a" if mainnet else b"b"
    struct_hash = _keccak(_AGENT_TYPEHASH + _keccak(source) + connection_id)
    return _keccak(b"\x19\x01" + _DOMAIN_SEPARATOR + struct_hash)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):  # which one wins is the venue's choice
        raise SignError("hyperliquid: the JSON body must not repeat a key")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise SignError(f"hyperliquid: the JSON body must not hold {name}")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: json reads it as inf, and would write it back as Infinity
        raise SignError("hyperliquid: the JSON body must not hold a number beyond a double's range")
    return value


def _parse(body: bytes) -> dict[str, Any]:
    """The body as a JSON object of known fields, with an ``action`` object that has a ``type``.

    Raises:
        SignError: not such a JSON object, or it already carries a ``signature``.
    """
    try:
        parsed = json.loads(body, object_pairs_hook=_unique, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, SignError):
            raise
        raise SignError('hyperliquid: \'body\' must be a JSON object {"action": {...}, "nonce": ms, ...}') from None
    if not isinstance(parsed, dict):
        raise SignError('hyperliquid: \'body\' must be a JSON object {"action": {...}, "nonce": ms, ...}')
    if "signature" in parsed:
        raise SignError("hyperliquid: the body already carries a 'signature'")
    unknown = sorted(set(parsed) - set(_FIELDS))
    if unknown:
        raise SignError(f"hyperliquid: unknown body field {unknown[0][:32]!r} (known: {', '.join(_FIELDS)})")
    action = parsed.get("action")
    if not isinstance(action, dict) or not isinstance(action.get("type"), str):
        raise SignError("hyperliquid: the body's 'action' must be a JSON object with a string 'type'")
    if not _TYPE.fullmatch(action["type"]):
        raise SignError("hyperliquid: the action 'type' must be 1 to 64 letters, digits or '_'")
    return parsed


def judged_path(path: str, body: bytes) -> str:
    """The path the allow-list judges for a request: ``/exchange/<action type>`` for ``/exchange``.

    Raises:
        SignError: a POST to ``/exchange`` whose body names no action type.
    """
    if path != PATH:
        return path
    return f"{PATH}/{_parse(body)['action']['type']}"


def _whole(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _UINT64:
        raise SignError(f"hyperliquid: {name!r} must be a whole number of milliseconds (64 bits)")
    return value


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (a host name and port, as :func:`check_request` let it through) is loopback:
    ``localhost`` or a loopback IP address, as the daemon allows plain http to."""
    try:
        name = urlsplit("//" + host).hostname
    except ValueError:
        return False
    if name is None:
        return False
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_mainnet(host: str, network: str | None) -> bool:
    """Whether to sign for mainnet (``source`` "a"): Hyperliquid's host says so, or, on a loopback
    host, ``network`` does.

    Raises:
        SignError: ``network`` is not "mainnet" or "testnet", or disagrees with Hyperliquid's host;
            another host that is not loopback; a loopback host without ``network``.
    """
    if network is not None and network not in NETWORKS:
        raise SignError("hyperliquid: the option 'network' must be 'mainnet' or 'testnet'")
    named = HOSTS.get(host.lower())
    if named is not None:
        if network is not None and NETWORKS[network] != named:
            raise SignError(
                f"hyperliquid: the option 'network' is {network!r} but the host is"
                f" {'mainnet' if named else 'testnet'}'s ({host.lower()}): they must agree"
            )
        return named
    if not _is_loopback(host):
        raise SignError(
            f"hyperliquid: 'host' must be {' or '.join(HOSTS)} (it picks mainnet or testnet),"
            " or a loopback address with the option 'network'"
        )
    if network is None:
        raise SignError(
            "hyperliquid: a loopback 'host' needs the option 'network' ('mainnet' or 'testnet'):"
            " it picks the signature's source"
        )
    return NETWORKS[network]


class Hyperliquid:
    """Hyperliquid ``/exchange`` L1 actions, signed with the account's or API wallet's secp256k1 key."""

    name = "hyperliquid"
    key_kind = "secp256k1"
    remote_primitive = None
    #: ``token.sign`` asks the allow-list about ``judged_path(path, body)``, not the URL's path.
    judged_path = staticmethod(judged_path)

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        """Raises: SignError: another host (or network), method or path; a malformed body; a user-signed
        action; no key."""
        check_request(request, self.name)
        check_extra(request, _KNOBS, self.name)
        mainnet = is_mainnet(request.host, request.extra.get("network"))
        if request.method != "POST" or request.path != PATH or request.query:
            raise SignError("hyperliquid: only POST /exchange, without query parameters, is signed")
        if not _ADDRESS.fullmatch(keys.api_key):
            raise SignError("hyperliquid: 'api_key' must be the account's address, '0x' and 40 hex digits")
        key = keys.signing_key
        if not isinstance(key, Secp256k1Key):
            raise SignError("hyperliquid: needs a secp256k1 private key ('private_key', '0x' and 64 hex digits)")
        body = _parse(request.body)
        action = body["action"]
        if action["type"] in USER_SIGNED:
            raise SignError(
                f"hyperliquid: {action['type']!r} is a user-signed action (EIP-712 domain HyperliquidSignTransaction,"
                " for transfers, withdrawals and approvals): vaultd never signs those"
            )
        nonce = _whole(body.setdefault("nonce", request.timestamp_ms), "nonce")
        if not request.timestamp_ms - _NONCE_PAST_MS <= nonce <= request.timestamp_ms + _NONCE_AHEAD_MS:
            raise SignError("hyperliquid: the body's 'nonce' must be within a minute or so of the request's timestamp")
        vault = body.get("vaultAddress")
        if vault is not None and (not isinstance(vault, str) or not _ADDRESS.fullmatch(vault)):
            raise SignError("hyperliquid: 'vaultAddress' must be null or an address, '0x' and 40 hex digits")
        expires = body.get("expiresAfter")
        if expires is not None:
            expires = _whole(expires, "expiresAfter")
        digest = l1_digest(action_hash(action, nonce, vault, expires), mainnet)
        signature = key.sign_recoverable(digest, hasher=None)
        body["signature"] = {
            "r": "0x" + signature[:32].hex(),
            "s": "0x" + signature[32:64].hex(),
            "v": 27 + signature[64],
        }
        valid_until = nonce / 1000 + NONCE_VALID_FOR_S
        if expires is not None:
            valid_until = min(valid_until, expires / 1000)
        signed_body = json.dumps(body, separators=(",", ":")).encode("ascii")
        return Signed(body_headers(signed_body, JSON), (), signed_body, valid_until)

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"
