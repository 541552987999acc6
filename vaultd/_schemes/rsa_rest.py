"""REST signatures with an RSA key: Binance (``binance-rsa``) and Bybit V5 self-generated keys (``bybit-rsa``).

Both sign the very payload of their HMAC scheme with RSASSA-PKCS1-v1_5 over SHA-256 and send the
signature base64-encoded:

- Binance Spot API docs ("Request security", "SIGNED Endpoint Examples", RSA keys): the payload
  of ``binance-hmac`` (:func:`.binance.sign_rest`), ``signature`` = base64 of the RSA signature,
  percent-encoded where it is sent (it holds ``+``, ``/`` and ``=``).
- Bybit V5 docs ("Integration Guidance", "Authentication"): self-generated API keys are RSA;
  the string to sign is ``bybit``'s (:func:`.bybit.string_to_sign`), ``X-BAPI-SIGN`` its base64
  RSA-SHA256 signature; the other headers are ``bybit``'s, ``X-BAPI-SIGN-TYPE: 2`` included, as
  Bybit's RSA sample and its SDK pybit (``_http_manager.generate_signature``) send them.

The key is an RSA private key of at least 2048 bits (:func:`._keys.load_rsa_key`), or one held
in OpenBao transit (``remote_primitive`` "sign/rsa-pkcs1v15-sha256": ``transit/sign`` with
``signature_algorithm=pkcs1v15``, ``hash_algorithm=sha2-256``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric import rsa

from ._base import FORM, JSON, Keys, Signed, SignError, SignRequest, body_headers, check_extra, check_request
from ._keys import sign_rsa
from .binance import sign_rest
from .bybit import _recv_window, string_to_sign

__all__ = ["BinanceRsa", "BybitRsa", "rsa_signer"]


def rsa_signer(keys: Keys, scheme: str) -> Callable[[bytes], str]:
    """base64 of the RSASSA-PKCS1-v1_5 SHA-256 signature of bytes, with the credential's RSA key.

    Raises:
        SignError: the keys hold no RSA private key and no remote key.
    """
    remote = keys.remote
    if remote is not None:
        return lambda payload: base64.b64encode(remote.sign(payload, "rsa-pkcs1v15-sha256")).decode("ascii")
    key = keys.signing_key
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SignError(f"{scheme}: needs an RSA private key ('private_key', PEM)")
    return lambda payload: base64.b64encode(sign_rsa(key, payload)).decode("ascii")


class BinanceRsa:
    """Binance REST requests signed with an RSA key: base64 signature, percent-encoded when sent."""

    name = "binance-rsa"
    key_kind = "rsa"
    remote_primitive = "sign/rsa-pkcs1v15-sha256"

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        """Raises: SignError: as ``binance-hmac``, or no RSA key."""
        signed = sign_rest(request, keys, self.name, rsa_signer(keys, self.name))
        return replace(signed, headers={**signed.headers, **body_headers(signed.body, FORM)})

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"


class BybitRsa:
    """Bybit V5 REST with a self-generated (RSA) key: base64 RSA-SHA256 in ``X-BAPI-SIGN``."""

    name = "bybit-rsa"
    key_kind = "rsa"
    remote_primitive = "sign/rsa-pkcs1v15-sha256"

    def sign(self, request: SignRequest, keys: Keys) -> Signed:
        """Raises: SignError: a bad ``recv_window``, no RSA key, a malformed request."""
        check_request(request, self.name)
        check_extra(request, frozenset({"recv_window"}), self.name)
        window = _recv_window(request)
        signature = rsa_signer(keys, self.name)(string_to_sign(request, keys.api_key, window))
        headers = {
            "X-BAPI-API-KEY": keys.api_key,
            "X-BAPI-TIMESTAMP": str(request.timestamp_ms),
            "X-BAPI-RECV-WINDOW": str(window),
            "X-BAPI-SIGN": signature,
            "X-BAPI-SIGN-TYPE": "2",
            **body_headers(request.body, JSON),
        }
        return Signed(headers, request.query, request.body, (request.timestamp_ms + window) / 1000)

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"
