"""The ``hyperliquid`` scheme: Hyperliquid L1 actions signed as its Python SDK signs them, and the
withdrawal guard that judges ``/exchange/<action type>``.

Vectors:
- ``SDK``: hyperliquid-dex/hyperliquid-python-sdk, ``tests/signing_test.py`` (commit 7ee976d1),
  its published ``r``/``s``/``v`` for the SDK's fixed test key; the actions are written out here
  as the SDK's helpers build them (``order_request_to_order_wire``, ``float_to_int_for_hashing``).
  The SDK prints ``r``/``s`` without leading zeros (``to_hex`` of the integer): compared as numbers.
- ``CCXT``: computed by ccxt 4.5.90's own ``hyperliquid.sign_l1_action`` (coincurve), in a
  throwaway venv, for the same key: actions with a realistic nonce, a vault and ``expiresAfter``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import trio

from vaultd._allow import MONEY_MOVING, moves_money
from vaultd._credentials import ConfigError, from_config
from vaultd._errors import RpcError
from vaultd._schemes import SCHEMES, Keys, SignError, SignRequest
from vaultd._schemes._keys import load_secp256k1_key
from vaultd._schemes.hyperliquid import USER_SIGNED, action_hash, judged_path
from vaultd._signing import sign_request
from vaultd_protocol import ErrorCode

# The SDK's tests' key (a well-known test key, never funded): eth_account.Account.from_key(...).
SDK_KEY = "0x0123456789012345678901234567890123456789012345678901234567890123"
ADDRESS = "0x14791697260E4c9A71f18484C9f997B308e59325"  # that key's address (eth_account)
MAINNET, TESTNET = "api.hyperliquid.xyz", "api.hyperliquid-testnet.xyz"
VAULT = "0x1719884eb866cb12b2287399b15f7db5e7d775ea"
NOW = 1_800_000_000.0
NOW_MS = int(NOW * 1000)

SCHEME = SCHEMES["hyperliquid"]


def keys() -> Keys:
    return Keys(ADDRESS, signing_key=load_secp256k1_key(SDK_KEY))


def sign(body: dict[str, Any], host: str = MAINNET, timestamp_ms: int = 0, **changes: Any) -> dict[str, Any]:
    request = SignRequest(
        changes.pop("method", "POST"),
        host,
        changes.pop("path", "/exchange"),
        changes.pop("query", ()),
        changes.pop("raw", json.dumps(body).encode()),
        timestamp_ms,
    )
    signed = SCHEME.sign(request, changes.pop("keys", keys()))
    assert not changes
    answer: dict[str, Any] = json.loads(signed.body)
    assert signed.headers == {"Content-Type": "application/json"}
    assert signed.query == ()
    return answer


def numbers(signature: dict[str, Any]) -> tuple[int, int, int]:
    return int(signature["r"], 16), int(signature["s"], 16), signature["v"]


def order_wire(asset: int, px: str, sz: str, order_type: dict[str, Any], cloid: str | None = None) -> dict[str, Any]:
    """As the SDK's ``order_request_to_order_wire`` builds it (is_buy True, reduce_only False)."""
    wire: dict[str, Any] = {"a": asset, "b": True, "p": px, "s": sz, "r": False, "t": order_type}
    if cloid is not None:
        wire["c"] = cloid
    return wire


def order_action(*wires: dict[str, Any]) -> dict[str, Any]:
    return {"type": "order", "orders": list(wires), "grouping": "na"}  # order_wires_to_order_action


GTC = {"limit": {"tif": "Gtc"}}
DUMMY = {"type": "dummy", "num": 100_000_000_000}  # float_to_int_for_hashing(1000)

