"""One bounded HTTP exchange with a token endpoint: send, read at most 1 MiB, parse JSON.

Every failure becomes an :class:`UpstreamError` whose message names the host and path
only: a query string or a body may carry a secret, so neither is ever quoted.
"""

from __future__ import annotations

import ipaddress
import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .._stats import UPSTREAM
from ._base import ConfigError, UpstreamError

if TYPE_CHECKING:
    import httpx

__all__ = ["MAX_ANSWER", "check_url", "exchange_json", "is_loopback"]

MAX_ANSWER = 1 << 20


def check_url(url: str, field_name: str) -> str:
    """An https URL, or http to a loopback address (a local gateway, a test server).

    Raises:
        ConfigError: anything else.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"{field_name!r} must be an https:// URL")
    if parts.username or parts.password:
        raise ConfigError(f"{field_name!r} must not carry credentials in the URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(f"{field_name!r} must use https (plain http only to a loopback address)")
    return url


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}{parts.path}"


async def exchange_json(
    http: httpx.AsyncClient | None,
    method: str,
    url: str,
    *,
    wait: float,
    **kwargs: Any,
) -> tuple[int, Any]:
    """Send one request; return the status and the parsed JSON answer.

    Raises:
        UpstreamError: (retryable) no answer in time, a transport error, an answer over
            1 MiB, or one that is not JSON.
    """
    import httpx  # noqa: PLC0415 - imported when first used: keeps the daemon's start fast

    if http is None:
        raise UpstreamError("no HTTP client (internal error)")
    where = _where(url)
    started = time.perf_counter()
    try:
        async with http.stream(method, url, timeout=wait, **kwargs) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER:
                    raise UpstreamError(
                        f"{where}: the answer is larger than {MAX_ANSWER} bytes; not read", reason="bad_answer"
                    )
            status = response.status_code
    except httpx.TimeoutException:
        raise UpstreamError(f"{where}: no answer within {wait:g} s", reason="timeout") from None
    except httpx.HTTPError as exc:
        raise UpstreamError(f"{where}: {type(exc).__name__}", reason="network") from None
    finally:  # the host only: the path or query may name an account
        UPSTREAM.called(urlsplit(url).hostname or "?", time.perf_counter() - started)
    try:
        return status, json.loads(body)
    except ValueError:
        if status >= 500:  # a gateway's HTML error page: the status is the news
            raise UpstreamError(f"{where}: HTTP {status} with an answer that is not JSON") from None
        raise UpstreamError(f"{where}: HTTP {status} with an answer that is not JSON", reason="bad_answer") from None
