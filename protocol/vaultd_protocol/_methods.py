"""The RPC vocabulary: method names, their parameter schemas, vault states, KDF profiles.

Every method takes ``params = [map]`` (an empty array is read as an empty map). The
schemas here are the single source of truth for what a parameter may be; ``SPEC.md``
documents them and a test checks that the two agree.
"""

from __future__ import annotations

import enum
import math

from ._value import Value, assign

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an engine ~7 ms of import: annotations only
    from collections.abc import Callable
    from typing import Any, Final

__all__ = [
    "METHODS",
    "PROTOCOL_VERSION",
    "SIGN_MANY_MAX",
    "SUPPORTED_PROTOCOLS",
    "CredentialState",
    "Field",
    "InvalidParams",
    "KdfProfile",
    "Method",
    "Notify",
    "VaultState",
    "parse_params",
]

PROTOCOL_VERSION: Final = 1
SUPPORTED_PROTOCOLS: Final = (1,)
#: The most requests one ``token.sign_many`` call may carry.
SIGN_MANY_MAX: Final = 256


class Method(enum.StrEnum):
    HELLO = "hello"
    STATUS = "status"
    VAULT_INIT = "vault.init"
    VAULT_UNLOCK = "vault.unlock"
    VAULT_LOCK = "vault.lock"
    TOKEN_GET = "token.get"
    TOKEN_WATCH = "token.watch"
    TOKEN_SIGN = "token.sign"
    TOKEN_SIGN_MANY = "token.sign_many"
    CREDENTIAL_PUT = "credential.put"
    CREDENTIAL_REMOVE = "credential.remove"
    CREDENTIAL_LIST = "credential.list"
    CREDENTIAL_RENEW = "credential.renew"
    POLICY_GET = "policy.get"
    POLICY_SET = "policy.set"
    VAULT_REKEY = "vault.rekey"
    UPSTREAM_PUT = "upstream.put"
    UPSTREAM_REMOVE = "upstream.remove"
    UPSTREAM_LIST = "upstream.list"
    NOTIFY_TEST = "notify.test"
    VAULT_BACKUP = "vault.backup"
    VAULT_RESTORE = "vault.restore"
    CREDENTIAL_RELEASE = "credential.release"
    CREDENTIAL_LOGIN = "credential.login"
    CREDENTIAL_LOGIN_WAIT = "credential.login_wait"


class Notify(enum.StrEnum):
    """Notifications the daemon pushes to a connection that called ``token.watch``."""

    TOKEN_UPDATED = "token.updated"
    TOKEN_EXPIRED = "token.expired"
    VAULT_LOCKED = "vault.locked"


class VaultState(enum.StrEnum):
    UNINITIALIZED = "UNINITIALIZED"
    LOCKED = "LOCKED"
    UNLOCKED = "UNLOCKED"


class CredentialState(enum.StrEnum):
    """Where one credential's renewal state machine stands (static ones: FRESH or EXPIRED)."""

    FRESH = "FRESH"
    RENEW_DUE = "RENEW_DUE"
    DEGRADED = "DEGRADED"
    EXPIRED = "EXPIRED"
    NEEDS_REAUTH = "NEEDS_REAUTH"
    #: Sourced from an upstream whose record was deleted or destroyed: not served.
    PULLED = "PULLED"
    #: Restored from a backup, its upstream rotating refresh tokens: not served, not renewed,
    #: nothing sent upstream, until ``credential.release`` or a new login.
    ON_HOLD = "ON_HOLD"


class KdfProfile(enum.StrEnum):
    """Argon2id cost profiles (libsodium's). ``min`` is for tests only and says so."""

    MIN = "min"
    INTERACTIVE = "interactive"
    MODERATE = "moderate"
    SENSITIVE = "sensitive"


class InvalidParams(ValueError):
    """A request's params do not match the method's schema. The message names the field."""


#: The kinds of parameter a :class:`Field` may have.
KINDS: Final = frozenset({"str", "int", "number", "bool", "map", "secret", "names", "body", "requests"})


