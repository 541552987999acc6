"""One upstream (an OpenBao server): its settings and sealed AppRole secrets, and its session.

:class:`UpstreamConfig` is what ``vaultctl upstream add`` stores (the secret_id sealed in the
vault like every secret: it is needed again to log in after the token's max TTL).
:class:`BaoSession` is the provider of the upstream's own token: the renewer schedules it like
any credential (renewal at 2/3 of its TTL with jitter, backoff, a call budget of its own); a
fetch renews the token, or logs in when there is none, when the last renewal came back
shorter than asked (max TTL reached), or when a call found the token refused (403).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import trio

from vaultd_protocol import ErrorCode

from ._bao import (
    BaoClient,
    BaoError,
    BaoForbidden,
    BaoRefused,
    BaoRequestError,
    BaoWrapInvalid,
    check_address,
    check_segment,
)
from ._credentials import NAME_PATTERN
from ._errors import RpcError
from ._providers import ConfigError, FetchContext, Issued, UpstreamError
from ._providers._base import opt_number, req_str, shown_name
from ._secret import Secret
from ._source import DEFAULT_MAX_STALE

__all__ = ["ALARMS_KEPT", "KINDS", "BaoSession", "UpstreamAlarm", "UpstreamConfig", "take_wrapped_secret_id"]

log = logging.getLogger("vaultd.upstream")

KINDS = ("openbao",)
_FIELDS = frozenset(
    {"address", "ca_file", "namespace", "kv_mount", "auth", "max_stale", "connect_timeout", "timeout", "listener_uid"}
)
_AUTH_FIELDS = frozenset({"method", "mount", "role", "role_id", "secret_id", "wrapped_secret_id"})
#: Alarms kept for ``status`` (the newest), for the daemon's life.
ALARMS_KEPT = 16
#: A renewal granting less than this share of what was asked means the max TTL is near: log in.
_SHORT_RENEWAL = 0.9


def _text(config: Mapping[str, Any], key: str, where: str, *, default: str | None = None, max_len: int = 512) -> str:
    """``req_str`` for a field that may sit inside ``auth`` (``where``) and may have a default."""
    if default is not None and key not in config:
        return default
    return req_str(config, key, max_len=max_len, label=f"{where}{key}")


def _segment(config: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = _text(config, key, where, default=default, max_len=128)
    try:
        return check_segment(value, f"{where}{key}")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@dataclass(eq=False, repr=False)
class UpstreamConfig:
    """One OpenBao upstream as stored sealed in the vault. ``role_id`` and ``secret_id`` are secrets."""

    name: str
    address: str
    ca_file: str | None
    namespace: str | None
    kv_mount: str
    auth_mount: str
    role: str
    role_id: Secret
    secret_id: Secret | None
    max_stale: float
    connect_timeout: float
    timeout: float
    created_at: float = 0.0
    updated_at: float = 0.0
    kind: str = "openbao"
    #: The secret_id's accessor when vaultd unwrapped it (not a secret): what an operator gives
    #: ``auth/<mount>/role/<role>/secret-id-accessor/destroy`` to retire it.
    secret_id_accessor: str | None = None
    #: For a plain http (loopback) address: a uid besides the daemon's own that may own the socket
    #: listening there (OpenBao running as another user).
    listener_uid: int | None = None

    @classmethod
    def from_config(
        cls, name: str, kind: str, config: Mapping[str, Any], *, check_files: bool = True
    ) -> tuple[UpstreamConfig, Secret | None]:
        """The settings ``upstream.put`` was given, and the wrapping token to unwrap (if given one).

        ``check_files``: whether ``ca_file`` must be readable now (when it is put; at unlock a CA
        file gone since makes the upstream's calls fail, not the vault).

        Raises:
            ConfigError: the message names the field at fault, never a value.
        """
        if not NAME_PATTERN.fullmatch(name):
            raise ConfigError(
                "upstream names are 1 to 64 characters of letters, digits, '.', '_' and '-', "
                "starting with a letter or digit"
            )
        if kind not in KINDS:
            raise ConfigError(f"unknown upstream kind {kind[:32]!r} (known: {', '.join(KINDS)})")
        unknown = set(config) - _FIELDS
        if unknown:
            raise ConfigError(
                f"unknown field(s) for an upstream: {_shown(unknown)} (known: {', '.join(sorted(_FIELDS))})"
            )
        address = _text(config, "address", "")
        ca_file = config.get("ca_file")
        if ca_file is not None:
            ca_file = _text(config, "ca_file", "", max_len=4096)
        try:
            address = check_address(address, ca_file if check_files else None)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if ca_file is not None and not address.startswith("https://"):
            raise ConfigError("a CA file is only for an https:// OpenBao address")
        if ca_file is not None and check_files:
            try:
                ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError):
                raise ConfigError(f"CA file {ca_file!r} holds no PEM certificate") from None
        listener_uid = config.get("listener_uid")
        if listener_uid is not None and (
            isinstance(listener_uid, bool) or not isinstance(listener_uid, int) or not 0 <= listener_uid < 2**32 - 1
        ):
            raise ConfigError("'listener_uid' must be a uid (a whole number)")
        namespace = None if config.get("namespace") is None else _segment(config, "namespace", "")
        auth = config.get("auth")
        if not isinstance(auth, dict):
            raise ConfigError(
                '\'auth\' is required, as an object: {"method": "approle", "role": ..., "role_id": ..., '
                '"wrapped_secret_id": ...}'
            )
        unknown = set(auth) - _AUTH_FIELDS
        if unknown:
            raise ConfigError(
                f"unknown field(s) in 'auth': {_shown(unknown)} (known: {', '.join(sorted(_AUTH_FIELDS))})"
            )
        if auth.get("method", "approle") != "approle":
            raise ConfigError("'auth.method' must be 'approle' (the only method vaultd logs in with)")
        given = [k for k in ("secret_id", "wrapped_secret_id") if auth.get(k) is not None]
        if len(given) != 1:
            raise ConfigError("'auth' needs exactly one of 'secret_id' and 'wrapped_secret_id'")
        secret_key = given[0]
        secret = Secret(_text(auth, secret_key, "auth.", max_len=4096))
        upstream = cls(
            name=name,
            address=address,
            ca_file=ca_file,
            namespace=namespace,
            kv_mount=_segment(config, "kv_mount", "", default="secret"),
            auth_mount=_segment(auth, "mount", "auth.", default="approle"),
            role=_segment(auth, "role", "auth."),
            role_id=Secret(_text(auth, "role_id", "auth.", max_len=4096)),
            secret_id=secret if secret_key == "secret_id" else None,
            max_stale=opt_number(config, "max_stale", DEFAULT_MAX_STALE, low=1.0, high=365 * 86_400.0),
            connect_timeout=opt_number(config, "connect_timeout", 2.0, low=0.1, high=60.0),
            timeout=opt_number(config, "timeout", 5.0, low=0.1, high=300.0),
            kind=kind,
            listener_uid=listener_uid,
        )
        return upstream, (secret if secret_key == "wrapped_secret_id" else None)

    def merged(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """``given`` over these settings, for ``upstream add --replace``: what it leaves out stays
        (a new wrapped secret_id alone replaces the secret_id, keeping address, role and role_id)."""
        current = self.to_record()["config"]
        auth = dict(current["auth"])
        given_auth = given.get("auth")
        if isinstance(given_auth, dict):
            if given_auth.get("wrapped_secret_id") is not None or given_auth.get("secret_id") is not None:
                auth.pop("secret_id", None)
            auth.update(given_auth)
        elif given_auth is not None:
            auth = given_auth  # not a map: from_config says so
        return {**{k: v for k, v in current.items() if v is not None}, **given, "auth": auth}

    @property
    def secret_id_path(self) -> str:
        """The ``creation_path`` a wrapping token of this role's secret_id must have."""
        return f"auth/{self.auth_mount}/role/{self.role}/secret-id"

    def client(self) -> BaoClient:
        return BaoClient(
            self.address,
            namespace=self.namespace,
            ca_file=self.ca_file,
            connect_timeout=self.connect_timeout,
            total_timeout=self.timeout,
            listener_uids=frozenset({os.getuid()} | ({self.listener_uid} if self.listener_uid is not None else set())),
        )

    def to_record(self) -> dict[str, Any]:
        """The sealed form (reveals the AppRole secrets: only for the vault body)."""
        assert self.secret_id is not None, "an upstream is stored only once its secret_id is known"
        return {
            "kind": self.kind,
            "config": {
                "address": self.address,
                "ca_file": self.ca_file,
                "namespace": self.namespace,
                "kv_mount": self.kv_mount,
                "auth": {
                    "method": "approle",
                    "mount": self.auth_mount,
                    "role": self.role,
                    "role_id": self.role_id.reveal_str(),
                    "secret_id": self.secret_id.reveal_str(),
                },
                "max_stale": self.max_stale,
                "connect_timeout": self.connect_timeout,
                "timeout": self.timeout,
                "listener_uid": self.listener_uid,
            },
            "secret_id_accessor": self.secret_id_accessor,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_record(cls, name: str, record: Mapping[str, Any]) -> UpstreamConfig:
        """Raises: KeyError, ValueError, TypeError: a record this version cannot read."""
        try:
            upstream, _ = cls.from_config(name, record["kind"], record["config"], check_files=False)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        upstream.created_at = float(record["created_at"])
        upstream.updated_at = float(record["updated_at"])
        accessor = record.get("secret_id_accessor")
        upstream.secret_id_accessor = accessor if isinstance(accessor, str) else None
        return upstream

    def describe(self) -> dict[str, Any]:
        """Non-secret settings for ``upstream list`` and ``status``."""
        return {
            "name": self.name,
            "kind": self.kind,
            "address": self.address,
            "namespace": self.namespace,
            "kv_mount": self.kv_mount,
            "auth": {"method": "approle", "mount": self.auth_mount, "role": self.role},
            "secret_id_accessor": self.secret_id_accessor,
            "max_stale": self.max_stale,
            "listener_uid": self.listener_uid,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def wipe(self) -> None:
        self.role_id.wipe()
        if self.secret_id is not None:
            self.secret_id.wipe()

    def __repr__(self) -> str:
        return f"UpstreamConfig(name={self.name!r}, address={self.address!r})"


class UpstreamAlarm(RpcError):
    """A wrapping token that was already unwrapped, or made for another path: refused, and raised
    as an alarm (``status``, the audit log), never silently accepted."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.FORBIDDEN, f"ALARM: {message}")


async def take_wrapped_secret_id(config: UpstreamConfig, wrapped: Secret) -> None:
    """Check a response-wrapping token's ``creation_path``, then unwrap it into ``config.secret_id``.

    Raises:
        UpstreamAlarm: the token does not look up (already unwrapped, expired, never issued),
            was made for another path, or was unwrapped by someone else between lookup and unwrap.
        RpcError: UPSTREAM_UNAVAILABLE (OpenBao could not be asked: the token is still unused).
    """
    client = config.client()
    try:
        try:
            info = await client.lookup_wrapping(wrapped)
        except BaoWrapInvalid:
            raise UpstreamAlarm(
                f"upstream {config.name!r}: the wrapping token does not look up: already unwrapped (by "
                "whom?), expired, or never issued. Ask for a new one and find out who used this one"
            ) from None
        if info.creation_path != config.secret_id_path:
            raise UpstreamAlarm(
                f"upstream {config.name!r}: the wrapping token wraps {info.creation_path!r}, not a secret_id "
                f"of role {config.role!r} ({config.secret_id_path!r}): it was not unwrapped"
            )
        try:
            data = await client.unwrap(wrapped)
        except BaoWrapInvalid:
            raise UpstreamAlarm(
                f"upstream {config.name!r}: the wrapping token was unwrapped by someone else between its "
                "lookup and vaultd's unwrap"
            ) from None
    except BaoError as exc:
        raise RpcError(ErrorCode.UPSTREAM_UNAVAILABLE, f"upstream {config.name!r}: {exc}") from None
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()
    accessor = data.get("secret_id_accessor")
    if isinstance(accessor, str) and accessor.isprintable() and len(accessor) <= 128:
        config.secret_id_accessor = accessor
    try:  # the rules a secret_id given in clear meets, or the vault could not be read back
        config.secret_id = Secret(_text(data, "secret_id", "unwrapped ", max_len=4096))
    except ConfigError:
        raise UpstreamAlarm(f"upstream {config.name!r}: the wrapping token held no usable secret_id") from None


class BaoSession:
    """The upstream's own token, as a provider the renewer schedules (never served to engines)."""

    kind: ClassVar[str] = "openbao-session"
    renewable: ClassVar[bool] = True
    FIELDS: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: UpstreamConfig, client: BaoClient) -> None:
        self.config = config
        self.client = client
        self._token: Secret | None = None
        self._ttl = 0.0
        self._renewable = False
        self._login_next = True
        #: Logins made (each is one call to ``auth/<mount>/login``), for ``status``.
        self.logins = 0

    def invalidate(self) -> None:
        """A call with the current token got 403: the next fetch logs in (no renewal first)."""
        self._login_next = True

    async def fetch(self, ctx: FetchContext) -> Issued:
        """Renew the token, or log in (see the module docstring).

        Raises:
            UpstreamError: ``reauth`` when the login itself was refused (400/403).
        """
        if self._login_next or self._token is None or not self._renewable:
            return await self._login(ctx)
        try:
            renewed = await self.client.renew_self(self._token, self._ttl)
        except BaoForbidden:
            log.info("upstream %r: its token was refused on renewal: logging in again", self.config.name)
            return await self._login(ctx)
        except BaoError as exc:
            raise UpstreamError(f"token renewal failed: {exc}") from None
        if renewed.ttl < self._ttl * _SHORT_RENEWAL:
            log.info(
                "upstream %r: renewal granted %.0f s of %.0f s asked (max TTL ahead): logging in again",
                self.config.name,
                renewed.ttl,
                self._ttl,
            )
            return await self._login(ctx)
        return self._issued(ctx, renewed.ttl)

    async def _login(self, ctx: FetchContext) -> Issued:
        secret_id = self.config.secret_id
        assert secret_id is not None
        self.logins += 1
        try:
            token = await self.client.login_approle(self.config.auth_mount, self.config.role_id, secret_id)
        except (BaoRefused, BaoRequestError) as exc:
            raise UpstreamError(
                f"login refused: {exc}: check the role_id and role, or give it a new secret_id "
                f"('vaultctl upstream add {self.config.name} --kind openbao --replace', README: Many hosts)",
                reauth=True,
            ) from None
        except BaoError as exc:
            raise UpstreamError(f"login failed: {exc}") from None
        self.wipe()
        self._token, self._ttl, self._renewable = token.token, token.ttl, token.renewable
        self._login_next = False
        return self._issued(ctx, token.ttl)

    def _issued(self, ctx: FetchContext, ttl: float) -> Issued:
        assert self._token is not None
        now = ctx.now()
        expires_at = None if ttl <= 0 else now + ttl  # a root-like token without TTL never expires
        return Issued(Secret(self._token.reveal()), now, expires_at, token_type="openbao")  # noqa: S106 - a type name

    def to_record(self) -> dict[str, Any]:
        return {}  # the session is never stored: each unlock logs in

    def describe(self) -> dict[str, Any]:
        return {"logins": self.logins}

    def warnings(self, now: float) -> list[str]:
        return []

    def wipe(self) -> None:
        if self._token is not None:
            self._token.wipe()
            self._token = None


def _shown(keys: set[Any]) -> str:
    return ", ".join(sorted(shown_name(k) for k in keys))
