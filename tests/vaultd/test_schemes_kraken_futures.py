"""The Kraken Futures signing scheme: Kraken's published Authent example, ccxt's signature, the
daemon-owned nonce, the refusals, and ``token.sign`` through a vault (the nonce mark on disk)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest
import trio

from tests.vaultd.scheme_tools import (
    API_KEY,
    CCXT_TS_MS,
    KRAKEN_SECRET,
    VAULT_PASS,
    keys,
    req,
    sign_with,
    vault_with,
)
from tests.vaultd.test_sign_transit import LocalTransit
from vaultd._credentials import ConfigError
from vaultd._errors import RpcError
from vaultd._providers.sign import SignProvider
from vaultd._schemes import SCHEMES, SignError, SignRequest, decode_secret
from vaultd._schemes._base import hmac_signer
from vaultd._schemes.kraken_futures import authent, endpoint_path
from vaultd._secret import Secret
from vaultd_protocol import ErrorCode

NOW = CCXT_TS_MS / 1000
SCHEME = SCHEMES["kraken-futures"]
NONCE = 1765000000200
ORDER = "orderType=lmt&symbol=PI_XBTUSD&side=buy&size=1&limitPrice=10000"
ORDER_QUERY = tuple(tuple(pair.split("=")) for pair in ORDER.split("&"))

# Kraken docs, "Futures Websockets", "Sign challenge": the published inputs and output of the
# same primitive Authent uses, base64(HMAC-SHA512(base64-decoded secret, SHA256(input))).
CHALLENGE = b"c100b894-1729-464d-ace1-52dbce11db42"
CHALLENGE_SECRET = "7zxMEF5p/Z8l2p2U7Ghv6x14Af+Fx+92tPgUdVQ748FOIrEoT9bgT+bTRfXc5pz8na+hL/QdrCVG7bh9KpT0eMTm"
CHALLENGE_SIGNED = "4JEpF3ix66GA2B+ooK128Ift4XQVtc137N9yeg4Kqsn9PI0Kpzbysl9M1IeCEdjg0zl00wkVqcsnG4bmnlMb3A=="

# ccxt 4.5.90, krakenfutures.sign("sendorder", ["private"], "POST", {"orderType": "lmt",
# "symbol": "PI_XBTUSD", "side": "buy", "size": 1, "limitPrice": 10000}) with KRAKEN_SECRET: the
# URL https://futures.kraken.com/derivatives/api/v3/sendorder?<ORDER>, and this Authent. ccxt
# sends no nonce, so it signs postData + "" + "/api/v3/sendorder"; the scheme always adds one.
CCXT_AUTHENT = "JkxAoRC80HCMQEa4JzEGg6DqfgjZErmQ5SkTug+2JpqrOD1HWJBTN8tfgBSBI4mA2JxDgq+ES/kHeOGv9cAs9g=="
# ccxt 4.5.90, krakenfutures.sign("openpositions", ["private"], "GET", {}): postData empty.
CCXT_GET_AUTHENT = "Jd12q/AmL9sbt87ysqtiqWxV06x2SJv801VwAoJPcDe4lAjjS/8zrLm3vyjlppc+aeHyOmP8VyXwKhY2zKny4g=="


def independent(message: bytes, secret: str = KRAKEN_SECRET) -> str:
    """Kraken's five steps, written out: SHA-256, base64-decode the secret, HMAC-SHA512, base64."""
    digest = hashlib.sha256(message).digest()
    return base64.b64encode(hmac.new(base64.b64decode(secret), digest, hashlib.sha512).digest()).decode()


def test_authent_reproduces_the_published_challenge_example() -> None:
    mac = hmac_signer(keys(CHALLENGE_SECRET, "base64"), "kraken-futures", "sha2-512")
    assert authent(mac, CHALLENGE) == CHALLENGE_SIGNED


def test_authent_reproduces_ccxt_without_a_nonce() -> None:
    mac = hmac_signer(keys(KRAKEN_SECRET, "base64"), "kraken-futures", "sha2-512")
    assert authent(mac, f"{ORDER}/api/v3/sendorder".encode()) == CCXT_AUTHENT
    assert authent(mac, b"/api/v3/openpositions") == CCXT_GET_AUTHENT


