"""The ``sign`` kind: an exchange's long-term secret that never leaves the daemon; it signs requests.

It issues no token: engines send the request they are about to make (``token.sign``) and
get back what to attach. The allow-list decides what may be signed. For Kraken the daemon
owns the nonce: strictly increasing, and never reused across restarts, because the vault
always holds a reserved high-water mark above every nonce handed out (written ahead, a
minute of nonces at a time).

With a ``backend`` instead of ``secret``/``private_key``, the key lives in OpenBao's transit
engine and never in vaultd: each request's one primitive (an HMAC, an Ed25519, ES256 or RSA
signature) is computed there, through :class:`Transit`, in two pure passes of the scheme
(:mod:`vaultd._schemes._remote`): one round trip to OpenBao per signature.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from .._allow import AllowList, moves_money
from .._schemes import SCHEMES, Keys, Signed, SignError, SignRequest, decode_secret
from .._schemes._keys import load_rsa_key, load_secp256k1_key
from .._schemes._remote import Call, record, replay
from .._secret import Secret
from ._base import (
    ConfigError,
    FetchContext,
    Issued,
    UpstreamError,
    check_keys,
    opt_number,
    req_str,
    secret_field,
    shown_name,
)

__all__ = ["SignProvider", "Transit", "TransitBackend"]

_FIELDS = {
    "scheme", "api_key", "secret", "secret_encoding", "private_key", "passphrase", "allow", "recv_window",
    "last_nonce", "backend", "key_version",
}  # fmt: skip
_BACKEND_FIELDS = frozenset({"upstream", "transit_key"})
#: An upstream's name, as the daemon's upstreams are named.
_UPSTREAM_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: A transit key name, as OpenBao's ``transit/(hmac|sign)/NAME`` paths accept it (its
#: ``GenericNameRegex``: word characters, with ``.`` and ``-`` only inside), at most 64 characters.
_TRANSIT_KEY_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9_])?")
#: How far ahead of the last nonce the vault's high-water mark is written (ms-based nonces).
NONCE_RESERVE = 60_000
_MAX_AHEAD_MS = 86_400_000
_MAX_NONCE = 2**62
_MAX_KEY_TEXT = 16 * 1024
#: Schemes whose signature covers the parameters but not the path (the exchange's design).
#: Schemes that sign a WebSocket login: what the session then does is beyond the allow-list.
_SESSION_LOGIN = frozenset({"okx-ws-login", "bybit-ws-auth", "binance-ws-logon", "coinbase-ws-jwt"})
#: Schemes whose API key comes with a passphrase the venue checks: ``credential.put`` requires it.
_PASSPHRASE = frozenset({"okx", "okx-ws-login", "kucoin", "bitget"})
#: Schemes whose nonce the daemon owns: strictly increasing, its high-water mark in the vault.
_DAEMON_NONCE = frozenset({"kraken", "kraken-futures"})
#: KuCoin API key versions it signs for (version 1, the raw passphrase on the wire, is refused).
_KUCOIN_KEY_VERSIONS = (2, 3)
#: Schemes that send the credential's ``recv_window`` (Binance's ``recvWindow``, Bybit's ``recv_window``).
_RECV_WINDOW = frozenset({"binance-hmac", "binance-ed25519", "binance-ws-logon", "binance-rsa", "bybit", "bybit-rsa"})
#: Schemes keyed by an HMAC ``secret`` (the others by a ``private_key``).
_HMAC = frozenset(name for name, scheme in SCHEMES.items() if scheme.key_kind == "hmac")
#: Fields only some schemes read: ``credential.put`` refuses them for the others (a field that does
#: nothing would be shown by ``status`` as if it did). Records already in a vault load as before.
_FOR_SCHEMES: dict[str, frozenset[str]] = {
    "recv_window": _RECV_WINDOW,
    "passphrase": _PASSPHRASE,
    "last_nonce": _DAEMON_NONCE,
    "key_version": frozenset({"kucoin"}),
    "secret_encoding": _HMAC,
}
#: What a ``private_key`` of each key kind must be, for messages.
_KEY_FORMATS = {
    "ed25519": "an Ed25519 key: PEM PKCS#8, or base64 of the 32-byte seed",
    "ec": "an EC P-256 key, PEM",
    "rsa": "an unencrypted PEM RSA key, PKCS#8 or PKCS#1, at least 2048 bits",
    "secp256k1": "a secp256k1 key, '0x' and 64 hex digits",
    "jwt-key": "a Coinbase CDP key: PEM EC P-256, or Ed25519 as PEM PKCS#8 or base64 of 32 or 64 bytes",
}
#: Hyperliquid's ``api_key``: the account's address.
_HYPERLIQUID_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_PATH_UNBOUND = frozenset({"binance-hmac", "binance-ed25519", "bybit", "binance-rsa", "bybit-rsa"})


class Transit(Protocol):
    """OpenBao's transit engine, as vaultd uses it to sign with keys it never holds.

    Implementations raise :class:`vaultd._errors.RpcError` themselves: ``UPSTREAM_UNAVAILABLE``
    when OpenBao cannot be reached, ``FORBIDDEN`` or ``UPSTREAM_UNAVAILABLE`` when it refuses;
    the signing path lets those through unchanged.
    """

    async def hmac(self, upstream: str, key: str, data: bytes, *, algorithm: str) -> bytes:
        """``transit/hmac/KEY``: the raw MAC bytes; ``algorithm`` "sha2-256" or "sha2-512"."""
        ...

    async def sign(self, upstream: str, key: str, data: bytes, *, algorithm: str) -> bytes:
        """``transit/sign/KEY``: "ed25519" gives the raw 64-byte signature; "es256" the raw
        ``r || s`` (``hash_algorithm=sha2-256``, ``marshaling_algorithm=jws``); "rsa-pkcs1v15-sha256"
        the RSA signature (``hash_algorithm=sha2-256``, ``signature_algorithm=pkcs1v15``)."""
        ...


@dataclass(frozen=True, slots=True)
class TransitBackend:
    """Where a ``sign`` credential's key lives: transit key ``transit_key`` of upstream ``upstream``."""

    upstream: str
    transit_key: str

    @classmethod
    def from_config(cls, value: object) -> TransitBackend:
        """Raises: ConfigError: not a map of exactly ``upstream`` and ``transit_key``, or a bad name."""
        if not isinstance(value, Mapping):
            raise ConfigError('\'backend\' must be a map: {"upstream": NAME, "transit_key": KEYNAME}')
        unknown = sorted(shown_name(key) for key in set(value) - _BACKEND_FIELDS)
        if unknown:
            raise ConfigError(f"unknown field(s) in 'backend': {', '.join(unknown)} (known: transit_key, upstream)")
        missing = sorted(_BACKEND_FIELDS - set(value))
        if missing:
            raise ConfigError(f"'backend' needs {' and '.join(repr(name) for name in missing)}")
        upstream, key = value["upstream"], value["transit_key"]
        if not isinstance(upstream, str) or not _UPSTREAM_NAME.fullmatch(upstream):
            raise ConfigError("'backend.upstream' must be an upstream's name: 1 to 64 letters, digits, '.', '_', '-'")
        if not isinstance(key, str) or not _TRANSIT_KEY_NAME.fullmatch(key):
            raise ConfigError(
                "'backend.transit_key' must be a transit key name: 1 to 64 letters, digits, '_', '.', '-', "
                "starting and ending with a letter, digit or '_' (as OpenBao's transit paths take it)"
            )
        return cls(upstream, key)

    def to_config(self) -> dict[str, str]:
        return {"upstream": self.upstream, "transit_key": self.transit_key}


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
        backend: TransitBackend | None = None,
        key_version: int | None = None,
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
        #: Where the key lives when vaultd does not hold it (OpenBao transit); None: it is here.
        self.backend = backend
        #: KuCoin: the API key's version (2 or 3); None: the scheme's default, 2.
        self.key_version = key_version
        self._wiped = False
        self._keys = self._build_keys()

    @property
    def backend_upstream(self) -> str | None:
        """The upstream this credential signs through (one round trip per signature), if any."""
        return None if self.backend is None else self.backend.upstream

    @property
    def wiped(self) -> bool:
        """The credential was locked away, replaced or removed: it signs nothing any more."""
        return self._wiped

    # -- configuration -------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SignProvider:
        """An operator's configuration (``credential.put``, an upstream's record): a field the
        scheme does not use is refused, naming the schemes it is for.

        Raises:
            ConfigError: the message names the field at fault and what it must be.
        """
        return cls._parse(config, strict=True)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SignProvider:
        """A record the vault holds: as :meth:`from_config`, but fields the scheme does not use
        load as before (:meth:`to_record` writes ``recv_window`` and ``last_nonce`` for every
        scheme; older vaults may hold a passphrase a scheme ignores): an unused ``recv_window``
        or ``key_version`` is dropped, an unused passphrase or ``last_nonce`` kept."""
        return cls._parse(record, strict=False)

    @classmethod
    def _parse(cls, config: Mapping[str, Any], *, strict: bool) -> SignProvider:
        check_keys(config, cls.FIELDS, cls.kind)
        scheme = req_str(config, "scheme", max_len=32)
        if scheme not in SCHEMES:
            raise ConfigError(f"unknown signing 'scheme' (known: {', '.join(sorted(SCHEMES))})")
        if strict:
            _refuse_unused(config, scheme)
        key_kind = SCHEMES[scheme].key_kind
        encoding = config.get("secret_encoding") or getattr(SCHEMES[scheme], "secret_encoding", "raw")
        if encoding not in ("raw", "base64", "hex"):
            raise ConfigError("'secret_encoding' must be 'raw', 'base64' or 'hex'")
        secret = private_key = backend = None
        if config.get("backend") is not None:
            backend = _backend(config, scheme)
        elif key_kind == "hmac":
            if config.get("private_key") is not None:
                raise ConfigError(f"scheme {scheme!r} signs with an HMAC 'secret', not a 'private_key'")
            secret = secret_field(config, "secret")
        else:
            private_key = _key_text(config, scheme, key_kind)
        passphrase = secret_field(config, "passphrase", required=scheme in _PASSPHRASE)
        last_nonce = config.get("last_nonce", 0)
        if isinstance(last_nonce, bool) or not isinstance(last_nonce, int) or not 0 <= last_nonce <= _MAX_NONCE:
            raise ConfigError(f"'last_nonce' must be a whole number from 0 to {_MAX_NONCE}")
        api_key = req_str(config, "api_key", max_len=1024)
        if strict and scheme == "hyperliquid" and not _HYPERLIQUID_ADDRESS.fullmatch(api_key):
            raise ConfigError(
                "'api_key' for hyperliquid must be the account's address, '0x' and 40 hex digits (for an API "
                "wallet's key, the master account's address)"
            )
        recv_window = None
        if config.get("recv_window") is not None and scheme in _RECV_WINDOW:
            recv_window = int(opt_number(config, "recv_window", 5000, low=1, high=60_000))
        return cls(
            scheme=scheme,
            api_key=api_key,
            secret_text=secret,
            secret_encoding=str(encoding),
            private_key=private_key,
            passphrase=passphrase,
            allow=AllowList.from_config(config.get("allow")),
            recv_window=recv_window,
            last_nonce=last_nonce,
            backend=backend,
            key_version=_key_version(config) if scheme == "kucoin" else None,
        )

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
            "allow": self.allow.to_config(),
            "recv_window": self.recv_window,
            "last_nonce": self.reserved_nonce,
        }
        if self.key_version is not None:
            record["key_version"] = self.key_version
        if self.backend is None:
            record["secret_encoding"] = self.secret_encoding
        else:
            record["backend"] = self.backend.to_config()
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
            "last_nonce": self.last_nonce if self.owns_nonce else None,
            "backend": None if self.backend is None else {**self.backend.to_config(), "round_trip": True},
            "key_version": (self.key_version or _KUCOIN_KEY_VERSIONS[0]) if self.scheme == "kucoin" else None,
            "withdrawals": _withdrawals(self.allow),
        }

    def warnings(self, now: float) -> list[str]:
        found = []
        if self.scheme in _PATH_UNBOUND:
            found.append(
                f"{self.scheme} signatures do not cover the request path: the allow-list limits what vaultd "
                "signs, not where a signature is valid; disable withdrawals on the exchange's key"
            )
        if self.scheme == "deribit":
            found.append(
                "a Deribit signature can also be used to log in (public/auth client_signature): restrict the "
                "key's scope on Deribit, or use an oauth2 credential with the deribit dialect instead"
            )
        if self.scheme in _SESSION_LOGIN:
            found.append(
                f"{_article(self.scheme)} {self.scheme} signature logs a WebSocket session in: what the engine then "
                "does over it (orders, where the venue takes them over WebSocket) is not checked by the allow-list; "
                "limit the key's permissions on the exchange"
            )
        if self.scheme == "hyperliquid" and not _HYPERLIQUID_ADDRESS.fullmatch(self.api_key):
            found.append(
                "'api_key' is not an address ('0x' and 40 hex digits): Hyperliquid signatures are all refused; "
                "put the credential again with the account's address as 'api_key'"
            )
        if self.backend is not None:
            found.append(
                f"the key is in OpenBao transit (upstream {self.backend.upstream!r}, key "
                f"{self.backend.transit_key!r}): every signature costs a round trip to OpenBao, and none is "
                "made while it cannot be reached"
            )
        return found

    async def fetch(self, ctx: FetchContext) -> Issued:
        raise UpstreamError("a signing credential has no token: use token.sign")

    def wipe(self) -> None:
        self._wiped = True
        for secret in (self._secret_text, self._private_key, self._passphrase, self._keys.secret):
            if secret is not None:
                secret.wipe()

    def __repr__(self) -> str:
        return f"SignProvider(scheme={self.scheme!r})"

    # -- signing ---------------------------------------------------------------------------------

    @property
    def owns_nonce(self) -> bool:
        """Whether the daemon decides this credential's nonces (Kraken Spot and Futures)."""
        return self.scheme in _DAEMON_NONCE

    def take_nonce(self, proposed: int | None, now_ms: int) -> int:
        """The next nonce: ``proposed`` when there is one (it must be above the last), else
        max(last + 1, now in ms).

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
        if older.scheme == self.scheme and self.owns_nonce:
            self.last_nonce = self.reserved_nonce = max(self.last_nonce, older.reserved_nonce, older.last_nonce)

    def options(self) -> dict[str, str]:
        """Scheme knobs the operator set on the credential (an engine's own take precedence)."""
        if self.key_version is not None:
            return {"key_version": str(self.key_version)}
        if self.recv_window is None:
            return {}
        if self.scheme.startswith("binance"):
            return {"recvWindow": str(self.recv_window)}
        if self.scheme in ("bybit", "bybit-rsa"):
            return {"recv_window": str(self.recv_window)}
        return {}

    def sign(self, request: SignRequest) -> Signed:
        """Sign with the key held here (not for a ``backend`` credential: :meth:`record`, :meth:`replay`).

        Raises:
            SignError: the request does not fit the scheme (the message names why).
        """
        if self.backend is not None:
            raise RuntimeError("a credential whose key is in OpenBao transit signs through it: record, then replay")
        return SCHEMES[self.scheme].sign(request, self._keys)

    def record(self, request: SignRequest) -> list[Call]:
        """Pass one for a ``backend`` credential: the primitive to ask transit for (one call).

        Raises:
            SignError: the request does not fit the scheme: nothing needs asking.
        """
        return record(SCHEMES[self.scheme], request, self._keys)

    def replay(self, request: SignRequest, calls: Sequence[Call], answers: Sequence[bytes]) -> Signed:
        """Pass two: what to attach, given transit's ``answers`` to :meth:`record`'s ``calls``.

        Raises:
            ValueError: an answer of the wrong size (the transit key is of another type).
        """
        return replay(SCHEMES[self.scheme], request, self._keys, calls, answers)


def _backend(config: Mapping[str, Any], scheme: str) -> TransitBackend:
    """Raises: ConfigError: a key given too, a scheme that cannot sign through transit, a bad map."""
    for name in ("secret", "private_key", "secret_encoding"):
        if config.get(name) is not None:
            raise ConfigError(
                f"'backend' and {name!r} exclude each other: with a backend the key lives in OpenBao transit "
                "(for HMAC schemes, imported as the decoded key bytes) and vaultd holds none of it"
            )
    if getattr(SCHEMES[scheme], "remote_primitive", None) is None:
        raise ConfigError(f"scheme {scheme!r} cannot sign through OpenBao transit: give its key instead of 'backend'")
    return TransitBackend.from_config(config["backend"])


def _refuse_unused(config: Mapping[str, Any], scheme: str) -> None:
    """Raises: ConfigError: a field ``scheme`` does not use (it would do nothing), naming the schemes it is for."""
    for name, schemes in _FOR_SCHEMES.items():
        if config.get(name) is not None and scheme not in schemes:
            which = (
                f"the {next(iter(schemes))} scheme"
                if len(schemes) == 1
                else f"the {', '.join(sorted(schemes))} schemes"
            )
            if name == "secret_encoding":
                which = f"HMAC schemes ({', '.join(sorted(schemes))})"
            raise ConfigError(f"{name!r} is for {which} only, not {scheme!r}: it would do nothing there")


def _key_version(config: Mapping[str, Any]) -> int | None:
    """Raises: ConfigError: ``key_version`` is not the whole number 2 or 3."""
    value = config.get("key_version")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value not in _KUCOIN_KEY_VERSIONS:
        given = ' (a JSON number, not a string: 3, not "3")' if isinstance(value, str) else ""
        raise ConfigError(
            f"'key_version' must be 2 or 3, a whole number{given}: KuCoin's API key version (version 1 keys "
            "are not supported)"
        )
    return value


def _withdrawals(allow: AllowList) -> str:
    """What ``status`` says of withdrawals and transfers: refused, or which rules open them."""
    opened = [str(rule) for rule in allow.rules if rule.literal and moves_money(rule.path)]
    if not opened:
        return "refused: no allow rule names a withdrawal or transfer path exactly"
    return f"refused except at {', '.join(opened)} (rules naming that exact path)"


def _article(word: str) -> str:
    """``a`` or ``an``, before a scheme name (all are spelled as they are said: "an okx-ws-login")."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _key_text(config: Mapping[str, Any], scheme: str, key_kind: str) -> Secret:
    """Raises: ConfigError: no ``private_key`` (or a ``secret`` instead), or one too long."""
    value = config.get("private_key")
    given = f"a 'private_key' ({_KEY_FORMATS[key_kind]})"
    if config.get("secret") is not None:
        raise ConfigError(f"scheme {scheme!r} signs with {given}, not a 'secret'")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"'private_key' is required: scheme {scheme!r} signs with {given}")
    if len(value) > _MAX_KEY_TEXT:
        raise ConfigError(f"'private_key' is longer than {_MAX_KEY_TEXT} characters")
    return Secret(value)


def _load_private_key(key_kind: str, text: str) -> Any:
    from .jwt import load_signing_key  # noqa: PLC0415 - jwt imports cryptography, only for key kinds

    if key_kind == "ed25519":
        return load_signing_key("EdDSA", text)
    if key_kind == "ec":
        return load_signing_key("ES256", text)
    if key_kind == "rsa":  # these two raise SignError, which _build_keys turns into ConfigError
        return load_rsa_key(text)
    if key_kind == "secp256k1":
        return load_secp256k1_key(text)
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
