"""Kraken Spot REST signatures: ``API-Sign`` over the URI path and the nonce-bearing body.

Kraken's REST docs ("Spot REST Authentication", "Setting the API-Sign Parameter"):
``API-Sign`` = base64(HMAC-SHA512(base64-decoded secret, URI path + SHA256(nonce + POST data))),
``API-Key`` = the public key, and the ``nonce`` travels in the body.

The daemon owns the nonce (strictly increasing, persisted): :attr:`SignRequest.nonce` is
required. The body is either form data or, for the endpoints that take JSON (AddOrderBatch,
CancelOrderBatch, ...), one JSON object; anything else is refused, never rewritten.

- A form body without ``nonce`` gets ``nonce=<nonce>`` put first.
- A JSON object without ``"nonce"`` gets ``"nonce":"<nonce>"`` put first, as a string, right
  after the opening ``{`` (ccxt 4.5.90 ``kraken.sign`` serialises ``{"nonce": str(nonce), **params}``
  compactly: for a compact body of the same params this is byte for byte its body); the rest of
  the engine's bytes stay as they were. It is sent with ``Content-Type: application/json``.
- A body that carries the daemon's nonce (form value, JSON string or JSON integer, as Kraken's
  own AddOrderBatch example has it) is signed as it is; one that carries another nonce, or
  carries it twice, is refused: the daemon's must win.

Kraken nonces do not expire, so ``valid_until`` is a convention, not Kraken's: the request's
timestamp plus 60 seconds, after which the engine should ask for a fresh signature (and nonce).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any
from urllib.parse import parse_qsl

from ._base import (
    FORM,
    JSON,
    Keys,
    Signed,
    SignError,
    SignRequest,
    body_headers,
    check_extra,
    check_request,
    daemon_nonce,
    hmac_signer,
)

__all__ = ["Kraken", "body_with_nonce"]

VALID_FOR_S = 60.0
_JSON_WHITESPACE = b" \t\r\n"


class _Pairs(list[tuple[str, Any]]):
    """A JSON object's members in order (``object_pairs_hook``): top-level object or not."""


def body_with_nonce(body: bytes, nonce: int) -> tuple[bytes, str]:
    """The body to send and sign, and its media type (FORM or JSON): ``body`` with the daemon's
    nonce first unless it carries it already.

    Raises:
        SignError: the body is neither form data nor a JSON object, or carries a different or
            repeated nonce.
    """
    if body.lstrip(_JSON_WHITESPACE).startswith(b"{"):
        return _json_with_nonce(body, nonce), JSON
    if not body.isascii():
        raise SignError("kraken: 'body' must be form-encoded ASCII (percent-encode other characters) or a JSON object")
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True) if body else []
    except ValueError:
        raise SignError("kraken: 'body' must be form-encoded (name=value&...) or a JSON object") from None
    carried = [value for name, value in pairs if name == "nonce"]
    _check_carried(carried, nonce, lambda value: value == str(nonce))
    if carried:
        return body, FORM
    return f"nonce={nonce}".encode("ascii") + (b"&" + body if body else b""), FORM


def _json_with_nonce(body: bytes, nonce: int) -> bytes:
    try:
        members = json.loads(body, object_pairs_hook=_Pairs)
    except (ValueError, UnicodeDecodeError):
        raise SignError("kraken: a 'body' starting with '{' must be one JSON object") from None
    except RecursionError:  # nested deeper than Python's parser goes: no venue needs that
        raise SignError("kraken: the JSON 'body' is nested too deeply") from None
    if not isinstance(members, _Pairs):  # pragma: no cover - a body starting with '{' parses to one
        raise SignError("kraken: a 'body' starting with '{' must be one JSON object")
    carried = [value for name, value in members if name == "nonce"]
    _check_carried(
        carried,
        nonce,
        lambda value: value == str(nonce) or (type(value) is int and value == nonce),
    )
    if carried:
        return body
    brace = body.index(b"{") + 1
    member = f'"nonce":"{nonce}"'.encode("ascii") + (b"," if members else b"")
    return body[:brace] + member + body[brace:]


def _check_carried(carried: list[Any], nonce: int, same: Any) -> None:
    if len(carried) > 1:
        raise SignError("kraken: 'body' carries 'nonce' twice")
    if carried and not same(carried[0]):
        raise SignError("kraken: the body's 'nonce' differs from the nonce the daemon chose")


class Kraken:
    """Kraken Spot REST: HMAC-SHA512 keyed with the base64-decoded private key."""

    name = "kraken"
    key_kind = "hmac"
    secret_encoding = "base64"
    remote_primitive = "hmac/sha2-512"

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        """Raises: SignError: no nonce, a conflicting body nonce, a body neither form nor JSON object."""
        check_request(request, self.name)
        check_extra(request, frozenset(), self.name)
        nonce = daemon_nonce(request, self.name)
        mac_of = hmac_signer(keys, self.name, "sha2-512")
        body, media_type = body_with_nonce(request.body, nonce)
        digest = hashlib.sha256(str(nonce).encode("ascii") + body).digest()
        mac = mac_of(request.path.encode("ascii") + digest)
        headers = {
            "API-Key": keys.api_key,
            "API-Sign": base64.b64encode(mac).decode("ascii"),
            **body_headers(body, media_type),
        }
        return Signed(headers, request.query, body, request.timestamp_ms / 1000 + VALID_FOR_S)

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"
