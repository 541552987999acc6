"""Bybit V5 REST signatures: hex HMAC-SHA256 over timestamp, API key, recv window and payload.

Bybit V5 docs ("Integration Guidance", "Authentication" / "Create A Request"): the string to
sign is timestamp + API key + recv_window + (queryString for GET | raw JSON body otherwise);
headers ``X-BAPI-API-KEY``, ``X-BAPI-TIMESTAMP``, ``X-BAPI-RECV-WINDOW``, ``X-BAPI-SIGN`` and
``X-BAPI-SIGN-TYPE: 2`` (HMAC). Bybit accepts the request while
server_time - recv_window <= timestamp: ``valid_until`` is timestamp + recv_window.

``extra["recv_window"]`` sets the window in milliseconds (default 5000, Bybit's default).
"""

from __future__ import annotations

from ._base import Keys, Signed, SignError, SignRequest, check_extra, check_request, encode_query, hmac_signer

__all__ = ["Bybit", "string_to_sign"]

DEFAULT_RECV_WINDOW_MS = 5000
MAX_RECV_WINDOW_MS = 3_600_000
_EXTRA = frozenset({"recv_window"})


def _recv_window(request: SignRequest) -> int:
    text = request.extra.get("recv_window", str(DEFAULT_RECV_WINDOW_MS))
    if not text.isdigit() or not 0 < int(text) <= MAX_RECV_WINDOW_MS or text[0] == "0":
        raise SignError("bybit: 'recv_window' must be whole milliseconds, above 0 and at most 3600000")
    return int(text)


def string_to_sign(request: SignRequest, api_key: str, recv_window: int) -> bytes:
    """timestamp + api_key + recv_window + payload, the payload being the query string for GET."""
    payload = encode_query(request.query).encode("ascii") if request.method == "GET" else request.body
    return f"{request.timestamp_ms}{api_key}{recv_window}".encode() + payload


class Bybit:
    """Bybit V5 REST with a system-generated (HMAC) key, keyed with the secret text."""

    name = "bybit"
    key_kind = "hmac"
    secret_encoding = "raw"
    remote_primitive = "hmac/sha2-256"

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        """Raises: SignError: a bad ``recv_window``, no secret, a malformed request."""
        check_request(request, self.name)
        check_extra(request, _EXTRA, self.name)
        window = _recv_window(request)
        message = string_to_sign(request, keys.api_key, window)
        signature = hmac_signer(keys, self.name, "sha2-256")(message).hex()
        headers = {
            "X-BAPI-API-KEY": keys.api_key,
            "X-BAPI-TIMESTAMP": str(request.timestamp_ms),
            "X-BAPI-RECV-WINDOW": str(window),
            "X-BAPI-SIGN": signature,
            "X-BAPI-SIGN-TYPE": "2",
        }
        return Signed(headers, request.query, request.body, (request.timestamp_ms + window) / 1000)

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"
