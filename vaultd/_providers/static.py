"""The ``static`` kind: a token stored as given, served until its optional ``not_after``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .._secret import Secret
from ._base import ConfigError, FetchContext, Issued, check_keys, parse_time, req_str, token_type

__all__ = ["StaticProvider", "check_header_safe"]

MAX_TOKEN_CHARS = 16 * 1024
WARN_AHEAD = 7 * 86400.0


def check_header_safe(value: str, what: str = "a 'bearer' token") -> None:
    """A bearer token goes into an HTTP header: visible ASCII only (RFC 6750's b64token and more)."""
    if not all(0x21 <= ord(c) <= 0x7E for c in value):
        raise ConfigError(f"{what} must be visible ASCII without spaces (it goes into an HTTP header)")


class StaticProvider:
    kind: ClassVar[str] = "static"
    renewable: ClassVar[bool] = False
    FIELDS: ClassVar[frozenset[str]] = frozenset({"token", "not_after", "type"})

    def __init__(self, token: Secret, token_type: str = "bearer", not_after: float | None = None) -> None:
        self._token = token
        self.token_type = token_type
        self.not_after = not_after

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StaticProvider:
        check_keys(config, cls.FIELDS, cls.kind)
        if not isinstance(config.get("token"), str) or not config.get("token"):
            raise ConfigError("'token' must be a non-empty string")
        token = req_str(config, "token", max_len=MAX_TOKEN_CHARS)
        kind_of_token = token_type(config)
        if kind_of_token == "bearer":
            check_header_safe(token)
        return cls(Secret(token), kind_of_token, parse_time(config.get("not_after"), "not_after"))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> StaticProvider:
        return cls(Secret(record["token"]), record.get("type", "bearer"), record.get("not_after"))

    def to_record(self) -> dict[str, Any]:
        return {"token": self._token.reveal_str(), "type": self.token_type, "not_after": self.not_after}

    def describe(self) -> dict[str, Any]:
        return {"type": self.token_type, "not_after": self.not_after}

    def warnings(self, now: float) -> list[str]:
        if self.not_after is not None and now < self.not_after <= now + WARN_AHEAD:
            days = (self.not_after - now) / 86400
            return [f"the static token stops being served in {days:.1f} days (not_after); replace it"]
        return []

    async def fetch(self, ctx: FetchContext) -> Issued:
        return Issued(Secret(self._token.reveal()), ctx.now(), self.not_after, self.token_type)

    def wipe(self) -> None:
        self._token.wipe()

    def __repr__(self) -> str:
        return f"StaticProvider(type={self.token_type!r}, not_after={self.not_after!r})"
