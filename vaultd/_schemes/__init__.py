"""Request signing schemes, by name: pure functions from (request, keys) to what to attach."""

from __future__ import annotations

from ._base import Keys, Scheme, Signed, SignError, SignRequest, decode_secret, encode_query
from .binance import BinanceEd25519, BinanceHmac, BinanceWsLogon
from .bybit import Bybit
from .coinbase import Coinbase
from .coinbase_ws import CoinbaseWsJwt
from .deribit import Deribit
from .hyperliquid import Hyperliquid
from .kraken import Kraken
from .okx import Okx
from .rsa_rest import BinanceRsa, BybitRsa

__all__ = [
    "SCHEMES",
    "Keys",
    "Scheme",
    "SignError",
    "SignRequest",
    "Signed",
    "decode_secret",
    "encode_query",
]

_ALL: tuple[Scheme, ...] = (
    BinanceHmac(),
    BinanceEd25519(),
    BinanceWsLogon(),
    Kraken(),
    Okx(),
    Bybit(),
    Deribit(),
    Coinbase(),
    BinanceRsa(),
    BybitRsa(),
    CoinbaseWsJwt(),
    Hyperliquid(),
)
SCHEMES: dict[str, Scheme] = {scheme.name: scheme for scheme in _ALL}
