"""The ``oauth2`` kind: access tokens from a token endpoint, refresh tokens rotated write-ahead.

Two dialects: ``form``, RFC 6749's form POST (Schwab and most brokers), and ``deribit``,
Deribit's JSON-RPC ``public/auth``. Grants: ``refresh_token`` (the refresh token is the
long-term secret; when the endpoint returns a new one the provider adopts it at once and
marks the token ``rotated``, so the renewer writes the vault before serving it),
``client_credentials`` (client id and secret are the long-term secret), and
``authorization_code`` / ``device_code``: the refresh token comes from an operator's login
(``_login``: PKCE with a loopback redirect, or RFC 8628's device grant), redeemed here, and is
renewed as ``refresh_token`` is; until the first login the credential awaits it and makes no
call. Endpoints may come from the ``issuer``'s metadata (``_oauth_client.discover``).
Every expiry is the request's start plus ``expires_in`` less ``expiry_margin``: a provider
that rounds its issue time down must never see vaultd serve a token it already expired.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

from .._secret import Secret
from ._base import (
    ConfigError,
    FetchContext,
    Issued,
    UpstreamError,
    check_keys,
    opt_number,
    opt_str,
    parse_time,
    req_str,
    secret_field,
)
from ._http import check_url, exchange_json
from ._oauth_client import (
    AUTH_METHODS,
    ClientKey,
    Endpoints,
    client_auth_form,
    described_error,
    discover,
    wire_auth_name,
)
from .static import check_header_safe

__all__ = ["AWAITING_LOGIN", "LoginGrant", "OAuth2Provider"]

_FIELDS = {
    "token_url", "grant_type", "client_id", "client_secret", "refresh_token", "scope",
    "client_auth", "dialect", "refresh_token_expires_at", "timeout",
    "issuer", "authorization_endpoint", "device_authorization_endpoint", "private_key", "private_key_kid",
    "resource", "audience", "expiry_margin",
}  # fmt: skip
_GRANTS = ("refresh_token", "client_credentials", "authorization_code", "device_code")
#: Grants whose refresh token an operator's login brings (``vaultctl login``).
LOGIN_GRANTS = ("authorization_code", "device_code")
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
AWAITING_LOGIN = "awaiting login: run 'vaultctl login {name}'"
#: RFC 6749 section 5.2 errors that mean the credential itself is refused: no retry helps.
_REFUSED = {"invalid_grant", "invalid_client", "unauthorized_client", "access_denied", "invalid_scope",
            "unsupported_grant_type", "invalid_request", "invalid_target"}  # fmt: skip
#: Deribit error codes that mean the same (authorization_required, invalid_credentials, ...).
_DERIBIT_REFUSED = {10000, 13000, 13001, 13004, 13009}
WARN_AHEAD = 2 * 86400.0
MAX_RESOURCES = 8


def _error_code(answer: object) -> str | None:
    error = answer.get("error") if isinstance(answer, dict) else None
    return error if isinstance(error, str) and len(error) <= 64 and error.isprintable() else None


def _resources(config: Mapping[str, Any]) -> tuple[str, ...]:
    value = config.get("resource")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_RESOURCES:
        raise ConfigError(f"'resource' must be an absolute URI or a list of 1 to {MAX_RESOURCES} of them")
    out = []
    for item in items:
        if not isinstance(item, str) or not item.isprintable() or len(item) > 2048:
            raise ConfigError("'resource' must hold absolute URIs (RFC 8707)")
        parts = urlsplit(item)
        if not parts.scheme or parts.fragment:
            raise ConfigError("'resource' must hold absolute URIs without a fragment (RFC 8707)")
        out.append(item)
    return tuple(out)


@dataclass(eq=False, repr=False)
class LoginGrant:
    """What a login's redemption brought, checked whole and not yet adopted: the token to serve, the
    new refresh token and when it ends (None: the answer did not say)."""

    issued: Issued
    refresh_token: Secret
    refresh_token_expires_at: float | None

    def wipe(self) -> None:
        self.issued.wipe()
        self.refresh_token.wipe()


class OAuth2Provider:
    kind: ClassVar[str] = "oauth2"
    renewable: ClassVar[bool] = True
    FIELDS: ClassVar[frozenset[str]] = frozenset(_FIELDS)

    def __init__(
        self,
        *,
        token_url: str | None,
        grant_type: str,
        client_id: str | None,
        client_secret: Secret | None,
        refresh_token: Secret | None,
        scope: str | None,
        client_auth: str | None,
        dialect: str,
        refresh_token_expires_at: float | None,
        timeout: float,
        issuer: str | None = None,
        authorization_endpoint: str | None = None,
        device_authorization_endpoint: str | None = None,
        private_key: ClientKey | None = None,
        resource: tuple[str, ...] = (),
        audience: str | None = None,
        expiry_margin: float = 1.0,
    ) -> None:
        self.token_url = token_url
        self.grant_type = grant_type
        self.client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self.scope = scope
        #: As configured (None: chosen from what the key/secret and the server's metadata allow).
        self.client_auth_config = client_auth
        self.dialect = dialect
        self.refresh_token_expires_at = refresh_token_expires_at
        self.timeout = timeout
        self.issuer = issuer
        self.authorization_endpoint = authorization_endpoint
        self.device_authorization_endpoint = device_authorization_endpoint
        self._key = private_key
        self.resource = resource
        self.audience = audience
        self.expiry_margin = expiry_margin
        self._endpoints: Endpoints | None = None
        if issuer is None:
            assert token_url is not None
            self._endpoints = Endpoints(token_url, authorization_endpoint, device_authorization_endpoint, None)
        self._calls = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> OAuth2Provider:
        check_keys(config, cls.FIELDS, cls.kind)
        dialect = opt_str(config, "dialect", "form")
        if dialect not in ("form", "deribit"):
            raise ConfigError("'dialect' must be 'form' (RFC 6749) or 'deribit' (its JSON-RPC public/auth)")
        grant = req_str(config, "grant_type")
        if grant not in _GRANTS:
            raise ConfigError(f"'grant_type' must be one of: {', '.join(_GRANTS)}")
        client_auth = opt_str(config, "client_auth")
        if client_auth is not None and client_auth not in AUTH_METHODS:
            raise ConfigError(
                "'client_auth' must be 'basic' (HTTP Basic), 'post' (in the form body), 'private_key_jwt' "
                "(RFC 7523, with 'private_key') or 'none' (a public client)"
            )
        client_id = opt_str(config, "client_id", max_len=512)
        client_secret = secret_field(config, "client_secret", required=False)
        refresh_token = secret_field(config, "refresh_token", required=grant == "refresh_token")
        has_key = config.get("private_key") is not None
        if grant == "client_credentials" and (client_id is None or (client_secret is None and not has_key)):
            raise ConfigError("grant_type 'client_credentials' needs 'client_id' and 'client_secret' or 'private_key'")
        if dialect == "deribit" and grant not in ("refresh_token", "client_credentials"):
            raise ConfigError("the 'deribit' dialect knows grant_type 'refresh_token' and 'client_credentials' only")
        issuer = opt_str(config, "issuer", max_len=2048)
        token_url = opt_str(config, "token_url", max_len=2048)
        if issuer is None and token_url is None:
            raise ConfigError("'token_url' is required (or 'issuer', whose metadata names the endpoints)")
        if issuer is not None:
            check_url(issuer, "issuer")
            if dialect != "form":
                raise ConfigError("'issuer' needs the 'form' dialect")
        if grant in LOGIN_GRANTS and client_id is None:
            raise ConfigError(f"grant_type {grant!r} needs 'client_id'")
        private_key = None
        key_text = config.get("private_key")
        if key_text is not None:  # PEM: several lines
            if not isinstance(key_text, str) or not key_text.strip() or len(key_text) > 16 * 1024:
                raise ConfigError("'private_key' must be a PEM private key of at most 16384 characters")
            private_key = ClientKey(Secret(key_text), opt_str(config, "private_key_kid", max_len=256))
        if client_auth == "private_key_jwt" and private_key is None:
            raise ConfigError("client_auth 'private_key_jwt' needs 'private_key' (a PEM key, EC P-256 or RSA)")
        audience = opt_str(config, "audience", max_len=2048)
        margin = config.get("expiry_margin", 1.0)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
            raise ConfigError("'expiry_margin' must be a number of seconds")
        if not 0 <= margin <= 300:
            raise ConfigError("'expiry_margin' must be between 0 and 300 seconds")
        endpoints = {}
        for key in ("authorization_endpoint", "device_authorization_endpoint"):
            value = opt_str(config, key, max_len=2048)
            endpoints[key] = None if value is None else check_url(value, key)
        return cls(
            token_url=None if token_url is None else check_url(token_url, "token_url"),
            grant_type=grant,
            client_id=client_id,
            client_secret=client_secret,
            refresh_token=refresh_token,
            scope=opt_str(config, "scope", max_len=1024),
            client_auth=client_auth,
            dialect=dialect or "form",
            refresh_token_expires_at=parse_time(config.get("refresh_token_expires_at"), "refresh_token_expires_at"),
            timeout=opt_number(config, "timeout", 10.0, low=0.1, high=120.0),
            issuer=issuer,
            private_key=private_key,
            resource=_resources(config),
            audience=audience,
            expiry_margin=float(margin),
            **endpoints,
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> OAuth2Provider:
        return cls.from_config(record)

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {**self._settings()}
        record["client_secret"] = None if self._client_secret is None else self._client_secret.reveal_str()
        record["refresh_token"] = None if self._refresh_token is None else self._refresh_token.reveal_str()
        record["private_key"] = None if self._key is None else self._key.text.reveal_str()
        if not self.resource:
            record.pop("resource")
        return {k: v for k, v in record.items() if v is not None}

    def _settings(self) -> dict[str, Any]:
        return {
            "token_url": self.token_url,
            "grant_type": self.grant_type,
            "client_id": self.client_id,
            "scope": self.scope,
            "client_auth": self.client_auth_config,
            "dialect": self.dialect,
            "refresh_token_expires_at": self.refresh_token_expires_at,
            "timeout": self.timeout,
            "issuer": self.issuer,
            "authorization_endpoint": self.authorization_endpoint,
            "device_authorization_endpoint": self.device_authorization_endpoint,
            "private_key_kid": None if self._key is None else self._key.kid,
            "resource": list(self.resource),
            "audience": self.audience,
            "expiry_margin": self.expiry_margin,
        }

    def describe(self) -> dict[str, Any]:
        described = self._settings()
        described["client_auth"] = self.client_auth
        if self._endpoints is not None and self.issuer is not None:
            described["discovered"] = {
                "token_url": self._endpoints.token_url,
                "authorization_endpoint": self._endpoints.authorization_endpoint,
                "device_authorization_endpoint": self._endpoints.device_authorization_endpoint,
            }
        return described

    @property
    def client_auth(self) -> str:
        """The client authentication in use: as configured, else from the key or secret held."""
        if self.client_auth_config is not None:
            return self.client_auth_config
        if self._key is not None:
            return "private_key_jwt"
        if self._client_secret is None and self.grant_type in LOGIN_GRANTS:
            return "none"
        return "basic"

    @property
    def awaiting_login(self) -> bool:
        """A login grant with no refresh token yet: nothing to call until an operator logs in."""
        return self.grant_type in LOGIN_GRANTS and self._refresh_token is None

    def warnings(self, now: float) -> list[str]:
        expires = self.refresh_token_expires_at
        if expires is not None and now < expires <= now + WARN_AHEAD:
            hours = (expires - now) / 3600
            return [f"the refresh token expires in {hours:.0f} h: log in again ('vaultctl login') or replace it"]
        return []

    # -- endpoints -------------------------------------------------------------------------------

    async def endpoints(self, ctx: FetchContext) -> Endpoints:
        """The endpoints: configured, or read once from the issuer's metadata (then kept in memory).

        Raises:
            UpstreamError: discovery failed, or the server does not support the client authentication.
        """
        if self._endpoints is None:
            assert self.issuer is not None
            found = await discover(ctx, self.issuer, self.timeout)
            self._endpoints = Endpoints(
                self.token_url or found.token_url,
                self.authorization_endpoint or found.authorization_endpoint,
                self.device_authorization_endpoint or found.device_authorization_endpoint,
                found.auth_methods,
            )
        supported = self._endpoints.auth_methods
        if supported is not None and wire_auth_name(self.client_auth) not in supported:
            raise UpstreamError(
                f"the server does not support client_auth {self.client_auth!r} "
                f"({wire_auth_name(self.client_auth)}; it supports: {', '.join(supported)[:200]})",
                reauth=True,
            )
        return self._endpoints

    # -- fetching --------------------------------------------------------------------------------

    async def fetch(self, ctx: FetchContext) -> Issued:
        now = ctx.now()
        if self.refresh_token_expires_at is not None and now >= self.refresh_token_expires_at:
            raise UpstreamError("the refresh token has expired (refresh_token_expires_at): log in again", reauth=True)
        if self.grant_type in LOGIN_GRANTS and self._refresh_token is None:
            raise UpstreamError("no refresh token: log in again ('vaultctl login')", reauth=True)
        if self.dialect == "deribit":
            assert self.token_url is not None
            status, answer = await exchange_json(
                ctx.http, "POST", self.token_url, wait=self.timeout, json=self._deribit_call()
            )
            return self._issued(self._deribit_result(status, answer), now)
        grant = "refresh_token" if self.grant_type in LOGIN_GRANTS else self.grant_type
        data = {"grant_type": grant}
        if grant == "refresh_token" and self._refresh_token is not None:
            data["refresh_token"] = self._refresh_token.reveal_str()
        if self.scope:
            data["scope"] = self.scope
        status, answer = await self.token_request(ctx, data)
        return self._issued(self._form_result(status, answer), now)

    async def token_request(
        self, ctx: FetchContext, data: dict[str, str], *, url: str | None = None
    ) -> tuple[int, Any]:
        """POST ``data`` (plus ``resource``, ``audience`` and the client's authentication) to the token
        endpoint (or ``url``: the device authorization endpoint)."""
        endpoints = await self.endpoints(ctx)
        auth, headers = client_auth_form(
            self.client_auth,
            client_id=self.client_id,
            secret=self._client_secret,
            key=self._key,
            audience=endpoints.token_url,
            now=ctx.now(),
        )
        form: dict[str, Any] = {**data, **auth}
        if self.resource:
            form["resource"] = list(self.resource)
        if self.audience:
            form["audience"] = self.audience
        headers["Accept"] = "application/json"
        target = url or endpoints.token_url
        return await exchange_json(ctx.http, "POST", target, wait=self.timeout, data=form, headers=headers)

    def _form_result(self, status: int, answer: Any) -> Mapping[str, Any]:
        if status == 200 and isinstance(answer, dict):
            return answer
        code = _error_code(answer)
        described = described_error(answer)
        if code in _REFUSED or status in (401, 403):
            raise UpstreamError(
                f"the token endpoint refused the credential: HTTP {status} {code or ''}".rstrip() + described,
                reauth=True,
            )
        raise UpstreamError(f"the token endpoint answered HTTP {status} {code or ''}".rstrip() + described)

    def _deribit_call(self) -> dict[str, Any]:
        self._calls += 1
        params: dict[str, Any] = {"grant_type": self.grant_type}
        if self.grant_type == "refresh_token" and self._refresh_token is not None:
            params["refresh_token"] = self._refresh_token.reveal_str()
        else:
            params["client_id"] = self.client_id
            params["client_secret"] = None if self._client_secret is None else self._client_secret.reveal_str()
        if self.scope:
            params["scope"] = self.scope
        return {"jsonrpc": "2.0", "id": self._calls, "method": "public/auth", "params": params}

    def _deribit_result(self, status: int, answer: Any) -> Mapping[str, Any]:
        if isinstance(answer, dict) and isinstance(answer.get("result"), dict):
            result: Mapping[str, Any] = answer["result"]
            return result
        error = answer.get("error") if isinstance(answer, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        if code in _DERIBIT_REFUSED:
            raise UpstreamError(f"Deribit refused the credential: error {code}", reauth=True)
        shown = f"error {code}" if isinstance(code, int) else f"HTTP {status}"
        raise UpstreamError(f"Deribit public/auth failed: {shown}")

    def _issued(self, fields: Mapping[str, Any], now: float) -> Issued:
        # Adopt a rotated refresh token before judging anything else in the answer: the old
        # one may already be dead upstream, and presenting it again would revoke the family.
        rotated = self._adopt_refresh_token(fields.get("refresh_token"))
        rotated = self._adopt_refresh_expiry(fields.get("refresh_token_expires_in"), now) or rotated
        try:
            issued = self._token(fields, now)
        except UpstreamError as exc:
            exc.rotated = rotated
            raise
        issued.rotated = rotated
        return issued

    def _token(self, fields: Mapping[str, Any], now: float) -> Issued:
        """The access token of an answer, checked (nothing in the provider changes).

        Raises:
            UpstreamError: no access_token, a token_type other than Bearer, no usable expires_in.
        """
        access = fields.get("access_token")
        if not isinstance(access, str) or not access:
            raise UpstreamError("the token endpoint's answer has no access_token")
        try:
            check_header_safe(access, "the access_token")
        except ConfigError as exc:
            raise UpstreamError(str(exc)) from None
        self._check_token_type(fields.get("token_type"))
        expires_in = fields.get("expires_in")
        if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or not 0 < expires_in < 10**9:
            raise UpstreamError("the token endpoint's answer has no usable expires_in")
        if expires_in <= self.expiry_margin:
            raise UpstreamError(f"the token lives {expires_in} s, not more than expiry_margin {self.expiry_margin:g} s")
        scope = fields.get("scope")
        extra = {"scope": scope} if isinstance(scope, str) else {}
        expires_at = now + float(expires_in) - self.expiry_margin
        return Issued(Secret(access), now, expires_at, "bearer", extra)

    @staticmethod
    def _check_token_type(value: object) -> None:
        """Bearer (or none said, as Deribit): served. DPoP-bound tokens need a proof vaultd cannot make."""
        if value is None or (isinstance(value, str) and value.lower() == "bearer"):
            return
        shown = value if isinstance(value, str) and len(value) <= 32 and value.isprintable() else "?"
        if shown.lower() == "dpop":
            raise UpstreamError(
                "the token endpoint issued a DPoP-bound token (token_type DPoP): vaultd does not support DPoP; "
                "configure the client at the server without DPoP binding",
                reauth=True,
            )
        raise UpstreamError(f"the token endpoint issued token_type {shown!r}: only Bearer is supported", reauth=True)

    def _adopt_refresh_token(self, new_refresh: object) -> bool:
        """Take a new refresh token from an answer; True if it replaced the one held."""
        if self.grant_type not in ("refresh_token", *LOGIN_GRANTS) or not isinstance(new_refresh, str):
            return False
        if not new_refresh or not new_refresh.isprintable() or len(new_refresh) > 16 * 1024:
            return False  # not a token; keep the current one
        current = self._refresh_token
        if current is not None and new_refresh == current.reveal_str():
            return False
        if current is not None:
            current.wipe()
        self._refresh_token = Secret(new_refresh)
        return True

    def _adopt_refresh_expiry(self, expires_in: object, now: float) -> bool:
        """``refresh_token_expires_in`` from an answer sets the refresh token's expiry; True if it changed."""
        if self.grant_type == "client_credentials":
            return False
        at = self._refresh_expiry(expires_in, now)
        if at is None:
            return False
        changed = self.refresh_token_expires_at is None or abs(at - self.refresh_token_expires_at) >= 1.0
        self.refresh_token_expires_at = at
        return changed

    def _refresh_expiry(self, expires_in: object, now: float) -> float | None:
        """When a refresh token given at ``now`` with ``refresh_token_expires_in`` ends; None if not said."""
        if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or not 0 < expires_in < 10**9:
            return None
        return now + float(expires_in) - self.expiry_margin

    # -- logins (``_login`` drives them; the code and the refresh token never leave the daemon) ----------

    def authorization_url(self, endpoint: str, redirect_uri: str, state: str, verifier: str) -> str:
        """The authorization request (RFC 6749 section 4.1.1) with PKCE S256 (RFC 7636)."""
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=")
        query: list[tuple[str, str]] = [
            ("response_type", "code"),
            ("client_id", self.client_id or ""),
            ("redirect_uri", redirect_uri),
            ("state", state),
            ("code_challenge", challenge.decode("ascii")),
            ("code_challenge_method", "S256"),
        ]
        if self.scope:
            query.append(("scope", self.scope))
            if "offline_access" in self.scope.split():
                query.append(("prompt", "consent"))  # OpenID Connect Core section 11: else it is dropped
        query.extend(("resource", r) for r in self.resource)
        if self.audience:
            query.append(("audience", self.audience))
        glue = "&" if urlsplit(endpoint).query else "?"
        return endpoint + glue + urlencode(query)

    async def redeem(self, ctx: FetchContext, data: dict[str, str]) -> LoginGrant:
        """Redeem a login (an authorization code, or a device code once granted): what it brought,
        checked, not yet adopted (``take_login``).

        Raises:
            UpstreamError: the endpoint refused it (the message carries the error and its description).
        """
        now = ctx.now()
        status, answer = await self.token_request(ctx, data)
        return self.check_login(status, answer, now)

    def check_login(self, status: int, answer: Any, now: float) -> LoginGrant:
        """The token endpoint's answer to a login's redemption (sent at ``now``), checked whole
        before anything is adopted: a refused answer leaves the refresh token held (and its expiry)
        as it was, so the renewals go on with the one the vault file holds.

        Raises:
            UpstreamError: a refusal, an answer without a refresh token, or one whose access token
                is not served (no access_token, DPoP, no usable expires_in).
        """
        fields = self._form_result(status, answer)
        refresh = fields.get("refresh_token")
        if not isinstance(refresh, str) or not refresh or not refresh.isprintable() or len(refresh) > 16 * 1024:
            raise UpstreamError(
                "the login gave no refresh token: ask for offline access in 'scope' (e.g. 'openid offline_access')",
                reauth=True,
            )
        issued = self._token(fields, now)
        issued.rotated = True  # a new refresh token: saved before the token is served
        expires_at = self._refresh_expiry(fields.get("refresh_token_expires_in"), now)
        return LoginGrant(issued, Secret(refresh), expires_at)

    def take_login(self, grant: LoginGrant) -> Callable[[bool], None]:
        """Adopt a login's refresh token, with the expiry its own answer gave (None if it gave none:
        an earlier grant's expiry does not carry over). The function returned settles it once the
        vault write is known: ``True`` wipes the previous refresh token, ``False`` (the write failed)
        puts the previous one and its expiry back."""
        previous, previous_expiry = self._refresh_token, self.refresh_token_expires_at
        self._refresh_token, self.refresh_token_expires_at = grant.refresh_token, grant.refresh_token_expires_at

        def settle(kept: bool) -> None:
            if kept:
                if previous is not None:
                    previous.wipe()
                return
            grant.refresh_token.wipe()
            self._refresh_token, self.refresh_token_expires_at = previous, previous_expiry

        return settle

    def wipe(self) -> None:
        for secret in (self._client_secret, self._refresh_token):
            if secret is not None:
                secret.wipe()
        if self._key is not None:
            self._key.wipe()

    def __repr__(self) -> str:
        return f"OAuth2Provider(token_url={self.token_url!r}, grant_type={self.grant_type!r})"
