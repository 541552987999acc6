"""The ``sign`` kind: an exchange's long-term secret that never leaves the daemon; it signs requests.

It issues no token: engines send the request they are about to make (``token.sign``) and
get back what to attach. The allow-list decides what may be signed. For Kraken the daemon
owns the nonce: strictly increasing, and never reused across restarts, because the vault
always holds a reserved high-water mark above every nonce handed out (written ahead, a
minute of nonces at a time).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .._allow import AllowList
from .._schemes import SCHEMES, Keys, Signed, SignError, SignRequest, decode_secret
from .._secret import Secret
from ._base import ConfigError, FetchContext, Issued, UpstreamError, check_keys, opt_number, req_str, secret_field

__all__ = ["SignProvider"]

_FIELDS = {
    "scheme", "api_key", "secret", "secret_encoding", "private_key", "passphrase", "allow", "recv_window",
    "last_nonce",
}  # fmt: skip
#: How far ahead of the last nonce the vault's high-water mark is written (ms-based nonces).
NONCE_RESERVE = 60_000
_MAX_AHEAD_MS = 86_400_000
_MAX_NONCE = 2**62
_MAX_KEY_TEXT = 16 * 1024
#: Schemes whose signature covers the parameters but not the path (the exchange's design).
_PATH_UNBOUND = frozenset({"binance-hmac", "binance-ed25519", "bybit"})


class SignProvider:
    kind: ClassVar[str] = "sign"
    renewable: ClassVar[bool] = False
    issues_tokens: ClassVar[bool] = False
    FIELDS: ClassVar[frozenset[str]] = frozenset(_FIELDS)

    def __init__(
        self,
        *,
        scheme: str,
        api_key: str,
        secret_text: Secret | None,
        secret_encoding: str,
        private_key: Secret | None,
        passphrase: Secret | None,
        allow: AllowList,
        recv_window: int | None,
        last_nonce: int,
    ) -> None:
        self.scheme = scheme
        self.api_key = api_key
        self._secret_text = secret_text
        self.secret_encoding = secret_encoding
        self._private_key = private_key
        self._passphrase = passphrase
        self.allow = allow
        self.recv_window = recv_window
        #: The last nonce handed out, and the high-water mark the vault file holds.
        self.last_nonce = last_nonce
        self.reserved_nonce = last_nonce
        self._keys = self._build_keys()

    # -- configuration -------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SignProvider:
        check_keys(config, cls.FIELDS, cls.kind)
        scheme = req_str(config, "scheme", max_len=32)
        if scheme not in SCHEMES:
            raise ConfigError(f"unknown signing 'scheme' (known: {', '.join(sorted(SCHEMES))})")
        key_kind = SCHEMES[scheme].key_kind
        encoding = config.get("secret_encoding") or getattr(SCHEMES[scheme], "secret_encoding", "raw")
        if encoding not in ("raw", "base64", "hex"):
            raise ConfigError("'secret_encoding' must be 'raw', 'base64' or 'hex'")
        secret = private_key = None
        if key_kind == "hmac":
            if config.get("private_key") is not None:
                raise ConfigError(f"scheme {scheme!r} signs with an HMAC 'secret', not a 'private_key'")
            secret = secret_field(config, "secret")
        else:
            private_key = _key_text(config)
            if config.get("secret") is not None:
                raise ConfigError(f"scheme {scheme!r} signs with a 'private_key' (PEM), not a 'secret'")
        passphrase = secret_field(config, "passphrase", required=scheme == "okx")
        last_nonce = config.get("last_nonce", 0)
        if isinstance(last_nonce, bool) or not isinstance(last_nonce, int) or not 0 <= last_nonce <= _MAX_NONCE:
            raise ConfigError(f"'last_nonce' must be a whole number from 0 to {_MAX_NONCE}")
        return cls(
            scheme=scheme,
            api_key=req_str(config, "api_key", max_len=1024),
            secret_text=secret,
            secret_encoding=str(encoding),
            private_key=private_key,
            passphrase=passphrase,
            allow=AllowList.from_config(config.get("allow")),
            recv_window=None
            if config.get("recv_window") is None
            else int(opt_number(config, "recv_window", 5000, low=1, high=60_000)),
            last_nonce=last_nonce,
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SignProvider:
        return cls.from_config(record)

    def _build_keys(self) -> Keys:
        key_kind = SCHEMES[self.scheme].key_kind
        secret = signing_key = None
        try:
            if self._secret_text is not None:
                secret = Secret(decode_secret(self._secret_text.reveal_str(), self.secret_encoding))
            if self._private_key is not None:
                signing_key = _load_private_key(key_kind, self._private_key.reveal_str())
        except SignError as exc:
            raise ConfigError(str(exc)) from None
        return Keys(self.api_key, secret, signing_key, self._passphrase)

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "scheme": self.scheme,
            "api_key": self.api_key,
            "secret_encoding": self.secret_encoding,
            "allow": self.allow.to_config(),
            "recv_window": self.recv_window,
            "last_nonce": self.reserved_nonce,
        }
        for name, secret in (("secret", self._secret_text), ("private_key", self._private_key),
                             ("passphrase", self._passphrase)):  # fmt: skip
            if secret is not None:
                record[name] = secret.reveal_str()
        return record

    def describe(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "api_key": self.api_key[:6] + "..." if len(self.api_key) > 6 else "...",
            "allow": self.allow.to_config(),
            "recv_window": self.recv_window,
            "last_nonce": self.last_nonce if self.scheme == "kraken" else None,
        }

    def warnings(self, now: float) -> list[str]:
        if self.scheme in _PATH_UNBOUND:
            return [
                f"{self.scheme} signatures do not cover the request path: the allow-list limits what vaultd "
                "signs, not where a signature is valid; disable withdrawals on the exchange's key"
            ]
        if self.scheme == "deribit":
            return [
                "a Deribit signature can also be used to log in (public/auth client_signature): restrict the "
                "key's scope on Deribit, or use an oauth2 credential with the deribit dialect instead"
            ]
        return []

    async def fetch(self, ctx: FetchContext) -> Issued:
        raise UpstreamError("a signing credential has no token: use token.sign")

    def wipe(self) -> None:
        for secret in (self._secret_text, self._private_key, self._passphrase, self._keys.secret):
            if secret is not None:
                secret.wipe()

    def __repr__(self) -> str:
        return f"SignProvider(scheme={self.scheme!r})"

    # -- signing ---------------------------------------------------------------------------------

    def take_nonce(self, proposed: int | None, now_ms: int) -> int:
        """The next nonce: ``proposed`` if above the last, else max(last + 1, now in ms).

        Raises:
            SignError: ``proposed`` is not above the last nonce handed out.
        """
        if proposed is not None:
            if proposed <= self.last_nonce:
                raise SignError(f"nonce must be above the last one handed out ({self.last_nonce})")
            if proposed > now_ms + _MAX_AHEAD_MS:
                raise SignError("a proposed nonce may be at most a day of milliseconds ahead of the clock")
            nonce = proposed
        else:
            nonce = max(self.last_nonce + 1, now_ms)
        self.last_nonce = nonce
        return nonce

    def needs_reservation(self) -> bool:
        """Whether the vault must be written (a higher mark) before the last nonce may be used."""
        return self.last_nonce > self.reserved_nonce

    def reserve(self) -> int:
        """Raise the mark to write ahead of the last nonce; return the previous mark."""
        previous, self.reserved_nonce = self.reserved_nonce, min(self.last_nonce + NONCE_RESERVE, _MAX_NONCE)
        return previous

    def unreserve(self, previous: int) -> None:
        """The raised mark did not reach the disk: the next signer must write it again."""
        self.reserved_nonce = previous

    def carry_nonce_from(self, older: SignProvider) -> None:
        """A replaced credential keeps its nonces above everything the old one handed out."""
        if older.scheme == "kraken" and self.scheme == "kraken":
            self.last_nonce = self.reserved_nonce = max(self.last_nonce, older.reserved_nonce, older.last_nonce)

    def options(self) -> dict[str, str]:
        """Scheme knobs the operator set on the credential (an engine's own take precedence)."""
        if self.recv_window is None:
            return {}
        if self.scheme.startswith("binance"):
            return {"recvWindow": str(self.recv_window)}
        if self.scheme == "bybit":
            return {"recv_window": str(self.recv_window)}
        return {}

    def sign(self, request: SignRequest) -> Signed:
        """Raises: SignError: the request does not fit the scheme (the message names why)."""
        return SCHEMES[self.scheme].sign(request, self._keys)


def _key_text(config: Mapping[str, Any]) -> Secret:
    value = config.get("private_key")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("'private_key' is required: the PEM (PKCS#8) key the exchange issued")
    if len(value) > _MAX_KEY_TEXT:
        raise ConfigError(f"'private_key' is longer than {_MAX_KEY_TEXT} characters")
    return Secret(value)


def _load_private_key(key_kind: str, text: str) -> Any:
    from .jwt import load_signing_key  # noqa: PLC0415 - jwt imports cryptography, only for key kinds

    if key_kind == "ed25519":
        return load_signing_key("EdDSA", text)
    if key_kind == "ec":
        return load_signing_key("ES256", text)
    try:  # a Coinbase CDP key: ES256 or Ed25519, whichever it is
        return load_signing_key("ES256", text)
    except ConfigError:
        pass
    try:
        return load_signing_key("EdDSA", text)
    except ConfigError:
        raise ConfigError(
            "'private_key' must be a Coinbase CDP key: a PEM EC P-256 key, or an Ed25519 key "
            "(PEM PKCS#8, or base64 of 32 or 64 bytes)"
        ) from None
