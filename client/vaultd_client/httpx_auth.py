"""An ``httpx.Auth`` that signs each request through vaultd, or attaches the current token.

    import httpx
    from vaultd_client.httpx_auth import VaultdAuth
    httpx.post(url, data=form, auth=VaultdAuth("binance"))

Imported only by those who use it: ``vaultd_client`` itself never imports httpx.
httpx follows no redirect unless asked; do not ask for signed requests: httpx follows
redirects beneath the auth layer, carrying the signed headers to wherever it is sent.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx

from ._auth import Authorizer
from ._sync import Client

__all__ = ["VaultdAuth"]


class VaultdAuth(httpx.Auth):
    requires_request_body = True

    def __init__(self, name: str, client: Client | None = None, *, kind: str | None = None) -> None:
        """``kind``: ``"sign"`` or a token kind; by default it is looked up once in ``status``."""
        self._authorizer = Authorizer(name, client, kind=kind)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if not self._authorizer.signs():
            request.headers.update(self._authorizer.bearer_headers())
            yield request
            return
        body = request.content
        signed = self._authorizer.sign(request.method, str(request.url), body)
        request.url = httpx.URL(signed.url)
        request.headers.update(signed.headers)
        if signed.body != body:
            request.stream = httpx.ByteStream(signed.body)
            request._content = signed.body
            request.headers["Content-Length"] = str(len(signed.body))
        yield request
