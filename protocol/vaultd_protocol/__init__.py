"""vaultd's wire protocol, sans-IO: MessagePack-RPC bytes in, typed events out.

Imports msgpack and the standard library only: no sockets, no event loop, no clock.
"""

from ._connection import MAX_MSGID, Connection, Role, encode, error_response
from ._errors import ErrorCode, ErrorInfo, LocalProtocolError, ProtocolError, RemoteProtocolError
from ._events import (
    NEED_DATA,
    ConnectionClosed,
    Event,
    MessageType,
    NeedData,
    Notification,
    Request,
    Response,
)
from ._limits import DEFAULT_LIMITS, Limits
from ._methods import (
    METHODS,
    PROTOCOL_VERSION,
    SIGN_MANY_MAX,
    SUPPORTED_PROTOCOLS,
    CredentialState,
    Field,
    InvalidParams,
    KdfProfile,
    Method,
    Notify,
    VaultState,
    parse_params,
)
from ._paths import SOCKET_ENV, default_socket_path

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_MSGID",
    "METHODS",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "SIGN_MANY_MAX",
    "SOCKET_ENV",
    "SUPPORTED_PROTOCOLS",
    "Connection",
    "ConnectionClosed",
    "CredentialState",
    "ErrorCode",
    "ErrorInfo",
    "Event",
    "Field",
    "InvalidParams",
    "KdfProfile",
    "Limits",
    "LocalProtocolError",
    "MessageType",
    "Method",
    "NeedData",
    "Notification",
    "Notify",
    "ProtocolError",
    "RemoteProtocolError",
    "Request",
    "Response",
    "Role",
    "VaultState",
    "default_socket_path",
    "encode",
    "error_response",
    "parse_params",
]

__version__ = "0.1.0"
