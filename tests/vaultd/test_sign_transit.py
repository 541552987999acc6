"""``token.sign`` for a ``sign`` credential whose key lives in OpenBao transit (``backend``).

:class:`LocalTransit` stands in for OpenBao: it computes the HMAC, Ed25519 and ES256 primitives
locally with ``cryptography``, from the key material that would have been imported into transit.
What OpenBao itself does (key import, its HTTP API, its JWS marshaling, its refusals) is covered
by the lead's tests against a real server. Here: vaultd asks for the right primitive over the
right bytes, turns the answer into exactly what a key held here gives, asks nothing for a request
it refuses, and lets transit's errors through unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from vaultd import _schemes
from vaultd._batch import Batch, answer, answer_now
from vaultd._credentials import ConfigError, Credential, from_config
from vaultd._errors import RpcError
from vaultd._providers import KINDS
from vaultd._providers.sign import SignProvider, Transit
from vaultd._schemes._remote import Call, Recorder, Replayer
from vaultd._secret import Secret
from vaultd._signing import answers_now, sign_now, sign_request
from vaultd._vault import Vault
from vaultd_protocol import ErrorCode, KdfProfile

NOW = 1_800_000_000.0
NOW_MS = int(NOW * 1000)
UPSTREAM = "bao-main"

# Binance Spot API docs, "Request security", the HMAC example (also in test_schemes.py).
BINANCE_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
BINANCE_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
BINANCE_QUERY = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
)
BINANCE_SIG = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
BINANCE_TS = 1499827319559  # the example's own timestamp, in its query: it is signed at that time
BINANCE_ORDER = BINANCE_QUERY.partition("&recvWindow=")[0]  # the same order, timestamped when signed
# Kraken docs, "Spot REST Authentication", "Examples".
KRAKEN_SECRET = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
KRAKEN_NONCE = 1616492376594
KRAKEN_BODY = b"ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"
KRAKEN_SIGN = "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="

OKX_SECRET = "fake-okx-secret-0123456789abcdef"  # 32 bytes: transit's minimum HMAC key size
OKX_PASSPHRASE = "fake-okx-passphrase-never-shown"
BYBIT_SECRET = "fake-bybit-secret-0123456789abcdefgh"
DERIBIT_SECRET = "fake-deribit-client-secret-0123456789abcdef"
NONCE_HEX = "0123456789abcdef0123456789abcdef"

ED_KEY = ed25519.Ed25519PrivateKey.generate()
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _pem(key: Any) -> str:
    return str(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
    )


class LocalTransit:
    """Stands in for OpenBao's transit engine: the primitives computed here from the key
    material transit would hold (HMAC keys as the raw bytes imported, asymmetric keys as key
    objects). Notes every call; ``fail`` makes the next calls raise, as an unreachable server."""

    def __init__(self, keys: dict[str, Any]) -> None:
        self.keys = keys
        self.calls: list[tuple[str, str, str, bytes, str]] = []
        self.fail: RpcError | None = None

    async def hmac(self, upstream: str, key: str, data: bytes, *, algorithm: str) -> bytes:
        secret = await self._key("hmac", upstream, key, data, algorithm)
        digest = {"sha2-256": hashlib.sha256, "sha2-512": hashlib.sha512}[algorithm]
        return hmac.new(secret, data, digest).digest()

    async def sign(self, upstream: str, key: str, data: bytes, *, algorithm: str) -> bytes:
        private = await self._key("sign", upstream, key, data, algorithm)
        if algorithm == "ed25519":
            assert isinstance(private, ed25519.Ed25519PrivateKey)
            return private.sign(data)
        assert algorithm == "es256" and isinstance(private, ec.EllipticCurvePrivateKey)
        # transit/sign with hash_algorithm=sha2-256, marshaling_algorithm=jws: raw r || s.
        r, s = decode_dss_signature(private.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    async def _key(self, operation: str, upstream: str, key: str, data: bytes, algorithm: str) -> Any:
        self.calls.append((operation, upstream, key, data, algorithm))
        await trio.lowlevel.checkpoint()  # a network call yields
        if self.fail is not None:
            raise self.fail
        return self.keys[key]


def _transit() -> LocalTransit:
    return LocalTransit({
        "binance": BINANCE_SECRET.encode(),  # raw-text secrets: their UTF-8 bytes
        "kraken": base64.b64decode(KRAKEN_SECRET),  # Kraken's: the base64-DECODED bytes
        "okx": OKX_SECRET.encode(),
        "bybit": BYBIT_SECRET.encode(),
        "deribit": DERIBIT_SECRET.encode(),
        "ed": ED_KEY,
        "ec": EC_KEY,
    })  # fmt: skip


#: scheme -> (the config fields besides scheme, with the key here; the transit key's name;
#: the token.sign request).
CASES: dict[str, tuple[dict[str, Any], str, dict[str, Any]]] = {
    "binance-hmac": (
        {"api_key": BINANCE_KEY, "secret": BINANCE_SECRET},
        "binance",
        {"method": "POST", "url": f"https://api.binance.com/api/v3/order?{BINANCE_ORDER}", "timestamp": NOW_MS},
    ),
    "binance-ed25519": (
        {"api_key": "ed-api-key", "private_key": _pem(ED_KEY)},
        "ed",
        {"method": "POST", "url": "https://api.binance.com/api/v3/order", "body": b"symbol=BTCUSDT&side=BUY",
         "timestamp": NOW_MS},
    ),
    "binance-ws-logon": (
        {"api_key": "ed-api-key", "private_key": _pem(ED_KEY)},
        "ed",
        {"method": "GET", "url": "wss://ws-api.binance.com/ws-api/v3", "timestamp": NOW_MS},
    ),
    "kraken": (
        {"api_key": "fake-kraken-key", "secret": KRAKEN_SECRET},
        "kraken",
        {"method": "POST", "url": "https://api.kraken.com/0/private/AddOrder", "body": KRAKEN_BODY,
         "nonce": KRAKEN_NONCE},
    ),
    "okx": (
        {"api_key": "fake-okx-key", "secret": OKX_SECRET, "passphrase": OKX_PASSPHRASE},
        "okx",
        {"method": "GET", "url": "https://www.okx.com/api/v5/account/balance?ccy=BTC", "timestamp": NOW_MS},
    ),
    "bybit": (
        {"api_key": "fake-bybit-key", "secret": BYBIT_SECRET, "recv_window": 7000},
        "bybit",
        {"method": "POST", "url": "https://api.bybit.com/v5/order/create", "body": b'{"category":"spot"}',
         "timestamp": NOW_MS},
    ),
    "deribit": (
        {"api_key": "fake-client-id", "secret": DERIBIT_SECRET},
        "deribit",
        {"method": "GET", "url": "https://www.deribit.com/api/v2/private/get_account_summary?currency=BTC",
         "timestamp": NOW_MS, "options": {"nonce": "fixed-nonce-1"}},
    ),
    "coinbase": (
        {"api_key": "organizations/o/apiKeys/k", "private_key": _pem(EC_KEY)},
        "ec",
        {"method": "GET", "url": "https://api.coinbase.com/api/v3/brokerage/accounts", "timestamp": NOW_MS,
         "options": {"nonce": NONCE_HEX}},
    ),
}  # fmt: skip
PRIMITIVES = {
    "binance-hmac": ("hmac", "sha2-256"),
    "binance-ed25519": ("sign", "ed25519"),
    "binance-ws-logon": ("sign", "ed25519"),
    "kraken": ("hmac", "sha2-512"),
    "okx": ("hmac", "sha2-256"),
    "bybit": ("hmac", "sha2-256"),
    "deribit": ("hmac", "sha2-256"),
    "coinbase": ("sign", "es256"),
    "kucoin": ("hmac", "sha2-256"),
    "bitget": ("hmac", "sha2-256"),
    "gate": ("hmac", "sha2-512"),
    "kraken-futures": ("hmac", "sha2-512"),
    "okx-ws-login": ("hmac", "sha2-256"),
    "bybit-ws-auth": ("hmac", "sha2-256"),
}
KEY_FIELDS = ("secret", "private_key", "secret_encoding")


def local_config(scheme: str, **changes: Any) -> dict[str, Any]:
    return {"scheme": scheme, **CASES[scheme][0], **changes}


def transit_config(scheme: str, key: str | None = None, **changes: Any) -> dict[str, Any]:
    fields = {name: value for name, value in CASES[scheme][0].items() if name not in KEY_FIELDS}
    backend = {"upstream": UPSTREAM, "transit_key": key or CASES[scheme][1]}
    return {"scheme": scheme, **fields, "backend": backend, **changes}


def credential(config: dict[str, Any]) -> Credential:
    return from_config("c", "sign", config, NOW)


class Disk:
    """The vault's nonce-mark writes, counted."""

    def __init__(self) -> None:
        self.writes = 0

    async def persist(self) -> None:
        self.writes += 1


