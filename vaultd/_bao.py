"""Speaks OpenBao's HTTP API: AppRole login, token renewal, response unwrapping, KV v2 reads and transit.

This module's one responsibility is the boundary with OpenBao: each method sends one request
and turns the answer into a value or into one :class:`BaoError` subclass that says what a
caller can do about it (retry later, re-provision a credential, fix the request). Tokens and
secret ids travel only in headers and request bodies; no message, ``repr`` or exception made
here holds one, and OpenBao's own error text is shown only once cleaned and checked not to
quote anything that was sent.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import trio

from ._loopback import ListenerUnknown, checked_pool, listener_uids
from ._secret import Secret

if TYPE_CHECKING:
    import httpx

__all__ = [
    "BaoClient",
    "BaoError",
    "BaoForbidden",
    "BaoNotFound",
    "BaoRefused",
    "BaoRequestError",
    "BaoToken",
    "BaoUnavailable",
    "BaoWrapInvalid",
    "KvVersion",
    "WrapInfo",
    "check_address",
    "check_segment",
]

#: The largest answer read; OpenBao's answers to these calls are a few KiB.
MAX_ANSWER = 1 << 20
#: OpenBao's error text is cut to this many characters.
_MAX_DETAIL = 200
#: KV versions at or above this are a hostile answer (OpenBao counts from 1, one per write).
MAX_VERSION = 2**31
#: A token lifetime above this (ten years) is taken as this: the renewer plans in floats.
_MAX_TTL = 10 * 365 * 86_400.0
#: Connections open (and kept alive) to one OpenBao at most.
POOL_SIZE = 20
#: A secret counts as quoted when any run of this many of its characters appears in a text.
_QUOTE_RUN = 6
_LOOPBACK_HTTP = ("127.0.0.1", "::1")
_VALUE = re.compile(r"^vault:v\d+:(.+)$", re.DOTALL)
_COUNT_LINE = re.compile(r"^\d+ errors? occurred:?$")
#: What a transport failure is, found by the type of an exception in its chain.
_CAUSES: tuple[tuple[type[BaseException], str], ...] = (
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "connection reset"),
    (socket.gaierror, "the name does not resolve"),
    (ssl.SSLError, "TLS handshake failed"),
)


class BaoError(Exception):
    """A call to OpenBao failed. The message is shown in ``vaultctl status``: it never holds a secret."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BaoUnavailable(BaoError):
    """Transient: OpenBao cannot be reached, is sealed or in an election, or answered nonsense. Retry later."""


class BaoForbidden(BaoError):
    """403 on a call made with a client token: the token was revoked or expired, or a policy denies the path."""


class BaoNotFound(BaoError):
    """404. For a KV v2 record whose current version was deleted or destroyed, says which version and how."""

    def __init__(
        self, message: str, status: int | None = 404, *, deleted: bool = False, destroyed: bool = False,
        version: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message, status)
        self.deleted = deleted
        self.destroyed = destroyed
        self.version = version


class BaoRefused(BaoError):
    """OpenBao refused a login (400 or 403): the secret id is invalid, expired or destroyed, or the role is gone."""


class BaoWrapInvalid(BaoError):
    """A wrapping token that is not valid: already unwrapped, expired, or never issued."""


class BaoRequestError(BaoError):
    """Any other 4xx: OpenBao rejects the request itself (a bad path, an unknown transit key, bad input)."""


@dataclass(frozen=True, slots=True, repr=False)
class BaoToken:
    """An OpenBao client token and what the login or renewal said of it."""

    token: Secret
    ttl: float
    renewable: bool
    accessor: str
    policies: tuple[str, ...]

    def __repr__(self) -> str:
        return (
            f"BaoToken(accessor={self.accessor!r}, ttl={self.ttl:g}, renewable={self.renewable}, "
            f"policies={self.policies!r})"
        )


@dataclass(frozen=True, slots=True, repr=False)
class KvVersion:
    """One version of a KV v2 record. ``data`` may hold secrets: it never shows in ``repr``."""

    data: dict[str, Any]
    version: int
    created_time: str

    def __repr__(self) -> str:
        return f"KvVersion(version={self.version})"


@dataclass(frozen=True, slots=True)
class WrapInfo:
    """What ``sys/wrapping/lookup`` says of a wrapping token, without unwrapping it."""

    creation_path: str
    creation_time: str
    creation_ttl: int