# (test name in the SDK's signing_test.py, action, vault, mainnet (r, s, v), testnet (r, s, v))
SDK_VECTORS = [
    (
        "test_l1_action_signing_matches",
        DUMMY,
        None,
        ("0x53749d5b30552aeb2fca34b530185976545bb22d0b3ce6f62e31be961a59298",
         "0x755c40ba9bf05223521753995abb2f73ab3229be8ec921f350cb447e384d8ed8", 27),
        ("0x542af61ef1f429707e3c76c5293c80d01f74ef853e34b76efffcb57e574f9510",
         "0x17b8b32f086e8cdede991f1e2c529f5dd5297cbe8128500e00cbaf766204a613", 28),
    ),
    (
        "test_l1_action_signing_order_matches",
        order_action(order_wire(1, "100", "100", GTC)),
        None,
        ("0xd65369825a9df5d80099e513cce430311d7d26ddf477f5b3a33d2806b100d78e",
         "0x2b54116ff64054968aa237c20ca9ff68000f977c93289157748a3162b6ea940e", 28),
        ("0x82b2ba28e76b3d761093aaded1b1cdad4960b3af30212b343fb2e6cdfa4e3d54",
         "0x6b53878fc99d26047f4d7e8c90eb98955a109f44209163f52d8dc4278cbbd9f5", 27),
    ),
    (
        "test_l1_action_signing_order_with_cloid_matches",
        order_action(order_wire(1, "100", "100", GTC, cloid="0x00000000000000000000000000000001")),
        None,
        ("0x41ae18e8239a56cacbc5dad94d45d0b747e5da11ad564077fcac71277a946e3",
         "0x3c61f667e747404fe7eea8f90ab0e76cc12ce60270438b2058324681a00116da", 27),
        ("0xeba0664bed2676fc4e5a743bf89e5c7501aa6d870bdb9446e122c9466c5cd16d",
         "0x7f3e74825c9114bc59086f1eebea2928c190fdfbfde144827cb02b85bbe90988", 28),
    ),
    (
        "test_l1_action_signing_matches_with_vault",
        DUMMY,
        VAULT,
        ("0x3c548db75e479f8012acf3000ca3a6b05606bc2ec0c29c50c515066a326239",
         "0x4d402be7396ce74fbba3795769cda45aec00dc3125a984f2a9f23177b190da2c", 28),
        ("0xe281d2fb5c6e25ca01601f878e4d69c965bb598b88fac58e475dd1f5e56c362b",
         "0x7ddad27e9a238d045c035bc606349d075d5c5cd00a6cd1da23ab5c39d4ef0f60", 27),
    ),
    (
        "test_l1_action_signing_tpsl_order_matches",
        order_action(order_wire(1, "100", "100", {"trigger": {"isMarket": True, "triggerPx": "103", "tpsl": "sl"}})),
        None,
        ("0x98343f2b5ae8e26bb2587daad3863bc70d8792b09af1841b6fdd530a2065a3f9",
         "0x6b5bb6bb0633b710aa22b721dd9dee6d083646a5f8e581a20b545be6c1feb405", 27),
        ("0x971c554d917c44e0e1b6cc45d8f9404f32172a9d3b3566262347d0302896a2e4",
         "0x206257b104788f80450f8e786c329daa589aa0b32ba96948201ae556d5637eac", 28),
    ),
    (
        "test_create_sub_account_action",
        {"type": "createSubAccount", "name": "example"},
        None,
        ("0x51096fe3239421d16b671e192f574ae24ae14329099b6db28e479b86cdd6caa7",
         "0xb71f7d293af92d3772572afb8b102d167a7cef7473388286bc01f52a5c5b423", 27),
        ("0xa699e3ed5c2b89628c746d3298b5dc1cca604694c2c855da8bb8250ec8014a5b",
         "0x53f1b8153a301c72ecc655b1c315d64e1dcea3ee58921fd7507e35818fcc1584", 28),
    ),
    (
        "test_sub_account_transfer_action",
        {"type": "subAccountTransfer", "subAccountUser": "0x1d9470d4b963f552e6f671a81619d395877bf409",
         "isDeposit": True, "usd": 10},
        None,
        ("0x43592d7c6c7d816ece2e206f174be61249d651944932b13343f4d13f306ae602",
         "0x71a926cb5c9a7c01c3359ec4c4c34c16ff8107d610994d4de0e6430e5cc0f4c9", 28),
        ("0xe26574013395ad55ee2f4e0575310f003c5bb3351b5425482e2969fa51543927",
         "0xefb08999196366871f919fd0e138b3a7f30ee33e678df7cfaf203e25f0a4278", 28),
    ),
    (
        "test_schedule_cancel_action",
        {"type": "scheduleCancel"},
        None,
        ("0x6cdfb286702f5917e76cd9b3b8bf678fcc49aec194c02a73e6d4f16891195df9",
         "0x6557ac307fa05d25b8d61f21fb8a938e703b3d9bf575f6717ba21ec61261b2a0", 27),
        ("0xc75bb195c3f6a4e06b7d395acc20bbb224f6d23ccff7c6a26d327304e6efaeed",
         "0x342f8ede109a29f2c0723bd5efb9e9100e3bbb493f8fb5164ee3d385908233df", 28),
    ),
    (
        "test_schedule_cancel_action (with time)",
        {"type": "scheduleCancel", "time": 123456789},
        None,
        ("0x609cb20c737945d070716dcc696ba030e9976fcf5edad87afa7d877493109d55",
         "0x16c685d63b5c7a04512d73f183b3d7a00da5406ff1f8aad33f8ae2163bab758b", 28),
        ("0x4e4f2dbd4107c69783e251b7e1057d9f2b9d11cee213441ccfa2be63516dc5bc",
         "0x706c656b23428c8ba356d68db207e11139ede1670481a9e01ae2dfcdb0e1a678", 27),
    ),
]  # fmt: skip
SDK_IDS = [vector[0] for vector in SDK_VECTORS]