async def sign(
    cred: Credential, request: dict[str, Any], transit: Transit | None, disk: Disk | None = None
) -> dict[str, Any]:
    persist = (disk or Disk()).persist
    return await sign_request(cred, dict(request), lambda: NOW, trio.Lock(), persist, transit=transit)


async def refused(code: ErrorCode, call: Any) -> RpcError:
    with pytest.raises(RpcError) as info:
        await call
    assert info.value.code is code, info.value
    return info.value


def jwt_parts(result: dict[str, Any]) -> tuple[str, bytes]:
    token = result["headers"]["Authorization"].removeprefix("Bearer ")
    signing_input, _, signature = token.rpartition(".")
    return signing_input, base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))


# -- the same answer as with the key here -----------------------------------------------------------


@pytest.mark.parametrize("scheme", list(CASES))
async def test_every_scheme_signs_through_transit_as_with_the_key_here(scheme: str) -> None:
    request = CASES[scheme][2]
    transit = _transit()
    here = await sign(credential(local_config(scheme)), request, None)
    there = await sign(credential(transit_config(scheme)), request, transit)
    if scheme == "coinbase":  # ES256 is randomised: the same JWT but for its signature, which verifies
        (input_here, _), (input_there, signature) = jwt_parts(here), jwt_parts(there)
        assert input_there == input_here
        assert json.loads(base64.urlsafe_b64decode(input_there.split(".")[0] + "=="))["alg"] == "ES256"
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        EC_KEY.public_key().verify(encode_dss_signature(r, s), input_there.encode(), ec.ECDSA(hashes.SHA256()))
        here["headers"] = there["headers"] = {}
    assert there == here
    operation, algorithm = PRIMITIVES[scheme]
    assert [(op, up, key, alg) for op, up, key, _, alg in transit.calls] == [
        (operation, UPSTREAM, CASES[scheme][1], algorithm)
    ], "one round trip, of the scheme's primitive, to the configured upstream and key"


