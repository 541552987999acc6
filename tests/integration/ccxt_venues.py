"""Local stand-ins for the venues vaultd_client.ccxt signs for: each checks the signature with the
secret, as the venue's docs describe it (written out here, never by calling vaultd's schemes),
and answers the least JSON ccxt parses.

Fake credentials only. Each ``Venue`` knows its credential config, how to check one request, what
to answer, and the markets ccxt needs (set directly: no market download).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import msgpack
from coincurve import PublicKey
from Crypto.Hash import keccak
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

API_KEY = "fake-api-key-1"
HMAC_SECRET = "fake-hmac-secret-0123456789"
#: Kraken hands out a base64 private key; these are 64 fake bytes.
KRAKEN_SECRET = base64.b64encode(bytes(range(64))).decode()
OKX_PASSPHRASE = "fake-okx-passphrase"
COINBASE_KEY_NAME = "organizations/fake-org/apiKeys/fake-key"
COINBASE_KEY = ec.generate_private_key(ec.SECP256R1())
COINBASE_PEM = COINBASE_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
).decode()


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PEM = RSA_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


def _rsa_ok(signature_b64: str, payload: bytes) -> bool:
    try:
        RSA_KEY.public_key().verify(base64.b64decode(signature_b64), payload, padding.PKCS1v15(), hashes.SHA256())
    except Exception:
        return False
    return True


@dataclass(frozen=True)
class Seen:
    method: str
    target: str  # path?query as sent
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> str:
        return urlsplit(self.target).query


Verifier = Callable[[Seen], bool]


# -- the venues' signatures, from their docs ---------------------------------------------------


def binance_ok(seen: Seen) -> bool:
    """Binance Spot API docs, "SIGNED (TRADE, USER_DATA) Endpoint security": HMAC-SHA256 hex of
    totalParams = query string + request body (without the signature), key = the secret key."""
    query, body = seen.query, seen.body.decode()
    if body:
        rest, _, signature = body.rpartition("&signature=")
        payload = query + rest
    else:
        payload, _, signature = query.rpartition("&signature=")
    expected = hmac.new(HMAC_SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return seen.headers.get("X-MBX-APIKEY") == API_KEY and hmac.compare_digest(signature, expected)


def binance_rsa_ok(seen: Seen) -> bool:
    """Binance Spot API docs, "SIGNED Endpoint Examples" with RSA keys: the same totalParams
    payload, signed RSASSA-PKCS1-v1_5 SHA-256, base64, percent-encoded in the request."""
    query, body = seen.query, seen.body.decode()
    if body:
        rest, _, signature = body.rpartition("&signature=")
        payload = query + rest
    else:
        payload, _, signature = query.rpartition("&signature=")
    return seen.headers.get("X-MBX-APIKEY") == API_KEY and _rsa_ok(unquote(signature), payload.encode())


def _kraken_nonce(seen: Seen) -> str:
    """The body's ``nonce``: a form field, or, in a JSON body (Content-Type application/json, as
    AddOrderBatch takes: Kraken's docs show it as a string or a number), the object's member."""
    if seen.headers.get("Content-Type") == "application/json":
        try:
            nonce = json.loads(seen.body).get("nonce")
        except (ValueError, AttributeError):
            return ""
        return str(nonce) if type(nonce) in (str, int) else ""
    return dict(parse_qsl(seen.body.decode(), keep_blank_values=True)).get("nonce", "")


def kraken_ok(seen: Seen) -> bool:
    """Kraken "Spot REST Authentication": API-Sign = base64(HMAC-SHA512(base64-decoded secret,
    URI path + SHA256(nonce + POST data))), the nonce being the body's ``nonce`` (form or JSON)."""
    nonce = _kraken_nonce(seen)
    digest = hashlib.sha256(nonce.encode() + seen.body).digest()
    mac = hmac.new(base64.b64decode(KRAKEN_SECRET), seen.path.encode() + digest, hashlib.sha512).digest()
    return (
        seen.headers.get("API-Key") == API_KEY
        and nonce.isdigit()
        and hmac.compare_digest(seen.headers.get("API-Sign", ""), base64.b64encode(mac).decode())
    )


