"""How an ``oauth2`` credential speaks to its authorization server, besides the grant itself.

Client authentication at the token endpoint (RFC 6749 section 2.3: ``basic``, ``post``;
``none`` for a public client; RFC 7523 ``private_key_jwt``, a short signed assertion made
from a key sealed in the vault), authorization server discovery (OpenID Connect Discovery,
falling back to RFC 8414), and the one way an error answer's ``error_description`` may be
shown (short, printable, never the request).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlsplit

from .._schemes._base import SignError
from .._schemes._keys import load_rsa_key, sign_jws
from .._secret import Secret
from ._base import ConfigError, FetchContext, UpstreamError
from ._http import check_url, exchange_json
from .jwt import load_signing_key

__all__ = ["AUTH_METHODS", "ClientKey", "Endpoints", "described_error", "discover", "wire_auth_name"]

#: ``client_auth`` values, and the RFC 8414 ``token_endpoint_auth_methods_supported`` names.
AUTH_METHODS = {
    "basic": "client_secret_basic",
    "post": "client_secret_post",
    "private_key_jwt": "private_key_jwt",
    "none": "none",
}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: How long a client assertion is valid (RFC 7523 wants a short ``exp``).
ASSERTION_TTL = 60
_MAX_DESCRIPTION = 200


def wire_auth_name(client_auth: str) -> str:
    return AUTH_METHODS[client_auth]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class ClientKey:
    """A ``private_key_jwt`` key: EC P-256 (ES256) or RSA (RS256), its PEM text in a Secret."""

    def __init__(self, text: Secret, kid: str | None) -> None:
        self.text = text
        self.kid = kid
        pem = text.reveal_str()
        try:
            self._key: Any = load_signing_key("ES256", pem)
            self.alg = "ES256"
        except ConfigError:
            try:
                self._key = load_rsa_key(pem)
            except SignError:
                raise ConfigError(
                    "'private_key' must be an unencrypted PEM private key, EC P-256 (ES256) or RSA (RS256)"
                ) from None
            self.alg = "RS256"

    def assertion(self, client_id: str, audience: str, now: float) -> str:
        """A client assertion (RFC 7523 section 3): iss = sub = the client, aud, a random jti, a short exp."""
        header: dict[str, Any] = {"alg": self.alg, "typ": "JWT"}
        if self.kid is not None:
            header["kid"] = self.kid
        issued = int(now)
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": secrets.token_urlsafe(24),
            "iat": issued,
            "exp": issued + ASSERTION_TTL,
        }
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        ).encode("ascii")
        if self.alg == "ES256":
            signature = sign_jws(self._key, signing_input)
        else:
            from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
            from cryptography.hazmat.primitives.asymmetric import padding  # noqa: PLC0415

            signature = self._key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return signing_input.decode("ascii") + "." + _b64url(signature)

    def wipe(self) -> None:
        self.text.wipe()
        self._key = None


def client_auth_form(
    client_auth: str,
    *,
    client_id: str | None,
    secret: Secret | None,
    key: ClientKey | None,
    audience: str,
    now: float,
) -> tuple[dict[str, str], dict[str, str]]:
    """The form fields and headers that authenticate the client at the token endpoint."""
    data: dict[str, str] = {}
    headers: dict[str, str] = {}
    if client_id is None:
        return data, headers
    if client_auth == "basic":
        text = "" if secret is None else secret.reveal_str()
        pair = f"{quote_plus(client_id)}:{quote_plus(text)}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    elif client_auth == "private_key_jwt" and key is not None:
        data["client_id"] = client_id
        data["client_assertion_type"] = ASSERTION_TYPE
        data["client_assertion"] = key.assertion(client_id, audience, now)
    else:
        data["client_id"] = client_id
        if client_auth == "post" and secret is not None:
            data["client_secret"] = secret.reveal_str()
    return data, headers


def described_error(answer: object) -> str:
    """``: <error_description>`` from an error answer, shortened and made printable; "" if none."""
    text = answer.get("error_description") if isinstance(answer, dict) else None
    if not isinstance(text, str) or not text:
        return ""
    shown = "".join(c if c.isprintable() else "?" for c in text[:_MAX_DESCRIPTION])
    return f": {shown}{'...' if len(text) > _MAX_DESCRIPTION else ''}"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """What discovery found (or the configuration named)."""

    token_url: str
    authorization_endpoint: str | None
    device_authorization_endpoint: str | None
    auth_methods: tuple[str, ...] | None  # token_endpoint_auth_methods_supported; None: not said


_WELL_KNOWN = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")


def _metadata_urls(issuer: str) -> list[str]:
    """OpenID Connect Discovery appends to the issuer; RFC 8414 inserts before its path."""
    parts = urlsplit(issuer)
    base = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    return [f"{issuer.rstrip('/')}{_WELL_KNOWN[0]}", f"{base}{_WELL_KNOWN[1]}{path}"]


async def discover(ctx: FetchContext, issuer: str, wait: float) -> Endpoints:
    """Read the issuer's metadata: OpenID Connect Discovery, else RFC 8414.

    Raises:
        UpstreamError: neither answered 200 with JSON (retryable); the document names another
            issuer, or an endpoint that is not https (``reauth``: the configuration is wrong).
    """
    failures = []
    for url in _metadata_urls(issuer):
        status, answer = await exchange_json(ctx.http, "GET", url, wait=wait, headers={"Accept": "application/json"})
        if status == 200 and isinstance(answer, dict):
            return _endpoints(answer, issuer)
        failures.append(f"HTTP {status}")
    raise UpstreamError(f"discovery of {issuer}: no metadata ({', '.join(failures)})")


def _endpoints(document: Mapping[str, Any], issuer: str) -> Endpoints:
    named = document.get("issuer")
    if named != issuer:
        shown = repr(named[:200]) if isinstance(named, str) and named.isprintable() else "none that can be shown"
        raise UpstreamError(
            f"discovery of {issuer}: the metadata names another issuer, {shown} (it must be exactly the "
            "configured one: a trailing '/' counts)",
            reauth=True,
        )
    try:
        token_url = check_url(_url(document, "token_endpoint", required=True) or "", "token_endpoint")
        authorization = _url(document, "authorization_endpoint")
        device = _url(document, "device_authorization_endpoint")
        for value, name in ((authorization, "authorization_endpoint"), (device, "device_authorization_endpoint")):
            if value is not None:
                check_url(value, name)
    except ConfigError as exc:
        raise UpstreamError(f"discovery of {issuer}: {exc}", reauth=True) from None
    methods = document.get("token_endpoint_auth_methods_supported")
    supported = tuple(m for m in methods if isinstance(m, str)) if isinstance(methods, list) else None
    return Endpoints(token_url, authorization, device, supported)


def _url(document: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = document.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > 2048 or not value.isprintable():
        raise ConfigError(f"{key!r} is missing or not a URL")
    return value