async def test_binance_published_hmac_example_through_transit() -> None:
    transit = _transit()
    # Signed at the published example's own time: its timestamp is in the query.
    request = {
        "method": "POST",
        "url": f"https://api.binance.com/api/v3/order?{BINANCE_QUERY}",
        "timestamp": BINANCE_TS,
    }
    result = await sign_request(
        credential(transit_config("binance-hmac")),
        request,
        lambda: BINANCE_TS / 1000,
        trio.Lock(),
        Disk().persist,
        transit=transit,
    )
    assert result["url"] == f"https://api.binance.com/api/v3/order?{BINANCE_QUERY}&signature={BINANCE_SIG}"
    assert result["headers"] == {"X-MBX-APIKEY": BINANCE_KEY}
    assert transit.calls[0][3] == BINANCE_QUERY.encode(), "transit MACs the payload Binance documents"


async def test_kraken_published_example_needs_the_decoded_key_in_transit() -> None:
    transit = _transit()
    result = await sign(credential(transit_config("kraken")), CASES["kraken"][2], transit)
    assert result["headers"]["API-Sign"] == KRAKEN_SIGN
    assert result["nonce"] == KRAKEN_NONCE
    # The base64 text imported as the key (instead of the bytes it decodes to) signs wrong:
    # why SPEC.md says to import the decoded bytes.
    transit.keys["kraken-text"] = KRAKEN_SECRET.encode()
    wrong = await sign(credential(transit_config("kraken", "kraken-text")), CASES["kraken"][2], transit)
    assert wrong["headers"]["API-Sign"] != KRAKEN_SIGN


