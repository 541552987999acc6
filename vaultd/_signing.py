"""``token.sign``: from an engine's request to what it must attach, through the allow-list.

Parses the URL, asks the credential's allow-list, fills in the time and (for Kraken) the
daemon-owned nonce, and hands the rest to the exchange's scheme. A Kraken nonce above the
vault's written high-water mark is used only after a higher mark is on disk.

A credential whose key is in OpenBao transit (``backend``) signs on the slow path: everything
above first (a refusal costs no round trip; the nonce mark is on disk before OpenBao is asked),
then the scheme's two passes around one transit call (:mod:`vaultd._schemes._remote`).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

import trio

from vaultd_protocol import ErrorCode

from ._credentials import Credential
from ._errors import RpcError
from ._providers._http import is_loopback
from ._providers.sign import SignProvider, Transit, TransitBackend
from ._schemes import SCHEMES, Signed, SignError, SignRequest, encode_query

__all__ = ["answers_now", "sign_now", "sign_request"]

log = logging.getLogger("vaultd.sign")

#: How far an engine's timestamp may stray from the daemon's clock: signatures for later use
#: would outlive a change of the allow-list.
_AHEAD_MS, _PAST_MS = 60_000, 300_000
#: Schemes whose signature costs milliseconds (RSA keys, up to 4096 bits): signed in a task of
#: their own, never on the server's hot path, which answers pipelined requests without yielding.
_COSTLY = frozenset(name for name, scheme in SCHEMES.items() if scheme.key_kind == "rsa")
#: Schemes whose signed string carries a random nonce that the daemon picks.
_RANDOM_NONCE = frozenset({"deribit", "coinbase", "coinbase-ws-jwt"})


def _invalid(message: str) -> RpcError:
    return RpcError(ErrorCode.INVALID_PARAMS, message)


class _Prepared(NamedTuple):
    """A checked request, everything decided but the Kraken nonce (a tuple: built on every
    request, four times quicker than a frozen dataclass)."""

    provider: SignProvider
    method: str
    scheme: str
    netloc: str
    path: str
    query: tuple[tuple[str, str], ...]
    body: bytes
    timestamp_ms: int
    proposed: int | None
    options: dict[str, str]


def sign_now(credential: Credential, request: dict[str, Any], clock: Callable[[], float]) -> dict[str, Any] | None:
    """The ``token.sign`` result at once, or None for a scheme whose nonce needs a vault write
    or a key in OpenBao transit.

    Raises:
        RpcError: as :func:`sign_request`.
    """
    if not answers_now(credential):
        return None  # a nonce that may need a vault write, or a round trip: the slow path, once
    prepared = _prepare(credential, request, clock)
    return _finish(prepared, prepared.proposed)


def answers_now(credential: Credential) -> bool:
    """Whether :func:`sign_now` answers for ``credential`` (a result or an error), never None:
    not for a nonce the daemon owns (Kraken Spot and Futures), a key in OpenBao transit, nor an
    RSA key (milliseconds a signature: many pipelined on the hot path would hold every engine).
    ``token.sign_many`` decides its hot path with it before signing anything."""
    provider = credential.provider
    if not isinstance(provider, SignProvider):
        return True
    return not (provider.owns_nonce or provider.backend is not None or provider.scheme in _COSTLY)


async def sign_request(
    credential: Credential,
    request: dict[str, Any],
    clock: Callable[[], float],
    nonce_lock: trio.Lock,
    persist: Callable[[], Awaitable[None]],
    *,
    transit: Transit | None = None,
) -> dict[str, Any]:
    """The ``token.sign`` result for one request.

    Raises:
        RpcError: INVALID_PARAMS (bad URL, method, timestamp, options, or a body the scheme
            refuses), FORBIDDEN (the allow-list), STORAGE_FAILED (a Kraken nonce mark);
            for a key in transit, UPSTREAM_UNAVAILABLE (no such upstream, or ``transit``'s own
            errors, passed through unchanged) and UNKNOWN_CREDENTIAL (removed or replaced while
            OpenBao signed).
    """
    prepared = _prepare(credential, request, clock)
    backend = prepared.provider.backend
    if backend is not None and transit is None:
        raise RpcError(ErrorCode.UPSTREAM_UNAVAILABLE, f"no upstream named {backend.upstream!r}: nothing signed")
    nonce = prepared.proposed
    if prepared.provider.owns_nonce:  # Kraken Spot and Futures
        now_ms = int(clock() * 1000)
        nonce = await _kraken_nonce(prepared.provider, prepared.proposed, now_ms, nonce_lock, persist)
    if transit is not None and backend is not None:
        return await _finish_through(credential.name, prepared, nonce, transit, backend)
    return _finish(prepared, nonce)


def _prepare(credential: Credential, request: dict[str, Any], clock: Callable[[], float]) -> _Prepared:
    if credential.hold is not None:
        raise credential.hold_refusal()
    provider = credential.provider
    if not isinstance(provider, SignProvider):
        raise _invalid(f"credential {credential.name!r} is a {provider.kind} credential: use token.get, not token.sign")
    if request.get("schemes") and provider.scheme not in request["schemes"]:
        raise _invalid(_wrong_scheme(credential.name, provider.scheme, request["schemes"]))
    method = str(request["method"]).upper()
    if not method.isalpha():
        raise _invalid("'method' must be an HTTP method such as GET or POST")
    scheme, netloc, path, query = _split_url(str(request["url"]), provider)
    # Remembered per (method, path): see AllowList. Hyperliquid's path judged comes from its body.
    allowed, why = provider.allow.decide(method, _judged_path(provider.scheme, path, request))
    if not allowed:
        log.warning("refused to sign for %r: %s", credential.name, why)
        raise RpcError(ErrorCode.FORBIDDEN, f"not signed: {why}")
    timestamp, proposed = request.get("timestamp"), request.get("nonce")
    for label, value in (("timestamp", timestamp), ("nonce", proposed)):
        if value is not None and not 0 < value < 2**63:
            raise _invalid(f"{label!r} must be a positive whole number")
    now_ms = int(clock() * 1000)
    if timestamp is not None and not now_ms - _PAST_MS <= timestamp <= now_ms + _AHEAD_MS:
        raise _invalid(
            "'timestamp' must be at most a minute ahead of and five minutes behind the daemon's clock (or left out)"
        )
    options = {**provider.options(), **(request.get("options") or {})}
    if provider.scheme in _RANDOM_NONCE:  # a random nonce in the signed string, new every time
        options.setdefault("nonce", secrets.token_hex(16))
    if options and not all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 256 for k, v in options.items()
    ):
        raise _invalid("'options' must map short strings to short strings")
    body = bytes(request.get("body") or b"")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid(f"'body' must be UTF-8 text: {provider.scheme} signs it as text") from None
    if provider.scheme == "deribit":
        _check_deribit_body(path, body)
    return _Prepared(provider, method, scheme, netloc, path, query, body, timestamp or now_ms, proposed, options)


def _wrong_scheme(name: str, scheme: str, expected: list[str]) -> str:
    """The refusal of a request whose ``schemes`` leave out the credential's: nothing signed."""
    shown = [s if s.isprintable() else "?" for s in expected]
    listed = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]
    return f"credential {name!r} signs with scheme {scheme!r}, not {listed}: nothing signed"


