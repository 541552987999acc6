"""``token.sign`` remembers what it made of a URL and what an allow-list decided, per credential:
a repeated request is signed afresh each time, and nothing one credential was allowed leaks to
another, nor does a refusal turn into a pass on the second try."""

from __future__ import annotations

from typing import Any

import pytest

from vaultd._credentials import Credential, from_config
from vaultd._errors import RpcError
from vaultd._signing import sign_now
from vaultd_protocol import ErrorCode

NOW = 1_800_000_000.0
ORDER = "https://api.binance.com/api/v3/order?symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.01"


def _credential(name: str, allow: list[str] | None = None) -> Credential:
    config: dict[str, Any] = {"scheme": "binance-hmac", "api_key": "fake-key", "secret": "fake-secret"}
    if allow is not None:
        config["allow"] = allow
    return from_config(name, "sign", config, NOW)


def _sign(credential: Credential, url: str, at: float = NOW) -> dict[str, Any]:
    result = sign_now(credential, {"method": "POST", "url": url, "body": b""}, lambda: at)
    assert result is not None
    return result


def test_a_repeated_request_is_signed_afresh_with_its_own_timestamp() -> None:
    credential = _credential("a")
    first, second = _sign(credential, ORDER), _sign(credential, ORDER, NOW + 1)
    assert "timestamp=1800000000000&" in first["url"]
    assert "timestamp=1800000001000&" in second["url"]
    assert first["url"].split("signature=")[1] != second["url"].split("signature=")[1]


def test_what_one_credential_may_sign_is_not_passed_on_to_another() -> None:
    allowed, narrow = _credential("wide"), _credential("narrow", ["GET /api/v3/account"])
    _sign(allowed, ORDER)  # remembered for "wide"
    with pytest.raises(RpcError) as refused:
        _sign(narrow, ORDER)
    assert refused.value.code is ErrorCode.FORBIDDEN


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://api.binance.com/sapi/v1/capital/withdraw/apply?coin=BTC", ErrorCode.FORBIDDEN),
        ("https://api.binance.com/api/v3/%6Frder?symbol=BTCUSDT", ErrorCode.INVALID_PARAMS),
        ("http://api.binance.com/api/v3/order?symbol=BTCUSDT", ErrorCode.INVALID_PARAMS),
    ],
)
def test_a_refused_url_is_refused_again_on_every_try(url: str, code: ErrorCode) -> None:
    credential = _credential("c")
    for _ in range(3):
        with pytest.raises(RpcError) as refused:
            _sign(credential, url)
        assert refused.value.code is code


def test_a_long_url_is_checked_and_signed_without_being_kept() -> None:
    credential = _credential("d")
    url = ORDER + "&clientOrderId=" + "x" * 3000
    assert _sign(credential, url)["url"].startswith(url + "&timestamp=")
