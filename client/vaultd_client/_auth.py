"""What both HTTP auth adapters share: sign through the daemon, or attach the current token."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from ._sync import Client
from ._types import Signed
from .errors import RedirectRefused

__all__ = ["Authorizer", "refuse_cross_host_redirect"]


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


def refuse_cross_host_redirect(url: str, status: int, location: str | None) -> None:
    """Raises: RedirectRefused: a redirect from ``url`` to another host (or scheme)."""
    if status not in (301, 302, 303, 307, 308) or not location:
        return
    before, after = urlsplit(url), urlsplit(urljoin(url, location))
    if (before.scheme, before.netloc) != (after.scheme, after.netloc):
        raise RedirectRefused(f"refusing to follow a signed request's redirect to {after.scheme}://{after.netloc}")