@pytest.mark.parametrize(("name", "action", "vault", "mainnet", "testnet"), SDK_VECTORS, ids=SDK_IDS)
def test_the_sdks_published_signatures(
    name: str, action: dict[str, Any], vault: str | None, mainnet: tuple[str, str, int], testnet: tuple[str, str, int]
) -> None:
    body = {"action": action, "nonce": 0, **({"vaultAddress": vault} if vault else {})}
    for host, expected in ((MAINNET, mainnet), (TESTNET, testnet)):
        answer = sign(body, host)
        assert numbers(answer["signature"]) == (int(expected[0], 16), int(expected[1], 16), expected[2]), host
        assert {key: value for key, value in answer.items() if key != "signature"} == body, "the body, unchanged"


def test_the_sdks_production_connection_id() -> None:
    # SDK: test_phantom_agent_creation_matches_production (sz 0.0147, limit_px 1670.1, asset 4, Ioc).
    action = order_action(order_wire(4, "1670.1", "0.0147", {"limit": {"tif": "Ioc"}}))
    assert action_hash(action, 1677777606040, None, None).hex() == (
        "0fcbeda5ae3c4950a548021552a4fea2226858c4453571bf3f24ba017eac2908"
    )


CCXT_ORDER = order_action({"a": 0, "b": True, "p": "60000", "s": "0.001", "r": False, "t": GTC})
CCXT_CANCEL = {"type": "cancel", "cancels": [{"a": 0, "o": 123}]}
# (body besides action and nonce 1700000000000, action, mainnet (r, s, v), testnet (r, s, v)): ccxt 4.5.90
CCXT_VECTORS = [
    ({}, CCXT_ORDER,
     ("0x0c5a73e6030f9465b8a18d5d879e4381186bb6edd78c4a8894b24dac5110848a",
      "0x48d2e28e0a898859c9842abaa30d9811a15b30cc2bec1d88ead9cb49dbaaa9ae", 28),
     ("0xef28f5e2ebfc2e039c15526feb58f523120210c1bfcc84cb6bd12c134568f060",
      "0x5b8ed54923fa79818a721bd121ee703ddbe7fa7a43c4bbfa8456d7de60999f29", 28)),
    ({"vaultAddress": VAULT}, CCXT_ORDER,
     ("0xaa727af8fd295d3f4d31091ae264a03fe983ce7dbaa6a5baaed8a44480e1012a",
      "0x585d90057d1161afc4addaf58541ebc6a01fc452caea42df560d24a78ab9a791", 28),
     ("0x0443260ea8bdf45e4fdc7b733da7e2be5f770c01aa4d5137ad42eb6b4df302ba",
      "0x0d365c104426f313e039980691482c80198ac005330ac9248fc0170d144f854e", 28)),
    ({"expiresAfter": 1700000060000}, CCXT_CANCEL,
     ("0x07f0a096349dd8945058e32200fc963eb571c00b560c8f958c1f0484c6f21470",
      "0x2169dbc26e168166934caad6dc84c1f8d45887c1fc97bc5b19dd3e44a9bbb1d5", 27),
     ("0x6c4482c4a751478bb6f6eed57fc030cbfa7b86d748aceb120665bd9cd883dc45",
      "0x7fd7033ad97d551e24da2fe82d98dd4479f639cf0f475596248285aae174f47d", 28)),
]  # fmt: skip


