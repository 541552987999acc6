"""What the client returns: a :class:`Token` that never prints its value."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from vaultd_protocol._value import Value, assign

from .errors import MalformedResponse

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an engine ~7 ms of import: annotations only
    from typing import Any

__all__ = ["Signed", "Token", "WatchEvent"]


class Token(Value):
    """A short-lived token from the daemon.

    ``value`` is the token itself; ``headers`` are ready-made HTTP headers that carry it
    (``Authorization: Bearer ...`` for bearer tokens); ``expires_at`` is epoch seconds, or
    None for a token without a known expiry.
    """

    __slots__ = __match_args__ = ("name", "value", "type", "expires_at", "ttl", "headers", "extra")
    name: str
    value: str
    type: str
    expires_at: float | None
    ttl: float | None
    headers: Mapping[str, str]
    extra: Mapping[str, Any]

    def __init__(  # noqa: PLR0917 - positional, as the dataclass it replaces took them
        self,
        name: str,
        value: str,
        type: str,
        expires_at: float | None,
        ttl: float | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        assign(self, "name", name)
        assign(self, "value", value)
        assign(self, "type", type)
        assign(self, "expires_at", expires_at)
        assign(self, "ttl", ttl)
        assign(self, "headers", {} if headers is None else headers)
        assign(self, "extra", {} if extra is None else extra)

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


class Signed(Value):
    """What to send for one signed request: add ``headers``, send to ``url`` with ``body``.

    ``url`` already carries any query parameters the scheme adds (a timestamp, a signature);
    ``query`` holds the same final query parameters, decoded, as ``(name, value)`` pairs in
    order. For the WebSocket login schemes (``okx-ws-login``, ``bybit-ws-auth``,
    ``coinbase-ws-jwt``, ``binance-ws-logon``) ``query`` is what to send: the login message's
    args (SPEC §6.6); connect to the plain URL, not to ``url``, which carries them too (OKX's
    passphrase among them). ``valid_until`` is when the exchange stops accepting it (epoch
    seconds); ``nonce`` the nonce used, for schemes that take one. The repr shows neither
    headers nor query nor the URL's query: they carry signatures, and OKX's the passphrase.
    """

    __slots__ = __match_args__ = ("headers", "url", "body", "valid_until", "nonce", "query")
    headers: Mapping[str, str]
    url: str
    body: bytes
    valid_until: float
    nonce: int | None
    query: tuple[tuple[str, str], ...]

    def __init__(  # noqa: PLR0917 - positional, as before ``query`` was added last
        self,
        headers: Mapping[str, str],
        url: str,
        body: bytes,
        valid_until: float,
        nonce: int | None = None,
        query: Iterable[tuple[str, str]] = (),
    ) -> None:
        assign(self, "headers", headers)
        assign(self, "url", url)
        assign(self, "body", body)
        assign(self, "valid_until", valid_until)
        assign(self, "nonce", nonce)
        assign(self, "query", tuple((name, value) for name, value in query))

    @classmethod
    def from_result(cls, result: Any) -> Signed:
        """Raises: MalformedResponse: ``result`` is not a signed request's map."""
        try:
            query = _pairs(result.get("query") or ())  # a daemon older than ``query``: none
            if query is None:
                raise MalformedResponse("the daemon sent a signed request whose query is not pairs of strings")
            return cls(
                headers=dict(result.get("headers") or {}),
                url=str(result["url"]),
                body=bytes(result.get("body") or b""),
                valid_until=float(result.get("valid_until") or 0.0),
                nonce=result.get("nonce"),
                query=query,
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise MalformedResponse("the daemon sent a signed request without the fields of one") from None

    def __repr__(self) -> str:
        return (
            f"Signed(url={self.url.split('?')[0]!r}, valid_until={self.valid_until!r}, headers=<hidden>, "
            "query=<hidden>)"
        )


def _pairs(query: Any) -> list[tuple[str, str]] | None:
    """The wire's ``query`` (an array of [name, value] arrays) as pairs; None if it is not that."""
    if not isinstance(query, (list, tuple)):
        return None
    pairs: list[tuple[str, str]] = []
    for pair in query:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
            return None
        pairs.append((pair[0], pair[1]))
    return pairs


class WatchEvent(Value):
    """``kind`` is ``updated`` (``token`` holds the new token; None for a signing credential,
    whose key changed upstream), ``expired`` or ``locked`` (the vault was locked: the watch
    ends after this event)."""

    __slots__ = __match_args__ = ("kind", "name", "token")
    kind: str
    name: str | None
    token: Token | None

    def __init__(self, kind: str, name: str | None = None, token: Token | None = None) -> None:
        assign(self, "kind", kind)
        assign(self, "name", name)
        assign(self, "token", token)
