"""What the client returns: a :class:`Token` that never prints its value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import MalformedResponse

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an engine ~7 ms of import: annotations only
    from typing import Any

__all__ = ["Signed", "Token", "WatchEvent"]


@dataclass(frozen=True, slots=True, repr=False)
class Token:
    """A short-lived token from the daemon.

    ``value`` is the token itself; ``headers`` are ready-made HTTP headers that carry it
    (``Authorization: Bearer ...`` for bearer tokens); ``expires_at`` is epoch seconds, or
    None for a token without a known expiry.
    """

    name: str
    value: str
    type: str
    expires_at: float | None
    ttl: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_result(cls, name: str, result: Any) -> Token:
        """Raises: MalformedResponse: ``result`` is not a token map."""
        try:
            token = cls(
                name=name,
                value=result["token"],
                type=result.get("type", "bearer"),
                expires_at=result.get("expires_at"),
                ttl=result.get("ttl"),
                headers=dict(result.get("headers") or {}),
                extra=dict(result.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise MalformedResponse("the daemon sent a token without the fields of one") from None
        if not isinstance(token.value, str) or not isinstance(token.expires_at, (int, float, type(None))):
            raise MalformedResponse("the daemon sent a token of the wrong type")
        return token

    def __repr__(self) -> str:
        return f"Token(name={self.name!r}, type={self.type!r}, expires_at={self.expires_at!r}, value=<hidden>)"


@dataclass(frozen=True, slots=True, repr=False)
class Signed:
    """What to send for one signed request: add ``headers``, send to ``url`` with ``body``.

    ``url`` already carries any query parameters the scheme adds (a timestamp, a signature);
    ``valid_until`` is when the exchange stops accepting it (epoch seconds).
    """

    headers: Mapping[str, str]
    url: str
    body: bytes
    valid_until: float
    nonce: int | None = None

    @classmethod
    def from_result(cls, result: Any) -> Signed:
        """Raises: MalformedResponse: ``result`` is not a signed request's map."""
        try:
            return cls(
                headers=dict(result.get("headers") or {}),
                url=str(result["url"]),
                body=bytes(result.get("body") or b""),
                valid_until=float(result.get("valid_until") or 0.0),
                nonce=result.get("nonce"),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise MalformedResponse("the daemon sent a signed request without the fields of one") from None

    def __repr__(self) -> str:
        return f"Signed(url={self.url.split('?')[0]!r}, valid_until={self.valid_until!r}, headers=<hidden>)"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """``kind`` is ``updated`` (``token`` holds the new token), ``expired`` or ``locked``
    (the vault was locked: the watch ends after this event)."""

    kind: str
    name: str | None = None
    token: Token | None = None
