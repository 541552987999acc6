"""The ``oauth2`` kind: access tokens from a token endpoint, refresh tokens rotated write-ahead.

Two dialects: ``form``, RFC 6749's form POST (Schwab and most brokers), and ``deribit``,
Deribit's JSON-RPC ``public/auth``. Two grants: ``refresh_token`` (the refresh token is the
long-term secret; when the endpoint returns a new one the provider adopts it at once and
marks the token ``rotated``, so the renewer writes the vault before serving it) and
``client_credentials`` (client id and secret are the long-term secret).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote_plus

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
from .static import check_header_safe

__all__ = ["OAuth2Provider"]

_FIELDS = {
    "token_url", "grant_type", "client_id", "client_secret", "refresh_token", "scope",
    "client_auth", "dialect", "refresh_token_expires_at", "timeout",
}  # fmt: skip
#: RFC 6749 section 5.2 errors that mean the credential itself is refused: no retry helps.
_REFUSED = {"invalid_grant", "invalid_client", "unauthorized_client", "access_denied", "invalid_scope",
            "unsupported_grant_type", "invalid_request"}  # fmt: skip
#: Deribit error codes that mean the same (authorization_required, invalid_credentials, ...).
_DERIBIT_REFUSED = {10000, 13000, 13001, 13004, 13009}
WARN_AHEAD = 2 * 86400.0


class OAuth2Provider:
    kind: ClassVar[str] = "oauth2"
    renewable: ClassVar[bool] = True
    FIELDS: ClassVar[frozenset[str]] = frozenset(_FIELDS)

    def __init__(
        self,
        *,
        token_url: str,
        grant_type: str,
        client_id: str | None,
        client_secret: Secret | None,
        refresh_token: Secret | None,
        scope: str | None,
        client_auth: str,
        dialect: str,
        refresh_token_expires_at: float | None,
        timeout: float,
    ) -> None:
        self.token_url = token_url
        self.grant_type = grant_type
        self.client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self.scope = scope
        self.client_auth = client_auth
        self.dialect = dialect
        self.refresh_token_expires_at = refresh_token_expires_at
        self.timeout = timeout
        self._calls = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> OAuth2Provider:
        check_keys(config, cls.FIELDS, cls.kind)
        dialect = opt_str(config, "dialect", "form")
        if dialect not in ("form", "deribit"):
            raise ConfigError("'dialect' must be 'form' (RFC 6749) or 'deribit' (its JSON-RPC public/auth)")
        grant = req_str(config, "grant_type")
        if grant not in ("refresh_token", "client_credentials"):
            raise ConfigError("'grant_type' must be 'refresh_token' or 'client_credentials'")
        client_auth = opt_str(config, "client_auth", "basic")
        if client_auth not in ("basic", "post"):
            raise ConfigError("'client_auth' must be 'basic' (HTTP Basic) or 'post' (in the form body)")
        client_id = opt_str(config, "client_id", max_len=512)
        client_secret = secret_field(config, "client_secret", required=False)
        refresh_token = secret_field(config, "refresh_token", required=grant == "refresh_token")
        if grant == "client_credentials" and (client_id is None or client_secret is None):
            raise ConfigError("grant_type 'client_credentials' needs 'client_id' and 'client_secret'")
        if dialect == "deribit" and grant == "refresh_token" and refresh_token is None:
            raise ConfigError("grant_type 'refresh_token' needs 'refresh_token'")
        return cls(
            token_url=check_url(req_str(config, "token_url"), "token_url"),
            grant_type=grant,
            client_id=client_id,
            client_secret=client_secret,
            refresh_token=refresh_token,
            scope=opt_str(config, "scope", max_len=1024),
            client_auth=client_auth or "basic",
            dialect=dialect or "form",
            refresh_token_expires_at=parse_time(config.get("refresh_token_expires_at"), "refresh_token_expires_at"),
            timeout=opt_number(config, "timeout", 10.0, low=0.1, high=120.0),
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> OAuth2Provider:
        return cls.from_config(record)

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {**self.describe()}
        record["client_secret"] = None if self._client_secret is None else self._client_secret.reveal_str()
        record["refresh_token"] = None if self._refresh_token is None else self._refresh_token.reveal_str()
        return {k: v for k, v in record.items() if v is not None}

    def describe(self) -> dict[str, Any]:
        return {
            "token_url": self.token_url,
            "grant_type": self.grant_type,
            "client_id": self.client_id,
            "scope": self.scope,
            "client_auth": self.client_auth,
            "dialect": self.dialect,
            "refresh_token_expires_at": self.refresh_token_expires_at,
            "timeout": self.timeout,
        }

    def warnings(self, now: float) -> list[str]:
        expires = self.refresh_token_expires_at
        if expires is not None and now < expires <= now + WARN_AHEAD:
            hours = (expires - now) / 3600
            return [f"the refresh token expires in {hours:.0f} h: log in again and replace the credential"]
        return []

    # -- fetching --------------------------------------------------------------------------------

    async def fetch(self, ctx: FetchContext) -> Issued:
        now = ctx.now()
        if self.refresh_token_expires_at is not None and now >= self.refresh_token_expires_at:
            raise UpstreamError("the refresh token has expired (refresh_token_expires_at): log in again", reauth=True)
        if self.dialect == "deribit":
            status, answer = await exchange_json(
                ctx.http, "POST", self.token_url, wait=self.timeout, json=self._deribit_call()
            )
            fields = self._deribit_result(status, answer)
        else:
            data, headers = self._form()
            status, answer = await exchange_json(
                ctx.http, "POST", self.token_url, wait=self.timeout, data=data, headers=headers
            )
            fields = self._form_result(status, answer)
        return self._issued(fields, now)

    def _form(self) -> tuple[dict[str, str], dict[str, str]]:
        data = {"grant_type": self.grant_type}
        if self.grant_type == "refresh_token" and self._refresh_token is not None:
            data["refresh_token"] = self._refresh_token.reveal_str()
        if self.scope:
            data["scope"] = self.scope
        headers = {"Accept": "application/json"}
        if self.client_id is not None:
            secret = "" if self._client_secret is None else self._client_secret.reveal_str()
            if self.client_auth == "basic":
                pair = f"{quote_plus(self.client_id)}:{quote_plus(secret)}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
            else:
                data["client_id"] = self.client_id
                if self._client_secret is not None:
                    data["client_secret"] = secret
        return data, headers

    def _form_result(self, status: int, answer: Any) -> Mapping[str, Any]:
        if status == 200 and isinstance(answer, dict):
            return answer
        error = answer.get("error") if isinstance(answer, dict) else None
        code = error if isinstance(error, str) and len(error) <= 64 and error.isprintable() else None
        if code in _REFUSED or status in (401, 403):
            raise UpstreamError(f"the token endpoint refused the credential: HTTP {status} {code or ''}".rstrip(),
                                reauth=True)  # fmt: skip
        raise UpstreamError(f"the token endpoint answered HTTP {status} {code or ''}".rstrip())

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
        try:
            access = fields.get("access_token")
            if not isinstance(access, str) or not access:
                raise UpstreamError("the token endpoint's answer has no access_token")
            try:
                check_header_safe(access, "the access_token")
            except ConfigError as exc:
                raise UpstreamError(str(exc)) from None
            expires_in = fields.get("expires_in")
            if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or not 0 < expires_in < 10**9:
                raise UpstreamError("the token endpoint's answer has no usable expires_in")
        except UpstreamError as exc:
            exc.rotated = rotated
            raise
        scope = fields.get("scope")
        extra = {"scope": scope} if isinstance(scope, str) else {}
        return Issued(Secret(access), now, now + float(expires_in), "bearer", extra, rotated)

    def _adopt_refresh_token(self, new_refresh: object) -> bool:
        """Take a new refresh token from an answer; True if it replaced the one held."""
        if self.grant_type != "refresh_token" or not isinstance(new_refresh, str) or not new_refresh:
            return False
        if not new_refresh.isprintable() or len(new_refresh) > 16 * 1024:
            return False  # not a token; keep the current one
        current = self._refresh_token
        if current is not None and new_refresh == current.reveal_str():
            return False
        if current is not None:
            current.wipe()
        self._refresh_token = Secret(new_refresh)
        return True

    def wipe(self) -> None:
        for secret in (self._client_secret, self._refresh_token):
            if secret is not None:
                secret.wipe()

    def __repr__(self) -> str:
        return f"OAuth2Provider(token_url={self.token_url!r}, grant_type={self.grant_type!r})"