def test_the_scheme_signs_the_query_the_nonce_and_the_path_without_derivatives() -> None:
    request = req("POST", "/derivatives/api/v3/sendorder", ORDER_QUERY, nonce=NONCE, host="futures.kraken.com")
    signed = SCHEME.sign(request, keys(KRAKEN_SECRET, "base64"))
    # limitPrice's digits would meet the nonce's: a parameter ending otherwise (side) goes last.
    sent = "orderType=lmt&symbol=PI_XBTUSD&size=1&limitPrice=10000&side=buy"
    expected = independent(f"{sent}{NONCE}/api/v3/sendorder".encode())
    assert signed.headers == {"APIKey": API_KEY, "Authent": expected, "Nonce": str(NONCE)}
    assert signed.query_string == sent and signed.query == tuple(tuple(p.split("=")) for p in sent.split("&"))
    assert signed.body == b"" and signed.valid_until == NOW + 60


def test_no_trailing_digit_can_pass_for_the_nonce() -> None:
    # Found by an attacker's review: "size=15" + nonce N signs as "size=1" + nonce "5N", a nonce
    # millions of times the daemon's that would lock every later one out.
    for query in ((("size", "15"),), (("since", "1"), ("before", "2"))):
        with pytest.raises(SignError, match="must not end in a digit"):
            SCHEME.sign(req("GET", "/derivatives/api/v3/fills", query, nonce=NONCE), keys(KRAKEN_SECRET, "base64"))
    with pytest.raises(SignError, match="must not end in a digit"):
        SCHEME.sign(
            req("POST", "/derivatives/api/v3/sendorder", body=b"size=15", nonce=NONCE), keys(KRAKEN_SECRET, "base64")
        )


def test_a_form_body_is_post_data_and_says_its_type() -> None:
    body = b"json=%7B%22batchOrder%22%3A%5B%5D%7D"
    signed = SCHEME.sign(
        req("POST", "/derivatives/api/v3/batchorder", body=body, nonce=NONCE), keys(KRAKEN_SECRET, "base64")
    )
    assert signed.headers["Authent"] == independent(body + f"{NONCE}/api/v3/batchorder".encode())
    assert signed.headers["Content-Type"] == "application/x-www-form-urlencoded" and signed.body == body


def test_the_query_is_signed_url_encoded_as_sent() -> None:
    signed = SCHEME.sign(
        req("GET", "/derivatives/api/v3/fills", (("lastFillTime", "2024-01-01T00:00:00.000Z"),), nonce=NONCE),
        keys(KRAKEN_SECRET, "base64"),
    )
    assert signed.query_string == "lastFillTime=2024-01-01T00%3A00%3A00.000Z"
    message = f"{signed.query_string}{NONCE}/api/v3/fills".encode()
    assert signed.headers["Authent"] == independent(message)


def test_endpoint_path_drops_only_a_leading_derivatives_segment() -> None:
    assert endpoint_path("/derivatives/api/v3/orderbook") == "/api/v3/orderbook"  # the docs' endpointPath
    assert endpoint_path("/api/history/v2/executions") == "/api/history/v2/executions"
    assert endpoint_path("/derivativesx/api") == "/derivativesx/api"
    assert endpoint_path("/derivatives") == "/derivatives"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (req("GET", "/derivatives/api/v3/accounts"), "a 'nonce' is required"),
        (req("GET", "/derivatives/api/v3/accounts", nonce=0), "'nonce' must be a positive 64-bit integer"),
        (req("GET", "/derivatives/api/v3/accounts", nonce=2**64), "'nonce' must be a positive 64-bit integer"),
        (req("POST", "/derivatives/api/v3/sendorder", (("a", "b"),), b"c=d", nonce=NONCE), "not both"),
        (req("POST", "/derivatives/api/v3/sendorder", body="s=\u00e9".encode(), nonce=NONCE), "form-encoded ASCII"),
        (req("GET", "/derivatives/api/v3/accounts", nonce=NONCE, recv_window="5"), "unknown option"),
    ],
)
def test_refusals(request_: SignRequest, message: str) -> None:
    with pytest.raises(SignError, match=message) as info:
        SCHEME.sign(request_, keys(KRAKEN_SECRET, "base64"))
    assert KRAKEN_SECRET not in str(info.value)


