"""The sync client: its public surface, its errors, its imports, and sharing across threads."""

from __future__ import annotations

import inspect
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import vaultd_client
import vaultd_protocol
from vaultd_client import Client, DaemonUnavailable, Timeout, Token
from vaultd_client.errors import RemoteError, error_from_info
from vaultd_protocol import ErrorInfo

from ..daemon_process import DaemonProcess


def test_public_surface_is_pinned() -> None:
    assert sorted(vaultd_client.__all__) == [
        "AsyncClient", "AsyncWatch", "Client", "ConnectionLost", "DaemonUnavailable", "Locked", "RemoteError",
        "Signed", "Timeout", "Token", "TransportError", "TrioClient", "UntrustedSocket", "VaultdError", "Watch",
        "WatchEvent", "errors",
    ]  # fmt: skip
    methods = ("token", "sign", "sign_many", "watch", "status", "lock", "unlock", "hello", "call")
    for driver in (Client, vaultd_client.AsyncClient, vaultd_client.TrioClient):
        for name in methods:
            assert callable(getattr(driver, name)), (driver, name)
    assert callable(Client.close) and callable(vaultd_client.AsyncClient.aclose)
    for name in methods:  # the async drivers take the sync client's arguments
        sync_params = list(inspect.signature(getattr(Client, name)).parameters)
        for driver in (vaultd_client.AsyncClient, vaultd_client.TrioClient):
            assert (
                list(inspect.signature(getattr(driver, name)).parameters)[: len(sync_params) - 1]
                == (sync_params[: len(sync_params) - 1])
            ), (driver, name)
    assert set(vaultd_protocol.__all__) == {
        "DEFAULT_LIMITS", "MAX_MSGID", "METHODS", "NEED_DATA", "PROTOCOL_VERSION", "SIGN_MANY_MAX", "SOCKET_ENV",
        "SUPPORTED_PROTOCOLS", "Connection", "ConnectionClosed", "CredentialState", "ErrorCode", "ErrorInfo",
        "Event", "Field", "InvalidParams", "KdfProfile", "Limits", "LocalProtocolError", "MessageType", "Method",
        "NeedData", "Notification", "Notify", "ProtocolError", "RemoteProtocolError", "Request", "Response", "Role",
        "VaultState", "default_socket_path", "encode", "error_response", "parse_params",
    }  # fmt: skip


