"""Static credential configuration: what is accepted, and clear refusals."""

from __future__ import annotations

import pytest

from vaultd._credentials import ConfigError, from_config
from vaultd._errors import RpcError
from vaultd_protocol import ErrorCode


def test_bearer_token_gets_an_authorization_header() -> None:
    cred = from_config("ex", "static", {"token": "fake-abc"}, now=100.0)
    result = cred.issue(now=200.0, min_ttl=0)
    assert result["token"] == "fake-abc"
    assert result["headers"] == {"Authorization": "Bearer fake-abc"}
    assert result["expires_at"] is None and result["ttl"] is None


def test_other_types_get_no_header() -> None:
    cred = from_config("ex", "static", {"token": "fake-abc", "type": "api-key"}, now=100.0)
    assert cred.issue(now=200.0, min_ttl=0)["headers"] == {}


@pytest.mark.parametrize(
    "not_after", [1_800_000_000, 1_800_000_000.0, "2027-01-15T08:00:00+00:00", "2027-01-15T08:00:00Z"]
)
def test_not_after_as_epoch_or_iso(not_after: object) -> None:
    cred = from_config("ex", "static", {"token": "fake", "not_after": not_after}, now=0.0)
    assert cred.not_after is not None and cred.not_after > 1_700_000_000


def test_expired_static_token_is_never_served() -> None:
    cred = from_config("ex", "static", {"token": "fake", "not_after": 1000.0}, now=0.0)
    assert cred.issue(now=999.0, min_ttl=0)["ttl"] == pytest.approx(1.0)
    assert cred.describe(1000.0)["state"] == "EXPIRED"
    with pytest.raises(RpcError) as info:
        cred.issue(now=1000.0, min_ttl=0)
    assert info.value.code is ErrorCode.TOKEN_EXPIRED


def test_min_ttl_beyond_a_static_tokens_life_is_refused() -> None:
    cred = from_config("ex", "static", {"token": "fake", "not_after": 1000.0}, now=0.0)
    with pytest.raises(RpcError, match="less than min_ttl") as info:
        cred.issue(now=900.0, min_ttl=200.0)
    assert info.value.code is ErrorCode.TOKEN_EXPIRED


@pytest.mark.parametrize(
    ("name", "kind", "config", "message"),
    [
        ("ex", "static", {}, "'token' must be a non-empty string"),
        ("ex", "static", {"token": ""}, "non-empty"),
        ("ex", "static", {"token": "a\nb"}, "control characters"),
        ("ex", "static", {"token": " padded"}, "surrounding whitespace"),
        ("ex", "static", {"token": "x" * 20000}, "longer than"),
        ("ex", "static", {"token": "t", "colour": 1}, "unknown field"),
        ("ex", "static", {"token": "t", "not_after": "tomorrow"}, "not an ISO 8601 time"),
        ("ex", "static", {"token": "t", "not_after": "2027-01-01T00:00:00"}, "needs a UTC offset"),
        ("ex", "static", {"token": "t", "not_after": -5}, "between 1970 and 9999"),
        ("ex", "static", {"token": "t", "not_after": 1e300}, "between 1970 and 9999"),
        ("ex", "static", {"token": "t", "not_after": float("inf")}, "between 1970 and 9999"),
        ("ex", "static", {"token": "t", "not_after": "1969-12-31T00:00:00Z"}, "between 1970 and 9999"),
        ("ex", "static", {"token": "t", "type": "Bearer Token"}, "'type'"),
        ("ex", "oauth9", {"token": "t"}, "unknown credential kind"),
        ("-ex", "static", {"token": "t"}, "credential names"),
        ("a/b", "static", {"token": "t"}, "credential names"),
        ("", "static", {"token": "t"}, "credential names"),
    ],
)
def test_bad_config_is_refused_with_the_field_named(
    name: str, kind: str, config: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        from_config(name, kind, config, now=0.0)
    assert "a\nb" not in str(info.value)


@pytest.mark.parametrize("token", ["fake token", "fake\u0085token", "fake-tökén"])
def test_bearer_tokens_must_be_header_safe(token: str) -> None:
    with pytest.raises(ConfigError):
        from_config("ex", "static", {"token": token}, now=0.0)
