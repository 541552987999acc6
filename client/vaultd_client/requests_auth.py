"""A ``requests`` auth that signs each request through vaultd, or attaches the current token.

    import requests
    from vaultd_client.requests_auth import VaultdAuth
    requests.post(url, data=form, auth=VaultdAuth("kraken"))

Imported only by those who use it: ``vaultd_client`` itself never imports requests.
"""

from __future__ import annotations

from typing import Any

from requests.auth import AuthBase

from ._auth import Authorizer, refuse_cross_host_redirect
from ._sync import Client

__all__ = ["VaultdAuth"]


class VaultdAuth(AuthBase):
    def __init__(self, name: str, client: Client | None = None, *, kind: str | None = None) -> None:
        """``kind``: ``"sign"`` or a token kind; by default it is looked up once in ``status``."""
        self._authorizer = Authorizer(name, client, kind=kind)

    def __call__(self, request: Any) -> Any:
        if not self._authorizer.signs():
            request.headers.update(self._authorizer.bearer_headers())
            return request
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        signed = self._authorizer.sign(request.method, request.url, body)
        request.url = signed.url
        request.headers.update(signed.headers)
        if signed.body != body:
            request.body = signed.body
            request.headers["Content-Length"] = str(len(signed.body))
        request.register_hook("response", _refuse_redirects)
        return request


def _refuse_redirects(response: Any, *args: Any, **kwargs: Any) -> Any:
    """requests follows redirects by default, carrying the signed headers: not to another host."""
    refuse_cross_host_redirect(response.url, response.status_code, response.headers.get("location"))
    return response
