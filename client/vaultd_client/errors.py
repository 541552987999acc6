"""Every exception the client raises, in two trees under :class:`VaultdError`.

* :class:`RemoteError`: the daemon answered with an error. One class per stable error
  code, named after it (``LOCKED`` is :class:`Locked`); :func:`error_from_info` rebuilds
  the class from the code on the wire, and an unknown code from a newer daemon becomes a
  plain :class:`RemoteError` carrying it.
* :class:`TransportError`: the daemon could not be reached or understood.
"""

from __future__ import annotations

from vaultd_protocol import ErrorCode, ErrorInfo

__all__ = [
    "AlreadyExists",
    "AlreadyInitialized",
    "BadPassphrase",
    "Busy",
    "ConnectionLost",
    "DaemonUnavailable",
    "Forbidden",
    "Internal",
    "InvalidParams",
    "Locked",
    "MalformedResponse",
    "NeedsReauth",
    "NotInitialized",
    "OnHold",
    "ProtocolError",
    "Pulled",
    "RedirectRefused",
    "RemoteError",
    "RenewalFailed",
    "Rollback",
    "StorageFailed",
    "Timeout",
    "TokenExpired",
    "TooLarge",
    "TransportError",
    "UnknownCredential",
    "UnknownMethod",
    "UnsupportedProtocol",
    "UntrustedSocket",
    "UpstreamUnavailable",
    "VaultDamaged",
    "VaultdError",
    "error_from_info",
]


class VaultdError(Exception):
    """Base of everything this library raises."""


# -- transport ---------------------------------------------------------------------------


class TransportError(VaultdError):
    """The daemon could not be reached, or the conversation with it broke."""


class DaemonUnavailable(TransportError):
    """Nothing answers on the socket (the daemon is not running, or the path is wrong)."""

    def __init__(self, socket_path: str, reason: str) -> None:
        super().__init__(f"vaultd is not reachable at {socket_path}: {reason}")
        self.socket_path = socket_path
        self.reason = reason


class UntrustedSocket(TransportError):
    """The process listening on the socket runs as another user: nothing was sent to it.

    Another local user can create ``/tmp/vaultd-UID/vaultd.sock`` first and wait for
    passphrases; the client checks the listener's uid (SO_PEERCRED) before sending a byte.
    """

    def __init__(self, socket_path: str, uid: int) -> None:
        super().__init__(
            f"refusing to talk to {socket_path}: it is served by uid {uid}, not by this user "
            "(another user may have taken the path: remove it, or set VAULTD_SOCKET; if another user's "
            "daemon serves you on purpose, pass its uid: server_uid=, or vaultctl --server-uid)"
        )
        self.socket_path = socket_path
        self.uid = uid


class RedirectRefused(VaultdError):
    """An HTTP adapter refused to follow a signed request's redirect to another host: the
    signed headers (API key, passphrase) must not travel there."""


class ConnectionLost(TransportError):
    """The connection closed before the answer arrived."""


class Timeout(TransportError):
    """No answer within the call's timeout."""


class MalformedResponse(TransportError):
    """The daemon sent bytes that are not valid protocol."""


# -- daemon errors -----------------------------------------------------------------------


class RemoteError(VaultdError):
    """The daemon answered with an error. ``code`` and ``name`` are the stable wire values."""

    code: int = 0

    def __init__(self, message: str, code: int | None = None, name: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.name = name or type(self).__name__
        self.message = message


class ProtocolError(RemoteError):
    """The daemon could not parse what this client sent."""

    code = ErrorCode.PROTOCOL_ERROR


class TooLarge(RemoteError):
    """A request exceeded the daemon's size or nesting limits."""

    code = ErrorCode.TOO_LARGE


class UnknownMethod(RemoteError):
    """The daemon does not know this method."""

    code = ErrorCode.UNKNOWN_METHOD


class InvalidParams(RemoteError):
    """A parameter is missing, unknown or of the wrong type."""

    code = ErrorCode.INVALID_PARAMS


class Internal(RemoteError):
    """The daemon failed internally; its log says more."""

    code = ErrorCode.INTERNAL


class UnsupportedProtocol(RemoteError):
    """The daemon does not speak this protocol version."""

    code = ErrorCode.UNSUPPORTED_PROTOCOL


class Busy(RemoteError):
    """The daemon is at a limit; try again shortly."""

    code = ErrorCode.BUSY


class NotInitialized(RemoteError):
    """No vault exists yet ('vaultctl init')."""

    code = ErrorCode.NOT_INITIALIZED


class AlreadyInitialized(RemoteError):
    """A vault already exists."""

    code = ErrorCode.ALREADY_INITIALIZED


class Locked(RemoteError):
    """The vault is locked; an operator must unlock it."""

    code = ErrorCode.LOCKED


class BadPassphrase(RemoteError):
    """Wrong passphrase, or a damaged vault file."""

    code = ErrorCode.BAD_PASSPHRASE


class Forbidden(RemoteError):
    """The credential's allow-list refuses this request: nothing was signed."""

    code = ErrorCode.FORBIDDEN


class VaultDamaged(RemoteError):
    """The vault file cannot be read by this version."""

    code = ErrorCode.VAULT_DAMAGED


class StorageFailed(RemoteError):
    """The change could not be written durably; nothing changed."""

    code = ErrorCode.STORAGE_FAILED


class Rollback(RemoteError):
    """The vault file is older than one written before (a restored copy); nothing was unlocked.

    The operator may accept it with ``vaultctl unlock --accept-rollback``.
    """

    code = ErrorCode.ROLLBACK


class UnknownCredential(RemoteError):
    """No credential has this name."""

    code = ErrorCode.UNKNOWN_CREDENTIAL


class TokenExpired(RemoteError):
    """The token expired, or cannot meet min_ttl."""

    code = ErrorCode.TOKEN_EXPIRED


class RenewalFailed(RemoteError):
    """Renewing the token upstream failed."""

    code = ErrorCode.RENEWAL_FAILED


class NeedsReauth(RemoteError):
    """Upstream refused the long-term credential; an operator must act."""

    code = ErrorCode.NEEDS_REAUTH


class AlreadyExists(RemoteError):
    """A credential with this name exists."""

    code = ErrorCode.ALREADY_EXISTS


class Pulled(RemoteError):
    """The credential's record was deleted or destroyed in its upstream (OpenBao): not served
    until a new version is written there."""

    code = ErrorCode.PULLED


class UpstreamUnavailable(RemoteError):
    """A call that must reach the upstream now (a transit signature, ``add --from``) could not."""

    code = ErrorCode.UPSTREAM_UNAVAILABLE


class OnHold(RemoteError):
    """The credential was restored from a backup and is on hold (its upstream rotates refresh
    tokens): not served until an operator runs ``vaultctl release NAME`` or logs in again."""

    code = ErrorCode.ON_HOLD


_BY_CODE: dict[int, type[RemoteError]] = {
    cls.code: cls
    for cls in (
        ProtocolError, TooLarge, UnknownMethod, InvalidParams, Internal, UnsupportedProtocol, Busy,
        NotInitialized, AlreadyInitialized, Locked, BadPassphrase, Forbidden, VaultDamaged,
        StorageFailed, Rollback, UnknownCredential, TokenExpired, RenewalFailed, NeedsReauth, AlreadyExists,
        Pulled, UpstreamUnavailable, OnHold,
    )
}  # fmt: skip


def error_from_info(info: ErrorInfo) -> RemoteError:
    """The exception for an error the daemon sent (a plain RemoteError for unknown codes)."""
    cls = _BY_CODE.get(info.code, RemoteError)
    return cls(info.message, info.code, info.name)
