"""Operator logins for ``oauth2`` credentials: the daemon's side of ``vaultctl login``.

Two ways in. **Browser** (RFC 6749 authorization code, PKCE S256 per RFC 7636, a loopback
redirect per RFC 8252): the daemon listens on 127.0.0.1 on a random port, once, for at most
the login's timeout (5 minutes), checks ``state``, and redeems the code with its verifier
itself. The listener answers only the daemon's own uid (a browser runs as the operator; another
local user who learnt the state cannot hand it their code), serves a few connections at once,
and sends the browser on with a one-time link (``/start/<nonce>``) so that the authorization
request itself (state, code_challenge) never goes on a command line others can read.
**Device** (RFC 8628): the daemon asks for a user code and polls the token endpoint at
the server's interval (``slow_down`` adds 5 s). Either way the refresh token goes from the
token endpoint into the provider and the vault (``Renewer.logged_in``): vaultctl only ever
sees the URL, the user code and the outcome. A login runs in the renewer's nursery, so a
lock ends it; it does not depend on the connection that started it (a vaultctl that dies
leaves the login running until it ends, and ``credential.login_wait`` may pick it up). At most
one login per credential: a new one replaces (ends) the one in flight.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, quote, urlsplit

import h11
import trio

from vaultd_protocol import ErrorCode

from ._credentials import Credential
from ._errors import RpcError
from ._http_head import read_head
from ._loopback import ListenerUnknown, connection_owner, listener_uids
from ._providers import UpstreamError
from ._providers._oauth_client import described_error
from ._providers.oauth2 import DEVICE_GRANT, LoginGrant, OAuth2Provider
from ._renewer import Renewer
from ._server import _ACCEPT_TRANSIENT

__all__ = ["LOGIN_TIMEOUT", "Login", "Logins"]

log = logging.getLogger("vaultd.login")

#: How long a login may take, at most (and by default).
LOGIN_TIMEOUT = 300.0
#: How long a finished login's outcome stays for ``credential.login_wait``.
KEEP_OUTCOME = 600.0
_CALLBACK = "/callback"
_START = "/start/"
_MAX_REQUEST = 16 * 1024
#: How long a connection to the redirect listener may take to send its request (the code's
#: redemption that may follow is bounded by the login's deadline and the credential's timeout).
_READ_LIMIT = 30.0
#: Connections the redirect listener serves at once; more are closed unread.
MAX_CONNECTIONS = 8
#: RFC 8628 section 3.5: slow_down adds 5 seconds to the interval, for this and every later poll.
SLOW_DOWN = 5.0
#: The device flow never polls more often than this (RFC 8628 section 3.2's default interval),
#: whatever interval the server names.
MIN_INTERVAL = 5.0
_PENDING, _OK, _FAILED = "pending", "ok", "failed"
#: What ``quote`` leaves as it is in a URL already encoded (RFC 3986 reserved and unreserved, and %).
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"


@dataclass(eq=False, repr=False)
class _Redirect:
    """A browser login's secrets (the ``state`` it must come back with, the PKCE verifier, the
    one-time ``/start/`` nonce, None once used) and its listener's counters."""

    state: str
    verifier: str
    uri: str
    authorization_url: str
    nonce: str | None
    #: A redirect is being redeemed: later ones are told so (the code is redeemed once).
    redeeming: bool = False
    serving: int = 0
    refused_foreign: int = 0
    refused_busy: int = 0
    accept_failures: int = 0


@dataclass(eq=False)
class Login:
    """One login in flight (or just finished)."""

    login_id: str
    credential: Credential
    device: bool
    started: float
    deadline: float
    outcome: str = _PENDING
    error: str | None = None
    done: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    #: What ``credential.login`` returns (the URL, or the user code and where to enter it).
    shown: dict[str, Any] = field(default_factory=dict)

    def finish(self, outcome: str, error: str | None = None) -> None:
        if self.outcome == _PENDING:
            self.outcome, self.error = outcome, error
            self.done.set()