def _judged_path(scheme: str, path: str, request: dict[str, Any]) -> str:
    """The path the allow-list judges: the URL's, or what the scheme's ``judged_path`` makes of the
    path and body, for a venue whose endpoint is named in the body (Hyperliquid's action type)."""
    judge = getattr(SCHEMES[scheme], "judged_path", None)
    if judge is None:
        return path
    try:
        judged: str = judge(path, bytes(request.get("body") or b""))
    except SignError as exc:
        raise _invalid(str(exc)) from None
    return judged


def _check_deribit_body(path: str, body: bytes) -> None:
    """Deribit also takes JSON-RPC over HTTP, the endpoint named by the body's ``method``: a body
    naming another endpoint than the path would slip a withdrawal past the allow-list."""
    if b"method" not in body and b"\\" not in body:  # a JSON escape could spell the key ("\\u006dethod")
        return

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({key for key, _ in pairs}) != len(pairs):  # which one wins is the venue's choice
            raise _invalid("deribit: a JSON body must not repeat a key")
        return dict(pairs)

    try:
        call = json.loads(body, object_pairs_hook=unique)
    except ValueError:
        return  # not JSON: no method to route by
    except RecursionError:  # which endpoint it names cannot be known: refuse rather than guess
        raise _invalid("deribit: the JSON body is nested too deeply") from None
    if isinstance(call, dict) and "method" not in call:
        return
    if not isinstance(call, dict) or path != f"/api/v2/{call['method']}":
        raise _invalid("deribit: a JSON-RPC body must be one call whose 'method' names the path's endpoint")


