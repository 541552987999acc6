"""vaultd_client: fetch short-lived tokens from the local vaultd daemon.

    from vaultd_client import Client
    token = Client().token("deribit")
    headers = token.headers

``Client`` is synchronous and thread-safe; ``AsyncClient`` (asyncio) and ``TrioClient`` (trio)
have the same methods, awaited. Importing this package loads msgpack and the standard
library only (never trio, pynacl or asyncio): the async drivers load on first use.
"""

from __future__ import annotations

from . import errors
from ._sync import Client
from ._types import Signed, Token, WatchEvent
from ._watch import Watch
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

TYPE_CHECKING = False  # typing costs an engine ~7 ms of import: annotations only
if TYPE_CHECKING:
    from typing import Any

    from ._async_core import AsyncWatch
    from ._asyncio import AsyncClient
    from ._trio import TrioClient


__all__ = [
    "AsyncClient",
    "AsyncWatch",
    "Client",
    "ConnectionLost",
    "DaemonUnavailable",
    "Locked",
    "RemoteError",
    "Signed",
    "Timeout",
    "Token",
    "TransportError",
    "TrioClient",
    "UntrustedSocket",
    "VaultdError",
    "Watch",
    "WatchEvent",
    "errors",
]

__version__ = "0.1.0"

_LAZY = {"AsyncClient": "._asyncio", "TrioClient": "._trio", "AsyncWatch": "._async_core"}


def __getattr__(name: str) -> Any:
    # The async drivers import asyncio or trio: only when an engine asks for them.
    if name in _LAZY:
        import importlib  # noqa: PLC0415

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