async def test_the_fast_path_leaves_a_transit_credential_to_the_slow_one() -> None:
    local = credential(local_config("okx"))
    remote = credential(transit_config("okx"))
    request = dict(CASES["okx"][2])
    assert sign_now(local, request, lambda: NOW) is not None
    assert sign_now(remote, request, lambda: NOW) is None


@pytest.mark.parametrize("scheme", list(CASES))
async def test_answers_now_says_exactly_when_sign_now_answers(scheme: str) -> None:
    # token.sign_many's hot path decides with answers_now before signing anything: it must agree
    # with sign_now for every scheme, or a batch would meet a None half way.
    for config in (local_config(scheme), transit_config(scheme)):
        cred = credential(config)
        answered = sign_now(cred, {"timestamp": NOW_MS, **CASES[scheme][2]}, lambda: NOW)
        assert answers_now(cred) is (answered is not None), config["scheme"]


# -- nothing asked for a refused request ---------------------------------------------------------


async def test_an_allow_list_refusal_makes_no_transit_call() -> None:
    transit = _transit()
    cred = credential(transit_config("binance-hmac", allow=["GET /api/*"]))
    await refused(ErrorCode.FORBIDDEN, sign(cred, CASES["binance-hmac"][2], transit))
    withdrawal = {"method": "POST", "url": "https://api.binance.com/sapi/v1/capital/withdraw/apply?coin=BTC"}
    await refused(ErrorCode.FORBIDDEN, sign(credential(transit_config("binance-hmac")), withdrawal, transit))
    assert transit.calls == []


async def test_a_request_the_scheme_refuses_makes_no_transit_call() -> None:
    transit = _transit()
    bad_window = {**CASES["bybit"][2], "options": {"recv_window": "0"}}
    await refused(ErrorCode.INVALID_PARAMS, sign(credential(transit_config("bybit")), bad_window, transit))
    other_nonce = {**CASES["kraken"][2], "body": b"nonce=5&pair=XBTUSD"}
    await refused(ErrorCode.INVALID_PARAMS, sign(credential(transit_config("kraken")), other_nonce, transit))
    with_query = {**CASES["binance-ws-logon"][2], "url": "wss://ws-api.binance.com/ws-api/v3?symbol=BTCUSDT"}
    await refused(ErrorCode.INVALID_PARAMS, sign(credential(transit_config("binance-ws-logon")), with_query, transit))
    assert transit.calls == []


async def test_without_a_transit_a_backend_credential_is_upstream_unavailable() -> None:
    cred = credential(transit_config("kraken"))
    error = await refused(ErrorCode.UPSTREAM_UNAVAILABLE, sign(cred, CASES["kraken"][2], None))
    assert f"no upstream named {UPSTREAM!r}" in str(error)
    assert isinstance(cred.provider, SignProvider) and cred.provider.last_nonce == 0, "no nonce spent"


# -- transit's errors, unchanged; nothing half done -------------------------------------------------


@pytest.mark.parametrize("code", [ErrorCode.UPSTREAM_UNAVAILABLE, ErrorCode.FORBIDDEN])
async def test_transit_errors_reach_the_caller_unchanged(code: ErrorCode) -> None:
    transit = _transit()
    transit.fail = RpcError(code, "OpenBao said no (as the lead's Transit words it)")
    with pytest.raises(RpcError) as info:
        await sign(credential(transit_config("okx")), CASES["okx"][2], transit)
    assert info.value is transit.fail


async def test_kraken_nonces_stay_increasing_and_reserved_across_a_failed_round_trip() -> None:
    transit, disk = _transit(), Disk()
    cred = credential(transit_config("kraken"))
    provider = cred.provider
    assert isinstance(provider, SignProvider)
    request = {"method": "POST", "url": "https://api.kraken.com/0/private/Balance"}
    first = await sign(cred, request, transit, disk)
    transit.fail = RpcError(ErrorCode.UPSTREAM_UNAVAILABLE, "connection refused")
    await refused(ErrorCode.UPSTREAM_UNAVAILABLE, sign(cred, request, transit, disk))
    spent = provider.last_nonce  # taken, and its mark written, before OpenBao was asked
    assert spent > first["nonce"] and provider.reserved_nonce >= spent and not provider.needs_reservation()
    transit.fail = None
    after = await sign(cred, request, transit, disk)
    assert after["nonce"] > spent, "a nonce sent to OpenBao is never handed out again"
    assert disk.writes == 1, "one mark covers the minute of nonces"
    proposed = {**request, "nonce": spent}
    await refused(ErrorCode.INVALID_PARAMS, sign(cred, proposed, transit, disk))