@pytest.mark.parametrize(("rest", "action", "mainnet", "testnet"), CCXT_VECTORS, ids=["order", "vault", "expires"])
def test_ccxts_signatures_byte_for_byte(
    rest: dict[str, Any], action: dict[str, Any], mainnet: tuple[str, str, int], testnet: tuple[str, str, int]
) -> None:
    body = {"action": action, "nonce": 1_700_000_000_000, **rest}
    for host, expected in ((MAINNET, mainnet), (TESTNET, testnet)):
        # ccxt sends r and s as 32 bytes of hex: the same strings exactly
        assert sign(body, host, timestamp_ms=1_700_000_000_000)["signature"] == dict(zip("rsv", expected, strict=True))


def test_the_answer_is_the_body_with_a_signature_and_the_nonce_filled_in() -> None:
    request = SignRequest("POST", MAINNET, "/exchange", (), json.dumps({"action": CCXT_CANCEL}).encode(), NOW_MS)
    signed = SCHEME.sign(request, keys())
    answer = json.loads(signed.body)
    assert list(answer) == ["action", "nonce", "signature"]
    assert answer["nonce"] == NOW_MS, "no nonce in the body: the request's timestamp"
    assert signed.valid_until == NOW + 2 * 86_400, "Hyperliquid takes a nonce up to two days old"
    with_expiry = {"action": CCXT_CANCEL, "nonce": NOW_MS, "expiresAfter": NOW_MS + 30_000}
    request = SignRequest("POST", MAINNET, "/exchange", (), json.dumps(with_expiry).encode(), NOW_MS)
    assert SCHEME.sign(request, keys()).valid_until == NOW + 30


def test_the_host_picks_mainnet_or_testnet() -> None:
    body = {"action": DUMMY, "nonce": 0}
    assert sign(body, "API.Hyperliquid.xyz") == sign(body, MAINNET) != sign(body, TESTNET)
    for host in ("api.hyperliquid.xyz.evil.example", "hyperliquid.xyz", "api.hyperliquid.xyz:443"):
        with pytest.raises(
            SignError, match=re.escape("'host' must be api.hyperliquid.xyz or api.hyperliquid-testnet.xyz")
        ):
            sign(body, host)


def signed_with(body: dict[str, Any], host: str, extra: dict[str, str]) -> dict[str, Any]:
    request = SignRequest("POST", host, "/exchange", (), json.dumps(body).encode(), 0, extra=extra)
    answer: dict[str, Any] = json.loads(SCHEME.sign(request, keys()).body)
    return answer


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost:5000", "LOCALHOST", "[::1]:443", "127.8.0.1"])
def test_a_loopback_host_signs_for_the_network_the_knob_names(host: str) -> None:
    """A local test server or proxy: the ``network`` knob picks the source, as the host would."""
    body = {"action": DUMMY, "nonce": 0}
    assert signed_with(body, host, {"network": "mainnet"}) == sign(body, MAINNET)
    assert signed_with(body, host, {"network": "testnet"}) == sign(body, TESTNET)


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost", "[::1]:80"])
def test_a_loopback_host_without_the_network_knob_is_refused(host: str) -> None:
    with pytest.raises(SignError, match=re.escape("a loopback 'host' needs the option 'network'")):
        signed_with({"action": DUMMY, "nonce": 0}, host, {})


@pytest.mark.parametrize(
    "host", ["api.binance.com", "10.0.0.1:8080", "api.hyperliquid.xyz.localhost", "localhost.evil.example", "[::2]"]
)
def test_a_host_neither_hyperliquids_nor_loopback_is_refused_even_with_the_knob(host: str) -> None:
    for network in ("mainnet", "testnet"):
        with pytest.raises(SignError, match=re.escape("'host' must be api.hyperliquid.xyz or api.hyperliquid-")):
            signed_with({"action": DUMMY, "nonce": 0}, host, {"network": network})