def okx_ok(seen: Seen) -> bool:
    """OKX v5 "REST Authentication": OK-ACCESS-SIGN = base64(HMAC-SHA256(secret, timestamp + method
    + requestPath (with ?query) + body)), the timestamp being OK-ACCESS-TIMESTAMP (ISO, ms)."""
    stamp = seen.headers.get("OK-ACCESS-TIMESTAMP", "")
    prehash = (stamp + seen.method + seen.target).encode() + seen.body
    mac = base64.b64encode(hmac.new(HMAC_SECRET.encode(), prehash, hashlib.sha256).digest()).decode()
    return (
        seen.headers.get("OK-ACCESS-KEY") == API_KEY
        and seen.headers.get("OK-ACCESS-PASSPHRASE") == OKX_PASSPHRASE
        and abs(datetime.fromisoformat(stamp).timestamp() - datetime.now().timestamp()) < 30
        and hmac.compare_digest(seen.headers.get("OK-ACCESS-SIGN", ""), mac)
    )


def bybit_ok(seen: Seen) -> bool:
    """Bybit V5 "Integration Guidance" / authentication: X-BAPI-SIGN = hex HMAC-SHA256(secret,
    timestamp + api_key + recv_window + (queryString for GET | jsonBodyString for POST))."""
    h = seen.headers
    payload = seen.query.encode() if seen.method == "GET" else seen.body
    prefix = h.get("X-BAPI-TIMESTAMP", "") + h.get("X-BAPI-API-KEY", "") + h.get("X-BAPI-RECV-WINDOW", "")
    expected = hmac.new(HMAC_SECRET.encode(), prefix.encode() + payload, hashlib.sha256).hexdigest()
    return h.get("X-BAPI-API-KEY") == API_KEY and hmac.compare_digest(h.get("X-BAPI-SIGN", ""), expected)


def bybit_rsa_ok(seen: Seen) -> bool:
    """Bybit V5 authentication with a self-generated (RSA) key: X-BAPI-SIGN = base64 RSA-SHA256
    (PKCS1 v1.5) over the same timestamp + api_key + recv_window + payload."""
    h = seen.headers
    payload = seen.query.encode() if seen.method == "GET" else seen.body
    prefix = h.get("X-BAPI-TIMESTAMP", "") + h.get("X-BAPI-API-KEY", "") + h.get("X-BAPI-RECV-WINDOW", "")
    return h.get("X-BAPI-API-KEY") == API_KEY and _rsa_ok(h.get("X-BAPI-SIGN", ""), prefix.encode() + payload)


def deribit_ok(seen: Seen) -> bool:
    """Deribit v2 "Authentication", Deribit signature credentials: ``Authorization:
    deri-hmac-sha256 id=ClientId,ts=Timestamp,sig=Signature,nonce=Nonce``, Signature = hex
    HMAC-SHA256(ClientSecret, Timestamp\\nNonce\\nMETHOD\\nURI\\nBody\\n)."""
    scheme, _, fields = seen.headers.get("Authorization", "").partition(" ")
    parts = dict(item.split("=", 1) for item in fields.split(",") if "=" in item)
    data = f"{parts.get('ts')}\n{parts.get('nonce')}\n{seen.method}\n{seen.target}\n".encode() + seen.body + b"\n"
    expected = hmac.new(HMAC_SECRET.encode(), data, hashlib.sha256).hexdigest()
    return (
        scheme == "deri-hmac-sha256"
        and parts.get("id") == API_KEY
        and hmac.compare_digest(parts.get("sig", ""), expected)
    )


def kucoin_ok(seen: Seen) -> bool:
    """KuCoin "Authentication": KC-API-SIGN = base64(HMAC-SHA256(secret, timestamp + METHOD +
    endpoint (path with ?query) + body)); for key version 2, KC-API-PASSPHRASE = base64(HMAC-SHA256(
    secret, passphrase))."""
    h = seen.headers
    prehash = (h.get("KC-API-TIMESTAMP", "") + seen.method + seen.target).encode() + seen.body
    sign = base64.b64encode(hmac.new(HMAC_SECRET.encode(), prehash, hashlib.sha256).digest()).decode()
    phrase = base64.b64encode(hmac.new(HMAC_SECRET.encode(), OKX_PASSPHRASE.encode(), hashlib.sha256).digest()).decode()
    return (
        h.get("KC-API-KEY") == API_KEY
        and h.get("KC-API-KEY-VERSION") == "2"
        and h.get("KC-API-PASSPHRASE") == phrase
        and hmac.compare_digest(h.get("KC-API-SIGN", ""), sign)
    )


