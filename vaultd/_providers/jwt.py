"""The ``jwt`` kind: short-lived JWTs minted and signed inside the daemon, never fetched upstream.

Compact JWS (RFC 7515) signed with EdDSA (Ed25519, RFC 8037, via pynacl) or ES256 (P-256,
RFC 7518 section 3.4, via ``cryptography``). Two shapes: ``plain`` (``iat``, ``nbf``, ``exp``
and the configured claims) and ``coinbase-cdp`` (Coinbase's CDP API keys: header ``kid`` and a
random ``nonce``; claims ``iss`` = ``cdp``, ``sub`` = the key name, ``uri``).

The private key text stays in a :class:`Secret` (it is what the vault stores); the signing key
object is built once, at construction, so that a mint costs one signature and no key parsing
(and no fresh copy of the key in memory per mint). :meth:`JwtProvider.wipe` drops it.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
from collections.abc import Mapping
from typing import Any, ClassVar

from .._schemes._base import SignError
from .._schemes._keys import SigningKeyObject, sign_jws
from .._schemes._keys import load_signing_key as _load_key
from .._secret import Secret
from ._base import ConfigError, FetchContext, Issued, UpstreamError, check_keys, opt_number, opt_str, req_str
from ._base import token_type as parse_token_type

__all__ = ["JwtProvider", "SigningKeyObject", "load_signing_key", "sign_jws"]

_FIELDS = {"alg", "private_key", "kid", "claims", "ttl", "reuse", "shape", "uri", "type"}
_ALGS = ("EdDSA", "ES256")
_SHAPES = ("plain", "coinbase-cdp")
#: Computed from the clock and ``ttl`` at each mint: configuring them would only lie.
_COMPUTED = ("iat", "nbf", "exp")
MAX_KEY_CHARS = 16 * 1024
MAX_CLAIMS_BYTES = 4096


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("ascii")


def load_signing_key(alg: str, text: str) -> SigningKeyObject:
    """:func:`vaultd._schemes._keys.load_signing_key`, for configuration.

    Raises:
        ConfigError: unparseable, encrypted, or not a key for ``alg`` (names the format expected).
    """
    try:
        return _load_key(alg, text)
    except SignError as exc:
        raise ConfigError(str(exc)) from None


def _claim_value_ok(value: object, *, nested: bool = False) -> bool:
    if isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)) and not nested:
        return all(_claim_value_ok(item, nested=True) for item in value)
    return False


def _parse_claims(config: Mapping[str, Any], reserved: Mapping[str, str]) -> dict[str, Any]:
    value = config.get("claims")
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError("'claims' must be a map of claim names to values")
    claims: dict[str, Any] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not 0 < len(name) <= 64 or not name.isprintable():
            raise ConfigError("'claims' names must be strings of 1 to 64 printable characters")
        if name in reserved:
            raise ConfigError(f"'claims' must not set {name!r}: {reserved[name]}")
        if not _claim_value_ok(item):
            raise ConfigError(f"'claims' value of {name!r} must be a string, number, boolean or a list of them")
        claims[name] = list(item) if isinstance(item, (list, tuple)) else item
    if len(_compact_json(claims)) > MAX_CLAIMS_BYTES:
        raise ConfigError(f"'claims' must encode to at most {MAX_CLAIMS_BYTES} bytes of JSON")
    return claims


class JwtProvider:
    kind: ClassVar[str] = "jwt"
    #: Tokens expire, so the renewer schedules them; a renewal is a local mint, no upstream call.
    renewable: ClassVar[bool] = True
    FIELDS: ClassVar[frozenset[str]] = frozenset(_FIELDS)

    def __init__(
        self,
        *,
        alg: str,
        private_key: Secret,
        kid: str | None = None,
        claims: Mapping[str, Any] | None = None,
        ttl: int = 120,
        reuse: float = 0.0,
        shape: str = "plain",
        uri: str | None = None,
        token_type: str = "bearer",
    ) -> None:
        """Raises: ConfigError: the key does not parse or does not match ``alg``."""
        self.alg = alg
        self._private_key = private_key
        try:
            self._signer: SigningKeyObject | None = load_signing_key(alg, private_key.reveal_str())
        except ConfigError:
            private_key.wipe()
            raise
        self.kid = kid
        self.claims = dict(claims or {})
        self.ttl = ttl
        self.reuse = reuse
        self.shape = shape
        self.uri = uri
        self.token_type = token_type
        #: The last minted token and its iat and exp, kept only when ``reuse`` > 0.
        self._last: tuple[Secret, int, int] | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> JwtProvider:
        check_keys(config, cls.FIELDS, cls.kind)
        alg = req_str(config, "alg")
        if alg not in _ALGS:
            raise ConfigError("'alg' must be 'EdDSA' (Ed25519) or 'ES256' (P-256)")
        shape = opt_str(config, "shape", "plain") or "plain"
        if shape not in _SHAPES:
            raise ConfigError("'shape' must be 'plain' or 'coinbase-cdp'")
        kid = opt_str(config, "kid", max_len=512)
        if shape == "coinbase-cdp" and kid is None:
            raise ConfigError(
                "'kid' is required for shape 'coinbase-cdp': the API key name (organizations/.../apiKeys/...)"
            )
        uri = opt_str(config, "uri", max_len=2048)
        ttl = opt_number(config, "ttl", 120, low=1, high=3600)
        if not ttl.is_integer():
            raise ConfigError("'ttl' must be a whole number of seconds")
        # The renewer renews after at least 0.56 of the lifetime: a longer reuse would hand it
        # back a token already due for renewal, and it would renew again at once.
        reuse = opt_number(config, "reuse", 0, low=0, high=1800)
        if reuse > ttl / 2:
            raise ConfigError("'reuse' must be at most half of 'ttl'")
        reserved = {name: "iat, nbf and exp are computed from the clock and 'ttl'" for name in _COMPUTED}
        if shape == "coinbase-cdp":
            reserved |= {"iss": "the coinbase-cdp shape sets it", "sub": "the coinbase-cdp shape sets it to 'kid'"}
        if uri is not None:
            reserved["uri"] = "set it with the 'uri' field"
        claims = _parse_claims(config, reserved)
        key_text = config.get("private_key")
        if not isinstance(key_text, str) or not key_text.strip():
            raise ConfigError("'private_key' is required and must be a non-empty string")
        if len(key_text) > MAX_KEY_CHARS:
            raise ConfigError(f"'private_key' is longer than {MAX_KEY_CHARS} characters")
        return cls(
            alg=alg,
            private_key=Secret(key_text),
            kid=kid,
            claims=claims,
            ttl=int(ttl),
            reuse=reuse,
            shape=shape,
            uri=uri,
            token_type=parse_token_type(config),
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> JwtProvider:
        return cls.from_config(record)

    @property
    def per_get(self) -> bool:
        """Without ``reuse``, every ``token.get`` gets a JWT minted for it alone."""
        return self.reuse <= 0

    def to_record(self) -> dict[str, Any]:
        record = {**self.describe(), "private_key": self._private_key.reveal_str()}
        return {k: v for k, v in record.items() if v is not None}

    def describe(self) -> dict[str, Any]:
        return {
            "alg": self.alg,
            "kid": self.kid,
            "shape": self.shape,
            "ttl": self.ttl,
            "reuse": self.reuse,
            "uri": self.uri,
            "claims": dict(self.claims),
            "type": self.token_type,
        }

    def warnings(self, now: float) -> list[str]:
        return []

    # -- minting ---------------------------------------------------------------------------------

    async def fetch(self, ctx: FetchContext) -> Issued:
        """Mint a token now, or hand back a copy of the last one while ``reuse`` allows.

        Raises:
            UpstreamError: only after :meth:`wipe` (no key left to sign with).
        """
        now = ctx.now()
        last = self._last
        if last is None or not last[1] <= now < min(last[1] + self.reuse, last[2]):
            if last is not None:
                last[0].wipe()
                self._last = None
            token, iat, exp = self._mint(now)
            last = (Secret(token), iat, exp)
            if self.reuse <= 0:
                return Issued(last[0], float(iat), float(exp), self.token_type)
            self._last = last
        # A copy: whoever holds an Issued wipes its token when it is replaced.
        return Issued(Secret(last[0].reveal()), float(last[1]), float(last[2]), self.token_type)

    def _mint(self, now: float) -> tuple[str, int, int]:
        if self._signer is None:
            raise UpstreamError("the jwt credential's key was wiped: unlock the vault again")
        # Whole seconds (RFC 7519 NumericDate); truncating keeps the served expiry no later than exp.
        iat = math.floor(now)
        exp = iat + self.ttl
        header: dict[str, Any] = {"alg": self.alg, "typ": "JWT"}
        payload: dict[str, Any] = dict(self.claims)
        if self.kid is not None:
            header["kid"] = self.kid
        if self.shape == "coinbase-cdp":
            header["nonce"] = secrets.token_hex(16)
            payload |= {"iss": "cdp", "sub": self.kid}
        if self.uri is not None:
            payload["uri"] = self.uri
        payload |= {"iat": iat, "nbf": iat, "exp": exp}
        signing_input = f"{_b64url(_compact_json(header))}.{_b64url(_compact_json(payload))}"
        signature = sign_jws(self._signer, signing_input.encode("ascii"))
        return f"{signing_input}.{_b64url(signature)}", iat, exp

    def wipe(self) -> None:
        self._private_key.wipe()
        self._signer = None
        if self._last is not None:
            self._last[0].wipe()
            self._last = None

    def __repr__(self) -> str:
        return f"JwtProvider(alg={self.alg!r}, kid={self.kid!r}, shape={self.shape!r}, ttl={self.ttl!r})"