def _signing(prepared: _Prepared, nonce: int | None) -> SignRequest:
    return SignRequest(
        method=prepared.method,
        host=prepared.netloc,
        path=prepared.path,
        query=prepared.query,
        body=prepared.body,
        timestamp_ms=prepared.timestamp_ms,
        nonce=nonce,
        extra=prepared.options,
    )


def _finish(prepared: _Prepared, nonce: int | None) -> dict[str, Any]:
    try:
        signed = prepared.provider.sign(_signing(prepared, nonce))
    except SignError as exc:
        raise _invalid(str(exc)) from None
    return _answer(prepared, signed, nonce)


#: What each transit primitive needs of the key, for the message when its answer does not fit.
_KEY_TYPES = {
    "hmac/sha2-256": "an imported hmac key",
    "hmac/sha2-512": "an imported hmac key",
    "sign/ed25519": "an ed25519 key",
    "sign/es256": "an ecdsa-p256 key",
    "sign/rsa-pkcs1v15-sha256": "an rsa-2048, rsa-3072 or rsa-4096 key",
}


async def _finish_through(
    name: str, prepared: _Prepared, nonce: int | None, transit: Transit, backend: TransitBackend
) -> dict[str, Any]:
    """Sign with the key in OpenBao transit: record the primitive, ask transit, replay."""
    provider, signing = prepared.provider, _signing(prepared, nonce)
    try:
        calls = provider.record(signing)  # every check the scheme makes, before any round trip
    except SignError as exc:
        raise _invalid(str(exc)) from None
    answers = []
    for call in calls:  # one per request: a scheme makes one primitive call
        ask = transit.hmac if call.operation == "hmac" else transit.sign
        answers.append(await ask(backend.upstream, backend.transit_key, call.data, algorithm=call.algorithm))
    if provider.wiped:  # locked away, removed or replaced during the round trip: serve nothing of it
        raise RpcError(
            ErrorCode.UNKNOWN_CREDENTIAL,
            f"credential {name!r} was removed or replaced while OpenBao signed: nothing signed (ask again)",
        )
    try:
        signed = provider.replay(signing, calls, answers)
    except SignError as exc:
        raise _invalid(str(exc)) from None
    except ValueError as exc:  # an answer of the wrong size: a key of another type
        needed = _KEY_TYPES[calls[0].primitive]
        raise RpcError(
            ErrorCode.UPSTREAM_UNAVAILABLE,
            f"nothing signed: transit key {backend.transit_key!r} of upstream {backend.upstream!r} answered "
            f"unusably ({exc}); {provider.scheme} needs {needed}",
        ) from None
    return _answer(prepared, signed, nonce)


def _answer(prepared: _Prepared, signed: Signed, nonce: int | None) -> dict[str, Any]:
    # Exactly as signed: not urlencode's '+' for spaces. The URL as urlunsplit would join it (the
    # path starts with '/', there is no fragment), without its generic cases.
    final_query = encode_query(signed.query) if signed.query_string is None else signed.query_string
    url = f"{prepared.scheme}://{prepared.netloc}{prepared.path}"
    return {
        "headers": dict(signed.headers),
        "url": f"{url}?{final_query}" if final_query else url,
        "query": [list(pair) for pair in signed.query],
        "body": signed.body,
        "valid_until": signed.valid_until,
        "nonce": nonce,
    }


_Split = tuple[str, str, str, tuple[tuple[str, str], ...]]
#: For each credential, the last URLs :func:`_split_url` accepted for it, and what it made of
#: them: an engine signs the same few endpoints over and over, and the answer depends on the
#: URL's text alone. Kept per credential (who could time a hit must be allowed to sign with it),
#: for URLs of up to 2048 characters, 256 at most (then emptied); refused URLs are not kept:
#: they are checked again each time. Gone with the credential's provider.
_SPLIT: weakref.WeakKeyDictionary[SignProvider, dict[str, _Split]] = weakref.WeakKeyDictionary()
_SPLIT_MAX, _SPLIT_URL_MAX = 256, 2048


