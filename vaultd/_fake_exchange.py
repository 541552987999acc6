"""A fake exchange: real HTTP on 127.0.0.1 that issues, rotates and refuses tokens like the real ones.

For the test suite and ``vaultctl demo`` only: it holds fake credentials, never real ones.
It speaks the RFC 6749 token endpoint (``POST /oauth/token``, as Schwab's), Deribit's
JSON-RPC ``public/auth`` (``POST /api/v2/public/auth``), Binance's listenKey
(``/api/v3/userDataStream``) and IBKR's ``POST /v1/api/tickle``. Refresh tokens rotate with
reuse detection: presenting one already rotated revokes its whole family. Faults are set on
:class:`Behaviour` (in-process) or by ``POST /_control`` with a JSON body (another process).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import secrets
import sys
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import trio

__all__ = ["Behaviour", "FakeExchange", "main"]

_MAX_BODY = 1 << 20
#: Binance closes a user data stream 60 minutes after its listen key was created or kept alive.
LISTEN_KEY_LIFETIME = 3600.0


@dataclass
class Behaviour:
    """What the exchange does next. ``fault``: ``""`` (none), ``down`` (HTTP 500), ``slow``
    (answers after ``delay`` seconds), ``late`` (issues and rotates, then answers after
    ``delay`` seconds), ``drop`` (issues and rotates, then closes without answering),
    ``no_expires_in``, ``not_json``, ``huge`` (a 10 MB body), ``invalid_grant``."""

    expires_in: float = 900.0
    rotate: bool = True
    fault: str = ""
    #: How many requests the fault applies to before it clears itself; 0: until changed.
    times: int = 0
    delay: float = 30.0
    #: Seconds during which the refresh token just rotated is still accepted (Okta's grace
    #: period, Auth0's reuse interval); 0 means strict reuse detection.
    reuse_grace: float = 0.0
    #: The ``token_type`` answered (``DPoP`` plays a server that binds tokens to a DPoP key).
    token_type: str = "Bearer"
    #: ``refresh_token_expires_in`` in answers with a refresh token (0: not sent).
    refresh_token_expires_in: float = 0.0
    #: RFC 8628: the ``interval`` the device authorization answer names.
    device_interval: float = 5.0
    #: What each device-code poll answers, in turn: an error code, or ``ok`` (tokens); then ``ok``.
    device_script: list[str] = field(default_factory=list)


@dataclass
class _Family:
    current: str
    previous: str | None = None
    rotated_at: float = 0.0
    revoked: bool = False


@dataclass
class FakeExchange:
    """State of one fake exchange. Its fake client ids and secrets are set at construction."""

    clients: dict[str, str] = field(default_factory=lambda: {"fake-client": "fake-secret"})
    behaviour: Behaviour = field(default_factory=Behaviour)
    calls: dict[str, int] = field(default_factory=dict)
    issued_access: list[str] = field(default_factory=list)
    _families: dict[str, _Family] = field(default_factory=dict)
    _by_token: dict[str, str] = field(default_factory=dict)
    listen_keys: set[str] = field(default_factory=set)
    #: When each listen key was created or last kept alive (trio's clock): like Binance, the
    #: fake forgets a key 60 minutes after that.
    listen_key_alive: dict[str, float] = field(default_factory=dict)
    #: listenKey requests by method: POST creates, PUT keeps alive, DELETE closes.
    listen_key_calls: dict[str, int] = field(default_factory=dict)
    #: What ``/v1/api/tickle`` reports: False plays a gateway whose brokerage login lapsed.
    tickle_authenticated: bool = True
    tickle_session: str = "fake-session-1"
    port: int = 0
    #: When each device-code poll came (trio's clock).
    device_polls: list[float] = field(default_factory=list)
    #: Authorization codes redeemed (each may be redeemed once).
    redeemed_codes: set[str] = field(default_factory=set)
    #: The fault that applies to the request being answered.
    _faulted: str = ""
    #: Set when a fault with ``times`` has been used up.
    fault_spent: trio.Event = field(default_factory=trio.Event)

    # -- refresh-token families ------------------------------------------------------------------

    def new_refresh_token(self) -> str:
        """Start a family (what a user's first login would give the operator)."""
        token = "fake-rt-" + secrets.token_hex(8)
        family = secrets.token_hex(4)
        self._families[family] = _Family(token)
        self._by_token[token] = family
        return token

    def current_refresh_token(self, token: str) -> str | None:
        """The newest token of ``token``'s family, or None if the family was revoked."""
        family = self._families.get(self._by_token.get(token, ""))
        return None if family is None or family.revoked else family.current

    def family_revoked(self, token: str) -> bool:
        family = self._families.get(self._by_token.get(token, ""))
        return family is not None and family.revoked

    def _redeem(self, token: str) -> str | None:
        """Use a refresh token; the one to return (rotated or not), or None for invalid_grant."""
        family = self._families.get(self._by_token.get(token, ""))
        if family is None or family.revoked:
            return None
        now = trio.current_time()
        if token != family.current:
            if token == family.previous and now - family.rotated_at <= self.behaviour.reuse_grace:
                return family.current
            family.revoked = True  # reuse of a rotated token: assume theft, revoke everything
            return None
        if not self.behaviour.rotate:
            return token
        rotated = "fake-rt-" + secrets.token_hex(8)
        family.previous, family.current, family.rotated_at = token, rotated, now
        self._by_token[rotated] = self._by_token[token]
        return rotated

    def _access(self) -> str:
        token = "fake-at-" + secrets.token_hex(12)
        self.issued_access.append(token)
        return token

    # -- HTTP ------------------------------------------------------------------------------------

    async def serve(self, port: int = 0, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._connection, listeners)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_BODY)
        try:
            while True:
                request, body = await self._read_request(stream, conn)
                if request is None:
                    return
                answer = await self._dispatch(request, body)
                if answer is None:  # the "drop" fault: hang up without answering
                    return
                status, payload = answer
                headers = [("content-type", "application/json"), ("content-length", str(len(payload)))]
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
                await stream.send_all(conn.send(h11.Data(data=payload)) or b"")
                await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    async def _read_request(self, stream: trio.SocketStream, conn: h11.Connection) -> tuple[Any, bytes]:
        request = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > _MAX_BODY:
                    return None, b""
            elif isinstance(event, h11.EndOfMessage):
                return request, body
            else:  # ConnectionClosed
                return None, b""

    async def _dispatch(self, request: h11.Request, body: bytes) -> tuple[int, bytes] | None:
        target = urlsplit(request.target.decode())
        path, query = target.path, parse_qs(target.query)
        method = request.method.decode()
        self.calls[path] = self.calls.get(path, 0) + 1
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        if path == "/_control" and method == "POST":
            return self._control(body)
        fault = self._faulted = self.behaviour.fault
        if fault and self.behaviour.times:
            self.behaviour.times -= 1
            if not self.behaviour.times:
                self.behaviour.fault = ""  # this request is the last one to get it
                self.fault_spent.set()
        if fault == "down":
            return 500, b'{"error": "server_error"}'
        if fault == "slow":
            await trio.sleep(self.behaviour.delay)
        if path == "/oauth/device" and method == "POST":
            answer = self._device_authorization()
        elif path == "/oauth/token" and method == "POST":
            answer = self._oauth(headers, parse_qs(body.decode(errors="replace")))
        elif path == "/api/v2/public/auth":
            answer = self._deribit(body)
        elif path in ("/api/v3/userDataStream", "/fapi/v1/listenKey"):
            answer = self._listen_key(method, headers, query)
        elif path == "/v1/api/tickle" and method == "POST":
            answer = self._tickle()
        else:
            answer = 404, {"error": "not_found"}
        if fault == "drop" and answer[0] == 200:
            return None
        if fault == "late":
            await trio.sleep(self.behaviour.delay)
        return self._encode(*answer, fault)

    def _encode(self, status: int, payload: dict[str, Any], fault: str) -> tuple[int, bytes]:
        if status == 200 and fault == "not_json":
            return 200, b"<html>502 Bad Gateway</html>"
        if status == 200 and fault == "huge":
            return 200, b'{"padding": "' + b"x" * (10 << 20) + b'"}'
        return status, json.dumps(payload).encode()

    def _control(self, body: bytes) -> tuple[int, bytes]:
        changes = json.loads(body or b"{}")
        if changes.pop("new_refresh_token", False):
            return 200, json.dumps({"refresh_token": self.new_refresh_token()}).encode()
        if "current_of" in changes:
            return 200, json.dumps({"current": self.current_refresh_token(changes["current_of"])}).encode()
        for key, value in changes.items():
            setattr(self.behaviour, key, value)
        return 200, json.dumps({"behaviour": asdict(self.behaviour), "calls": self.calls}).encode()

    def _tokens(self, refresh: str | None) -> dict[str, Any]:
        answer: dict[str, Any] = {"access_token": self._access(), "token_type": self.behaviour.token_type}
        answer["scope"] = "trade"
        if self._faulted != "no_expires_in":
            answer["expires_in"] = self.behaviour.expires_in
        if refresh is not None:
            answer["refresh_token"] = refresh
            if self.behaviour.refresh_token_expires_in:
                answer["refresh_token_expires_in"] = self.behaviour.refresh_token_expires_in
        return answer

    def _device_authorization(self) -> tuple[int, dict[str, Any]]:
        return 200, {
            "device_code": "fake-dc-" + secrets.token_hex(8),
            "user_code": "FAKE-CODE",
            "verification_uri": f"{self.url}/device",
            "expires_in": 600,
            "interval": self.behaviour.device_interval,
        }

    def _device_poll(self) -> tuple[int, dict[str, Any]]:
        self.device_polls.append(trio.current_time())
        step = self.behaviour.device_script.pop(0) if self.behaviour.device_script else "ok"
        if step != "ok":
            return 400, {"error": step, "error_description": f"fake: {step}"}
        return 200, self._tokens(self.new_refresh_token())

    def _client_ok(self, client_id: str | None, secret: str | None) -> bool:
        return client_id is not None and self.clients.get(client_id) == secret

    def _oauth(self, headers: dict[str, str], form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        one = {k: v[0] for k, v in form.items()}
        client_id, secret = one.get("client_id"), one.get("client_secret")
        if headers.get("authorization", "").startswith("Basic "):
            decoded = base64.b64decode(headers["authorization"][6:]).decode()
            client_id, _, secret = decoded.partition(":")
        if not self._client_ok(client_id, secret):
            return 401, {"error": "invalid_client"}
        if self._faulted == "invalid_grant":
            return 400, {"error": "invalid_grant", "error_description": "refresh token revoked"}
        grant = one.get("grant_type")
        if grant == "client_credentials":
            return 200, self._tokens(None)
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            return self._device_poll()
        if grant == "authorization_code":  # any code, once (a browser login's redirect)
            code = one.get("code", "")
            if not code or code in self.redeemed_codes:
                return 400, {"error": "invalid_grant", "error_description": "authorization code invalid or used"}
            self.redeemed_codes.add(code)
            return 200, self._tokens(self.new_refresh_token())
        if grant == "refresh_token":
            rotated = self._redeem(one.get("refresh_token", ""))
            if rotated is None:
                return 400, {"error": "invalid_grant", "error_description": "refresh token invalid or reused"}
            return 200, self._tokens(rotated)
        return 400, {"error": "unsupported_grant_type"}

    def _deribit(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            call = json.loads(body)
            params, call_id = call["params"], call.get("id")
        except (ValueError, KeyError, TypeError):
            return 400, {"jsonrpc": "2.0", "error": {"code": 11050, "message": "bad_request"}}

        def error(code: int, message: str) -> tuple[int, dict[str, Any]]:
            return 400, {"jsonrpc": "2.0", "id": call_id, "error": {"code": code, "message": message}}

        grant = params.get("grant_type")
        if self._faulted == "invalid_grant":
            return error(13004, "invalid_credentials")
        if grant == "client_credentials":
            if not self._client_ok(params.get("client_id"), params.get("client_secret")):
                return error(13004, "invalid_credentials")
            result = self._tokens(self.new_refresh_token())
        elif grant == "refresh_token":
            rotated = self._redeem(params.get("refresh_token", ""))
            if rotated is None:
                return error(13009, "invalid_token")
            result = self._tokens(rotated)
        else:
            return error(11050, "bad_request")
        result["token_type"] = "bearer"
        return 200, {"jsonrpc": "2.0", "id": call_id, "result": result}

    def _listen_key(self, method: str, headers: dict[str, str], query: dict[str, list[str]]) -> tuple[int, Any]:
        self.listen_key_calls[method] = self.listen_key_calls.get(method, 0) + 1
        if headers.get("x-mbx-apikey") not in self.clients:
            return 401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
        now = trio.current_time()
        for stale in [k for k, at in self.listen_key_alive.items() if now - at > LISTEN_KEY_LIFETIME]:
            self.listen_keys.discard(stale)
            del self.listen_key_alive[stale]
        if method == "POST":
            key = "fake-lk-" + secrets.token_hex(16)
            self.listen_keys.add(key)
            self.listen_key_alive[key] = now
            return 200, {"listenKey": key}
        key = query.get("listenKey", [""])[0]
        if key not in self.listen_keys:
            return 400, {"code": -1125, "msg": "This listenKey does not exist."}
        if method == "DELETE":
            self.listen_keys.discard(key)
            self.listen_key_alive.pop(key, None)
        else:
            self.listen_key_alive[key] = now
        return 200, {}

    def _tickle(self) -> tuple[int, Any]:
        auth = {"authenticated": self.tickle_authenticated, "competing": False, "connected": True, "message": ""}
        return 200, {"session": self.tickle_session, "iserver": {"authStatus": auth}}


def main(argv: list[str] | None = None) -> int:
    """``python -m vaultd._fake_exchange [--port N]``: serve until killed; print the port."""
    parser = argparse.ArgumentParser(description="A fake exchange token endpoint for tests and demos (fake data only).")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--expires-in", type=float, default=900.0)
    args = parser.parse_args(argv)
    exchange = FakeExchange(behaviour=Behaviour(expires_in=args.expires_in))

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(exchange.serve, args.port)
            print(port, flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
