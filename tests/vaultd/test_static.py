"""The static kind: configuration, refusals that name the field, and what it issues."""

from __future__ import annotations

import pytest

from vaultd._credentials import ConfigError, from_config
from vaultd._providers import FetchContext


async def test_bearer_token_gets_an_authorization_header() -> None:
    cred = from_config("ex", "static", {"token": "fake-abc"}, now=100.0)
    issued = await cred.provider.fetch(FetchContext(lambda: 200.0))
    assert issued.token.reveal_str() == "fake-abc"
    assert issued.headers() == {"Authorization": "Bearer fake-abc"}
    assert issued.expires_at is None


async def test_other_types_get_no_header() -> None:
    cred = from_config("ex", "static", {"token": "fake abc", "type": "api-key"}, now=100.0)
    assert (await cred.provider.fetch(FetchContext(lambda: 200.0))).headers() == {}


@pytest.mark.parametrize(
    "not_after", [1_800_000_000, 1_800_000_000.0, "2027-01-15T08:00:00+00:00", "2027-01-15T08:00:00Z"]
)
def test_not_after_as_epoch_or_iso(not_after: object) -> None:
    cred = from_config("ex", "static", {"token": "fake", "not_after": not_after}, now=0.0)
    assert cred.provider.describe()["not_after"] > 1_700_000_000


def test_status_warns_a_week_ahead_of_not_after() -> None:
    cred = from_config("ex", "static", {"token": "fake", "not_after": 10 * 86400.0}, now=0.0)
    assert cred.provider.warnings(now=0.0) == []
    (warning,) = cred.provider.warnings(now=5 * 86400.0)
    assert "5.0 days" in warning


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