def _split_url(url: str, provider: SignProvider) -> _Split:
    """The URL's scheme, host (and port), path and query pairs, every check passed (remembered
    for ``provider``).

    Raises:
        RpcError: INVALID_PARAMS, the message naming what the URL must be.
    """
    memo = _SPLIT.get(provider)
    split = None if memo is None else memo.get(url)
    if split is None:
        split = _check_url(url)
        if len(url) <= _SPLIT_URL_MAX:
            if memo is None:
                memo = _SPLIT[provider] = {}
            elif len(memo) >= _SPLIT_MAX:
                memo.clear()
            memo[url] = split
    return split


def _check_url(url: str) -> _Split:
    if _CONTROL.search(url):  # urlsplit would drop a tab or CR/LF silently: refuse instead
        raise _invalid("'url' must not contain control characters")
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed "[" (IPv6), a netloc that NFKC normalisation changes
        raise _invalid("'url' is not a valid URL") from None
    if parts.scheme not in ("https", "http", "wss", "ws") or not parts.hostname:
        raise _invalid("'url' must be an absolute https:// (or wss://) URL")
    if parts.scheme in ("http", "ws") and not is_loopback(parts.hostname):
        raise _invalid("'url' must use https (plain http only to a loopback address)")
    if parts.username or parts.password or parts.fragment:
        raise _invalid("'url' must not carry credentials or a fragment")
    try:
        query = parse_query(parts.query)
    except ValueError:
        raise _invalid("'url' has a malformed query string") from None
    path = parts.path or "/"
    _check_canonical(path)
    return parts.scheme, parts.netloc, path, tuple(query)


def parse_query(text: str) -> list[tuple[str, str]]:
    """``parse_qsl(text, keep_blank_values=True, strict_parsing=True)``, quicker for the common
    query with nothing escaped (no ``%`` or ``+``): every ``&``-separated part must hold ``=``.

    Raises:
        ValueError: a part without ``=`` (an empty one included).
    """
    if not text:
        return []
    if "%" in text or "+" in text:
        return parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    pairs = []
    for part in text.split("&"):
        name, equals, value = part.partition("=")
        if not equals:
            raise ValueError(f"bad query field: {part!r}")
        pairs.append((name, value))
    return pairs


#: A path as the allow-list can judge it: ``/``-separated segments of ASCII letters, digits
#: and ``-_~``, with single dots inside a segment only. Whatever a front end might strip, decode
#: or normalise (``%``, ``;`` path parameters, a backslash, a leading or trailing dot, ``.`` and
#: ``..``, an empty segment, whitespace, control and non-ASCII characters) is left out.
_PLAIN_PATH = re.compile(r"/|(?:/[A-Za-z0-9_~-]+(?:\.[A-Za-z0-9_~-]+)*)+")
#: Characters that ``urlsplit`` silently drops or strips (tab, CR, LF anywhere, other C0 in front).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_canonical(path: str) -> None:
    """Refuse a path that could mean another endpoint once decoded or normalised upstream.

    The allow-list judges the path as written; an exchange's front end might decode ``%2F``,
    resolve ``..``, drop a ``;jsessionid`` parameter or a trailing dot, or fold a fullwidth
    letter, after checking the signature, and reach an endpoint never allowed. The message
    names what is allowed, not the path (which the engine already has).
    """
    if _PLAIN_PATH.fullmatch(path) is None:
        raise _invalid(
            "'url' must have a plain path: segments of ASCII letters, digits and -_~, with dots only "
            "inside a segment; no %-escapes, ';', backslash, '//', '.' or '..' segments, trailing '/' or '.', "
            "spaces, control or non-ASCII characters"
        )


async def _kraken_nonce(
    provider: SignProvider,
    proposed: int | None,
    now_ms: int,
    lock: trio.Lock,
    persist: Callable[[], Awaitable[None]],
) -> int:
    # One signer at a time: a nonce is returned only once a mark above it is on disk.
    async with lock:
        try:
            nonce = provider.take_nonce(proposed, now_ms)
        except SignError as exc:
            raise _invalid(str(exc)) from None
        if provider.needs_reservation():
            previous = provider.reserve()
            saved = False
            try:
                await persist()
                saved = True
            finally:
                if not saved:  # an error, or a cancelled call: the mark is not on disk
                    provider.unreserve(previous)
        return nonce