def test_the_secret_must_be_base64() -> None:
    assert SCHEME.secret_encoding == "base64" and SCHEME.remote_primitive == "hmac/sha2-512"
    with pytest.raises(ConfigError, match="'secret' must be standard base64"):
        SignProvider.from_config({"scheme": "kraken-futures", "api_key": API_KEY, "secret": "not base64!"})
    assert decode_secret(KRAKEN_SECRET, "base64") == base64.b64decode(KRAKEN_SECRET)


CONFIG = {"scheme": "kraken-futures", "api_key": API_KEY, "secret": KRAKEN_SECRET}
URL = "https://futures.kraken.com/derivatives/api/v3/sendorder?" + ORDER


async def test_token_sign_hands_out_increasing_nonces_with_the_mark_on_disk(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    vault = await vault_with(tmp_path, nursery, "kf", CONFIG, NOW)
    request = {"name": "kf", "method": "POST", "url": URL}
    assert vault.sign_now("kf", request) is None, "a daemon-owned nonce takes the slow path"
    first = await vault.sign("kf", request)
    second = await vault.sign("kf", request)
    assert first["nonce"] == CCXT_TS_MS and second["nonce"] == CCXT_TS_MS + 1
    for answer in (first, second):
        assert answer["headers"]["Nonce"] == str(answer["nonce"])
        query = answer["url"].partition("?")[2]  # the order signed (side moved last: see above)
        assert query == "orderType=lmt&symbol=PI_XBTUSD&size=1&limitPrice=10000&side=buy"
        assert answer["headers"]["Authent"] == independent(f"{query}{answer['nonce']}/api/v3/sendorder".encode())
        assert answer["url"].partition("?")[0] == URL.partition("?")[0]
    vault.lock()
    await vault.unlock(Secret(VAULT_PASS))
    third = await vault.sign("kf", request)
    assert third["nonce"] > second["nonce"], "the mark written ahead survives a lock"
    with pytest.raises(RpcError) as refused:
        await vault.sign("kf", {**request, "url": "https://futures.kraken.com/derivatives/api/v3/withdrawal"})
    assert refused.value.code is ErrorCode.FORBIDDEN


async def test_a_proposed_nonce_must_be_above_the_last() -> None:
    request = {
        "method": "GET",
        "url": "https://futures.kraken.com/derivatives/api/v3/accounts",
        "nonce": CCXT_TS_MS + 5,
    }
    assert (await sign_with(CONFIG, request, NOW))["headers"]["Nonce"] == str(CCXT_TS_MS + 5)
    provider = SignProvider.from_config({**CONFIG, "last_nonce": CCXT_TS_MS + 10})
    assert provider.owns_nonce and provider.describe()["last_nonce"] == CCXT_TS_MS + 10
    with pytest.raises(RpcError) as refused:
        await sign_with({**CONFIG, "last_nonce": CCXT_TS_MS + 10}, request, NOW)
    assert refused.value.code is ErrorCode.INVALID_PARAMS and "above the last one" in str(refused.value)


def test_a_replacement_keeps_the_nonces_above_the_old_ones() -> None:
    old = SignProvider.from_config({**CONFIG, "last_nonce": 5000})
    new = SignProvider.from_config(CONFIG)
    new.carry_nonce_from(old)
    assert new.last_nonce == 5000
    spot = SignProvider.from_config({**CONFIG, "scheme": "kraken", "last_nonce": 9000})
    other = SignProvider.from_config(CONFIG)
    other.carry_nonce_from(spot)
    assert other.last_nonce == 0, "another venue's key has its own nonces"


async def test_signing_through_transit_gives_the_same_answer() -> None:
    remote = {"scheme": "kraken-futures", "api_key": API_KEY, "backend": {"upstream": "bao", "transit_key": "k"}}
    transit = LocalTransit({"k": base64.b64decode(KRAKEN_SECRET)})
    request = {"method": "POST", "url": URL, "nonce": NONCE}
    assert await sign_with(remote, request, NOW, transit=transit) == await sign_with(CONFIG, request, NOW)
    assert [(op, alg) for op, _, _, _, alg in transit.calls] == [("hmac", "sha2-512")]