class Logins:
    """The logins of one unlocked vault (``credential.login`` and ``credential.login_wait``)."""

    def __init__(
        self,
        credentials: Callable[[], Mapping[str, Credential]],
        renewer: Callable[[], Renewer | None],
        wall: Callable[[], float],
    ) -> None:
        self._credentials = credentials
        self._renewer = renewer
        self._wall = wall
        self._by_id: dict[str, Login] = {}
        self._by_name: dict[str, Login] = {}

    async def start(self, name: str, *, device: bool, lifetime: float) -> dict[str, Any]:
        """Begin a login for ``name``; its ``credential.login`` result.

        Raises:
            RpcError: UNKNOWN_CREDENTIAL, INVALID_PARAMS (not an oauth2 credential of the form
                dialect, or no endpoint for this way in), LOCKED, UPSTREAM_UNAVAILABLE (the
                metadata or the device authorization endpoint could not be read).
        """
        renewer = self._live_renewer()
        credential = self._credentials().get(name)
        if credential is None:
            raise RpcError(ErrorCode.UNKNOWN_CREDENTIAL, f"no credential named {name!r}")
        provider = credential.provider
        if not isinstance(provider, OAuth2Provider) or provider.dialect != "form" or provider.client_id is None:
            raise RpcError(
                ErrorCode.INVALID_PARAMS,
                f"credential {name!r} cannot log in: only an oauth2 credential (form dialect, with a client_id) can",
            )
        if credential.source is not None:
            raise RpcError(
                ErrorCode.INVALID_PARAMS,
                f"credential {name!r} is sourced from an upstream: its refresh token comes from the record there",
            )
        device = device or provider.grant_type == "device_code"  # its grant names the way in
        self._prune()
        ctx = renewer.http_context()
        try:
            endpoints = await provider.endpoints(ctx)
        except UpstreamError as exc:
            code = ErrorCode.INVALID_PARAMS if exc.reauth else ErrorCode.UPSTREAM_UNAVAILABLE
            raise RpcError(code, f"credential {name!r}: {exc}") from None
        now = trio.current_time()
        login = Login(secrets.token_urlsafe(16), credential, device, now, now + lifetime)
        if device:
            if endpoints.device_authorization_endpoint is None:
                raise RpcError(
                    ErrorCode.INVALID_PARAMS,
                    f"credential {name!r} has no device_authorization_endpoint (configured or discovered)",
                )
            answer = await self._device_authorization(provider, ctx, endpoints.device_authorization_endpoint)
            expires_in = answer["expires_in"]
            login.deadline = min(login.deadline, now + expires_in)
            login.shown = {
                "verification_uri": answer["verification_uri"],
                "verification_uri_complete": answer.get("verification_uri_complete"),
                "user_code": answer["user_code"],
                "expires_in": min(expires_in, lifetime),
            }
            renewer.spawn(self._poll, login, provider, answer["device_code"], answer["interval"])
            self._replace(login)
        else:
            if endpoints.authorization_endpoint is None:
                raise RpcError(
                    ErrorCode.INVALID_PARAMS,
                    f"credential {name!r} has no authorization_endpoint (configured or discovered)",
                )
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            try:  # who connects is told by the kernel (sock_diag): without it, no browser login
                listener_uids(port)
            except ListenerUnknown as exc:
                await _close(listeners)
                raise RpcError(
                    ErrorCode.INVALID_PARAMS,
                    f"a browser login needs to tell who connects to its listener, and the kernel cannot be asked "
                    f"here ({exc}): log in with a device code ('vaultctl login {name} --device')",
                ) from None
            redirect_uri = f"http://127.0.0.1:{port}{_CALLBACK}"
            state, verifier, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(48), secrets.token_urlsafe(16)
            full = provider.authorization_url(endpoints.authorization_endpoint, redirect_uri, state, verifier)
            redirect = _Redirect(state, verifier, redirect_uri, full, nonce)
            login.shown = {
                "url": f"http://127.0.0.1:{port}{_START}{nonce}",
                "authorization_url": full,
                "redirect_uri": redirect_uri,
                "expires_in": lifetime,
            }
            try:
                renewer.spawn(self._listen, login, listeners, redirect)
            except RpcError:
                await _close(listeners)
                raise
            self._replace(login)
        log.info("credential %r: login %s started (%s)", name, login.login_id[:6], "device" if device else "browser")
        return {"login_id": login.login_id, "name": name, "mode": "device" if device else "browser", **login.shown}

    async def wait(self, login_id: str, wait: float) -> dict[str, Any]:
        """Wait up to ``wait`` seconds for a login's outcome; its ``credential.login_wait`` result.

        Raises:
            RpcError: INVALID_PARAMS (no such login, or its outcome is gone), LOCKED.
        """
        login = self._by_id.get(login_id)
        if login is None:
            raise RpcError(ErrorCode.INVALID_PARAMS, "no login with that 'login_id' (ended long ago, or locked since)")
        with trio.move_on_after(wait):
            await login.done.wait()
        return {
            "login_id": login_id,
            "name": login.credential.name,
            "outcome": login.outcome,
            "error": login.error,
            "credential": login.credential.describe(self._wall()),
        }

    def close(self) -> None:
        """The vault locked: every login ends (its task is cancelled with the renewer)."""
        for login in self._by_id.values():
            login.finish(_FAILED, "the vault was locked")
            login.scope.cancel()
        self._by_id.clear()
        self._by_name.clear()

    # -- internals -------------------------------------------------------------------------------

    def _live_renewer(self) -> Renewer:
        renewer = self._renewer()
        if renewer is None:
            raise RpcError(ErrorCode.LOCKED, "the vault is locked")
        return renewer

    def _replace(self, login: Login) -> None:
        name = login.credential.name
        previous = self._by_name.get(name)
        if previous is not None and previous.outcome == _PENDING:
            log.info("credential %r: login %s replaced by a newer one", name, previous.login_id[:6])
            previous.finish(_FAILED, "replaced by a newer login of the same credential")
            previous.scope.cancel()
        self._by_name[name] = login
        self._by_id[login.login_id] = login

    def _prune(self) -> None:
        now = trio.current_time()
        for login_id, login in list(self._by_id.items()):
            if login.outcome != _PENDING and login.deadline + KEEP_OUTCOME < now:
                del self._by_id[login_id]

    def _current(self, login: Login) -> bool:
        return self._credentials().get(login.credential.name) is login.credential and login.outcome == _PENDING

    def _failed(self, login: Login, error: str) -> None:
        """The token endpoint refused the login's redemption: the outcome, and ``last_error`` in ``status``."""
        if self._current(login) and login.credential.issued is None:
            login.credential.last_error = f"the login failed: {error}"
        login.finish(_FAILED, error)

    async def _succeed(self, login: Login, redeem: dict[str, str]) -> None:
        """Redeem the code (or device code) and hand the token to the renewer; record the outcome."""
        renewer = self._live_renewer()
        credential = login.credential
        provider = credential.provider
        assert isinstance(provider, OAuth2Provider)
        await renewer.settled(credential)  # no renewal with the old refresh token races the new one
        if not self._current(login):  # removed or replaced meanwhile: its code is not spent in vain
            login.finish(_FAILED, "the credential was replaced or removed during the login")
            return
        try:
            grant = await provider.redeem(renewer.http_context(), redeem)
        except UpstreamError as exc:
            self._failed(login, str(exc))
            return
        if await self._conclude(renewer, login, grant):
            log.info("credential %r: logged in (login %s)", credential.name, login.login_id[:6])

    async def _conclude(self, renewer: Renewer, login: Login, grant: LoginGrant) -> bool:
        """The tokens a login brought go to the renewer (adopted only now, the vault written first);
        the outcome recorded."""
        provider = login.credential.provider
        if not self._current(login) or not isinstance(provider, OAuth2Provider):
            grant.wipe()
            login.finish(_FAILED, "the credential was replaced or removed during the login")
            return False
        try:
            await renewer.logged_in(login.credential, grant.issued, lambda: provider.take_login(grant))
        except RpcError as exc:
            grant.refresh_token.wipe()
            login.finish(_FAILED, f"the new refresh token could not be saved: {exc}")
            return False
        login.finish(_OK)
        return True

    # -- browser: the loopback redirect ---------------------------------------------------------------

    async def _listen(self, login: Login, listeners: list[trio.SocketListener], redirect: _Redirect) -> None:
        try:
            with login.scope:
                login.scope.deadline = login.deadline
                # Requests being answered finish (the browser hears the outcome); no new one is accepted.
                async with trio.open_nursery() as serving:
                    async with trio.open_nursery() as accepting:
                        for listener in listeners:
                            accepting.start_soon(self._accept, login, listener, serving, redirect)
                        await login.done.wait()
                        accepting.cancel_scope.cancel()
                    await _close(listeners)
        finally:
            with trio.CancelScope(shield=True):
                await _close(listeners)
            if login.outcome == _PENDING:
                login.finish(_FAILED, "no redirect came back before the login's time ran out")
                log.info("credential %r: login %s timed out", login.credential.name, login.login_id[:6])

    async def _accept(
        self, login: Login, listener: trio.SocketListener, nursery: trio.Nursery, redirect: _Redirect
    ) -> None:
        """Accept connections: errors such as EMFILE are waited out (as the RPC server does), a
        connection beyond ``MAX_CONNECTIONS`` or from another uid is closed before a byte is read
        (counted, logged at powers of two, never per connection)."""
        name = login.credential.name
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_TRANSIENT:  # this login ends, not the daemon
                    log.error("credential %r: the login listener failed (%s)", name, exc.strerror or exc)
                    login.finish(_FAILED, f"the redirect listener failed ({exc.strerror or exc})")
                    return
                redirect.accept_failures += 1
                if _worth_a_line(redirect.accept_failures):
                    log.error("credential %r: the login listener's accept failed (%s, %d times): waiting",
                              name, exc.strerror, redirect.accept_failures)  # fmt: skip
                await trio.sleep(0.1)
                continue
            if redirect.serving >= MAX_CONNECTIONS:
                redirect.refused_busy += 1
                if _worth_a_line(redirect.refused_busy):
                    log.warning("credential %r: the login listener closed %d connections beyond %d at once",
                                name, redirect.refused_busy, MAX_CONNECTIONS)  # fmt: skip
                await _drop(stream)
                continue
            # The kernel's answer (sock_diag, only ESTABLISHED peers: see _loopback) is read on the
            # event loop; its cost grows with the host's TCP sockets (a flood can delay a login).
            owner, why = _owner(stream)
            if owner != os.getuid():
                redirect.refused_foreign += 1
                if _worth_a_line(redirect.refused_foreign):
                    log.warning("credential %r: the login listener closed %d connections not from its own user "
                                "(this one: %s)", name, redirect.refused_foreign, why)  # fmt: skip
                await _drop(stream)
                continue
            redirect.serving += 1
            nursery.start_soon(self._serve, login, stream, redirect)

    async def _serve(self, login: Login, stream: trio.SocketStream, redirect: _Redirect) -> None:
        """One browser request: the start link, the redirect (checked), or anything else (404).

        Reading the request may take ``_READ_LIMIT``; the answer waits for the code's redemption
        (bounded by the login's deadline and the credential's HTTP timeout)."""
        try:
            async with stream:
                target = None
                with trio.move_on_after(_READ_LIMIT), contextlib.suppress(trio.BrokenResourceError):
                    target = await _read_target(stream)  # a peer that resets its connection: nothing read
                if target is None:
                    return
                status, page, location = await self._callback(login, target, redirect)
                with trio.move_on_after(_READ_LIMIT):
                    await _answer(stream, status, page, location)
        except Exception as exc:  # one connection's surprise is its own: never the renewer's (the daemon's)
            log.error("credential %r: a login request failed (%s)", login.credential.name, type(exc).__name__)
        finally:
            redirect.serving -= 1

    async def _callback(self, login: Login, target: str, redirect: _Redirect) -> tuple[int, str, str | None]:
        try:
            parts = urlsplit(target)
        except ValueError:  # e.g. "//[x/": not a URL at all
            return 400, "vaultd: that is not a request this listener answers.", None
        if parts.path.startswith(_START):
            nonce, given = redirect.nonce, parts.path[len(_START) :]
            if nonce is None or not secrets.compare_digest(given.encode(), nonce.encode()):
                return 404, "vaultd: this login link was used already or is not one: run 'vaultctl login' again.", None
            redirect.nonce = None  # once: a reload or a copy of the link leads nowhere
            return 302, "vaultd: on to the authorization server.", redirect.authorization_url
        if parts.path != _CALLBACK:
            return 404, "vaultd: nothing here.", None
        status, page = await self._redirected(login, parts.query, redirect)
        return status, page, None

    async def _redirected(self, login: Login, raw_query: str, redirect: _Redirect) -> tuple[int, str]:
        query = {k: v[0] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
        if not secrets.compare_digest(query.get("state", "").encode(), redirect.state.encode()):
            log.warning("credential %r: a redirect with a wrong state was refused", login.credential.name)
            return 400, "vaultd: this redirect does not belong to the login in progress (state mismatch); refused."
        if login.outcome != _PENDING:
            return 409, "vaultd: this login has already ended."
        if redirect.redeeming:
            return 409, "vaultd: this login is already being completed (its code is being redeemed)."
        name = login.credential.name
        if "error" in query:
            code = query["error"][:64] if query["error"].isprintable() else "?"
            login.finish(_FAILED, f"the authorization server answered {code}{described_error(query)}")
            return 200, f"vaultd: the login of {name!r} failed ({code}). You can close this tab."
        code_value = query.get("code")
        if not code_value:
            return 400, "vaultd: the redirect carries no code; refused."
        redirect.redeeming = True  # before the first await: a second redirect redeems nothing
        await self._succeed(
            login,
            {
                "grant_type": "authorization_code",
                "code": code_value,
                "redirect_uri": redirect.uri,
                "code_verifier": redirect.verifier,
            },
        )
        if login.outcome == _OK:
            return 200, f"vaultd: {name!r} is logged in. You can close this tab."
        return 200, f"vaultd: the login of {name!r} failed: {login.error}. You can close this tab."

    # -- device: RFC 8628 ---------------------------------------------------------------------------

    async def _device_authorization(self, provider: OAuth2Provider, ctx: Any, url: str) -> dict[str, Any]:
        data = {"scope": provider.scope} if provider.scope else {}
        try:
            status, answer = await provider.token_request(ctx, data, url=url)
        except UpstreamError as exc:
            raise RpcError(ErrorCode.UPSTREAM_UNAVAILABLE, f"device authorization: {exc}") from None
        if status != 200 or not isinstance(answer, dict):
            error = answer.get("error") if isinstance(answer, dict) else None
            shown = error if isinstance(error, str) and len(error) <= 64 and error.isprintable() else ""
            raise RpcError(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                f"device authorization: HTTP {status} {shown}".rstrip() + described_error(answer),
            )
        for key in ("device_code", "user_code", "verification_uri"):
            value = answer.get(key)
            if not isinstance(value, str) or not value or len(value) > 4096 or not value.isprintable():
                raise RpcError(ErrorCode.UPSTREAM_UNAVAILABLE, f"device authorization: the answer has no {key}")
        complete = answer.get("verification_uri_complete")
        if not (isinstance(complete, str) and complete.isprintable() and len(complete) <= 4096):
            answer["verification_uri_complete"] = None
        expires_in, interval = answer.get("expires_in"), answer.get("interval", 5)
        if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or not 0 < expires_in < 86400:
            raise RpcError(ErrorCode.UPSTREAM_UNAVAILABLE, "device authorization: the answer has no usable expires_in")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval <= 300:
            interval = MIN_INTERVAL
        answer["expires_in"], answer["interval"] = float(expires_in), max(float(interval), MIN_INTERVAL)
        return answer

    async def _poll(self, login: Login, provider: OAuth2Provider, device_code: str, interval: float) -> None:
        try:
            with login.scope:
                login.scope.deadline = login.deadline
                while True:
                    await trio.sleep(interval)
                    if not self._current(login):  # removed or replaced: no poll, no code spent in vain
                        login.finish(_FAILED, "the credential was replaced or removed during the login")
                        return
                    data = {"grant_type": DEVICE_GRANT, "device_code": device_code}
                    renewer = self._live_renewer()
                    await renewer.settled(login.credential)  # no renewal with the old refresh token races
                    started = self._wall()
                    try:
                        status, answer = await provider.token_request(renewer.http_context(), data)
                    except UpstreamError as exc:  # transient: the next poll may fare better
                        log.info("credential %r: device poll failed: %s", login.credential.name, exc)
                        continue
                    if status == 200:
                        await self._redeemed(login, provider, answer, started)
                        return
                    code = answer.get("error") if isinstance(answer, dict) else None
                    if code == "authorization_pending":
                        continue
                    if code == "slow_down":
                        interval += SLOW_DOWN
                        log.info("credential %r: slow_down: polling every %.0f s", login.credential.name, interval)
                        continue
                    shown = code if isinstance(code, str) and len(code) <= 64 and code.isprintable() else ""
                    login.finish(_FAILED, f"the token endpoint answered HTTP {status} {shown}".rstrip()
                                 + described_error(answer))  # fmt: skip
                    return
        finally:
            if login.outcome == _PENDING:
                login.finish(_FAILED, "the user code was not entered before the login's time ran out")

    async def _redeemed(self, login: Login, provider: OAuth2Provider, answer: Any, started: float) -> None:
        """A 200 to a device poll: the tokens are in this answer (no second request)."""
        renewer = self._live_renewer()
        try:
            grant = provider.check_login(200, answer, started)
        except UpstreamError as exc:
            self._failed(login, str(exc))
            return
        if await self._conclude(renewer, login, grant):
            log.info("credential %r: logged in with a device code", login.credential.name)


async def _close(listeners: list[trio.SocketListener]) -> None:
    for listener in listeners:
        await listener.aclose()


def _worth_a_line(count: int) -> bool:
    """Log the 1st, 2nd, 4th, 8th... of a kind: a flood is said, not written line by line."""
    return count & (count - 1) == 0


def _owner(stream: trio.SocketStream) -> tuple[int | None, str]:
    """The uid at the other end of an accepted connection, and how to say it; None if it cannot be
    told (the peer left, or the kernel cannot be asked: then the connection is not served)."""
    try:
        owner = connection_owner(cast(socket.socket, stream.socket), connected_only=True)
    except ListenerUnknown as exc:
        return None, f"who connected cannot be checked ({exc}): use 'vaultctl login --device'"
    except OSError:
        return None, "the peer left"
    return owner, "the peer left" if owner is None else f"uid {owner}"


async def _drop(stream: trio.SocketStream) -> None:
    with contextlib.suppress(OSError, trio.BrokenResourceError):
        await stream.aclose()


async def _read_target(stream: trio.SocketStream) -> str | None:
    """The request target of one HTTP/1.1 request (a GET), or None if it is not one."""
    request = await read_head(stream, h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST))
    if request is None or request.method != b"GET":
        return None
    return request.target.decode("ascii", "replace")


async def _answer(stream: trio.SocketStream, status: int, page: str, location: str | None = None) -> None:
    """A small plain-text page (it never echoes the request: the code is not repeated), or a redirect."""
    body = (page + "\n").encode("utf-8")
    reason = {200: "OK", 302: "Found", 400: "Bad Request", 404: "Not Found", 409: "Conflict"}.get(status, "OK")
    # The authorization URL is printable but may hold non-ASCII (an endpoint's path): percent-encoded.
    moved = "" if location is None else f"Location: {quote(location, safe=_URL_SAFE)}\r\n"
    head = (
        f"HTTP/1.1 {status} {reason}\r\n{moved}Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    with contextlib.suppress(trio.BrokenResourceError):
        await stream.send_all(head + body)
