"""Where the daemon's socket lives by default, computed from an environment passed in.

Pure: the caller hands in the environment and uid, so daemon and client agree on the
path without this package touching ``os``.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["SOCKET_ENV", "default_socket_path"]

SOCKET_ENV = "VAULTD_SOCKET"


def default_socket_path(environ: Mapping[str, str], uid: int) -> str:
    """``$VAULTD_SOCKET``, else ``$XDG_RUNTIME_DIR/vaultd/vaultd.sock``, else a per-uid
    folder in ``/tmp`` (as tmux does) for sessions without a runtime directory."""
    explicit = environ.get(SOCKET_ENV)
    if explicit:
        return explicit
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return f"{runtime.rstrip('/')}/vaultd/vaultd.sock"
    return f"/tmp/vaultd-{uid}/vaultd.sock"  # noqa: S108 - the daemon creates it 0700 and checks its owner
