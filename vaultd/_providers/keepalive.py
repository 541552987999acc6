"""The ``keepalive`` kind: a session handle created upstream once, then kept alive by a call per interval.

Two styles. ``binance-listenkey``: the first fetch POSTs to create a listen key, each later
fetch PUTs it to keep it alive, and an answer that the key is gone recreates it in the same
fetch; the token is the listen key (type ``listen-key``). ``ibkr-tickle``: each fetch POSTs
``/v1/api/tickle`` to an IBKR Client Portal gateway; the token is its ``session`` (type
``session``). The handle lives in memory only: it is not a long-term secret, so it is not
written to the vault file, and after a restart it is created anew.

Timing: the renewer renews at the earlier of 2/3 of a token's lifetime (less up to 10 %
jitter) and ``expires_at - 60 s`` (that margin capped at a third of the lifetime). Each token
is given ``expires_at = now + 1.5 * interval``, so 2/3 of its lifetime is exactly
``interval`` and the renewer calls at 0.85 to 1.0 times ``interval``: never later than
configured. The bounds on ``interval`` keep ``expires_at`` within what upstream grants
(Binance: 60 minutes after the last keepalive; the IBKR gateway: about 5 idle minutes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from .._secret import Secret
from ._base import (
    ConfigError,
    FetchContext,
    Issued,
    UpstreamError,
    check_keys,
    opt_number,
    opt_str,
    req_str,
    secret_field,
)
from ._http import check_url, exchange_json, is_loopback

if TYPE_CHECKING:
    import httpx

__all__ = ["KeepaliveProvider"]

BINANCE, IBKR = "binance-listenkey", "ibkr-tickle"
_FIELDS = {"style", "base_url", "api_key", "path", "interval", "verify_tls", "timeout"}
#: Fields that only one style reads: given to the other, they are refused rather than ignored.
_ONLY_FOR = {"api_key": BINANCE, "path": BINANCE}
#: Per style: the default interval and its bounds. 1.5 x the upper bound is the real limit.
_INTERVALS = {BINANCE: (1800.0, 60.0, 2400.0), IBKR: (60.0, 10.0, 200.0)}
#: expires_at = now + LIFETIME_FACTOR * interval: the renewer renews at 2/3 of it, the interval.
LIFETIME_FACTOR = 1.5
DEFAULT_PATH = "/api/v3/userDataStream"
TICKLE_PATH = "/v1/api/tickle"
_PATH = re.compile(r"(/[A-Za-z0-9._-]+)+")
_HANDLE = re.compile(r"[\x21-\x7e]{1,512}")
#: Binance codes for an API key it refuses: -2014 bad format, -2015 invalid key, IP or permission.
_BINANCE_REFUSED = {-2014, -2015}
_KEY_GONE = -1125


class KeepaliveProvider:
    kind: ClassVar[str] = "keepalive"
    renewable: ClassVar[bool] = True
    FIELDS: ClassVar[frozenset[str]] = frozenset(_FIELDS)

    def __init__(
        self,
        *,
        style: str,
        base_url: str,
        api_key: Secret | None,
        path: str,
        interval: float,
        verify_tls: bool,
        timeout: float,
    ) -> None:
        self.style = style
        self.base_url = base_url
        self._api_key = api_key
        self.path = path
        self.interval = interval
        self.verify_tls = verify_tls
        self.timeout = timeout
        #: The live handle (Binance's listen key), kept between fetches; never saved.
        self._listen_key: Secret | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> KeepaliveProvider:
        check_keys(config, cls.FIELDS, cls.kind)
        style = req_str(config, "style", max_len=64)
        if style not in _INTERVALS:
            raise ConfigError(f"'style' must be {BINANCE!r} (Binance listenKey) or {IBKR!r} (IBKR gateway tickle)")
        for name, owner in _ONLY_FOR.items():
            if owner != style and config.get(name) is not None:
                raise ConfigError(f"{name!r} is for style {owner!r} only")
        base_url = check_url(req_str(config, "base_url", max_len=1024), "base_url")
        parts = urlsplit(base_url)
        if parts.query or parts.fragment:
            raise ConfigError("'base_url' must not have a query or a fragment")
        verify_tls = config.get("verify_tls", True)
        if not isinstance(verify_tls, bool):
            raise ConfigError("'verify_tls' must be true or false")
        if not verify_tls and (style != IBKR or not is_loopback(parts.hostname or "")):
            raise ConfigError("'verify_tls' may be false only for style 'ibkr-tickle' with a loopback base_url")
        path = opt_str(config, "path", DEFAULT_PATH, max_len=256) or DEFAULT_PATH
        if not _PATH.fullmatch(path):
            raise ConfigError("'path' must be an absolute URL path such as /api/v3/userDataStream")
        default, low, high = _INTERVALS[style]
        return cls(
            style=style,
            base_url=base_url.rstrip("/"),
            api_key=secret_field(config, "api_key", required=style == BINANCE),
            path=path,
            interval=opt_number(config, "interval", default, low=low, high=high),
            verify_tls=verify_tls,
            timeout=opt_number(config, "timeout", 10.0, low=0.1, high=120.0),
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> KeepaliveProvider:
        return cls.from_config(record)

    def to_record(self) -> dict[str, Any]:
        record = self.describe()
        if self._api_key is not None:
            record["api_key"] = self._api_key.reveal_str()
        return record

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"style": self.style, "base_url": self.base_url}
        if self.style == BINANCE:
            described["path"] = self.path
        described.update(interval=self.interval, verify_tls=self.verify_tls, timeout=self.timeout)
        return described

    def warnings(self, now: float) -> list[str]:
        return []

    # -- fetching --------------------------------------------------------------------------------

    async def fetch(self, ctx: FetchContext) -> Issued:
        now = ctx.now()  # before the call: the handle's life is counted from no later than this
        if self.verify_tls:
            return await self._fetch(ctx.http, now)
        import httpx  # noqa: PLC0415 - only a gateway with a self-signed certificate needs its own client

        # The shared client verifies TLS, rightly: this one is made per call, for a loopback
        # gateway only (from_config refuses anything else), and closed at once.
        async with httpx.AsyncClient(verify=False, follow_redirects=False, headers={"User-Agent": "vaultd"}) as http:  # noqa: S501
            return await self._fetch(http, now)

    async def _fetch(self, http: httpx.AsyncClient | None, now: float) -> Issued:
        expires_at = now + LIFETIME_FACTOR * self.interval
        if self.style == IBKR:
            return Issued(Secret(await self._tickle(http)), now, expires_at, "session")
        created = await self._keep_listen_key(http)
        assert self._listen_key is not None
        return Issued(Secret(self._listen_key.reveal()), now, expires_at, "listen-key", {"created": created})

    async def _keep_listen_key(self, http: httpx.AsyncClient | None) -> bool:
        """Keep the listen key alive, or create one; whether a new key was created."""
        assert self._api_key is not None
        url, headers = self.base_url + self.path, {"X-MBX-APIKEY": self._api_key.reveal_str()}
        if self._listen_key is not None:
            params = {"listenKey": self._listen_key.reveal_str()}
            status, answer = await exchange_json(http, "PUT", url, wait=self.timeout, headers=headers, params=params)
            code = _binance_code(answer)
            _check_api_key(status, code)
            if status == 200:
                return self._adopt(answer, required=False)
            if code != _KEY_GONE and status not in (400, 404):
                raise UpstreamError(f"Binance listenKey keepalive failed: {_shown(status, code)}")
            self._drop_key()  # expired or closed upstream: create another in this same fetch
        status, answer = await exchange_json(http, "POST", url, wait=self.timeout, headers=headers)
        code = _binance_code(answer)
        _check_api_key(status, code)
        if status != 200:
            raise UpstreamError(f"Binance listenKey creation failed: {_shown(status, code)}")
        return self._adopt(answer, required=True)

    def _adopt(self, answer: Any, *, required: bool) -> bool:
        """Take the answer's listenKey if it differs from ours (futures' PUT returns one)."""
        key = answer.get("listenKey") if isinstance(answer, dict) else None
        if not isinstance(key, str) or not _HANDLE.fullmatch(key):
            if required:
                raise UpstreamError("Binance's answer has no usable listenKey")
            return False
        if self._listen_key is not None and self._listen_key.reveal_str() == key:
            return False
        self._drop_key()
        self._listen_key = Secret(key)
        return True

    def _drop_key(self) -> None:
        if self._listen_key is not None:
            self._listen_key.wipe()
            self._listen_key = None

    async def _tickle(self, http: httpx.AsyncClient | None) -> str:
        status, answer = await exchange_json(http, "POST", self.base_url + TICKLE_PATH, wait=self.timeout)
        if status in (401, 403):
            raise UpstreamError(f"the gateway refused the tickle: HTTP {status}: log in to the Client Portal gateway",
                                reauth=True)  # fmt: skip
        if status != 200 or not isinstance(answer, dict):
            raise UpstreamError(f"the gateway's tickle answered HTTP {status}")
        iserver = answer.get("iserver")
        auth = iserver.get("authStatus") if isinstance(iserver, dict) else None
        authenticated = auth.get("authenticated") if isinstance(auth, dict) else None
        if not isinstance(authenticated, bool):
            raise UpstreamError("the gateway's tickle answer has no iserver.authStatus.authenticated")
        if not authenticated:
            raise UpstreamError("the gateway session is not authenticated: log in to the Client Portal gateway",
                                reauth=True)  # fmt: skip
        session = answer.get("session")
        if not isinstance(session, str) or not _HANDLE.fullmatch(session):
            raise UpstreamError("the gateway's tickle answer has no usable session")
        return session

    def wipe(self) -> None:
        if self._api_key is not None:
            self._api_key.wipe()
        self._drop_key()

    def __repr__(self) -> str:
        return f"KeepaliveProvider(style={self.style!r}, base_url={self.base_url!r}, interval={self.interval:g})"


def _binance_code(answer: Any) -> int | None:
    code = answer.get("code") if isinstance(answer, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _check_api_key(status: int, code: int | None) -> None:
    if status in (401, 403) or code in _BINANCE_REFUSED:
        raise UpstreamError(f"Binance refused the API key: {_shown(status, code)}", reauth=True)


def _shown(status: int, code: int | None) -> str:
    return f"HTTP {status}" if code is None else f"HTTP {status} code {code}"
