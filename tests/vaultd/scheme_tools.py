"""Shared by the tests of the KuCoin, Bitget, Gate, Kraken Futures and WebSocket login schemes:
fake credentials, the ccxt clock, a request builder, a vault to sign through, and a transit
stand-in (the one of test_sign_transit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from vaultd._credentials import Credential, from_config
from vaultd._providers.sign import Transit
from vaultd._schemes import Keys, SignRequest, decode_secret
from vaultd._secret import Secret
from vaultd._signing import sign_request
from vaultd._vault import Vault
from vaultd_protocol import KdfProfile

#: The clock every ccxt-derived vector was computed at: ccxt 4.5.90 with ``milliseconds()``,
#: ``seconds()`` and ``nonce()`` patched to this instant (2025-12-06T05:46:40.123Z).
CCXT_TS_MS = 1_765_000_000_123
API_KEY = "fake-api-key"
#: Fake credentials, the same in every ccxt run; 28 bytes (transit needs 32: see TRANSIT_SECRET).
SECRET = "fake-secret-0123456789abcdef"
PASSPHRASE = "fake-pass-phrase"
#: Kraken's published Spot example private key (test_schemes.py), here a fake Futures secret.
KRAKEN_SECRET = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
#: At least 32 bytes, transit's minimum HMAC key size.
TRANSIT_SECRET = "fake-transit-secret-0123456789abcdef"
VAULT_PASS = "fake vault passphrase"


def keys(secret: str = SECRET, encoding: str = "raw", *, passphrase: str | None = PASSPHRASE) -> Keys:
    return Keys(
        api_key=API_KEY,
        secret=Secret(decode_secret(secret, encoding)),
        passphrase=None if passphrase is None else Secret(passphrase),
    )


def req(
    method: str,
    path: str,
    query: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    *,
    timestamp_ms: int = CCXT_TS_MS,
    nonce: int | None = None,
    host: str = "api.example.com",
    **extra: str,
) -> SignRequest:
    return SignRequest(method, host, path, query, body, timestamp_ms, nonce, extra)


def credential(config: dict[str, Any], now: float) -> Credential:
    return from_config("c", "sign", config, now)


async def sign_with(
    config: dict[str, Any], request: dict[str, Any], now: float, *, transit: Transit | None = None
) -> dict[str, Any]:
    """``token.sign`` for one credential made from ``config``, the vault's writes ignored."""

    async def persist() -> None:
        pass

    cred = credential(config, now)
    return await sign_request(cred, dict(request), lambda: now, trio.Lock(), persist, transit=transit)


async def vault_with(path: Path, nursery: trio.Nursery, name: str, config: dict[str, Any], now: float) -> Vault:
    """An unlocked vault (the daemon's, less its socket) holding one ``sign`` credential."""
    vault = Vault(path, nursery=nursery, clock=lambda: now)
    await vault.init(Secret(VAULT_PASS), KdfProfile.MIN)
    await vault.unlock(Secret(VAULT_PASS))
    await vault.put(Secret(VAULT_PASS), name, "sign", config, replace=False)
    return vault