def check_address(address: str, ca_file: str | None) -> str:
    """The address, normalised (no trailing slash).

    Raises:
        ValueError: not https (plain http only to 127.0.0.1 or [::1]), a user, path, query or
            fragment in it, a bad port, or a ``ca_file`` that is not a readable file or is given
            for plain http. A refused user, query or fragment is not quoted (it may hold a secret).
    """
    parts = urlsplit(address)
    if "@" in parts.netloc or "?" in address or "#" in address:
        raise ValueError("the OpenBao address must be scheme://host[:port] only (no user, query or fragment)")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"OpenBao address {address!r} must be an https:// URL")
    if parts.path not in ("", "/"):
        raise ValueError(f"OpenBao address {address!r} must be scheme://host[:port] only (no path)")
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        raise ValueError(f"OpenBao address {address!r} has an invalid port") from None
    if parts.scheme == "http":
        if parts.hostname == "localhost":
            raise ValueError("plain http is only for a loopback address named as an IP: use 127.0.0.1 or [::1]")
        if parts.hostname not in _LOOPBACK_HTTP:
            raise ValueError(f"OpenBao address {address!r} must use https (plain http only to 127.0.0.1 or [::1])")
        if ca_file is not None:
            raise ValueError("a CA file is only for an https:// OpenBao address")
    if ca_file is not None and (not Path(ca_file).is_file() or not os.access(ca_file, os.R_OK)):
        raise ValueError(f"CA file {ca_file!r} is not a readable file")
    return f"{parts.scheme}://{parts.netloc}"


