"""Bitget v2 REST signatures: base64 HMAC-SHA256 over timestamp, method, path, query and body.

Bitget API docs ("Quick Start", "Signature"): ``ACCESS-SIGN`` = base64(HMAC-SHA256(secret,
timestamp + METHOD + requestPath + ["?" + queryString] + body)), the ``?`` and query string
only when there is one, the body only when there is one; the timestamp is the
``ACCESS-TIMESTAMP`` header (epoch milliseconds). ``ACCESS-KEY`` and ``ACCESS-PASSPHRASE`` (set
when the key was created) go along, and ``locale`` (``en-US``, ``zh-CN``) picks the language of
error messages: ``extra["locale"]`` sets it.

The query string is signed **decoded**, ``name=value`` joined by ``&`` in the order given (as
ccxt does: Bitget checks the signature against the query it decoded), and sent percent-encoded
by :func:`encode_query`; the two agree for unreserved characters.
Bitget rejects a request more than 30 seconds from its clock: ``valid_until`` is timestamp + 30 s.
"""

from __future__ import annotations

import base64
import re

from ._base import (
    JSON,
    Keys,
    Signed,
    SignError,
    SignRequest,
    body_headers,
    check_extra,
    check_json_body,
    check_request,
    hmac_signer,
    require_passphrase,
)

__all__ = ["Bitget", "prehash", "raw_query"]

VALID_FOR_S = 30.0
_EXTRA = frozenset({"locale"})
_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z]{2,4})?")


def raw_query(query: tuple[tuple[str, str], ...]) -> str:
    """``name=value`` pairs joined by ``&``, not percent-encoded."""
    return "&".join(f"{name}={value}" for name, value in query)


def prehash(request: SignRequest) -> bytes:
    """timestamp + METHOD + path + ["?" + decoded query] + body: the bytes Bitget signs."""
    query = f"?{raw_query(request.query)}" if request.query else ""
    return f"{request.timestamp_ms}{request.method}{request.path}{query}".encode() + request.body


class Bitget:
    """Bitget v2 REST with an HMAC key: HMAC-SHA256 keyed with the secret text, plus the passphrase."""

    name = "bitget"
    key_kind = "hmac"
    secret_encoding = "raw"
    remote_primitive = "hmac/sha2-256"

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        """Raises: SignError: no passphrase, a bad ``locale``, no secret, a malformed request."""
        check_request(request, self.name)
        check_extra(request, _EXTRA, self.name)
        check_json_body(request, self.name)
        locale = request.extra.get("locale")
        if locale is not None and not _LOCALE.fullmatch(locale):
            raise SignError("bitget: 'locale' must be a language tag such as en-US or zh-CN")
        passphrase = require_passphrase(keys, self.name)
        mac = hmac_signer(keys, self.name, "sha2-256")(prehash(request))
        headers = {
            "ACCESS-KEY": keys.api_key,
            "ACCESS-SIGN": base64.b64encode(mac).decode("ascii"),
            "ACCESS-TIMESTAMP": str(request.timestamp_ms),
            "ACCESS-PASSPHRASE": passphrase.reveal_str(),
            **body_headers(request.body, JSON),
        }
        if locale is not None:
            headers["locale"] = locale
        return Signed(headers, request.query, request.body, request.timestamp_ms / 1000 + VALID_FOR_S)

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"