def test_the_knob_must_agree_with_hyperliquids_host_and_name_a_network() -> None:
    body = {"action": DUMMY, "nonce": 0}
    assert signed_with(body, MAINNET, {"network": "mainnet"}) == sign(body, MAINNET)
    assert signed_with(body, TESTNET, {"network": "testnet"}) == sign(body, TESTNET)
    with pytest.raises(SignError, match=r"'network' is 'testnet' but the host is mainnet's .*must agree"):
        signed_with(body, MAINNET, {"network": "testnet"})
    with pytest.raises(SignError, match=r"'network' is 'mainnet' but the host is testnet's .*must agree"):
        signed_with(body, TESTNET, {"network": "mainnet"})
    for host in (MAINNET, "127.0.0.1:8080"):
        for network in ("Mainnet", "main", ""):
            with pytest.raises(SignError, match="'network' must be 'mainnet' or 'testnet'"):
                signed_with(body, host, {"network": network})
    with pytest.raises(SignError, match="unknown option 'chain' \\(known: network\\)"):
        signed_with(body, MAINNET, {"chain": "mainnet"})


@pytest.mark.parametrize(
    ("raw", "changes", "message"),
    [
        (b"not json", {}, "'body' must be a JSON object"),
        (b"[1]", {}, "'body' must be a JSON object"),
        (b'{"action": {"type": "order"}, "nonce": NaN}', {}, "must not hold NaN"),
        (b'{"action": {"type": "order", "px": 1e400}, "nonce": 0}', {}, "beyond a double's range"),
        (b'{"action": {"type": "order", "type": "withdraw3"}, "nonce": 0}', {}, "must not repeat a key"),
        (b'{"action": {"type": "order"}, "nonce": 0, "nonce": 1}', {}, "must not repeat a key"),
        (b'{"action": {"type": "order"}, "nonce": 0, "signature": {}}', {}, "already carries a 'signature'"),
        (b'{"action": {"type": "order"}, "nonce": 0, "isFrontend": true}', {}, "unknown body field 'isFrontend'"),
        (b'{"action": ["order"], "nonce": 0}', {}, "'action' must be a JSON object with a string 'type'"),
        (b'{"action": {"type": "or/der"}, "nonce": 0}', {}, "'type' must be 1 to 64 letters"),
        (b'{"action": {"type": "order"}, "nonce": 1.5}', {}, "'nonce' must be a whole number"),
        (b'{"action": {"type": "order"}, "nonce": true}', {}, "'nonce' must be a whole number"),
        (b'{"action": {"type": "order"}, "nonce": 400000}', {}, "'nonce' must be within"),
        (b'{"action": {"type": "order", "n": 18446744073709551616}, "nonce": 0}', {}, "msgpack cannot pack"),
        (b'{"action": {"type": "order"}, "nonce": 0, "vaultAddress": "0x12"}', {}, "'vaultAddress' must be null"),
        (b'{"action": {"type": "order"}, "nonce": 0, "expiresAfter": "soon"}', {}, "'expiresAfter' must be"),
        (b'{"action": {"type": "order"}, "nonce": 0}', {"method": "GET"}, "only POST /exchange"),
        (b'{"action": {"type": "order"}, "nonce": 0}', {"path": "/info"}, "only POST /exchange"),
        (b'{"action": {"type": "order"}, "nonce": 0}', {"query": (("a", "b"),)}, "only POST /exchange"),
    ],
)
def test_malformed_requests_are_refused(raw: bytes, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SignError, match=message):
        sign({}, raw=raw, **changes)


@pytest.mark.parametrize("action_type", sorted(USER_SIGNED))
def test_user_signed_actions_are_never_signed(action_type: str) -> None:
    with pytest.raises(SignError, match=f"'{action_type}' is a user-signed action .* vaultd never signs those"):
        sign({"action": {"type": action_type, "destination": VAULT, "amount": "1"}, "nonce": 0})


def test_keys_are_checked_and_never_shown() -> None:
    body = {"action": DUMMY, "nonce": 0}
    with pytest.raises(SignError, match="'api_key' must be the account's address") as info:
        sign(body, keys=Keys(SDK_KEY, signing_key=load_secp256k1_key(SDK_KEY)))  # the key pasted as api_key
    assert SDK_KEY[2:] not in str(info.value)
    with pytest.raises(SignError, match="needs a secp256k1 private key"):
        sign(body, keys=Keys(ADDRESS))
    assert load_secp256k1_key(SDK_KEY[2:]).secret == load_secp256k1_key(SDK_KEY).secret, "0x may be left out"
    for bad in ("0x" + "00" * 32, "0x" + "ff" * 32, SDK_KEY[:-2], SDK_KEY + "00", "0x" + "zz" * 32, "", "-----BEGIN"):
        with pytest.raises(SignError, match="'private_key' must be a secp256k1 private key: '0x' and 64 hex") as info:
            load_secp256k1_key(bad)
        assert (bad[2:] or "?") not in str(info.value) or not bad[2:]


