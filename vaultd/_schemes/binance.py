"""Binance signatures: REST with HMAC-SHA256 or Ed25519 keys, and the WebSocket API ``session.logon``.

REST (Spot API docs, "Request security" / "SIGNED Endpoint Examples for POST /api/v3/order"):
the payload is the query string concatenated, without separator, with the form body; the
signature is hex HMAC-SHA256 (``binance-hmac``) or base64 Ed25519 (``binance-ed25519``) and goes
in a ``signature`` parameter; the API key goes in the ``X-MBX-APIKEY`` header.

``timestamp`` (and ``recvWindow`` when ``extra`` sets it; Binance's default is 5000 ms) are
appended before signing, then ``signature`` last, where the engine's parameters end: to the body
when it is non-empty, else to the query, as in Binance's three published curl examples. A
``timestamp`` or ``recvWindow`` the engine already put in the query or body is signed as it is
(``valid_until`` is computed from it), not added twice.

WebSocket API (``binance-ws-logon``): the params, sorted by name, joined as ``name=value`` by
``&`` without percent-encoding, signed with the Ed25519 key (the only key type Binance accepts
for ``session.logon``). :func:`ws_signed_params` does the same for any WebSocket request.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, quote

from ._base import (
    FORM,
    Keys,
    Signed,
    SignError,
    SignRequest,
    body_headers,
    check_extra,
    check_request,
    ed25519_signer,
    encode_query,
    hmac_signer,
)

__all__ = ["BinanceEd25519", "BinanceHmac", "BinanceWsLogon", "ws_payload", "ws_signed_params"]

_EXTRA = frozenset({"recvWindow"})
#: Milliseconds, up to three decimals (microseconds), at most 60000 (Binance's maximum).
_RECV_WINDOW = re.compile(r"[0-9]{1,5}(\.[0-9]{1,3})?")
DEFAULT_RECV_WINDOW_MS = 5000.0
MAX_RECV_WINDOW_MS = 60000.0
#: How far a ``timestamp`` the engine wrote into the request may stray from the signing time
#: (:attr:`SignRequest.timestamp_ms`, itself checked against the daemon's clock).
IN_BAND_SKEW_MS = 60_000
#: Binance also takes microsecond timestamps: 16 digits rather than 13.
_MICROSECONDS_FROM = 10**14

Signer = Callable[[bytes], str]


def _recv_window(text: str, scheme: str) -> float:
    value = float(text) if _RECV_WINDOW.fullmatch(text) else 0.0
    if not 0 < value <= MAX_RECV_WINDOW_MS:
        raise SignError(f"{scheme}: 'recvWindow' must be milliseconds, above 0 and at most 60000")
    return value


def _one(pairs: list[tuple[str, str]], name: str, scheme: str) -> str | None:
    values = [value for key, value in pairs if key == name]
    if len(values) > 1:
        raise SignError(f"{scheme}: the request carries {name!r} twice")
    return values[0] if values else None


def _form_pairs(body: bytes, scheme: str) -> list[tuple[str, str]]:
    if not body.isascii():
        raise SignError(f"{scheme}: 'body' must be form-encoded ASCII (percent-encode other characters)")
    try:
        return parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise SignError(f"{scheme}: 'body' must be form-encoded (name=value&...)") from None


def sign_rest(request: SignRequest, keys: Keys, scheme: str, sign: Signer) -> Signed:
    """The signed REST request: ``sign`` turns the payload into the ``signature`` value.

    Raises:
        SignError: a malformed request, a ``signature`` already present, a bad ``recvWindow``.
    """
    check_request(request, scheme)
    check_extra(request, _EXTRA, scheme)
    present = list(request.query) + (_form_pairs(request.body, scheme) if request.body else [])
    if _one(present, "signature", scheme) is not None:
        raise SignError(f"{scheme}: the request already carries a 'signature'")
    added: list[tuple[str, str]] = []
    window_text = _one(present, "recvWindow", scheme)
    knob = request.extra.get("recvWindow")
    if window_text is None and knob is not None:
        window_text = knob
        added.append(("recvWindow", knob))
    elif window_text is not None and knob is not None and window_text != knob:
        raise SignError(f"{scheme}: the request's 'recvWindow' differs from the option 'recvWindow'")
    window = DEFAULT_RECV_WINDOW_MS if window_text is None else _recv_window(window_text, scheme)
    stamp_text = _one(present, "timestamp", scheme)
    if stamp_text is None:
        stamp_text = str(request.timestamp_ms)
        added.append(("timestamp", stamp_text))
    elif not stamp_text.isdigit() or len(stamp_text) > 17:
        raise SignError(f"{scheme}: the request's 'timestamp' must be epoch milliseconds or microseconds")
    stamp = int(stamp_text)
    seconds = stamp / 1_000_000 if stamp >= _MICROSECONDS_FROM else stamp / 1000
    if abs(seconds * 1000 - request.timestamp_ms) > IN_BAND_SKEW_MS:
        raise SignError(
            f"{scheme}: the request's 'timestamp' must be within a minute of the signing time (the call's "
            "'timestamp', or the daemon's clock): signatures are not made for later use"
        )
    valid_until = seconds + window / 1000

    query, body = request.query, request.body
    if not body:
        query += tuple(added)
    elif added:
        body += b"&" + encode_query(added).encode("ascii")
    query_string = encode_query(query)
    signature = sign(query_string.encode("ascii") + body)
    if body:
        body += f"&signature={quote(signature, safe='')}".encode("ascii")
    else:
        query += (("signature", signature),)
        query_string += ("&" if query_string else "") + encode_query(query[-1:])
    headers = {"X-MBX-APIKEY": keys.api_key, **body_headers(body, FORM)}
    return Signed(headers, query, body, valid_until, query_string)


def _hmac_signer(keys: Keys, scheme: str) -> Signer:
    mac = hmac_signer(keys, scheme, "sha2-256")
    return lambda payload: mac(payload).hex()


def _ed25519_signer(keys: Keys, scheme: str) -> Signer:
    sign = ed25519_signer(keys, scheme)
    return lambda payload: base64.b64encode(sign(payload)).decode("ascii")


class BinanceHmac:
    """REST requests signed with an HMAC key: hex HMAC-SHA256 keyed with the secret text."""

    name = "binance-hmac"
    key_kind = "hmac"
    secret_encoding = "raw"
    remote_primitive = "hmac/sha2-256"

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        return sign_rest(request, keys, self.name, _hmac_signer(keys, self.name))

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"


class BinanceEd25519:
    """REST requests signed with an Ed25519 key: base64 signature, percent-encoded when sent."""

    name = "binance-ed25519"
    key_kind = "ed25519"
    remote_primitive = "sign/ed25519"

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        return sign_rest(request, keys, self.name, _ed25519_signer(keys, self.name))

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"


def ws_payload(params: Iterable[tuple[str, str]]) -> bytes:
    """The WebSocket API signature payload: params sorted by name, ``name=value`` joined by ``&``.

    Values are not percent-encoded (Binance: "no percent encoding here!"), only UTF-8 encoded.
    """
    return "&".join(f"{name}={value}" for name, value in sorted(params)).encode("utf-8")


def ws_signed_params(
    params: Iterable[tuple[str, str]],
    *,
    api_key: str,
    timestamp_ms: int,
    recv_window: str | None,
    sign: Signer,
) -> tuple[tuple[str, str], ...]:
    """A WebSocket API request's params with ``apiKey``, ``timestamp``, ``recvWindow`` and ``signature``.

    Sorted by name, ``signature`` last. Every value is a string: send ``timestamp`` and
    ``recvWindow`` as JSON numbers.

    Raises:
        SignError: ``params`` already hold one of the names this function adds.
    """
    signed = list(params)
    if {name for name, _ in signed} & {"apiKey", "timestamp", "recvWindow", "signature"}:
        raise SignError("binance-ws: the params must not carry apiKey, timestamp, recvWindow or signature")
    signed += [("apiKey", api_key), ("timestamp", str(timestamp_ms))]
    if recv_window is not None:
        signed.append(("recvWindow", recv_window))
    return (*sorted(signed), ("signature", sign(ws_payload(signed))))


class BinanceWsLogon:
    """The WebSocket API ``session.logon`` params, signed with the Ed25519 key.

    ``Signed.query`` holds the params (``apiKey``, ``recvWindow`` if set, ``timestamp``,
    ``signature``); headers and body are empty. The request's method, host and path only serve
    the allow-list; it must carry no query parameters of its own.
    """

    name = "binance-ws-logon"
    key_kind = "ed25519"
    remote_primitive = "sign/ed25519"

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        check_request(request, self.name)
        check_extra(request, _EXTRA, self.name)
        if request.query or request.body:
            raise SignError(f"{self.name}: session.logon takes no parameters besides those the scheme adds")
        knob = request.extra.get("recvWindow")
        window = DEFAULT_RECV_WINDOW_MS if knob is None else _recv_window(knob, self.name)
        params = ws_signed_params(
            (),
            api_key=keys.api_key,
            timestamp_ms=request.timestamp_ms,
            recv_window=knob,
            sign=_ed25519_signer(keys, self.name),
        )
        return Signed({}, params, b"", (request.timestamp_ms + window) / 1000)

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"
