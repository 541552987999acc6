"""The withdrawal guard of ``token.sign`` has no spelling holes: every money-moving endpoint of
every scheme, spelled every way a venue's front end might normalise, is refused.

Each spelling is tried twice: under the default allow-list (every endpoint but the guarded
ones) and under an allow-list that names the plain guarded path literally, where the plain
spelling does sign (the positive control: a refusal below is the spelling's, not the setup's).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from vaultd._allow import MONEY_MOVING, moves_money
from vaultd._credentials import from_config
from vaultd._errors import RpcError
from vaultd._signing import sign_request
from vaultd_protocol import ErrorCode

NOW = 1_800_000_000.0
HMAC_SECRET = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="


def _pem(key: Any) -> str:
    return str(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
    )


ED_PEM = _pem(ed25519.Ed25519PrivateKey.generate())
EC_PEM = _pem(ec.generate_private_key(ec.SECP256R1()))
RSA_PEM = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))

#: Every scheme: its key config, its host, and one concrete path for each guarded glob of its venue.
BINANCE_MONEY = (
    "/sapi/v1/capital/withdraw/apply", "/sapi/v1/asset/transfer", "/sapi/v1/sub-account/universalTransfer",
    "/sapi/v1/sub-account/transfer/subToMaster", "/sapi/v1/futures/transfer", "/sapi/v1/asset/universalTransfer",
    "/sapi/v1/localentity/withdraw/apply", "/sapi/v1/giftcard/createCode", "/sapi/v1/managed-subaccount/withdraw",
    "/sapi/v1/managed-subaccount/deposit", "/sapi/v1/broker/transfer", "/sapi/v1/broker/transfer/futures",
    "/sapi/v1/broker/universalTransfer",
)  # fmt: skip
SCHEMES: dict[str, tuple[dict[str, str], str, tuple[str, ...]]] = {
    "binance-hmac": ({"api_key": "k", "secret": "s"}, "api.binance.com", BINANCE_MONEY),
    "binance-ed25519": ({"api_key": "k", "private_key": ED_PEM}, "api.binance.com", BINANCE_MONEY),
    "binance-ws-logon": ({"api_key": "k", "private_key": ED_PEM}, "ws-api.binance.com", BINANCE_MONEY),
    "kraken": (
        {"api_key": "k", "secret": HMAC_SECRET},
        "api.kraken.com",
        ("/0/private/Withdraw", "/0/private/WalletTransfer", "/0/private/Transfer", "/0/private/AccountTransfer"),
    ),
    "okx": (
        {"api_key": "k", "secret": "s", "passphrase": "p"},
        "www.okx.com",
        (
            "/api/v5/asset/withdrawal",
            "/api/v5/asset/transfer",
            "/api/v5/asset/subaccount/transfer",
            "/api/v5/fiat/create-withdrawal",
        ),
    ),
    "bybit": (
        {"api_key": "k", "secret": "s"},
        "api.bybit.com",
        ("/v5/asset/withdraw/create", "/v5/asset/transfer/inter-transfer"),
    ),
    "deribit": (
        {"api_key": "client-id", "secret": "s"},
        "www.deribit.com",
        ("/api/v2/private/withdraw", "/api/v2/private/submit_transfer_to_user",
         "/api/v2/private/add_to_address_book", "/api/v2/private/update_in_address_book"),
    ),
    "coinbase": (
        {"api_key": "organizations/o/apiKeys/k", "private_key": EC_PEM},
        "api.coinbase.com",
        ("/v2/accounts/abc/transactions", "/v2/accounts/abc/withdrawals", "/api/v3/brokerage/portfolios/move_funds"),
    ),
    "kucoin": (
        {"api_key": "k", "secret": "s", "passphrase": "p"},
        "api.kucoin.com",
        ("/api/v1/withdrawals", "/api/v3/withdrawals", "/api/v2/accounts/inner-transfer",
         "/api/v3/accounts/universal-transfer", "/api/v2/accounts/sub-transfer", "/api/v3/transfer-out",
         "/api/v1/transfer-in", "/api/ua/v1/account/transfer", "/api/v1/broker/nd/transfer"),
    ),
    "bitget": (
        {"api_key": "k", "secret": "s", "passphrase": "p"},
        "api.bitget.com",
        ("/api/v2/spot/wallet/withdrawal", "/api/v2/spot/wallet/transfer", "/api/v2/spot/wallet/subaccount-transfer",
         "/api/v2/spot/wallet/cancel-withdrawal", "/api/spot/v1/wallet/withdrawal-v2",
         "/api/spot/v1/wallet/transfer-v2", "/api/spot/v1/wallet/subTransfer", "/api/v3/account/transfer",
         "/api/v3/account/sub-transfer", "/api/v3/account/withdrawal", "/api/v3/copy/futures/transfer",
         "/api/v3/stockplus/asset/transfer", "/api/v3/broker/sub-withdrawal",
         "/api/v2/broker/account/subaccount-withdrawal", "/api/broker/v1/account/subaccount-withdrawal",
         "/api/broker/v1/account/sub-withdrawal", "/api/broker/v1/account/subaccount-transfer"),
    ),
    "gate": (
        {"api_key": "k", "secret": "s"},
        "api.gateio.ws",
        ("/api/v4/withdrawals", "/api/v4/withdrawals/push", "/api/v4/wallet/transfers",
         "/api/v4/wallet/sub_account_transfers", "/api/v4/wallet/sub_account_to_sub_account"),
    ),
    "kraken-futures": (
        {"api_key": "k", "secret": HMAC_SECRET},
        "futures.kraken.com",
        ("/derivatives/api/v3/transfer", "/derivatives/api/v3/transfer/subaccount", "/derivatives/api/v3/withdrawal",
         "/api/v3/transfer", "/api/v3/withdrawal"),
    ),
    "okx-ws-login": (
        {"api_key": "k", "secret": "s", "passphrase": "p"},
        "ws.okx.com:8443",
        ("/api/v5/asset/withdrawal", "/api/v5/asset/transfer", "/api/v5/asset/subaccount/transfer",
         "/api/v5/fiat/create-withdrawal"),
    ),
    "bybit-ws-auth": (
        {"api_key": "k", "secret": "s"},
        "stream.bybit.com",
        ("/v5/asset/withdraw/create", "/v5/asset/transfer/inter-transfer"),
    ),
    "binance-rsa": ({"api_key": "k", "private_key": RSA_PEM}, "api.binance.com", BINANCE_MONEY),
    "bybit-rsa": (
        {"api_key": "k", "private_key": RSA_PEM},
        "api.bybit.com",
        ("/v5/asset/withdraw/create", "/v5/asset/transfer/inter-transfer"),
    ),
    "coinbase-ws-jwt": (
        {"api_key": "organizations/o/apiKeys/k", "private_key": EC_PEM},
        "advanced-trade-ws-user.coinbase.com",
        ("/v2/accounts/abc/transactions", "/v2/accounts/abc/withdrawals", "/api/v3/brokerage/portfolios/move_funds"),
    ),
}  # fmt: skip
#: Signs only POST /exchange and judges /exchange/<action type>: its guard is tested in test_schemes_hyperliquid.py.
BODY_JUDGED = frozenset({"hyperliquid"})


def _fullwidth(c: str) -> str:
    return chr(ord(c) + 0xFEE0)


def _spellings(path: str) -> dict[str, str]:
    """Other spellings of ``path`` that some server, proxy or framework reads as ``path``."""
    head, _, last = path.rpartition("/")
    first, rest = last[0], last[1:]
    segments = path.split("/")
    spellings = {
        "semicolon param": f"{path};x",
        "empty semicolon": f"{path};",
        "jsessionid": f"{path};jsessionid=1",
        "dot-dot-semicolon": f"{head}/..;/{last}",
        "param mid-path": f"/{segments[1]};x/{'/'.join(segments[2:])}",
        "trailing dot": f"{path}.",
        "two trailing dots": f"{path}..",
        "dot suffix": f"{path}.json",
        "trailing dot mid-path": f"{head}./{last}",
        "leading dot": f"{head}/.{last}",
        "trailing slash": f"{path}/",
        "trailing slash dot": f"{path}/.",
        "double slash": f"{head}//{last}",
        "leading double slash": f"/{path}",
        "dot segment": f"{head}/./{last}",
        "dot-dot segment": f"{head}/x/../{last}",
        "dot-dot at the end": f"{path}/x/..",
        "backslash": f"{head}\\{last}",
        "encoded slash": f"{head}%2F{last}",
        "encoded slash lower": f"{head}%2f{last}",
        "encoded letter": f"{head}/%{ord(first):02X}{rest}",
        "encoded dot segment": f"{head}/%2e/{last}",
        "double encoding": f"{head}%252F{last}",
        "encoded NUL": f"{path}%00",
        "NUL": f"{path}\x00",
        "tab inside": f"{head}/{first}\t{rest}",
        "CR LF": f"{path}\r\n",
        "space": f"{path} ",
        "DEL": f"{path}\x7f",
        "upper case": path.upper(),
        "lower case": path.lower(),
        "fullwidth letter": f"{head}/{_fullwidth(first)}{rest}",
        "fullwidth solidus": f"{head}\uff0f{last}",
        "zero-width space": f"{head}/{first}\u200b{rest}",
        "kelvin or long s": f"{head}/{last.replace('s', chr(0x17F)).replace('k', chr(0x212A))}",
        "cyrillic a": f"{head}/{last.replace('a', chr(0x430))}",
        "encoded question mark": f"{path}%3Fa=b",
        "fragment": f"{path}#x",
        "query without value": f"{path}?x",
        "plus": f"{path}+",
        "colon suffix": f"{path}:x",
        "NTFS stream": f"{path}::$DATA",
        "at suffix": f"{path}@x",
        "comma suffix": f"{path},x",
        "equals suffix": f"{path}=x",
        "parenthesis": f"{path}()",
        "exclamation": f"{path}!",
        "asterisk": f"{path}*",
    }
    return {label: spelled for label, spelled in spellings.items() if spelled != path}


CASES = [
    pytest.param(scheme, path, label, spelled, id=f"{scheme}:{path}:{label}")
    for scheme, (_, _, paths) in SCHEMES.items()
    for path in paths
    for label, spelled in _spellings(path).items()
]


async def _sign(scheme: str, allow: list[str] | None, method: str, path: str, body: bytes = b"") -> dict[str, Any]:
    keys, host, _ = SCHEMES[scheme]
    config: dict[str, Any] = {"scheme": scheme, **keys}
    if allow is not None:
        config["allow"] = allow
    credential = from_config("c", "sign", config, NOW)

    async def persist() -> None:
        pass

    request = {"method": method, "url": f"https://{host}{path}", "body": body}
    return await sign_request(credential, request, lambda: NOW, trio.Lock(), persist)


def test_the_table_covers_every_guarded_glob_and_every_scheme() -> None:
    from vaultd._schemes import SCHEMES as REGISTRY

    assert set(SCHEMES) == set(REGISTRY) - BODY_JUDGED
    covered = {path for _, _, paths in SCHEMES.values() for path in paths}
    import fnmatch

    for glob in (glob for glob in MONEY_MOVING if not glob.startswith("/exchange/")):  # hyperliquid's
        assert any(fnmatch.fnmatch(path.lower(), glob.lower()) for path in covered), glob
    assert all(moves_money(path) for path in covered)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
async def test_positive_control_the_plain_paths_sign(scheme: str) -> None:
    _, _, paths = SCHEMES[scheme]
    plain = "/api/v3/account" if scheme.startswith("binance") else "/0/private/Balance"
    if scheme == "kraken-futures":  # its endpoints all start /api/ (the scheme refuses others)
        plain = "/derivatives/api/v3/accounts"
    assert (await _sign(scheme, None, "POST", plain))["headers"] is not None
    for path in paths:
        with pytest.raises(RpcError) as refused:
            await _sign(scheme, None, "POST", path)
        assert refused.value.code is ErrorCode.FORBIDDEN
        assert await _sign(scheme, [f"POST {path}"], "POST", path), "named literally, it signs"


@pytest.mark.parametrize(("scheme", "path", "label", "spelled"), CASES)
async def test_no_spelling_of_a_guarded_endpoint_is_signed(scheme: str, path: str, label: str, spelled: str) -> None:
    for allow in (None, [f"POST {path}", "GET /*"]):
        with pytest.raises(RpcError) as refused:
            await _sign(scheme, allow, "POST", spelled)
        assert refused.value.code in (ErrorCode.FORBIDDEN, ErrorCode.INVALID_PARAMS), label
        assert HMAC_SECRET not in str(refused.value) and "BEGIN" not in str(refused.value)


@pytest.mark.parametrize(
    "body",
    [
        {"jsonrpc": "2.0", "id": 1, "method": "private/withdraw", "params": {"currency": "BTC"}},
        [{"jsonrpc": "2.0", "id": 1, "method": "private/withdraw"}],
    ],
    ids=["one call", "a batch"],
)
async def test_a_deribit_json_rpc_body_cannot_name_another_endpoint(body: object) -> None:
    encoded = json.dumps(body).encode()
    for path in ("/api/v2", "/api/v2/private/get_account_summary"):
        with pytest.raises(RpcError) as refused:
            await _sign("deribit", None, "POST", path, encoded)
        assert refused.value.code is ErrorCode.INVALID_PARAMS
    # Found by an attacker review: the key spelled with a JSON escape, which a parser reads as "method".
    for escaped in (b'{"\\u006dethod": "private/withdraw"}', b'{"m\\u0065thod": "private\\/withdraw"}'):
        for path in ("/api/v2", "/api/v2/public/test"):
            with pytest.raises(RpcError) as refused:
                await _sign("deribit", None, "POST", path, escaped)
            assert refused.value.code is ErrorCode.INVALID_PARAMS, escaped
    duplicate = b'{"method": "private/get_account_summary", "method": "private/withdraw"}'
    with pytest.raises(RpcError):
        await _sign("deribit", None, "POST", "/api/v2/private/get_account_summary", duplicate)
    same = {"jsonrpc": "2.0", "id": 1, "method": "private/get_account_summary", "params": {}}
    assert await _sign("deribit", None, "POST", "/api/v2/private/get_account_summary", json.dumps(same).encode())


PLAIN_SPELLINGS: list[Callable[[str], str]] = [lambda p: p, lambda p: f"{p}?a=b"]


@pytest.mark.parametrize("path", ["/api/v3/order", "/api/v1.1/account", "/v2/a-b_c~d/BTC-USD/x.y.z", "/"])
async def test_plain_paths_with_inner_dots_and_unreserved_characters_still_sign(path: str) -> None:
    for spell in PLAIN_SPELLINGS:
        assert (await _sign("binance-hmac", None, "POST", spell(path)))["url"]
