"""Bybit V5 REST signatures: hex HMAC-SHA256 over timestamp, API key, recv window and payload.

Bybit V5 docs ("Integration Guidance", "Authentication" / "Create A Request"): the string to
sign is timestamp + API key + recv_window + (queryString for GET | raw JSON body otherwise);
headers ``X-BAPI-API-KEY``, ``X-BAPI-TIMESTAMP``, ``X-BAPI-RECV-WINDOW``, ``X-BAPI-SIGN`` and
``X-BAPI-SIGN-TYPE: 2`` (HMAC). Bybit accepts the request while
server_time - recv_window <= timestamp: ``valid_until`` is timestamp + recv_window.

``extra["recv_window"]`` sets the window in milliseconds (default 5000, Bybit's default).

The query string is the one Bybit's own SDK builds and sends (pybit ``prepare_payload`` for GET:
``name=value`` joined by ``&``, nothing percent-encoded), in the engine's order (pybit sorts its
params by name first; an engine that wants that order passes them sorted): so ``coin=BTC,USDT``
is signed and sent with its raw comma, as pybit and ccxt do. It goes back as
:attr:`Signed.query_string`, so the URL sent holds exactly the bytes signed. Since nothing is
encoded, a name or value may hold only what a request line carries as it is: the characters
RFC 3986 allows in a query, less ``%`` (it would be read as an escape), ``&`` (it would split the
pair) and ``=`` in a name; a space, ``#``, a control or non-ASCII character is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable

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
)

__all__ = ["Bybit", "query_string", "sign_v5", "string_to_sign"]

DEFAULT_RECV_WINDOW_MS = 5000
MAX_RECV_WINDOW_MS = 60_000
_EXTRA = frozenset({"recv_window"})
#: RFC 3986 query characters (unreserved, sub-delims, ':', '@', '/', '?') less '%' and '&'.
_RAW_VALUE = re.compile(r"[A-Za-z0-9._~!$'()*+,;=:@/?-]*")
_RAW_NAME = re.compile(r"[A-Za-z0-9._~!$'()*+,;:@/?-]+")


def query_string(request: SignRequest) -> str:
    """The query as pybit builds it: ``name=value`` joined by ``&``, nothing encoded.

    Raises:
        SignError: a name or value holds a character a request line cannot carry unencoded.
    """
    for name, value in request.query:
        if not _RAW_NAME.fullmatch(name) or not _RAW_VALUE.fullmatch(value):
            raise SignError(
                "bybit: query names and values are signed and sent unencoded, as pybit sends them: they may hold "
                "ASCII letters, digits and -._~!$'()*+,;:@/? ('=' in values only); no space, '%', '&', '#', "
                "control or non-ASCII characters"
            )
    return "&".join(f"{name}={value}" for name, value in request.query)


def _recv_window(request: SignRequest) -> int:
    text = request.extra.get("recv_window", str(DEFAULT_RECV_WINDOW_MS))
    if not text.isdigit() or not 0 < int(text) <= MAX_RECV_WINDOW_MS or text[0] == "0":
        raise SignError(f"bybit: 'recv_window' must be whole milliseconds, above 0 and at most {MAX_RECV_WINDOW_MS}")
    return int(text)


def string_to_sign(request: SignRequest, api_key: str, recv_window: int, query: str | None = None) -> bytes:
    """timestamp + api_key + recv_window + payload, the payload being the query string for GET
    (``query``, else :func:`query_string`) and the body otherwise.

    Raises:
        SignError: as :func:`query_string`.
    """
    if request.method == "GET":
        payload = (query_string(request) if query is None else query).encode("ascii")
    else:
        payload = request.body
    return f"{request.timestamp_ms}{api_key}{recv_window}".encode() + payload


def sign_v5(request: SignRequest, keys: Keys, scheme: str, sign: Callable[[bytes], str]) -> Signed:
    """The signed V5 request, ``sign`` turning the string to sign into ``X-BAPI-SIGN``'s value
    (hex HMAC for ``bybit``, base64 RSA for ``bybit-rsa``): the URL carries the query as signed.

    Raises:
        SignError: a bad ``recv_window``, a malformed request, a query pybit could not send.
    """
    check_request(request, scheme)
    check_extra(request, _EXTRA, scheme)
    window = _recv_window(request)
    query = query_string(request)
    # The payload follows recv_window's digits with no separator: one starting with a digit
    # could lend them to the window ("5" + "0000000{...}" is window 50000000 with body "{...}").
    if request.method == "GET":
        if query[:1].isdigit():
            raise SignError(f"{scheme}: the first query parameter's name must not start with a digit")
    else:
        check_json_body(request, scheme)
    headers = {
        "X-BAPI-API-KEY": keys.api_key,
        "X-BAPI-TIMESTAMP": str(request.timestamp_ms),
        "X-BAPI-RECV-WINDOW": str(window),
        "X-BAPI-SIGN": sign(string_to_sign(request, keys.api_key, window, query)),
        "X-BAPI-SIGN-TYPE": "2",
        **body_headers(request.body, JSON),
    }
    valid_until = (request.timestamp_ms + window) / 1000
    return Signed(headers, request.query, request.body, valid_until, query_string=query)


class Bybit:
    """Bybit V5 REST with a system-generated (HMAC) key, keyed with the secret text."""

    name = "bybit"
    key_kind = "hmac"
    secret_encoding = "raw"
    remote_primitive = "hmac/sha2-256"

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        """Raises: SignError: a bad ``recv_window``, no secret, a malformed request."""
        mac = hmac_signer(keys, self.name, "sha2-256")
        return sign_v5(request, keys, self.name, lambda message: mac(message).hex())

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"