def test_importing_the_client_pulls_in_neither_trio_nor_pynacl() -> None:
    # Nor asyncio (~10 ms of an engine's start-up; the async drivers load on use), nor typing (~7 ms),
    # nor dataclasses with the inspect it loads (~7 ms: see vaultd_protocol._value).
    code = (
        "import sys, vaultd_client; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('trio', 'nacl', 'vaultd', 'asyncio', 'typing', 'dataclasses', 'inspect')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_token_repr_hides_the_value() -> None:
    token = Token("ex", "fake-secret-value", "bearer", None, None, {"Authorization": "Bearer fake-secret-value"})
    assert "fake-secret-value" not in repr(token)


def test_unknown_error_codes_become_the_base_class() -> None:
    error = error_from_info(ErrorInfo(999, "FROM_THE_FUTURE", "something new"))
    assert type(error) is RemoteError and error.code == 999 and error.name == "FROM_THE_FUTURE"


def test_no_daemon_names_the_socket(short_tmp: Path) -> None:
    path = short_tmp / "absent.sock"
    with pytest.raises(DaemonUnavailable, match=str(path)) as info:
        Client(path).status()
    assert info.value.socket_path == str(path)


def test_a_daemon_that_never_answers_times_out(short_tmp: Path) -> None:
    path = short_tmp / "mute.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    try:
        with pytest.raises(Timeout, match="no answer to status"):
            Client(path, timeout=0.3).status()
    finally:
        server.close()


def test_default_socket_path_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULTD_SOCKET", "/run/custom/v.sock")
    assert Client().socket_path == "/run/custom/v.sock"
    monkeypatch.delenv("VAULTD_SOCKET")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/4242")
    assert Client().socket_path == "/run/user/4242/vaultd/vaultd.sock"


def test_many_threads_share_one_client(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready("fake-token-threads")
    client = Client(daemon.socket_path)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(50):
                results.append(client.token("ex").value)
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    assert errors == []
    assert results == ["fake-token-threads"] * 400


def test_vaultctl_offers_every_kind_the_daemon_knows() -> None:
    from vaultd._providers import KINDS
    from vaultd.ctl.credentials import KINDS as CTL_KINDS

    assert sorted(KINDS) == sorted(CTL_KINDS)


def test_signed_carries_the_final_query_decoded_and_never_prints_it() -> None:
    import copy
    import pickle

    from vaultd_client import Signed
    from vaultd_client.errors import MalformedResponse

    wire = {
        "headers": {},
        "url": "wss://ws.okx.com:8443/ws/v5/private?apiKey=k&passphrase=fake%20pass&timestamp=1&sign=c2ln",
        "query": [["apiKey", "k"], ["passphrase", "fake pass"], ["timestamp", "1"], ["sign", "c2ln"]],
        "body": b"",
        "valid_until": 31.0,
        "nonce": None,
    }
    signed = Signed.from_result(wire)
    assert signed.query == (("apiKey", "k"), ("passphrase", "fake pass"), ("timestamp", "1"), ("sign", "c2ln"))
    assert repr(signed) == (
        "Signed(url='wss://ws.okx.com:8443/ws/v5/private', valid_until=31.0, headers=<hidden>, query=<hidden>)"
    )
    with pytest.raises(AttributeError):
        signed.query = ()  # type: ignore[misc]
    assert copy.copy(signed) == signed and pickle.loads(pickle.dumps(signed)) == signed
    assert Signed({}, "https://h/p", b"", 1.0).query == ()  # positional construction as before
    older = {key: value for key, value in wire.items() if key != "query"}
    assert Signed.from_result(older).query == ()  # a daemon from before 'query'
    for bad in ("apiKey=k", {"apiKey": "k"}, [["apiKey"]], [["apiKey", 1]], [["a", "b", "c"]], ["ab"]):
        with pytest.raises(MalformedResponse, match="query is not pairs of strings"):
            Signed.from_result({**wire, "query": bad})


def test_sign_many_answers_are_read_in_order_and_malformed_ones_refused() -> None:
    from vaultd_client import Signed
    from vaultd_client._session import signed_many
    from vaultd_client.errors import Forbidden, MalformedResponse, RemoteError

    good = {"headers": {"X-MBX-APIKEY": "k"}, "url": "https://h/p", "body": b"", "valid_until": 1.0, "nonce": None}
    error = {"error": {"code": 14, "name": "FORBIDDEN", "message": "not signed: no"}}
    future = {"error": {"code": 99, "name": "NEW_CODE", "message": "later"}}
    answers = signed_many({"results": [good, error, future]}, 3)
    assert isinstance(answers[0], Signed) and answers[0].url == "https://h/p"
    assert isinstance(answers[1], Forbidden) and str(answers[1]) == "not signed: no"
    assert type(answers[2]) is RemoteError and answers[2].code == 99
    for bad in ({"results": [good]}, {"results": [good, good, {"error": "x"}]}, {"results": [good, good, {}]}, []):
        with pytest.raises(MalformedResponse):
            signed_many(bad, 3)


def test_sign_many_checks_every_request_before_calling_the_daemon(tmp_path: Path) -> None:
    # No daemon listens here: an answer other than DaemonUnavailable was made without calling it.
    import asyncio

    import trio

    from vaultd_client import AsyncClient, TrioClient

    missing = str(tmp_path / "no.sock")
    good = {"name": "b", "method": "GET", "url": "https://api.binance.com/api/v3/account"}
    bad_requests = ([good, {"name": "b", "url": "https://h/p"}], [good, {**good, "verb": "GET"}])
    with Client(missing) as client:
        assert client.sign_many([]) == []
        for bad in bad_requests:
            with pytest.raises(TypeError, match="request 1 must have name, method and url"):
                client.sign_many(bad)
        with pytest.raises(DaemonUnavailable):
            client.sign_many([good])

    async def each(driver: type[AsyncClient] | type[TrioClient]) -> None:
        async with driver(missing) as client:
            assert await client.sign_many([]) == []
            for bad in bad_requests:
                with pytest.raises(TypeError, match="request 1 must have name, method and url"):
                    await client.sign_many(bad)

    asyncio.run(each(AsyncClient))
    trio.run(each, TrioClient)