def bitget_ok(seen: Seen) -> bool:
    """Bitget "Signature": ACCESS-SIGN = base64(HMAC-SHA256(secret, timestamp + METHOD +
    requestPath + ("?" + queryString if any) + body)), ACCESS-PASSPHRASE beside it."""
    h = seen.headers
    query = f"?{unquote(seen.query)}" if seen.query else ""
    prehash = (h.get("ACCESS-TIMESTAMP", "") + seen.method + seen.path + query).encode() + seen.body
    sign = base64.b64encode(hmac.new(HMAC_SECRET.encode(), prehash, hashlib.sha256).digest()).decode()
    return (
        h.get("ACCESS-KEY") == API_KEY
        and h.get("ACCESS-PASSPHRASE") == OKX_PASSPHRASE
        and hmac.compare_digest(h.get("ACCESS-SIGN", ""), sign)
    )


def gate_ok(seen: Seen) -> bool:
    """Gate v4 "API Signature string generation": SIGN = hex(HMAC-SHA512(secret, METHOD\npath\n
    query (not URL-encoded)\nhex(SHA512(body))\ntimestamp (seconds)))."""
    h = seen.headers
    body_hash = hashlib.sha512(seen.body).hexdigest()
    text = f"{seen.method}\n{seen.path}\n{unquote(seen.query)}\n{body_hash}\n{h.get('Timestamp', '')}"
    sign = hmac.new(HMAC_SECRET.encode(), text.encode(), hashlib.sha512).hexdigest()
    return h.get("KEY") == API_KEY and hmac.compare_digest(h.get("SIGN", ""), sign)


def kraken_futures_ok(seen: Seen) -> bool:
    """Kraken Futures "Authentication": Authent = base64(HMAC-SHA512(base64-decoded secret,
    SHA256(postData + Nonce + endpointPath))), endpointPath without the /derivatives prefix."""
    h = seen.headers
    post_data = seen.query or seen.body.decode()
    path = seen.path.removeprefix("/derivatives")
    digest = hashlib.sha256((post_data + h.get("Nonce", "") + path).encode()).digest()
    authent = base64.b64encode(hmac.new(base64.b64decode(KRAKEN_SECRET), digest, hashlib.sha512).digest()).decode()
    return (
        h.get("APIKey") == API_KEY
        and h.get("Nonce", "0").isdigit()  # optional in Kraken's docs; vaultd always sends one
        and hmac.compare_digest(h.get("Authent", ""), authent)
    )


#: A fake secp256k1 key (the eth-account docs' example key, never funded) and its wallet address.
HYPERLIQUID_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
HYPERLIQUID_ADDRESS = "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"


