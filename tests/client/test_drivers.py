"""The three drivers against a real daemon: one example for all, the cache, restarts and faults.

The asyncio tests run their own event loop (``asyncio.run``); the trio tests are trio tests.
Daemons and the fake exchange are real processes, so waits poll a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgpack
import pytest
import trio

from vaultd_client import AsyncClient, Client, DaemonUnavailable, Signed, Timeout, TrioClient
from vaultd_client.errors import (
    ConnectionLost,
    Forbidden,
    InvalidParams,
    Locked,
    MalformedResponse,
    TransportError,
    UnknownCredential,
)

from ..daemon_process import PASS, DaemonProcess, FakeExchangeProcess
from ..integration.test_renewal_e2e import add_oauth, wait_for

HMAC = {"scheme": "binance-hmac", "api_key": "fake-key", "secret": "fake-secret"}
ORDER = "https://api.binance.com/api/v3/order?symbol=BTCUSDT&side=BUY&type=MARKET&quantity=1"
OKX_WS = {"scheme": "okx-ws-login", "api_key": "fake-okx-key", "secret": "fake-okx-secret", "passphrase": "fake-pass"}
OKX_WS_URL = "wss://ws.okx.com:8443/ws/v5/private"


def ready_with_signer(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready("fake-token-drivers")
    daemon.ctl("add", "hmac", "--kind", "sign", *daemon.pw(), stdin=json.dumps(HMAC))
    daemon.ctl("add", "okxws", "--kind", "sign", *daemon.pw(), stdin=json.dumps(OKX_WS))


def check_example(token: Any, signed: Any, login: Any, status: dict[str, Any], hello: dict[str, Any]) -> None:
    assert token.value == "fake-token-drivers" and token.headers == {"Authorization": "Bearer fake-token-drivers"}
    assert signed.url.startswith(ORDER + "&timestamp=") and "&signature=" in signed.url
    assert signed.headers == {"X-MBX-APIKEY": "fake-key"}
    assert [name for name, _ in signed.query][-2:] == ["timestamp", "signature"]
    assert signed.query == tuple(parse_qsl(urlsplit(signed.url).query))
    check_okx_login(login)
    assert status["state"] == "UNLOCKED" and {c["name"] for c in status["credentials"]} == {"ex", "hmac", "okxws"}
    assert hello["state"] == "UNLOCKED"


def check_okx_login(login: Any) -> None:
    """``Signed.query`` holds OKX's login args (SPEC 6.6), checked against the formula written out:
    sign = base64(HMAC-SHA256(secret, timestamp in seconds + "GET" + "/users/self/verify"))."""
    assert isinstance(login, Signed) and login.headers == {} and login.body == b""
    assert isinstance(login.query, tuple) and all(type(pair) is tuple for pair in login.query)
    args = dict(login.query)
    assert list(args) == ["apiKey", "passphrase", "timestamp", "sign"]
    assert args["apiKey"] == "fake-okx-key" and args["passphrase"] == "fake-pass"
    mac = hmac.new(b"fake-okx-secret", f"{args['timestamp']}GET/users/self/verify".encode(), hashlib.sha256)
    assert args["sign"] == base64.b64encode(mac.digest()).decode()
    assert login.valid_until == int(args["timestamp"]) + 30
    assert login.url.split("?")[0] == OKX_WS_URL and login.query == tuple(parse_qsl(urlsplit(login.url).query))
    assert "fake-pass" not in repr(login) and args["sign"] not in repr(login)
    with pytest.raises(AttributeError, match="read-only"):
        login.query = ()  # type: ignore[misc]


# -- sign_many on every driver ---------------------------------------------------------------------

WITHDRAW = "https://api.binance.com/sapi/v1/capital/withdraw/apply?coin=BTC&amount=1"
BURST: list[dict[str, Any]] = [
    {"name": "hmac", "method": "POST", "url": ORDER},
    {"name": "hmac", "method": "POST", "url": WITHDRAW},  # the allow-list refuses it alone
    {"name": "nope", "method": "GET", "url": "https://api.binance.com/api/v3/account"},
    {"name": "hmac", "method": "POST", "url": "https://api.binance.com/api/v3/order", "body": "symbol=BTCUSDT"},
    {"name": "okxws", "method": "GET", "url": OKX_WS_URL},
    {"name": "hmac", "method": "POST", "url": ORDER, "schemes": ["okx", "okx-ws-login"]},  # another venue's
    {"name": "hmac", "method": "POST", "url": ORDER, "schemes": ["binance-ed25519", "binance-hmac"]},
]


def check_burst(answers: list[Any]) -> None:
    first, refused, unknown, form, login, wrong_venue, right_venue = answers
    assert isinstance(wrong_venue, InvalidParams)
    assert "credential 'hmac' signs with scheme 'binance-hmac', not okx or okx-ws-login" in str(wrong_venue)
    assert isinstance(right_venue, Signed) and right_venue.url.startswith(ORDER + "&timestamp=")
    assert isinstance(first, Signed) and first.url.startswith(ORDER + "&timestamp=")
    assert isinstance(refused, Forbidden) and "moves money out" in str(refused)
    assert isinstance(unknown, UnknownCredential)
    assert isinstance(form, Signed) and form.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form.body.startswith(b"symbol=BTCUSDT&timestamp=")
    assert form.query == ()  # the signature went into the body
    check_okx_login(login)


def test_sign_many_on_the_sync_client(daemon: DaemonProcess) -> None:
    ready_with_signer(daemon)
    with Client(daemon.socket_path) as client:
        check_burst(client.sign_many(BURST))
        assert client.sign_many([]) == []
        with pytest.raises(TypeError, match="request 0 must have name, method and url"):
            client.sign_many([{"name": "hmac", "url": ORDER}])
        with pytest.raises(TypeError, match="not 'verb'"):
            client.sign_many([{"name": "hmac", "method": "GET", "url": ORDER, "verb": "GET"}])
        with pytest.raises(TypeError, match="not one request"):
            client.sign_many(BURST[0])
        with pytest.raises(InvalidParams, match="1 to 256 requests"):
            client.sign_many(BURST[:1] * 257)
        with pytest.raises(InvalidParams, match="signs with scheme 'binance-hmac', not okx: nothing signed"):
            client.sign("hmac", "POST", ORDER, schemes=["okx"])
        with pytest.raises(TypeError, match="list of scheme names"):
            client.sign("hmac", "POST", ORDER, schemes="binance-hmac")
        assert client.sign("hmac", "POST", ORDER, schemes=("binance-hmac",)).url.startswith(ORDER)


def test_sign_many_on_the_asyncio_client(daemon: DaemonProcess) -> None:
    ready_with_signer(daemon)

    async def burst() -> None:
        async with AsyncClient(daemon.socket_path) as client:
            check_burst(await client.sign_many(BURST))
            assert await client.sign_many([]) == []

    asyncio.run(burst())


async def test_sign_many_on_the_trio_client(daemon: DaemonProcess) -> None:
    ready_with_signer(daemon)
    async with TrioClient(daemon.socket_path) as client:
        check_burst(await client.sign_many(BURST))
        with pytest.raises(InvalidParams, match="1 to 256 requests"):
            await client.sign_many(BURST[:1] * 257)


# -- the same example on every driver -----------------------------------------------------------


def test_the_same_example_works_on_the_sync_client(daemon: DaemonProcess) -> None:
    ready_with_signer(daemon)
    with Client(daemon.socket_path) as client:
        check_example(
            client.token("ex"),
            client.sign("hmac", "POST", ORDER),
            client.sign("okxws", "GET", OKX_WS_URL),
            client.status(),
            client.hello(),
        )


def test_the_same_example_works_on_the_asyncio_client(daemon: DaemonProcess) -> None:
    ready_with_signer(daemon)

    async def example() -> None:
        async with AsyncClient(daemon.socket_path) as client:
            check_example(
                await client.token("ex"),
                await client.sign("hmac", "POST", ORDER),
                await client.sign("okxws", "GET", OKX_WS_URL),
                await client.status(),
                await client.hello(),
            )

    asyncio.run(example())


async def test_the_same_example_works_on_the_trio_client(daemon: DaemonProcess) -> None:
    ready_with_signer(daemon)
    async with TrioClient(daemon.socket_path) as client:
        check_example(
            await client.token("ex"),
            await client.sign("hmac", "POST", ORDER),
            await client.sign("okxws", "GET", OKX_WS_URL),
            await client.status(),
            await client.hello(),
        )


# -- pipelining and threads ---------------------------------------------------------------------


@pytest.fixture
def many(daemon: DaemonProcess) -> DaemonProcess:
    """A daemon with 16 static credentials, c0 to c15."""
    daemon.start()
    daemon.ready()
    with Client(daemon.socket_path) as admin:
        for i in range(16):
            params = {"passphrase": PASS, "name": f"c{i}", "kind": "static", "config": {"token": f"fake-token-{i}"}}
            admin.call("credential.put", params)
    return daemon


def test_a_hundred_threads_sharing_one_client_each_get_their_own_answer(many: DaemonProcess) -> None:
    client = Client(many.socket_path, cache=False)  # every call goes to the daemon
    answers: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            answers[i] = [client.token(f"c{i % 16}").value for _ in range(20)]
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    assert errors == []
    assert all(answers[i] == [f"fake-token-{i % 16}"] * 20 for i in range(100))


def test_sixty_four_concurrent_asyncio_calls_share_one_connection(many: DaemonProcess) -> None:
    async def run() -> None:
        async with AsyncClient(many.socket_path, cache=False) as client:
            await client.hello()
            link = client._core._link
            values = await asyncio.gather(*(client.token(f"c{i % 16}") for i in range(64)))
            assert [t.value for t in values] == [f"fake-token-{i % 16}" for i in range(64)]
            assert client._core._link is link, "pipelined on the one connection"

    asyncio.run(run())


async def test_sixty_four_concurrent_trio_calls_share_one_connection(many: DaemonProcess) -> None:
    async with TrioClient(many.socket_path, cache=False) as client:
        await client.hello()
        link = client._core._link
        values: dict[int, str] = {}

        async def one(i: int) -> None:
            values[i] = (await client.token(f"c{i % 16}")).value

        async with trio.open_nursery() as nursery:
            for i in range(64):
                nursery.start_soon(one, i)
        assert values == {i: f"fake-token-{i % 16}" for i in range(64)}
        assert client._core._link is link, "pipelined on the one connection"


# -- the cache ----------------------------------------------------------------------------------


def test_a_fresh_cached_token_never_touches_the_socket(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready("fake-token-cached")
    cached, uncached = Client(daemon.socket_path), Client(daemon.socket_path, cache=False)
    assert cached.token("ex").value == uncached.token("ex").value == "fake-token-cached"
    assert daemon.stop() == 0  # the daemon is gone: only the cache can answer now
    assert cached.token("ex").value == "fake-token-cached"
    with pytest.raises(TransportError):
        uncached.token("ex")
    assert cached.token("ex", min_ttl=3600).value == "fake-token-cached"  # expiry unknown: as the daemon does


async def test_a_renewal_pushed_by_the_daemon_replaces_the_cached_token(
    daemon: DaemonProcess, fake_exchange: FakeExchangeProcess
) -> None:
    fake_exchange.control(expires_in=3)
    daemon.start()
    daemon.ready()
    add_oauth(daemon, fake_exchange)
    async with TrioClient(daemon.socket_path, cache_margin=0.5) as client, client.watch(["live"]) as watch:
        first = await client.token("live")
        renewed = first
        async for event in watch:
            assert event.kind == "updated" and event.token is not None
            renewed = event.token
            if renewed.value != first.value:
                break
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGSTOP)  # a frozen daemon: an answer can only come from the cache
        try:
            with trio.fail_after(5):
                assert (await client.token("live")).value == renewed.value
        finally:
            daemon.proc.send_signal(signal.SIGCONT)


def test_a_lock_seen_by_a_watch_empties_the_cache(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready("fake-token-lock")
    with Client(daemon.socket_path) as client, client.watch(["ex"], timeout=15) as events:
        assert client.token("ex").value == "fake-token-lock"
        daemon.ctl("lock")
        assert [e.kind for e in events] == ["locked"]
        with pytest.raises(Locked):
            client.token("ex")


def test_an_asyncio_watch_follows_renewals_and_ends_on_a_lock(
    daemon: DaemonProcess, fake_exchange: FakeExchangeProcess
) -> None:
    fake_exchange.control(expires_in=3)  # > the 1 s expiry margin: no third renewal races the lock
    daemon.start()
    daemon.ready()
    add_oauth(daemon, fake_exchange)

    async def run() -> list[str]:
        kinds: list[str] = []
        async with AsyncClient(daemon.socket_path) as client, client.watch(["live"]) as watch:
            async with asyncio.timeout(30):
                async for event in watch:
                    kinds.append(event.kind)
                    if event.kind == "updated":
                        assert event.token is not None and (await client.token("live")).value == event.token.value
                        if kinds.count("updated") == 2:
                            await asyncio.to_thread(daemon.ctl, "lock")
        return kinds

    kinds = asyncio.run(run())
    assert kinds[:2] == ["updated", "updated"] and kinds[-1] == "locked"


# -- faults -------------------------------------------------------------------------------------


def restart_unlocked(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ctl("unlock", *daemon.pw())


def test_the_sync_client_survives_a_daemon_restart_mid_call(
    daemon: DaemonProcess, fake_exchange: FakeExchangeProcess
) -> None:
    fake_exchange.control(expires_in=2)
    daemon.start()
    daemon.ready()
    add_oauth(daemon, fake_exchange)
    client = Client(daemon.socket_path, cache=False)
    watch = client.watch(["live"], timeout=30)
    assert client.token("live").value
    fake_exchange.control(fault="slow", delay=30, times=1)
    failures: list[BaseException] = []

    def renew() -> None:
        try:
            client.call("credential.renew", {"passphrase": PASS, "name": "live"})
        except BaseException as exc:  # the call in flight when the daemon dies
            failures.append(exc)

    in_flight = threading.Thread(target=renew)
    in_flight.start()
    wait_for(lambda: fake_exchange.calls() >= 2, what="the renewal to reach the exchange")
    daemon.stop(signal.SIGKILL)
    in_flight.join(timeout=20)
    assert len(failures) == 1 and isinstance(failures[0], ConnectionLost), failures
    with pytest.raises(DaemonUnavailable, match=str(daemon.socket_path)):
        client.token("live")
    restart_unlocked(daemon)
    assert wait_for(lambda: _token_or_none(client, "live"), what="the client to reconnect")
    event = next(watch)  # the watcher subscribed again by itself and sees the next renewal
    assert event.kind == "updated" and event.name == "live"
    watch.close()
    client.close()


def _token_or_none(client: Client, name: str) -> str | None:
    try:
        return client.token(name).value
    except DaemonUnavailable:
        return None


async def test_the_trio_client_survives_a_daemon_restart(
    daemon: DaemonProcess, fake_exchange: FakeExchangeProcess
) -> None:
    fake_exchange.control(expires_in=2)
    daemon.start()
    daemon.ready()
    add_oauth(daemon, fake_exchange)
    async with TrioClient(daemon.socket_path, cache=False) as client, client.watch(["live"]) as watch:
        assert (await client.token("live")).value
        daemon.stop(signal.SIGKILL)
        with pytest.raises(TransportError):
            await client.token("live")
        restart_unlocked(daemon)
        with trio.fail_after(20):
            while True:
                try:
                    assert (await client.token("live")).value
                    break
                except DaemonUnavailable:
                    await trio.sleep(0.05)
            event = await watch.__anext__()
        assert event.kind == "updated" and event.name == "live"


def test_the_asyncio_client_survives_a_daemon_restart(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready("fake-token-restart")

    async def run() -> None:
        async with AsyncClient(daemon.socket_path, cache=False) as client:
            assert (await client.token("ex")).value == "fake-token-restart"
            daemon.stop(signal.SIGKILL)
            with pytest.raises(TransportError):
                await client.token("ex")
            restart_unlocked(daemon)
            async with asyncio.timeout(20):
                while True:
                    try:
                        assert (await client.token("ex")).value == "fake-token-restart"
                        return
                    except DaemonUnavailable:
                        await asyncio.sleep(0.05)

    asyncio.run(run())


def test_no_daemon_is_unavailable_at_once_naming_the_socket(short_tmp: Path) -> None:
    path = short_tmp / "absent.sock"
    with pytest.raises(DaemonUnavailable, match=str(path)):
        Client(path, timeout=600).token("ex")

    async def on_asyncio() -> None:
        with pytest.raises(DaemonUnavailable, match=str(path)):
            await AsyncClient(path, timeout=600).token("ex")

    asyncio.run(on_asyncio())

    async def on_trio() -> None:
        with pytest.raises(DaemonUnavailable, match=str(path)):
            await TrioClient(path, timeout=600).token("ex")

    trio.run(on_trio)


class ScriptedServer:
    """A same-uid Unix socket server: connection N gets ``answers[N]`` to its first request.

    Each answer is a function from the request's msgid to the bytes to send back (or None:
    never answer). It stands in for a daemon gone wrong, which a real one cannot be made into.
    """

    def __init__(self, path: Path, answers: list[Callable[[int], bytes | None]]) -> None:
        self.path = path
        self.answers = answers
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.connections = 0
        self.held: list[socket.socket] = []  # open until the test ends, answered or not
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for answer in self.answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)
            self.connections += 1
            unpacker = msgpack.Unpacker()
            while True:
                unpacker.feed(conn.recv(65536))
                requests = list(unpacker)
                if requests:
                    break
            reply = answer(requests[0][1])
            if reply is not None:
                conn.sendall(reply)

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


def good(msgid: int) -> bytes:
    answer = [1, msgid, None, {"token": "fake-token-scripted", "type": "bearer", "expires_at": None}]
    return bytes(msgpack.packb(answer))


@pytest.fixture
def scripted(short_tmp: Path) -> Iterator[Callable[[list[Callable[[int], bytes | None]]], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(answers: list[Callable[[int], bytes | None]]) -> ScriptedServer:
        server = ScriptedServer(short_tmp / f"s{len(servers)}.sock", answers)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


BAD_ANSWERS: dict[str, Callable[[int], bytes | None]] = {
    "garbage": lambda msgid: b"\xc1\xc1\xc1 not msgpack",
    "an unknown msgid": lambda msgid: msgpack.packb([1, msgid + 1000, None, {"token": "x"}]),
}


@pytest.mark.parametrize("bad", BAD_ANSWERS)
def test_a_bad_answer_drops_the_connection_and_the_next_call_rebuilds_it(
    scripted: Callable[[list[Callable[[int], bytes | None]]], ScriptedServer], bad: str
) -> None:
    drivers: list[tuple[str, Callable[[Path], Awaitable[str] | str]]] = [
        ("sync", _sync_twice),
        ("asyncio", lambda path: asyncio.run(_async_twice(AsyncClient(path, cache=False)))),
        ("trio", lambda path: trio.run(_async_twice, TrioClient(path, cache=False))),
    ]
    for label, run in drivers:
        server = scripted([BAD_ANSWERS[bad], good])
        assert run(server.path) == "fake-token-scripted", label
        assert server.connections == 2, label


def _sync_twice(path: Path) -> str:
    client = Client(path, cache=False)
    with pytest.raises(MalformedResponse):
        client.token("ex")
    return client.token("ex").value


async def _async_twice(client: AsyncClient | TrioClient) -> str:
    with pytest.raises(MalformedResponse):
        await client.token("ex")
    return (await client.token("ex")).value


def test_every_driver_times_out_on_a_daemon_that_never_answers(
    scripted: Callable[[list[Callable[[int], bytes | None]]], ScriptedServer],
) -> None:
    server = scripted([lambda msgid: None] * 3)
    with pytest.raises(Timeout, match=r"token\.get"):
        Client(server.path, timeout=0.2, cache=False).token("ex")

    async def on_asyncio() -> None:
        with pytest.raises(Timeout, match=r"token\.get"):
            await AsyncClient(server.path, timeout=0.2, cache=False).token("ex")

    asyncio.run(on_asyncio())

    async def on_trio() -> None:
        with pytest.raises(Timeout, match=r"token\.get"):
            await TrioClient(server.path, timeout=0.2, cache=False).token("ex")

    trio.run(on_trio)
