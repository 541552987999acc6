"""Credential kinds: how each is configured, sealed, described and turned into a token.

Only ``static`` exists yet: a stored token with an optional ``not_after``. A credential
object holds its secret in a :class:`Secret` and nowhere else; ``describe`` never
includes it, and ``issue`` is the only method that reveals it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from vaultd_protocol import CredentialState, ErrorCode

from ._errors import RpcError
from ._secret import Secret

__all__ = [
    "KINDS",
    "NAME_PATTERN",
    "ConfigError",
    "StaticCredential",
    "check_name",
    "from_config",
    "from_record",
]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: 9999-12-31T23:59:59Z: later times are surely mistakes, and would not format as dates.
LATEST_TIME = 253402300799.0
MAX_TOKEN_CHARS = 16 * 1024
_TOKEN_TYPE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


class ConfigError(ValueError):
    """A credential's configuration is invalid. The message names the field, never a value."""


def check_name(name: str) -> None:
    """Raises: ConfigError: the name is not 1-64 of ``A-Za-z0-9._-`` starting alphanumeric."""
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            "credential names are 1 to 64 characters of letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )


def parse_time(value: object, field_name: str) -> float | None:
    """A time given as epoch seconds or ISO 8601 (``2026-12-31T00:00:00Z``), as epoch seconds.

    Raises:
        ConfigError: neither a finite number nor an ISO 8601 time with a UTC offset.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value) if math.isfinite(value) and abs(value) < 1e18 else math.nan
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{field_name!r} is not an ISO 8601 time") from None
        if parsed.tzinfo is None:
            raise ConfigError(f"{field_name!r} needs a UTC offset, for example 2026-12-31T00:00:00Z")
        seconds = parsed.timestamp()
    else:
        raise ConfigError(f"{field_name!r} must be a number of seconds since the epoch or an ISO 8601 string")
    if not 0 < seconds <= LATEST_TIME:
        raise ConfigError(f"{field_name!r} must be a time between 1970 and 9999")
    return seconds


def _check_token(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError("'token' must be a non-empty string")
    if len(value) > MAX_TOKEN_CHARS:
        raise ConfigError(f"'token' is longer than {MAX_TOKEN_CHARS} characters")
    if value != value.strip() or not value.isprintable():
        raise ConfigError("'token' must not contain control characters or surrounding whitespace")
    return value


def _check_header_safe(value: str) -> None:
    """A bearer token goes into an HTTP header: visible ASCII only (RFC 6750's b64token and more)."""
    if not all(0x21 <= ord(c) <= 0x7E for c in value):
        raise ConfigError("a 'bearer' token must be visible ASCII without spaces (it goes into an HTTP header)")


@dataclass(slots=True, repr=False, eq=False)
class StaticCredential:
    """A token stored as given. EXPIRED after ``not_after``, and never served then."""

    kind: ClassVar[str] = "static"
    name: str
    token: Secret
    token_type: str = "bearer"
    not_after: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    last_error: str | None = field(default=None)

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any], now: float) -> StaticCredential:
        """Raises: ConfigError: unknown field, or a field of the wrong type or form."""
        unknown = set(config) - {"token", "not_after", "type"}
        if unknown:
            shown = sorted(str(k)[:32] for k in unknown)
            raise ConfigError(f"unknown field(s) for a static credential: {', '.join(shown)}")
        token = _check_token(config.get("token"))
        token_type = config.get("type", "bearer")
        if not isinstance(token_type, str) or not _TOKEN_TYPE.fullmatch(token_type):
            raise ConfigError("'type' must be a short lowercase word such as 'bearer' or 'api-key'")
        if token_type == "bearer":
            _check_header_safe(token)
        not_after = parse_time(config.get("not_after"), "not_after")
        return cls(name, Secret(token), token_type, not_after, now, now)

    @classmethod
    def from_record(cls, name: str, record: dict[str, Any]) -> StaticCredential:
        return cls(
            name,
            Secret(record["token"]),
            record.get("type", "bearer"),
            record.get("not_after"),
            record.get("created_at", 0.0),
            record.get("updated_at", 0.0),
        )

    def to_record(self) -> dict[str, Any]:
        """The sealed form (reveals the secret: only for the vault body)."""
        return {
            "kind": self.kind,
            "token": self.token.reveal_str(),
            "type": self.token_type,
            "not_after": self.not_after,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def state(self, now: float) -> CredentialState:
        if self.not_after is not None and now >= self.not_after:
            return CredentialState.EXPIRED
        return CredentialState.FRESH

    def describe(self, now: float) -> dict[str, Any]:
        """Everything ``status`` and ``credential.list`` show. Never the secret."""
        return {
            "name": self.name,
            "kind": self.kind,
            "type": self.token_type,
            "state": str(self.state(now)),
            "expires_at": self.not_after,
            "next_renewal": None,
            "last_error": self.last_error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def issue(self, now: float, min_ttl: float) -> dict[str, Any]:
        """The ``token.get`` result.

        Raises:
            RpcError: TOKEN_EXPIRED when past ``not_after``, or when less than ``min_ttl``
                is left (a static token cannot be renewed).
        """
        ttl = None if self.not_after is None else self.not_after - now
        if ttl is not None and ttl <= 0:
            raise RpcError(ErrorCode.TOKEN_EXPIRED, f"static token {self.name!r} expired (not_after passed)")
        if ttl is not None and ttl < min_ttl:
            raise RpcError(
                ErrorCode.TOKEN_EXPIRED,
                f"static token {self.name!r} has {ttl:.0f} s left, less than min_ttl {min_ttl:.0f} s,"
                " and cannot be renewed",
            )
        value = self.token.reveal_str()
        headers = {"Authorization": f"Bearer {value}"} if self.token_type == "bearer" else {}
        return {
            "token": value,
            "type": self.token_type,
            "expires_at": self.not_after,
            "ttl": ttl,
            "headers": headers,
            "extra": {},
        }

    def wipe(self) -> None:
        self.token.wipe()

    def __repr__(self) -> str:
        return f"StaticCredential(name={self.name!r}, type={self.token_type!r}, not_after={self.not_after!r})"


Credential = StaticCredential
KINDS: dict[str, type[StaticCredential]] = {"static": StaticCredential}


def from_config(name: str, kind: str, config: dict[str, Any], now: float) -> Credential:
    """Raises: ConfigError: bad name, unknown kind, or invalid config."""
    check_name(name)
    cls = KINDS.get(kind)
    if cls is None:
        raise ConfigError(f"unknown credential kind {kind[:32]!r} (known: {', '.join(sorted(KINDS))})")
    return cls.from_config(name, config, now)


def from_record(name: str, record: dict[str, Any]) -> Credential:
    """Raises: KeyError or ValueError: a record this version cannot read."""
    cls = KINDS[record["kind"]]
    return cls.from_record(name, record)