def _keccak(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


def hyperliquid_signer(seen: Seen, network: str) -> str | None:
    """Hyperliquid "Exchange endpoint" / "Signing" (the docs point to the Python SDK's
    ``sign_l1_action``): connectionId = keccak256(msgpack(action) + nonce as 8 bytes big-endian +
    (00 | 01 + the vault's 20 bytes) [+ 00 + expiresAfter as 8 bytes]); the EIP-712 digest of
    Agent{source: "a" mainnet | "b" testnet, connectionId} in the domain {name "Exchange", version
    "1", chainId 1337, verifyingContract 0x0}; the signer is the address recovered from {r, s, v}.
    The action is packed as posted (its keys in the order sent, as the SDK sends them). The
    recovered address (lower case), or None for a body that is not such a signed action."""
    try:
        body = json.loads(seen.body)
        action, nonce, signature = body["action"], body["nonce"], body["signature"]
        data = msgpack.packb(action) + nonce.to_bytes(8, "big")
        vault, expires = body.get("vaultAddress"), body.get("expiresAfter")
        data += b"\x00" if vault is None else b"\x01" + bytes.fromhex(vault[2:])
        if expires is not None:
            data += b"\x00" + expires.to_bytes(8, "big")
        connection_id = _keccak(data)
        domain = _keccak(
            _keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
            + _keccak(b"Exchange")
            + _keccak(b"1")
            + (1337).to_bytes(32, "big")
            + bytes(32)
        )
        source = {"mainnet": b"a", "testnet": b"b"}[network]
        agent = _keccak(_keccak(b"Agent(string source,bytes32 connectionId)") + _keccak(source) + connection_id)
        digest = _keccak(b"\x19\x01" + domain + agent)
        r, s = bytes.fromhex(signature["r"][2:]), bytes.fromhex(signature["s"][2:])
        sig65 = r.rjust(32, b"\x00") + s.rjust(32, b"\x00") + bytes([signature["v"] - 27])
        public = PublicKey.from_signature_and_message(sig65, digest, hasher=None)
    except Exception:
        return None
    return "0x" + _keccak(public.format(compressed=False)[1:])[-20:].hex()


def hyperliquid_verifier(network: str) -> Verifier:
    """``/exchange``: an L1 action signed for ``network`` by the test key's wallet, its nonce within
    Hyperliquid's window (T - 2 days, T + 1 day); ``/info`` is public (nothing to check)."""

    def verify(seen: Seen) -> bool:
        if seen.method == "POST" and seen.path == "/info":
            return True
        body = json.loads(seen.body or b"null")
        nonce = body.get("nonce") if isinstance(body, dict) else None
        now_ms = datetime.now().timestamp() * 1000
        return (
            seen.method == "POST"
            and seen.path == "/exchange"
            and seen.headers.get("Content-Type") == "application/json"
            and isinstance(nonce, int)
            and now_ms - 2 * 86_400_000 < nonce < now_ms + 86_400_000
            and hyperliquid_signer(seen, network) == HYPERLIQUID_ADDRESS
        )

    return verify


HYPERLIQUID_ORDER = {"status": "ok", "response": {"type": "order", "data": {"statuses": [{"resting": {"oid": 11}}]}}}


def hyperliquid_exchange(seen: Seen) -> Any:
    """What /exchange answers: an order resting (oid 11), else Hyperliquid's plain "ok"."""
    if json.loads(seen.body)["action"]["type"] == "order":
        return HYPERLIQUID_ORDER
    return {"status": "ok", "response": {"type": "default"}}


def hyperliquid_info(seen: Seen) -> Any:
    """What /info answers ccxt's fetch_balance: the account's abstraction (not unified: perps
    balance), its perps clearinghouse state, its spot balances."""
    query = json.loads(seen.body)
    kind = query.get("type")
    if query.get("user", "").lower() != HYPERLIQUID_ADDRESS:
        return {"error": "unknown user"}
    if kind == "userAbstraction":
        return "disabled"
    if kind == "clearinghouseState":
        summary = {"accountValue": "1.5", "totalMarginUsed": "0.0", "totalNtlPos": "0.0", "totalRawUsd": "1.5"}
        return {
            "assetPositions": [], "crossMaintenanceMarginUsed": "0.0", "crossMarginSummary": summary,
            "marginSummary": summary, "time": "1704261007014", "withdrawable": "1.5",
        }  # fmt: skip
    if kind == "spotClearinghouseState":
        return {"balances": [{"coin": "USDC", "hold": "0.0", "total": "1.5"}]}
    return {"error": f"no answer for info type {kind!r}"}


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def coinbase_host(seen: Seen) -> str:
    return seen.headers.get("Host", "")


def coinbase_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Coinbase CDP "API Key Authentication": a JWT, ES256 over header.claims, checked with the key's
    public half; header kid = the key name; claims iss "cdp", sub = the key name, nbf/exp around now.
    The header and claims when all holds, else None."""
    try:
        header_b64, claims_b64, signature_b64 = token.split(".")
        header, claims = json.loads(_unb64url(header_b64)), json.loads(_unb64url(claims_b64))
        raw = _unb64url(signature_b64)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        COINBASE_KEY.public_key().verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except Exception:
        return None
    now = datetime.now().timestamp()
    ok = (
        header.get("alg") == "ES256"
        and header.get("kid") == COINBASE_KEY_NAME
        and claims.get("iss") == "cdp"
        and claims.get("sub") == COINBASE_KEY_NAME
        and claims["nbf"] - 5 <= now <= claims["exp"]
    )
    return (header, claims) if ok else None


def coinbase_ok(seen: Seen) -> bool:
    """The CDP JWT as a bearer token, its ``uri`` claim = "METHOD host/path"."""
    decoded = coinbase_jwt(seen.headers.get("Authorization", "").removeprefix("Bearer "))
    return decoded is not None and decoded[1].get("uri") == f"{seen.method} {coinbase_host(seen)}{seen.path}"


def coinbase_ws_ok(message: dict[str, Any]) -> bool:
    """Coinbase "Advanced Trade WebSocket Authentication": the subscribe message's ``jwt``, a CDP
    JWT "not built with a request method or request path" (no ``uri``)."""
    decoded = coinbase_jwt(str(message.get("jwt")))
    return decoded is not None and "uri" not in decoded[1] and "signature" not in message


# -- a server for one venue --------------------------------------------------------------------


@dataclass
class VenueServer:
    verify: Verifier
    #: By path suffix: the JSON to answer, or a function of the request that makes it.
    answers: dict[str, Any]
    seen: list[tuple[Seen, bool]] = field(default_factory=list)
    url: str = ""

    def answer(self, seen: Seen) -> tuple[int, Any]:
        ok = self.verify(seen)
        self.seen.append((seen, ok))
        if not ok:
            return 401, {"error": "signature check failed at the verifying server"}
        for prefix, body in self.answers.items():
            if seen.path.endswith(prefix):
                return 200, body(seen) if callable(body) else body
        return 404, {"error": f"no answer for {seen.path}"}

    @property
    def verified(self) -> list[Seen]:
        return [seen for seen, ok in self.seen if ok]

    @property
    def rejected(self) -> list[Seen]:
        return [seen for seen, ok in self.seen if not ok]


@contextmanager
def serve(venue: VenueServer) -> Iterator[VenueServer]:
    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
            status, body = venue.answer(seen)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PUT = _any

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    venue.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield venue
    finally:
        server.shutdown()
        server.server_close()


def point_at(exchange: Any, base: str) -> None:
    """Send every REST call of ``exchange`` to ``base`` (scheme and host swapped, paths kept)."""

    def swap(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: swap(item) for key, item in value.items()}
        if isinstance(value, str) and value.startswith("https://"):
            parts = urlsplit(value)
            return base + parts.path
        return value

    exchange.urls["api"] = swap(exchange.urls["api"])
    exchange.hostname = base.removeprefix("http://")


# -- WebSocket logins (ccxt.pro) -------------------------------------------------------------

BINANCE_ED25519 = ed25519.Ed25519PrivateKey.generate()
BINANCE_ED25519_PEM = BINANCE_ED25519.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


def binance_ws_login_ok(message: dict[str, Any]) -> bool:
    """Binance WebSocket API, "Request security" / "SIGNED request example (Ed25519)": the params
    but ``signature``, sorted by name, ``name=value`` joined by ``&``, Ed25519-signed, base64."""
    params = dict(message.get("params") or {})
    signature = params.pop("signature", "")
    payload = "&".join(f"{name}={value}" for name, value in sorted(params.items())).encode()
    try:
        BINANCE_ED25519.public_key().verify(base64.b64decode(signature), payload)
    except Exception:
        return False
    return params.get("apiKey") == API_KEY and isinstance(params.get("timestamp"), int)


def okx_ws_login_ok(message: dict[str, Any]) -> bool:
    """OKX v5 "WebSocket" / "Login": sign = base64(HMAC-SHA256(secret, timestamp (seconds) + "GET"
    + "/users/self/verify")), with apiKey and passphrase beside it."""
    args = (message.get("args") or [{}])[0]
    prehash = f"{args.get('timestamp')}GET/users/self/verify".encode()
    expected = base64.b64encode(hmac.new(HMAC_SECRET.encode(), prehash, hashlib.sha256).digest()).decode()
    return (
        message.get("op") == "login"
        and args.get("apiKey") == API_KEY
        and args.get("passphrase") == OKX_PASSPHRASE
        and abs(int(args.get("timestamp", 0)) - datetime.now().timestamp()) < 30
        and hmac.compare_digest(args.get("sign", ""), expected)
    )


def bybit_ws_auth_ok(message: dict[str, Any]) -> bool:
    """Bybit V5 "WebSocket Stream" / "Authentication": args [apiKey, expires (ms, in the future),
    hex HMAC-SHA256(secret, "GET/realtime" + expires)]."""
    key, expires, signature = (message.get("args") or [None, 0, ""])[:3]
    expected = hmac.new(HMAC_SECRET.encode(), f"GET/realtime{expires}".encode(), hashlib.sha256).hexdigest()
    return (
        message.get("op") == "auth"
        and key == API_KEY
        and int(expires) > datetime.now().timestamp() * 1000
        and hmac.compare_digest(str(signature), expected)
    )


@dataclass
class WsVenue:
    """A WebSocket endpoint: ``reply(message)`` answers each JSON message (None: no answer)."""

    reply: Callable[[dict[str, Any]], dict[str, Any] | None]
    seen: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    #: Set at each message the server receives.
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def ws_serve(venue: WsVenue) -> AsyncIterator[WsVenue]:
    from aiohttp import WSMsgType, web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            if frame.data == "ping":
                await ws.send_str("pong")
                continue
            message = json.loads(frame.data)
            venue.seen.append(message)
            venue.arrived.set()
            answer = venue.reply(message)
            if answer is not None:
                await ws.send_str(json.dumps(answer))
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    venue.url = f"ws://127.0.0.1:{port}"
    try:
        yield venue
    finally:
        await runner.cleanup()
