"""Where the daemon keeps things by default: the data folder and the socket path."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from vaultd_protocol import default_socket_path

__all__ = ["data_dir", "socket_path"]


def data_dir(explicit: str | None = None) -> Path:
    """``--data-dir``, else platformdirs' user data folder (``$XDG_DATA_HOME/vaultd``)."""
    if explicit:
        return Path(explicit).expanduser().absolute()
    return Path(platformdirs.user_data_dir("vaultd", appauthor=False))


def socket_path(explicit: str | None = None) -> Path:
    """``--socket``, else ``$VAULTD_SOCKET``, else ``$XDG_RUNTIME_DIR/vaultd/vaultd.sock``."""
    if explicit:
        return Path(explicit).expanduser().absolute()
    return Path(default_socket_path(os.environ, os.getuid()))