def test_judged_path_names_the_action_type() -> None:
    assert judged_path("/exchange", json.dumps({"action": {"type": "withdraw3"}, "nonce": 1}).encode()) == (
        "/exchange/withdraw3"
    )
    assert judged_path("/info", b"anything") == "/info", "other paths are judged as they are"
    with pytest.raises(SignError):
        judged_path("/exchange", b'{"action": {"type": "order", "type": "withdraw3"}}')


# -- through token.sign: the allow-list judges /exchange/<action type> ---------------------------------------

#: Hyperliquid's money-moving actions, one per guarded /exchange/ glob of MONEY_MOVING at least.
MONEY_ACTIONS = (
    "withdraw3", "usdSend", "spotSend", "usdClassTransfer", "sendAsset", "subAccountTransfer",
    "subAccountSpotTransfer", "vaultTransfer", "approveAgent", "approveBuilderFee", "tokenDelegate", "cDeposit",
    "cWithdraw", "convertToMultiSigUser", "multiSig", "spotDeploy", "perpDeploy", "createVault",
)  # fmt: skip
#: L1 actions (signed in the "Exchange" domain) that move money: signed only when a rule names them.
L1_MONEY = ("subAccountTransfer", "subAccountSpotTransfer", "vaultTransfer")


async def token_sign(action: dict[str, Any], allow: list[str] | None = None, **config: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"scheme": "hyperliquid", "api_key": ADDRESS, "private_key": SDK_KEY, **config}
    if allow is not None:
        fields["allow"] = allow
    credential = from_config("hl", "sign", fields, NOW)

    async def persist() -> None:
        pass

    request = {"method": "POST", "url": f"https://{MAINNET}/exchange", "body": json.dumps({"action": action}).encode()}
    return await sign_request(credential, request, lambda: NOW, trio.Lock(), persist)


async def refused(action: dict[str, Any], allow: list[str] | None = None) -> RpcError:
    with pytest.raises(RpcError) as info:
        await token_sign(action, allow)
    assert SDK_KEY[2:] not in str(info.value)
    return info.value


def test_every_hyperliquid_glob_is_covered_and_every_money_action_guarded() -> None:
    import fnmatch

    paths = [f"/exchange/{action_type}" for action_type in MONEY_ACTIONS]
    for glob in (glob for glob in MONEY_MOVING if glob.startswith("/exchange/")):
        assert any(fnmatch.fnmatch(path.lower(), glob.lower()) for path in paths), glob
    assert all(moves_money(path) for path in paths)
    settings = {"userDexAbstraction", "userSetAbstraction"}  # user-signed, but no money: the scheme refuses them
    assert USER_SIGNED - settings <= set(MONEY_ACTIONS), "user-signed transfers are guarded by the allow-list too"
    for harmless in ("order", "cancel", "cancelByCloid", "batchModify", "modify", "scheduleCancel", "updateLeverage",
                     "updateIsolatedMargin", "createSubAccount", "noop", "setReferrer"):  # fmt: skip
        assert not moves_money(f"/exchange/{harmless}"), harmless


async def test_an_order_signs_through_token_sign() -> None:
    result = await token_sign(CCXT_ORDER)
    body = json.loads(result["body"])
    assert result["url"] == f"https://{MAINNET}/exchange"
    assert result["headers"] == {"Content-Type": "application/json"}
    assert body["nonce"] == int(NOW * 1000) and set(body["signature"]) == {"r", "s", "v"}


@pytest.mark.parametrize("action_type", MONEY_ACTIONS)
async def test_money_moving_actions_are_forbidden_by_default_and_by_globs(action_type: str) -> None:
    action = {"type": action_type, "destination": VAULT, "amount": "1"}
    for allow in (None, ["POST /exchange/*"], ["* /*"], ["POST /exchange*"]):
        error = await refused(action, allow)
        assert error.code is ErrorCode.FORBIDDEN, allow
    error = await refused({"type": action_type.upper(), "amount": "1"})
    assert error.code is ErrorCode.FORBIDDEN, "the guard ignores case, as the venue's parser might not"


