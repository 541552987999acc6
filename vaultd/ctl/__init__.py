"""vaultctl, the operator's command line: one module per command group, ``main`` the entry point.

Commands talk to the running daemon through :class:`vaultd_client.Client`; the daemon itself is
the rest of the ``vaultd`` package, which imports nothing from here.
"""

from .main import main

__all__ = ["main"]
