"""The one exception RPC handlers raise to answer a request with an application error."""

from __future__ import annotations

from vaultd_protocol import ErrorCode, ErrorInfo

__all__ = ["RpcError"]


class RpcError(Exception):
    """Answer the current request with ``code`` and ``message``.

    The message goes to the peer and to the log: it must never contain a secret.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code

    def to_error_info(self) -> ErrorInfo:
        return ErrorInfo.of(self.code, str(self))
