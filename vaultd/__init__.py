"""vaultd: the credential daemon (``vaultd``) and the operator's CLI (``vaultctl``).

Everything here is private (``_`` modules); the public surfaces are the two commands and
the wire protocol in ``protocol/SPEC.md``.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
