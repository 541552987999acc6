"""Request signing schemes, by name: pure functions from (request, keys) to what to attach."""

from __future__ import annotations

from ._base import Keys, Scheme, Signed, SignError, SignRequest, decode_secret, encode_query
from .binance import BinanceEd25519, BinanceHmac, BinanceWsLogon
from .bitget import Bitget
from .bybit import Bybit
from .bybit_ws import BybitWsAuth
from .coinbase import Coinbase
from .coinbase_ws import CoinbaseWsJwt
from .deribit import Deribit
from .gate import Gate
from .hyperliquid import Hyperliquid
from .kraken import Kraken
from .kraken_futures import KrakenFutures
from .kucoin import Kucoin
from .okx import Okx
from .okx_ws import OkxWsLogin
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
    Kucoin(),
    Bitget(),
    Gate(),
    KrakenFutures(),
    OkxWsLogin(),
    BybitWsAuth(),
    BinanceRsa(),
    BybitRsa(),
    CoinbaseWsJwt(),
    Hyperliquid(),
)
SCHEMES: dict[str, Scheme] = {scheme.name: scheme for scheme in _ALL}