async def test_an_answer_of_the_wrong_size_is_upstream_unavailable() -> None:
    transit = _transit()
    transit.keys["ed-as-hmac"] = ED_KEY

    class Short(LocalTransit):
        async def hmac(self, upstream: str, key: str, data: bytes, *, algorithm: str) -> bytes:
            return (await super().hmac(upstream, key, data, algorithm=algorithm))[:20]

    error = await refused(
        ErrorCode.UPSTREAM_UNAVAILABLE, sign(credential(transit_config("okx")), CASES["okx"][2], Short(transit.keys))
    )
    assert "an imported hmac key" in str(error) and "'okx'" in str(error)


# -- the vault: its transit, a lock or a removal during the round trip ----------------------------


class GatedTransit(LocalTransit):
    """Holds every call until ``release`` is set."""

    def __init__(self, keys: dict[str, Any]) -> None:
        super().__init__(keys)
        self.entered = trio.Event()
        self.release = trio.Event()

    async def hmac(self, upstream: str, key: str, data: bytes, *, algorithm: str) -> bytes:
        self.entered.set()
        await self.release.wait()
        return await super().hmac(upstream, key, data, algorithm=algorithm)


PASS = "fake passphrase 1"


async def open_vault(path: Path, nursery: trio.Nursery, transit: Transit | None) -> Vault:
    vault = Vault(path, nursery=nursery, clock=lambda: NOW, transit=transit)
    await vault.init(Secret(PASS), KdfProfile.MIN)
    await vault.unlock(Secret(PASS))
    await vault.put(Secret(PASS), "okx", "sign", transit_config("okx"), replace=False)
    return vault


async def test_the_vault_signs_through_its_transit(nursery: trio.Nursery, tmp_path: Path) -> None:
    transit = _transit()
    vault = await open_vault(tmp_path, nursery, transit)
    request = {"name": "okx", **CASES["okx"][2]}
    assert vault.sign_now("okx", request) is None
    here = await sign(credential(local_config("okx")), CASES["okx"][2], None)
    assert await vault.sign("okx", request) == here
    vault.lock()
    await vault.unlock(Secret(PASS))  # the backend survived the vault file
    assert await vault.sign("okx", request) == here


async def test_a_sign_many_batch_with_a_transit_key_takes_the_slow_path(nursery: trio.Nursery, tmp_path: Path) -> None:
    transit = _transit()
    vault = await open_vault(tmp_path, nursery, transit)
    await vault.put(Secret(PASS), "binance", "sign", local_config("binance-hmac"), replace=False)
    audited: list[tuple[str | None, str, str]] = []
    batch = Batch(vault, lambda name: "", lambda *line: audited.append(line))
    okx, binance = {"name": "okx", **CASES["okx"][2]}, {"name": "binance", **CASES["binance-hmac"][2]}
    params = {"requests": [okx, binance, okx]}
    assert answer_now(batch, params) is None and audited == [] and transit.calls == []
    results = (await answer(batch, params))["results"]
    assert results == [await vault.sign("okx", okx), await vault.sign("binance", binance), await vault.sign("okx", okx)]
    assert len(transit.calls) == 2 + 2  # one round trip per transit request, batch and lone calls alike
    # OpenBao down: its requests are refused alone, the one signed here is not.
    transit.fail = RpcError(ErrorCode.UPSTREAM_UNAVAILABLE, "OpenBao cannot be reached")
    audited.clear()
    results = (await answer(batch, params))["results"]
    assert [item.get("error", {}).get("name") for item in results] == [
        "UPSTREAM_UNAVAILABLE",
        None,
        "UPSTREAM_UNAVAILABLE",
    ]
    assert sorted(line[:2] for line in audited) == [
        ("binance", "ok"),
        ("okx", "UPSTREAM_UNAVAILABLE"),
        ("okx", "UPSTREAM_UNAVAILABLE"),
    ]


