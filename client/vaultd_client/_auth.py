"""What both HTTP auth adapters share: sign through the daemon, or attach the current token."""

from __future__ import annotations

from ._sync import Client
from ._types import Signed

__all__ = ["Authorizer"]


class Authorizer:
    """Decides, once, whether credential ``name`` signs requests or issues bearer tokens."""

    def __init__(self, name: str, client: Client | None = None, *, kind: str | None = None) -> None:
        self.name = name
        self.client = client or Client()
        self._signs = None if kind is None else kind == "sign"

    def signs(self) -> bool:
        if self._signs is not None:
            return self._signs
        credentials = self.client.status().get("credentials", [])
        kind = next((c["kind"] for c in credentials if c.get("name") == self.name), None)
        if kind is None:
            return False  # locked or unknown now: ask again next time (token.get will say why)
        self._signs = kind == "sign"
        return self._signs

    def bearer_headers(self) -> dict[str, str]:
        return dict(self.client.token(self.name).headers)

    def sign(self, method: str, url: str, body: bytes) -> Signed:
        return self.client.sign(self.name, method, url, body=body)