class Field(Value):
    """One named parameter. ``kind`` is one of: str, int, number, bool, map, secret, names, body,
    requests.

    ``names`` is an array of 1 to ``max_len`` strings of at most 64 characters each; ``body``
    is a bin, or a str taken as its UTF-8 bytes, of at most ``max_len`` bytes; ``requests`` is
    an array of 1 to ``max_len`` maps, each checked on its own later (``token.sign_many``: one
    bad request is that request's error, not the call's).
    """

    __slots__ = __match_args__ = ("name", "kind", "required", "default", "max_len", "nullable")
    name: str
    kind: str
    required: bool
    default: Any
    max_len: int
    nullable: bool

    def __init__(  # noqa: PLR0917 - positional, as the dataclass it replaces took them
        self,
        name: str,
        kind: str,
        required: bool = True,
        default: Any = None,
        max_len: int = 256,
        nullable: bool = False,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown field kind {kind!r}")
        assign(self, "name", name)
        assign(self, "kind", kind)
        assign(self, "required", required)
        assign(self, "default", default)
        assign(self, "max_len", max_len)
        assign(self, "nullable", nullable)


_PASSPHRASE = Field("passphrase", "secret", max_len=4096)
_NAME = Field("name", "str", max_len=64)

METHODS: Final[dict[Method, tuple[Field, ...]]] = {
    Method.HELLO: (
        Field("protocol", "int"),
        Field("client", "str", required=False, default=""),
    ),
    Method.STATUS: (),
    Method.VAULT_INIT: (
        _PASSPHRASE,
        Field("kdf_profile", "str", required=False, default=KdfProfile.MODERATE),
    ),
    Method.VAULT_UNLOCK: (_PASSPHRASE, Field("accept_rollback", "bool", required=False, default=False)),
    Method.VAULT_LOCK: (),
    Method.TOKEN_GET: (_NAME, Field("min_ttl", "number", required=False, default=0.0)),
    Method.TOKEN_WATCH: (Field("names", "names", max_len=256),),
    Method.TOKEN_SIGN: (
        _NAME,
        Field("method", "str", max_len=16),
        Field("url", "str", max_len=8192),
        Field("body", "body", required=False, default=b"", max_len=60 * 1024),
        Field("timestamp", "int", required=False, default=None, nullable=True),
        Field("nonce", "int", required=False, default=None, nullable=True),
        Field("options", "map", required=False, default=None, nullable=True),
        Field("schemes", "names", required=False, default=None, max_len=16, nullable=True),
    ),
    Method.TOKEN_SIGN_MANY: (Field("requests", "requests", max_len=SIGN_MANY_MAX),),
    Method.CREDENTIAL_PUT: (
        _PASSPHRASE,
        _NAME,
        Field("kind", "str", max_len=32),
        Field("config", "map", required=False, default=None, nullable=True),
        Field("replace", "bool", required=False, default=False),
        Field("source", "map", required=False, default=None, nullable=True),
    ),
    Method.CREDENTIAL_REMOVE: (_PASSPHRASE, _NAME),
    Method.CREDENTIAL_LIST: (_PASSPHRASE,),
    Method.CREDENTIAL_RENEW: (_PASSPHRASE, _NAME),
    Method.POLICY_GET: (_PASSPHRASE,),
    Method.POLICY_SET: (_PASSPHRASE, Field("policy", "map")),
    Method.VAULT_REKEY: (_PASSPHRASE, Field("new_passphrase", "secret", max_len=4096)),
    Method.UPSTREAM_PUT: (
        _PASSPHRASE,
        _NAME,
        Field("kind", "str", max_len=32),
        Field("config", "map"),
        Field("replace", "bool", required=False, default=False),
    ),
    Method.UPSTREAM_REMOVE: (_PASSPHRASE, _NAME),
    Method.UPSTREAM_LIST: (),
    Method.NOTIFY_TEST: (_PASSPHRASE, Field("event", "str", required=False, default="needs_reauth", max_len=32)),
    Method.VAULT_BACKUP: (
        _PASSPHRASE,
        Field("path", "str", max_len=4096),
        Field("force", "bool", required=False, default=False),
        Field("lock", "bool", required=False, default=False),
    ),
    Method.VAULT_RESTORE: (
        _PASSPHRASE,
        Field("path", "str", max_len=4096),
        Field("backup_passphrase", "secret", required=False, max_len=4096),
    ),
    Method.CREDENTIAL_RELEASE: (_PASSPHRASE, _NAME),
    Method.CREDENTIAL_LOGIN: (
        _PASSPHRASE,
        _NAME,
        Field("device", "bool", required=False, default=False),
        Field("timeout", "number", required=False, default=300.0),
    ),
    Method.CREDENTIAL_LOGIN_WAIT: (
        _PASSPHRASE,
        Field("login_id", "str", max_len=64),
        Field("wait", "number", required=False, default=60.0),
    ),
}


#: Each method's parameter names, for the unknown-parameter check.
_KNOWN: Final[dict[Method, frozenset[str]]] = {m: frozenset(f.name for f in fields) for m, fields in METHODS.items()}


def parse_params(method: Method, params: list[Any]) -> dict[str, Any]:
    """Check ``params`` against ``method``'s schema and return the map with defaults.

    Raises:
        InvalidParams: not ``[map]``, an unknown or missing field, or a wrong type or size.
            The message names the field and never echoes its value.
    """
    if not params:
        given: dict[str, Any] = {}
    elif len(params) == 1 and isinstance(params[0], dict):
        given = params[0]
    else:
        raise InvalidParams("params must be an array holding one map")
    known = _KNOWN[method]
    if not known.issuperset(given):
        for key in given:
            if key not in known:
                shown = key if isinstance(key, str) and len(key) <= 64 and key.isprintable() else "?"
                raise InvalidParams(f"unknown parameter {shown!r} for {method}")
    out: dict[str, Any] = {}
    for field in METHODS[method]:
        name = field.name
        if name in given:
            out[name] = _check(field, given[name])
        elif field.required:
            raise InvalidParams(f"missing parameter {name!r}")
        else:
            out[name] = field.default
    return out


def _check(field: Field, value: Any) -> Any:
    if value is None and field.nullable:
        return None
    return _CHECKS[field.kind](field, value)


def _str(field: Field, value: Any) -> Any:
    if not isinstance(value, str):
        raise InvalidParams(f"parameter {field.name!r} must be a string")
    if len(value) > field.max_len:
        raise InvalidParams(f"parameter {field.name!r} is longer than {field.max_len} characters")
    return value


def _bool(field: Field, value: Any) -> Any:
    if not isinstance(value, bool):
        raise InvalidParams(f"parameter {field.name!r} must be a boolean")
    return value


def _int(field: Field, value: Any) -> Any:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidParams(f"parameter {field.name!r} must be an integer")
    return value


def _number(field: Field, value: Any) -> Any:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidParams(f"parameter {field.name!r} must be a finite number")
    if value < 0:
        raise InvalidParams(f"parameter {field.name!r} must not be negative")
    return float(value)


def _map(field: Field, value: Any) -> Any:
    if not isinstance(value, dict):
        raise InvalidParams(f"parameter {field.name!r} must be a map")
    return value


def _body(field: Field, value: Any) -> Any:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, bytes):
        raise InvalidParams(f"parameter {field.name!r} must be a string or binary")
    if len(value) > field.max_len:
        raise InvalidParams(f"parameter {field.name!r} is larger than {field.max_len} bytes")
    return value


def _names(field: Field, value: Any) -> Any:
    if not isinstance(value, list) or not 1 <= len(value) <= field.max_len:
        raise InvalidParams(f"parameter {field.name!r} must be an array of 1 to {field.max_len} names")
    if not all(isinstance(v, str) and 0 < len(v) <= 64 for v in value):
        raise InvalidParams(f"parameter {field.name!r} must hold strings of 1 to 64 characters")
    return list(dict.fromkeys(value))


def _requests(field: Field, value: Any) -> Any:
    if not isinstance(value, list) or not 1 <= len(value) <= field.max_len:
        raise InvalidParams(f"parameter {field.name!r} must be an array of 1 to {field.max_len} requests")
    if not all(isinstance(v, dict) for v in value):
        raise InvalidParams(f"parameter {field.name!r} must hold maps, one token.sign request each")
    return value


#: Each field kind's check: the value as the handler gets it, or InvalidParams.
_CHECKS: Final[dict[str, Callable[[Field, Any], Any]]] = {
    "str": _str,
    "secret": _str,
    "bool": _bool,
    "int": _int,
    "number": _number,
    "map": _map,
    "body": _body,
    "names": _names,
    "requests": _requests,
}