async def test_a_vault_without_transit_answers_upstream_unavailable(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = await open_vault(tmp_path, nursery, None)
    error = await refused(ErrorCode.UPSTREAM_UNAVAILABLE, vault.sign("okx", {"name": "okx", **CASES["okx"][2]}))
    assert f"no upstream named {UPSTREAM!r}" in str(error)


async def _during_round_trip(
    nursery: trio.Nursery, tmp_path: Path, act: Callable[[Vault], Any]
) -> BaseException | dict[str, Any]:
    transit = GatedTransit(_transit().keys)
    vault = await open_vault(tmp_path, nursery, transit)
    outcome: list[BaseException | dict[str, Any]] = []

    async def signer() -> None:
        try:
            outcome.append(await vault.sign("okx", {"name": "okx", **CASES["okx"][2]}))
        except RpcError as exc:
            outcome.append(exc)

    async with trio.open_nursery() as inner:
        inner.start_soon(signer)
        await transit.entered.wait()
        await act(vault)
        transit.release.set()
    return outcome[0]


async def test_a_lock_during_the_round_trip_answers_locked(nursery: trio.Nursery, tmp_path: Path) -> None:
    async def lock(vault: Vault) -> None:
        vault.lock()

    outcome = await _during_round_trip(nursery, tmp_path, lock)
    assert isinstance(outcome, RpcError) and outcome.code is ErrorCode.LOCKED, outcome


async def test_a_removal_during_the_round_trip_serves_nothing(nursery: trio.Nursery, tmp_path: Path) -> None:
    async def remove(vault: Vault) -> None:
        await vault.remove(Secret(PASS), "okx")

    outcome = await _during_round_trip(nursery, tmp_path, remove)
    assert isinstance(outcome, RpcError) and outcome.code is ErrorCode.UNKNOWN_CREDENTIAL, outcome
    assert "while OpenBao signed" in str(outcome)


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"secret": OKX_SECRET}, "'backend' and 'secret' exclude each other"),
        ({"private_key": _pem(ED_KEY)}, "'backend' and 'private_key' exclude each other"),
        ({"secret_encoding": "raw"}, "'backend' and 'secret_encoding' exclude each other"),
        ({"backend": "bao-main/okx"}, "'backend' must be a map"),
        ({"backend": {"upstream": UPSTREAM, "transit_key": "okx", "mount": "transit"}},
         r"unknown field\(s\) in 'backend': mount"),
        ({"backend": {"upstream": UPSTREAM}}, "'backend' needs 'transit_key'"),
        ({"backend": {}}, "'backend' needs 'transit_key' and 'upstream'"),
        ({"backend": {"upstream": "", "transit_key": "okx"}}, "'backend.upstream' must be an upstream's name"),
        ({"backend": {"upstream": "bao main", "transit_key": "okx"}}, "'backend.upstream'"),
        ({"backend": {"upstream": "b" * 65, "transit_key": "okx"}}, "'backend.upstream'"),
        ({"backend": {"upstream": 7, "transit_key": "okx"}}, "'backend.upstream'"),
        ({"backend": {"upstream": UPSTREAM, "transit_key": "keys/okx"}}, "'backend.transit_key' must be a transit"),
        ({"backend": {"upstream": UPSTREAM, "transit_key": "-okx"}}, "'backend.transit_key'"),
        ({"backend": {"upstream": UPSTREAM, "transit_key": "okx."}}, "'backend.transit_key'"),
        ({"backend": {"upstream": UPSTREAM, "transit_key": "k" * 65}}, "'backend.transit_key'"),
        ({"backend": {"upstream": UPSTREAM, "transit_key": "okx\n"}}, "'backend.transit_key'"),
    ],
)  # fmt: skip
def test_bad_backends_are_refused_with_a_clear_message(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        credential(transit_config("okx", **changes))
    assert OKX_SECRET not in str(info.value)


def test_names_transit_takes_are_accepted() -> None:
    for upstream, key in (("b", "k"), ("Bao_2.prod-eu", "okx_main.v2-a"), ("-x.", "_k_"), ("u" * 64, "k" * 64)):
        provider = credential(transit_config("okx", backend={"upstream": upstream, "transit_key": key})).provider
        assert isinstance(provider, SignProvider) and provider.backend_upstream == upstream


def test_a_scheme_without_a_remote_primitive_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Opaque:
        """A scheme whose key is used in a way transit cannot stand in for."""

        name = "opaque"
        key_kind = "hmac"

        def sign(self, request: Any, keys: Any) -> Any:
            raise NotImplementedError

    monkeypatch.setitem(_schemes.SCHEMES, "opaque", Opaque())
    with pytest.raises(ConfigError, match="scheme 'opaque' cannot sign through OpenBao transit"):
        credential({"scheme": "opaque", "api_key": "k", "backend": {"upstream": UPSTREAM, "transit_key": "k"}})


def test_every_scheme_names_its_primitive() -> None:
    assert {name: scheme.remote_primitive for name, scheme in _schemes.SCHEMES.items()} == {
        **{name: f"{operation}/{algorithm}" for name, (operation, algorithm) in PRIMITIVES.items()},
        # tests/vaultd/test_schemes_coinbase_ws.py signs it through transit
        "coinbase-ws-jwt": "sign/es256",
        # tests/vaultd/test_schemes_rsa.py signs them through transit
        "binance-rsa": "sign/rsa-pkcs1v15-sha256",
        "bybit-rsa": "sign/rsa-pkcs1v15-sha256",
        # no transit primitive (transit has no secp256k1 keys): credential.put refuses a backend
        "hyperliquid": None,
    }


def test_okx_still_needs_its_passphrase_here() -> None:
    config = transit_config("okx")
    del config["passphrase"]
    with pytest.raises(ConfigError, match="'passphrase' is required"):
        credential(config)


def test_the_backend_field_is_known_to_the_kind() -> None:
    assert "backend" in KINDS["sign"].FIELDS


# -- what is shown and stored -----------------------------------------------------------------------


def test_describe_warnings_and_the_record_keep_the_backend_and_no_secret() -> None:
    cred = credential(transit_config("okx"))
    provider = cred.provider
    assert isinstance(provider, SignProvider)
    assert provider.backend_upstream == UPSTREAM
    settings = provider.describe()
    assert settings["backend"] == {"upstream": UPSTREAM, "transit_key": "okx", "round_trip": True}
    warnings = provider.warnings(NOW)
    assert any("every signature costs a round trip to OpenBao" in text and UPSTREAM in text for text in warnings)
    described = cred.describe(NOW)
    assert described["settings"]["backend"]["round_trip"] is True
    shown = f"{described!r} {provider!r} {cred!r} {provider.backend!r}"
    assert OKX_PASSPHRASE not in shown and OKX_SECRET not in shown
    record = provider.to_record()
    assert record["backend"] == {"upstream": UPSTREAM, "transit_key": "okx"}
    assert "secret" not in record and "secret_encoding" not in record and "private_key" not in record
    again = SignProvider.from_record(record)
    assert again.backend == provider.backend and again.to_record() == record


def test_a_local_credential_describes_no_backend() -> None:
    provider = credential(local_config("binance-hmac")).provider
    assert isinstance(provider, SignProvider)
    assert provider.backend_upstream is None and provider.describe()["backend"] is None
    assert not any("round trip" in text for text in provider.warnings(NOW))


def test_kraken_nonce_mark_survives_the_record() -> None:
    provider = SignProvider.from_config(transit_config("kraken", last_nonce=42))
    assert provider.to_record()["last_nonce"] == 42 and SignProvider.from_record(provider.to_record()).last_nonce == 42


def test_recorded_calls_show_no_request_bytes() -> None:
    recorder = Recorder()
    assert recorder.hmac(b"secret-looking-payload", "sha2-256") == bytes(32)
    assert "secret-looking" not in repr(recorder.calls) and "22 bytes" in repr(recorder.calls)


def test_a_replay_of_other_bytes_is_a_bug_not_a_signature() -> None:
    replayer = Replayer([Call("hmac", "sha2-256", b"a")], [bytes(32)])
    with pytest.raises(RuntimeError, match="on replay"):
        replayer.hmac(b"b", "sha2-256")
