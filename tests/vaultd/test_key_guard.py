"""Endpoints that create, change or re-bind API keys are refused by default, as withdrawals are.

An attacker's review found them open under the default allow-list: Bybit's ``/v5/user/update-api``
can lift the key's own IP binding, the exchange-side defence SPEC.md section 6.6 tells operators
to rely on.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest
import trio

from vaultd._allow import KEY_MANAGEMENT, manages_keys, moves_money
from vaultd._credentials import from_config
from vaultd._errors import RpcError
from vaultd._signing import sign_request
from vaultd_protocol import ErrorCode

NOW = 1_800_000_000.0
HMAC = {"api_key": "k", "secret": "s"}
PASSPHRASE = {**HMAC, "passphrase": "p"}
#: (scheme, keys, host, a key-management path of that venue)
GUARDED = [
    ("binance-hmac", HMAC, "api.binance.com", "/sapi/v1/sub-account/subAccountApi/ipRestriction"),
    ("binance-hmac", HMAC, "api.binance.com", "/sapi/v2/sub-account/subAccountApi/ipRestriction"),
    ("binance-hmac", HMAC, "api.binance.com", "/sapi/v1/broker/subAccountApi"),
    ("binance-hmac", HMAC, "api.binance.com", "/sapi/v2/broker/subAccountApi/ipRestriction"),
    ("okx", PASSPHRASE, "www.okx.com", "/api/v5/broker/nd/subaccount/modify-apikey"),
    ("kucoin", PASSPHRASE, "api.kucoin.com", "/api/v1/broker/nd/account/update-apikey"),
    ("bybit", HMAC, "api.bybit.com", "/v5/user/update-api"),
    ("bybit", HMAC, "api.bybit.com", "/v5/user/update-sub-api"),
    ("bybit", HMAC, "api.bybit.com", "/v5/user/create-sub-api"),
    ("bybit", HMAC, "api.bybit.com", "/v5/user/delete-api"),
    ("bybit", HMAC, "api.bybit.com", "/v5/user/delete-sub-api"),
    ("okx", PASSPHRASE, "www.okx.com", "/api/v5/users/subaccount/apikey"),
    ("okx", PASSPHRASE, "www.okx.com", "/api/v5/users/subaccount/modify-apikey"),
    ("okx", PASSPHRASE, "www.okx.com", "/api/v5/users/subaccount/delete-apikey"),
    ("kucoin", PASSPHRASE, "api.kucoin.com", "/api/v1/sub/api-key"),
    ("kucoin", PASSPHRASE, "api.kucoin.com", "/api/v1/sub/api-key/update"),
    ("bitget", PASSPHRASE, "api.bitget.com", "/api/v2/user/modify-virtual-subaccount-apikey"),
    ("bitget", PASSPHRASE, "api.bitget.com", "/api/v2/broker/manage/create-subaccount-apikey"),
    ("bitget", PASSPHRASE, "api.bitget.com", "/api/v2/broker/manage/modify-subaccount-api-key"),
    ("gate", HMAC, "api.gateio.ws", "/api/v4/sub_accounts/123/keys"),
    ("gate", HMAC, "api.gateio.ws", "/api/v4/sub_accounts/123/keys/abc"),
    ("deribit", {"api_key": "client-id", "secret": "s"}, "www.deribit.com", "/api/v2/private/edit_api_key"),
    ("deribit", {"api_key": "client-id", "secret": "s"}, "www.deribit.com", "/api/v2/private/reset_api_key"),
]


async def sign(scheme: str, keys: dict[str, Any], url: str, allow: list[str] | None = None) -> Any:
    config = {"scheme": scheme, **keys} | ({} if allow is None else {"allow": allow})
    credential = from_config("c", "sign", config, NOW)

    async def persist() -> None:
        pass

    body = b"{}" if scheme in ("okx", "kucoin", "bitget") else b""
    request = {"method": "POST", "url": url, "body": body, "options": {"nonce": "n1"} if scheme == "deribit" else None}
    return await sign_request(credential, request, lambda: NOW, trio.Lock(), persist)


def test_every_key_management_glob_has_a_case() -> None:
    paths = [path for *_, path in GUARDED]
    for glob in KEY_MANAGEMENT:
        assert any(fnmatch.fnmatch(path.lower(), glob.lower()) for path in paths), glob
    assert all(manages_keys(path) and not moves_money(path) for path in paths)


@pytest.mark.parametrize(("scheme", "keys", "host", "path"), GUARDED)
async def test_key_management_is_refused_unless_named_exactly(
    scheme: str, keys: dict[str, Any], host: str, path: str
) -> None:
    for spelled in (path, path.upper(), path + ".json"):
        with pytest.raises(RpcError) as refused:
            await sign(scheme, keys, f"https://{host}{spelled}")
        assert refused.value.code is ErrorCode.FORBIDDEN
        assert "creates or changes API keys" in refused.value.args[0]
    with pytest.raises(RpcError):
        await sign(scheme, keys, f"https://{host}{path}", allow=["POST /*"])
    assert await sign(scheme, keys, f"https://{host}{path}", allow=[f"POST {path}"])


@pytest.mark.parametrize(
    "path", ["/v5/user/query-api", "/api/v2/private/list_api_keys", "/api/v5/trade/order", "/api/v1/orders"]
)
def test_reads_and_trading_stay_open(path: str) -> None:
    assert not manages_keys(path)