@pytest.mark.parametrize("action_type", L1_MONEY)
async def test_an_l1_transfer_signs_only_when_a_rule_names_it(action_type: str) -> None:
    action = {"type": action_type, "isDeposit": True, "usd": 10}
    result = await token_sign(action, [f"POST /exchange/{action_type}"])
    assert json.loads(result["body"])["action"] == action


async def test_a_user_signed_action_named_by_a_rule_is_still_not_signed() -> None:
    error = await refused({"type": "withdraw3", "destination": VAULT, "amount": "1"}, ["POST /exchange/withdraw3"])
    assert error.code is ErrorCode.INVALID_PARAMS
    assert "user-signed action" in str(error)


async def test_the_allow_list_judges_the_action_type_not_the_url_path() -> None:
    allow = ["POST /exchange/order", "POST /exchange/cancel"]
    assert await token_sign(CCXT_ORDER, allow)
    assert await token_sign(CCXT_CANCEL, allow)
    error = await refused({"type": "updateLeverage", "asset": 0, "isCross": True, "leverage": 3}, allow)
    assert error.code is ErrorCode.FORBIDDEN
    assert (await refused(CCXT_ORDER, ["POST /exchange"])).code is ErrorCode.FORBIDDEN, "a rule names the type"


async def test_token_sign_to_a_loopback_url_takes_the_network_from_options() -> None:
    """Plain http to a local server: the engine's ``options`` name the network (the adapter passes
    it from ccxt's sandbox mode); without it, nothing is signed; a withdrawal stays forbidden."""
    credential = from_config("hl", "sign", {"scheme": "hyperliquid", "api_key": ADDRESS, "private_key": SDK_KEY}, NOW)

    async def persist() -> None:
        pass

    async def signed(action: dict[str, Any], options: dict[str, str] | None) -> dict[str, Any]:
        body = json.dumps({"action": action, "nonce": NOW_MS}).encode()
        request = {"method": "POST", "url": "http://127.0.0.1:8080/exchange", "body": body, "options": options}
        return await sign_request(credential, request, lambda: NOW, trio.Lock(), persist)

    result = await signed(DUMMY, {"network": "testnet"})
    assert result["url"] == "http://127.0.0.1:8080/exchange"
    assert json.loads(result["body"]) == sign({"action": DUMMY, "nonce": NOW_MS}, TESTNET, timestamp_ms=NOW_MS)
    with pytest.raises(RpcError, match="needs the option 'network'") as info:
        await signed(DUMMY, None)
    assert info.value.code is ErrorCode.INVALID_PARAMS
    with pytest.raises(RpcError) as info:
        await signed({"type": "withdraw3", "destination": VAULT, "amount": "1"}, {"network": "mainnet"})
    assert info.value.code is ErrorCode.FORBIDDEN


async def test_a_body_naming_no_action_is_invalid_before_the_allow_list() -> None:
    credential = from_config("hl", "sign", {"scheme": "hyperliquid", "api_key": ADDRESS, "private_key": SDK_KEY}, NOW)

    async def persist() -> None:
        pass

    for body in (b"", b"{}", b'{"action": {"type": "order", "type": "withdraw3"}}'):
        request = {"method": "POST", "url": f"https://{MAINNET}/exchange", "body": body}
        with pytest.raises(RpcError) as info:
            await sign_request(credential, request, lambda: NOW, trio.Lock(), persist)
        assert info.value.code is ErrorCode.INVALID_PARAMS, body


def test_credential_config_checks_the_key_and_refuses_a_transit_backend() -> None:
    base = {"scheme": "hyperliquid", "api_key": ADDRESS}
    with pytest.raises(ConfigError, match="'private_key' must be a secp256k1 private key") as info:
        from_config("hl", "sign", {**base, "private_key": SDK_KEY[:-1] + "g"}, NOW)
    assert SDK_KEY[2:-1] not in str(info.value)
    with pytest.raises(ConfigError, match="scheme 'hyperliquid' cannot sign through OpenBao transit"):
        from_config("hl", "sign", {**base, "backend": {"upstream": "bao", "transit_key": "k"}}, NOW)
    credential = from_config("hl", "sign", {**base, "private_key": SDK_KEY}, NOW)
    assert SDK_KEY[2:] not in repr(credential) and SDK_KEY[2:] not in repr(credential.provider)
    assert SDK_KEY[2:] not in json.dumps(credential.provider.describe())
