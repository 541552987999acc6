"""vaultd_client: fetch short-lived tokens from the local vaultd daemon.

    from vaultd_client import Client
    token = Client().token("deribit")
    headers = token.headers

Imports msgpack and the standard library only (never trio or pynacl), so it is cheap to
import into a trading engine.
"""

from . import errors
from ._sync import Client
from ._types import Signed, Token
from ._watch import Watch, WatchEvent
from .errors import (
    ConnectionLost,
    DaemonUnavailable,
    Locked,
    RemoteError,
    Timeout,
    TransportError,
    UntrustedSocket,
    VaultdError,
)

__all__ = [
    "Client",
    "ConnectionLost",
    "DaemonUnavailable",
    "Locked",
    "RemoteError",
    "Signed",
    "Timeout",
    "Token",
    "TransportError",
    "UntrustedSocket",
    "VaultdError",
    "Watch",
    "WatchEvent",
    "errors",
]

__version__ = "0.1.0"