def check_segment(value: str, what: str) -> str:
    """A mount name, KV path, transit key or role name, safe to put in a URL path.

    Raises:
        ValueError: empty, a leading '/', an empty, '.' or '..' segment, or '?', '#', '%',
            whitespace or a control character in it.
    """
    if not value:
        raise ValueError(f"{what} is empty")
    if value.startswith("/"):
        raise ValueError(f"{what} {value!r} must not start with '/'")
    if any(ch in "?#%" or ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError(f"{what} {value!r} must not contain '?', '#', '%', whitespace or control characters")
    if any(segment in ("", ".", "..") for segment in value.split("/")):
        raise ValueError(f"{what} {value!r} must not contain empty, '.' or '..' segments")
    return value


def _path(*parts: tuple[str, str] | str) -> str:
    """URL path from literal parts and (value, what) pairs checked with :func:`check_segment`, quoted."""
    try:
        checked = [check_segment(*part) if isinstance(part, tuple) else part for part in parts]
    except ValueError as exc:
        raise BaoRequestError(str(exc)) from None
    return "/".join(quote(segment, safe="") for part in checked for segment in part.split("/"))


def _text(secret: Secret, header: bool) -> str:
    """A secret as the text to send; a header value must be printable ASCII (h11 would quote it)."""
    raw = secret.reveal()
    if header and not all(0x21 <= byte <= 0x7E for byte in raw):
        raise BaoRequestError("the token is not an OpenBao token (not printable ASCII); not sent")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BaoRequestError("a credential is not UTF-8 text; not sent") from None


def _quotes(text: str, secrets: tuple[Secret, ...]) -> bool:
    """Whether ``text`` holds any run of :data:`_QUOTE_RUN` characters of one of ``secrets``."""
    for secret in secrets:
        plain = secret.reveal().decode("utf-8", "replace")
        runs = (
            [plain]
            if len(plain) <= _QUOTE_RUN
            else [plain[i : i + _QUOTE_RUN] for i in range(len(plain) - _QUOTE_RUN + 1)]
        )
        if any(run and run in text for run in runs):
            return True
    return False


def _why(exc: BaseException, sent: tuple[Secret, ...]) -> str:
    """A transport failure in words: the underlying OS or TLS error, never what was sent."""
    stack: list[BaseException] = [exc]
    for _ in range(20):
        current = stack.pop() if stack else None
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({current.verify_message})"
        for kind, words in _CAUSES:
            if isinstance(current, kind):
                return words
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        if current is not None:
            stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    text = " ".join(str(exc).split())[:_MAX_DETAIL]
    return type(exc).__name__ if not text or _quotes(text, sent) else text


def _detail(body: Any, sent: tuple[Secret, ...]) -> str:
    """OpenBao's ``errors`` cleaned to one short line; withheld if it quotes a secret that was sent."""
    errors = body.get("errors") if isinstance(body, dict) else None
    lines: list[str] = []
    for error in errors if isinstance(errors, list) else ():
        for raw in str(error).splitlines():
            line = " ".join("".join(ch for ch in raw if ch.isprintable()).split()).removeprefix("* ")
            if line and not _COUNT_LINE.match(line):
                lines.append(line)
    text = "; ".join(lines)
    if _quotes(text, sent):
        return "OpenBao's message withheld: it quotes what was sent"
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


class _Garbled(Exception):
    """An answer without a field expected (turned into :class:`BaoUnavailable`)."""


def _field(mapping: Any, key: str, kind: type[Any] | tuple[type[Any], ...]) -> Any:
    """``mapping[key]`` if ``mapping`` is a dict and the value is a ``kind`` (an int is never a bool here)."""
    value = mapping.get(key) if isinstance(mapping, dict) else None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise _Garbled(key)
    return value


class BaoClient:
    """One OpenBao server (or cluster address). Holds no token: each call is given the one it uses."""

    def __init__(
        self,
        address: str,
        *,
        namespace: str | None = None,
        ca_file: str | None = None,
        connect_timeout: float = 2.0,
        total_timeout: float = 5.0,
        http: httpx.AsyncClient | None = None,
        listener_uids: frozenset[int] | None = None,
    ) -> None:
        """``listener_uids``: for a plain http (loopback) address, the uids that may own the socket
        listening there (default: this process's own); anything else gets nothing (``_loopback``)."""
        import httpx  # noqa: PLC0415 - imported when first used: keeps the daemon's start fast

        self.address = check_address(address, None)  # the CA file is the client's to check: below
        self.namespace = None if namespace is None else check_segment(namespace, "namespace")
        if self.namespace is not None and not self.namespace.isascii():
            raise ValueError(f"namespace {self.namespace!r} must be ASCII (it travels in a header)")
        parts = urlsplit(self.address)
        self._host = parts.netloc
        self._loopback = (parts.hostname or "", parts.port or 80) if parts.scheme == "http" else None
        self._listener_uids = listener_uids if listener_uids is not None else frozenset({os.getuid()})
        self._connect_timeout, self._total_timeout = connect_timeout, total_timeout
        self._timeout = httpx.Timeout(total_timeout, connect=connect_timeout)
        self._owned = http is None
        #: Why no call can be made (a CA file gone or garbled since the upstream was added): every
        #: call fails with it, transiently, rather than the upstream failing to load.
        self.broken: str | None = None
        if http is None:
            try:
                if ca_file is not None and not Path(ca_file).is_file():
                    raise OSError(ca_file)
                context = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError):
                self.broken = f"CA file {ca_file!r} cannot be read or holds no PEM certificate"
                context = ssl.create_default_context()
            # As many connections kept alive as may be open: no new TCP connection per call.
            limits = httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE)
            transport = httpx.AsyncHTTPTransport(verify=context, limits=limits)
            if self._loopback is not None:
                # Each new connection's accepting socket is checked too. httpx takes no network
                # backend, so its pool is swapped for one like it that has ours (httpx 0.2x keeps
                # it in _pool; tests/integration/test_openbao_squat.py fails if that changes).
                transport._pool = checked_pool(context, self._listener_uids, POOL_SIZE)
            http = httpx.AsyncClient(
                transport=transport, follow_redirects=False, headers={"User-Agent": "vaultd"}, timeout=self._timeout
            )
        self._http = http

    def __repr__(self) -> str:
        return f"BaoClient({self.address!r}, namespace={self.namespace!r})"

    async def aclose(self) -> None:
        """Close the HTTP client, unless it was given (its owner closes it)."""
        if self._owned:
            await self._http.aclose()

    async def __aenter__(self) -> BaoClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def login_approle(self, mount: str, role_id: Secret, secret_id: Secret) -> BaoToken:
        """Log in with an AppRole role id and secret id. A 400 or 403 is :class:`BaoRefused`."""
        path = _path("auth", (mount, "AppRole mount"), "login")
        answer = await self._call(
            "POST", path, f"AppRole login at {mount}", body={"role_id": role_id, "secret_id": secret_id}
        )
        return self._token(answer, None, "AppRole login")

    async def renew_self(self, token: Secret, increment: float | None = None) -> BaoToken:
        """Renew ``token`` (asking for ``increment`` seconds if given); the result holds the same token."""
        body = {} if increment is None else {"increment": f"{max(1, round(increment))}s"}
        answer = await self._call("POST", "auth/token/renew-self", "token renewal", token=token, body=body)
        return self._token(answer, token, "token renewal")

    async def revoke_self(self, token: Secret) -> None:
        """Revoke ``token`` (an upstream removed or replaced: its token should not outlive it)."""
        await self._call("POST", "auth/token/revoke-self", "token revocation", token=token, body={})

    async def lookup_wrapping(self, wrapping_token: Secret) -> WrapInfo:
        """What a wrapping token wraps (its creation path), without unwrapping it."""
        what = "wrapping token lookup"
        answer = await self._call("POST", "sys/wrapping/lookup", what, body={"token": wrapping_token})
        with self._parsing(what):
            data = _field(answer, "data", dict)
            return WrapInfo(_field(data, "creation_path", str), _field(data, "creation_time", str),
                            _field(data, "creation_ttl", int))  # fmt: skip

    async def unwrap(self, wrapping_token: Secret) -> dict[str, Any]:
        """Unwrap once and return the wrapped ``data``. A token already used is :class:`BaoWrapInvalid`."""
        answer = await self._call("POST", "sys/wrapping/unwrap", "unwrap", token=wrapping_token, body={})
        with self._parsing("unwrap"):
            return dict(_field(answer, "data", dict))

    async def kv_read(self, token: Secret, mount: str, path: str) -> KvVersion:
        """The current version of the KV v2 record at ``mount``/``path``."""
        what = f"KV read {mount}/{path}"
        answer = await self._call("GET", _path((mount, "KV mount"), "data", (path, "KV path")), what, token=token)
        with self._parsing(what):
            data = _field(answer, "data", dict)
            metadata = _field(data, "metadata", dict)
            version = _field(metadata, "version", int)
            if not 0 < version < MAX_VERSION:  # no record has billions of versions: a hostile answer
                raise _Garbled("version")
            created = _field(metadata, "created_time", str)
            if len(created) > 64 or not created.isprintable():
                raise _Garbled("created_time")
            return KvVersion(_field(data, "data", dict), version, created)

    async def transit_hmac(
        self, token: Secret, key: str, data: bytes, *, algorithm: str = "sha2-256", mount: str = "transit"
    ) -> bytes:
        """The raw MAC of ``data`` under transit key ``key``.

        The algorithm goes in the body, not the path, so that a policy on ``transit/hmac/KEY``
        (as the README writes it) allows the call.
        """
        path = _path((mount, "transit mount"), "hmac", (key, "transit key"))
        what = f"transit HMAC with key {key}"
        body = {"input": base64.b64encode(data).decode(), "algorithm": algorithm}
        answer = await self._call("POST", path, what, token=token, body=body)
        return self._value(answer, "hmac", what, urlsafe=False)

    async def transit_sign(
        self,
        token: Secret,
        key: str,
        data: bytes,
        *,
        hash_algorithm: str | None = None,
        marshaling_algorithm: str | None = None,
        signature_algorithm: str | None = None,
        prehashed: bool = False,
        mount: str = "transit",
    ) -> bytes:
        """The raw signature of ``data`` (for ``marshaling_algorithm="jws"``, ECDSA's r||s; for RSA
        keys, ``signature_algorithm`` "pkcs1v15" or transit's default "pss")."""
        body: dict[str, Any] = {"input": base64.b64encode(data).decode(), "prehashed": prehashed}
        if hash_algorithm is not None:
            body["hash_algorithm"] = hash_algorithm
        if signature_algorithm is not None:
            body["signature_algorithm"] = signature_algorithm
        if marshaling_algorithm is not None:
            body["marshaling_algorithm"] = marshaling_algorithm
        what = f"transit signature with key {key}"
        answer = await self._call(
            "POST", _path((mount, "transit mount"), "sign", (key, "transit key")), what, token=token, body=body
        )
        return self._value(answer, "signature", what, urlsafe=marshaling_algorithm == "jws")

    async def _call(
        self, method: str, path: str, what: str, *, token: Secret | None = None, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Send one request; the JSON answer of a 2xx ({} for an empty one), or a BaoError.

        ``token`` goes in X-Vault-Token; Secret values in ``body`` are sent as text. Every one of
        them is kept out of the error raised.
        """
        import httpx  # noqa: PLC0415

        if self.broken is not None:
            raise self._unavailable(f"{what}: {self.broken}")
        self._check_listener(what)
        sent = tuple(value for value in (token, *(body or {}).values()) if isinstance(value, Secret))
        headers = {"X-Vault-Request": "true"}
        if token is not None:
            headers["X-Vault-Token"] = _text(token, header=True)
        if self.namespace is not None:
            headers["X-Vault-Namespace"] = self.namespace
        content = None
        if body is not None:
            plain = {key: _text(value, False) if isinstance(value, Secret) else value for key, value in body.items()}
            content = json.dumps(plain).encode()
            headers["Content-Type"] = "application/json"
        url, raw = f"{self.address}/v1/{path}", bytearray()
        try:
            with trio.fail_after(self._total_timeout):
                request = self._http.build_request(method, url, headers=headers, content=content, timeout=self._timeout)
                response = await self._http.send(request, stream=True, follow_redirects=False)
                try:
                    async for chunk in response.aiter_bytes():
                        raw += chunk
                        if len(raw) > MAX_ANSWER:
                            raise self._unavailable(f"{what}: the answer is larger than {MAX_ANSWER} bytes")
                finally:
                    await response.aclose()
        except (trio.TooSlowError, httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout):
            raise self._unavailable(f"{what}: no answer within {self._total_timeout:g} s") from None
        except httpx.ConnectTimeout:
            raise self._unavailable(f"cannot connect within {self._connect_timeout:g} s") from None
        except httpx.ConnectError as exc:
            raise self._unavailable(f"cannot connect: {_why(exc, sent)}") from None
        except (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL, OSError, ValueError) as exc:
            raise self._unavailable(f"{what}: {_why(exc, sent)}") from None
        status = response.status_code
        try:
            decoded = json.loads(raw) if raw else None
        except (ValueError, RecursionError):
            decoded = None
        if 200 <= status < 300 and (isinstance(decoded, dict) or not raw):
            return decoded or {}
        if 200 <= status < 300:
            raise self._garbled(what, status)
        raise self._failure(path, what, response, decoded, sent)

    def _failure(self, path: str, what: str, response: httpx.Response, body: Any, sent: tuple[Secret, ...]) -> BaoError:
        status, location = response.status_code, response.headers.get("location")
        detail = _detail(body, sent)
        said, where = f": {detail}" if detail else "", f"OpenBao {self._host}: {what}"
        if 300 <= status < 400:
            target = urlsplit(location or "")
            host = f"[{target.hostname}]" if target.hostname and ":" in target.hostname else target.hostname
            try:
                port = target.port
            except ValueError:  # a Location with a port no server has
                port, host = None, None
            if host is not None and not (host.isprintable() and len(host) <= 255):
                host = None
            to = f"redirected to {host}{f':{port}' if port else ''}" if host else "redirected"
            return BaoUnavailable(f"{where}: {to} (a standby during an election?), HTTP {status}", status)
        if status == 503 and "sealed" in detail:
            return BaoUnavailable(f"{where}: OpenBao is sealed (HTTP 503)", status)
        if status >= 500 or status in (412, 429):
            return BaoUnavailable(f"{where}: HTTP {status}{said}", status)
        if status == 400 and "waiting for the primary to upgrade" in detail.lower():
            # a read-enabled standby whose KV v2 mount is not ready yet (after an election): transient
            return BaoUnavailable(f"{where}: the KV mount is not ready on this node yet (HTTP 400)", status)
        if path.startswith("sys/wrapping/") and status == 400:
            return BaoWrapInvalid(
                f"{where}: the wrapping token is not valid (already unwrapped, expired, or never issued)", status
            )
        if path.startswith("auth/") and path.endswith("/login") and status in (400, 403):
            return BaoRefused(f"{where}: refused (HTTP {status}{said})", status)
        if status == 403:
            return BaoForbidden(
                f"{where}: permission denied (HTTP 403): the token was revoked or expired, or a policy denies it",
                status,
            )
        if status == 404:
            return _not_found(where, body)
        return BaoRequestError(f"{where}: HTTP {status}{said}", status)

    def _check_listener(self, what: str) -> None:
        """Over plain http, send nothing unless the port's listener belongs to a uid trusted.

        Raises:
            BaoUnavailable: another uid's socket listens there, or the kernel cannot say.
        """
        if self._loopback is None:
            return
        _, port = self._loopback
        try:
            owners = listener_uids(port)
        except ListenerUnknown as exc:
            raise self._unavailable(
                f"{what}: who listens on port {port} cannot be checked ({exc}): use https"
            ) from None
        strangers = owners - self._listener_uids
        if strangers:
            raise self._unavailable(
                f"{what}: the socket listening on port {port} belongs to uid {min(strangers)}, not "
                f"{'/'.join(str(u) for u in sorted(self._listener_uids))}: nothing sent (another user's process "
                "on OpenBao's port? set 'listener_uid' if OpenBao runs as that user)"
            )

    def _unavailable(self, text: str) -> BaoUnavailable:
        return BaoUnavailable(f"OpenBao {self._host}: {text}")

    def _garbled(self, what: str, status: int = 200) -> BaoUnavailable:
        return BaoUnavailable(
            f"OpenBao {self._host}: {what}: HTTP {status} with an answer that is not the JSON expected", status
        )

    @contextlib.contextmanager
    def _parsing(self, what: str) -> Iterator[None]:
        """Turn an answer without the fields expected into :class:`BaoUnavailable`."""
        try:
            yield
        except (_Garbled, ValueError, TypeError):  # binascii.Error is a ValueError
            raise self._garbled(what) from None

    def _token(self, answer: dict[str, Any], token: Secret | None, what: str) -> BaoToken:
        with self._parsing(what):
            auth = _field(answer, "auth", dict)
            policies = tuple(auth.get("policies") or ())
            if not all(isinstance(policy, str) for policy in policies):
                raise _Garbled("policies")
            ttl = float(_field(auth, "lease_duration", (int, float)))
            if not math.isfinite(ttl) or ttl < 0:
                raise _Garbled("lease_duration")
            ttl = min(ttl, _MAX_TTL)
            renewable, accessor = _field(auth, "renewable", bool), _field(auth, "accessor", str)
            token = token if token is not None else Secret(_field(auth, "client_token", str))
            return BaoToken(token=token, ttl=ttl, renewable=renewable, accessor=accessor, policies=policies)

    def _value(self, answer: dict[str, Any], key: str, what: str, *, urlsafe: bool) -> bytes:
        """The bytes of a transit answer's "vault:vN:<base64>" value (base64url for a JWS signature)."""
        with self._parsing(what):
            match = _VALUE.match(_field(_field(answer, "data", dict), key, str))
            if match is None:
                raise _Garbled(key)
            if urlsafe:
                return base64.urlsafe_b64decode(match.group(1) + "=" * (-len(match.group(1)) % 4))
            return base64.b64decode(match.group(1), validate=True)


def _not_found(where: str, body: Any) -> BaoNotFound:
    """A 404; a KV v2 one whose body carries the current version's metadata says it was deleted or destroyed."""
    data = body.get("data") if isinstance(body, dict) else None
    metadata = data.get("metadata") if isinstance(data, dict) else None
    if not isinstance(metadata, dict):
        return BaoNotFound(f"{where}: not found (HTTP 404)")
    version = metadata.get("version")
    version = (
        version if isinstance(version, int) and not isinstance(version, bool) and 0 < version < MAX_VERSION else None
    )
    deletion, destroyed = metadata.get("deletion_time"), metadata.get("destroyed") is True
    deleted = isinstance(deletion, str) and bool(deletion)
    text = "not found"
    if destroyed:
        text = f"version {version} was destroyed"
    elif deleted:
        text_time = str(deletion)
        shown = text_time if len(text_time) <= 40 and text_time.isprintable() else "(a time OpenBao garbled)"
        text = f"version {version} was deleted at {shown}"
    return BaoNotFound(f"{where}: {text} (HTTP 404)", deleted=deleted, destroyed=destroyed, version=version)
