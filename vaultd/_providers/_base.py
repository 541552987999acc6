"""What every credential kind shares: the issued token, upstream failures, config helpers.

A provider holds one credential's configuration (its secrets in :class:`Secret`) and knows
how to get a token from it: ``fetch`` once, the renewer decides when. Providers never read
a clock or sleep on their own: they get ``now`` and an HTTP client from :class:`FetchContext`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .._secret import Secret

if TYPE_CHECKING:
    import httpx

__all__ = [
    "LATEST_TIME",
    "ConfigError",
    "FetchContext",
    "Issued",
    "Provider",
    "UpstreamError",
    "check_keys",
    "opt_number",
    "opt_str",
    "parse_time",
    "req_str",
    "secret_field",
    "shown_name",
]

#: 9999-12-31T23:59:59Z: later times are surely mistakes, and would not format as dates.
LATEST_TIME = 253402300799.0
_TOKEN_TYPE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


class ConfigError(ValueError):
    """A credential's configuration is invalid. The message names the field, never a value."""


class UpstreamError(Exception):
    """Getting a token failed. The message is shown in ``status``: it never holds a secret.

    ``reauth``: the upstream refused the long-term credential itself (``invalid_grant``, 401,
    a revoked key): retrying cannot help, an operator must act. Otherwise the failure is
    transient (5xx, timeouts, malformed answers) and the renewer backs off and retries.
    """

    def __init__(self, message: str, *, reauth: bool = False, rotated: bool = False, reason: str | None = None) -> None:
        super().__init__(message)
        self.reauth = reauth
        #: The provider adopted a new long-term secret before the failure: save it anyway.
        self.rotated = rotated
        #: The metrics' failure reason where the raiser knows it (``_stats.REASONS``); else it is
        #: judged from ``reauth`` and the message's HTTP status.
        self.reason = reason


@dataclass(slots=True, repr=False)
class Issued:
    """One token from a provider. ``expires_at`` is wall-clock epoch seconds, None if never."""

    token: Secret
    issued_at: float
    expires_at: float | None
    token_type: str = "bearer"
    #: Kind-specific extras for the engine (may be sensitive: shown only by token.get).
    extra: dict[str, Any] = field(default_factory=dict)
    #: The provider adopted a new long-term secret (a rotated refresh token) while getting
    #: this token: the vault must be written before the token is served.
    rotated: bool = False

    def headers(self) -> dict[str, str]:
        if self.token_type == "bearer":
            return {"Authorization": f"Bearer {self.token.reveal_str()}"}
        return {}

    def valid_at(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at

    def wipe(self) -> None:
        self.token.wipe()
        self.extra.clear()

    def __repr__(self) -> str:
        return f"Issued(type={self.token_type!r}, expires_at={self.expires_at!r})"


@dataclass(frozen=True, slots=True)
class FetchContext:
    """What a fetch may use: the wall clock, and the daemon's shared HTTP client."""

    now: Callable[[], float]
    http: httpx.AsyncClient | None = None


class Provider(Protocol):
    """One credential kind. Implementations are small classes in this package."""

    kind: ClassVar[str]
    #: Whether tokens come from somewhere (and expire): the renewer schedules these.
    renewable: ClassVar[bool]
    #: Every config field the kind accepts (SPEC.md documents each; a test checks).
    FIELDS: ClassVar[frozenset[str]]

    def to_record(self) -> dict[str, Any]:
        """The sealed form of the config, secrets included (only for the vault body)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Non-secret settings for ``status`` and ``credential.list``."""
        ...

    def warnings(self, now: float) -> list[str]:
        """Things the operator should hear about before they break (e.g. an expiry ahead)."""
        ...

    async def fetch(self, ctx: FetchContext) -> Issued:
        """Get a token now.

        Raises:
            UpstreamError: the attempt failed (``reauth`` says whether retrying can help).
        """
        ...

    def wipe(self) -> None:
        """Overwrite every secret this provider holds."""
        ...


# -- config helpers ------------------------------------------------------------------------------


def shown_name(key: object) -> str:
    """A field name as a message may show it: printable and short, never raw (it may come from an
    upstream record's writer, and messages reach terminals and logs)."""
    text = str(key)[:32]
    return text if text.isprintable() and text.isascii() else repr(text)


def check_keys(config: Mapping[str, Any], allowed: frozenset[str], kind: str) -> None:
    unknown = set(config) - allowed
    if unknown:
        shown = ", ".join(sorted(shown_name(k) for k in unknown))
        raise ConfigError(f"unknown field(s) for a {kind} credential: {shown} (known: {', '.join(sorted(allowed))})")


def req_str(config: Mapping[str, Any], key: str, *, max_len: int = 4096, label: str | None = None) -> str:
    """``config[key]``, a non-empty printable string without surrounding whitespace; messages
    name the field as ``label`` (default ``key``: a nested one says where, e.g. ``auth.role``)."""
    shown = repr(label if label is not None else key)
    value = config.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{shown} is required and must be a non-empty string")
    if len(value) > max_len:
        raise ConfigError(f"{shown} is longer than {max_len} characters")
    if value != value.strip() or not value.isprintable():
        raise ConfigError(f"{shown} must not contain control characters or surrounding whitespace")
    return value


def opt_str(config: Mapping[str, Any], key: str, default: str | None = None, *, max_len: int = 4096) -> str | None:
    if config.get(key) is None:
        return default
    return req_str(config, key, max_len=max_len)


def secret_field(config: Mapping[str, Any], key: str, *, required: bool = True) -> Secret | None:
    if config.get(key) is None and not required:
        return None
    return Secret(req_str(config, key, max_len=16 * 1024))


def opt_number(config: Mapping[str, Any], key: str, default: float, *, low: float, high: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key!r} must be a number")
    if not low <= value <= high:
        raise ConfigError(f"{key!r} must be between {low:g} and {high:g}")
    return float(value)


def token_type(config: Mapping[str, Any], default: str = "bearer") -> str:
    value = config.get("type", default)
    if not isinstance(value, str) or not _TOKEN_TYPE.fullmatch(value):
        raise ConfigError("'type' must be a short lowercase word such as 'bearer' or 'api-key'")
    return value


def parse_time(value: object, field_name: str) -> float | None:
    """A time given as epoch seconds or ISO 8601 (``2026-12-31T00:00:00Z``), as epoch seconds.

    Raises:
        ConfigError: not a number or an ISO 8601 time with a UTC offset, or outside 1970..9999.
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
