"""vaultd._bao against a real OpenBao dev server: each call's answer, and each failure as a user sees it.

One dev server serves the module (tests/openbao.py); every credential in it is a throwaway made
by the test. Failures that a real server cannot be made to produce on demand (a 5xx, a 429, a
body that is not JSON, a connect timeout, an error text that quotes what was sent) are played by
httpx's MockTransport. Every BaoError raised here is checked to hold none of the secrets sent.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import math
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from vaultd._bao import (
    BaoClient,
    BaoError,
    BaoForbidden,
    BaoNotFound,
    BaoRefused,
    BaoRequestError,
    BaoToken,
    BaoUnavailable,
    BaoWrapInvalid,
    KvVersion,
    WrapInfo,
    check_address,
    check_segment,
)
from vaultd._secret import Secret

from ..openbao import BaoDevServer, free_port

# Binance's published HMAC-SHA256 example (API docs, "SIGNED endpoint examples"): public text.
BINANCE_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
BINANCE_PAYLOAD = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
)
BINANCE_SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"

POLICY = """
path "secret/data/desk/*" { capabilities = ["read"] }
path "transit/hmac/*" { capabilities = ["update"] }
path "transit/sign/*" { capabilities = ["update"] }
"""


@pytest.fixture(scope="module")
def bao() -> Iterator[BaoDevServer]:
    with BaoDevServer() as server:
        server.enable_approle()
        server.enable_transit()
        server.write_policy("desk", POLICY)
        yield server


@pytest.fixture
async def client(bao: BaoDevServer) -> AsyncIterator[BaoClient]:
    async with BaoClient(bao.address) as bao_client:
        yield bao_client


def leaks(error: BaseException | object, *secrets: str | Secret) -> list[str]:
    """The secrets (or any 6-character run of one) that ``error``'s message or repr holds."""
    texts = [str(error), repr(error), *(str(arg) for arg in getattr(error, "args", ()))]
    found = []
    for secret in secrets:
        plain = secret.reveal_str() if isinstance(secret, Secret) else secret
        runs = {plain[i : i + 6] for i in range(max(1, len(plain) - 5))}
        if any(run in text for run in runs for text in texts):
            found.append(plain)
    return found


E = TypeVar("E", bound=BaseException)


async def raises(kind: type[E], call: Any, *secrets: str | Secret) -> E:
    """Await ``call``; it must raise ``kind`` whose message and repr hold none of ``secrets``."""
    with pytest.raises(kind) as caught:
        await call
    assert leaks(caught.value, *secrets) == [], str(caught.value)
    return caught.value


async def login(client: BaoClient, bao: BaoDevServer, role: str = "desk", **options: Any) -> BaoToken:
    role_id, secret_id = bao.approle(role, policies=["desk"], **options)
    return await client.login_approle("approle", Secret(role_id), Secret(secret_id))


# -- answers ---------------------------------------------------------------------------------------


async def test_login_renew_and_read_a_record(client: BaoClient, bao: BaoDevServer) -> None:
    role_id, secret_id = bao.approle("desk", policies=["desk"], token_ttl="1h", token_max_ttl="4h")
    token = await client.login_approle("approle", Secret(role_id), Secret(secret_id))
    assert token.ttl == 3600 and token.renewable and token.policies == ("default", "desk")
    assert token.token.reveal_str().startswith("s.") and token.accessor
    assert leaks(token, token.token, secret_id, role_id) == []
    assert (
        repr(token) == f"BaoToken(accessor={token.accessor!r}, ttl=3600, renewable=True, policies=('default', 'desk'))"
    )

    renewed = await client.renew_self(token.token, increment=600)
    assert renewed.token is token.token and renewed.ttl == 600 and renewed.accessor == token.accessor
    assert (await client.renew_self(token.token)).ttl == 3600

    bao.kv_put("desk/binance", {"api_key": "fake-key", "api_secret": "fake-secret"})
    version = bao.kv_put("desk/binance", {"api_key": "fake-key-2", "api_secret": "fake-secret-2"})
    record = await client.kv_read(token.token, "secret", "desk/binance")
    assert record.data == {"api_key": "fake-key-2", "api_secret": "fake-secret-2"}
    assert record.version == version == 2 and record.created_time.endswith("Z")
    assert repr(record) == "KvVersion(version=2)"
    logins = bao.audit_entries("auth/approle/login")
    assert logins and logins[-1]["auth"]["accessor"].startswith("hmac-sha256:")


async def test_a_wrapped_secret_id_is_looked_up_unwrapped_once_and_then_refused(
    client: BaoClient, bao: BaoDevServer
) -> None:
    role_id, _ = bao.approle("desk", policies=["desk"])
    wrapping = Secret(bao.wrapped_secret_id("desk", ttl="5m"))
    info = await client.lookup_wrapping(wrapping)
    assert isinstance(info, WrapInfo) and info.creation_ttl == 300 and info.creation_time.endswith("Z")
    assert info.creation_path == "auth/approle/role/desk/secret-id"
    data = await client.unwrap(wrapping)
    assert set(data) >= {"secret_id", "secret_id_accessor"}
    await client.login_approle("approle", Secret(role_id), Secret(data["secret_id"]))

    # Replayed: someone (or something) unwrapped it first.
    replay = await raises(BaoWrapInvalid, client.unwrap(wrapping), wrapping, data["secret_id"])
    assert replay.status == 400 and "already unwrapped, expired, or never issued" in str(replay)
    await raises(BaoWrapInvalid, client.lookup_wrapping(wrapping), wrapping)
    await raises(
        BaoWrapInvalid, client.lookup_wrapping(Secret("s.Qw7ZkP3xR9mT2vL8nB4cY6dF")), "s.Qw7ZkP3xR9mT2vL8nB4cY6dF"
    )


async def test_transit_hmac_reproduces_binances_published_signature(client: BaoClient, bao: BaoDevServer) -> None:
    bao.import_hmac_key("binance-hmac", BINANCE_SECRET.encode())
    token = await login(client, bao)
    mac = await client.transit_hmac(token.token, "binance-hmac", BINANCE_PAYLOAD.encode())
    assert mac.hex() == BINANCE_SIGNATURE
    sha512 = await client.transit_hmac(token.token, "binance-hmac", b"x", algorithm="sha2-512")
    assert len(sha512) == 64


async def test_transit_signs_with_ed25519(client: BaoClient, bao: BaoDevServer) -> None:
    bao.transit_key("desk-ed25519", "ed25519")
    public = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(bao.public_key("desk-ed25519")))
    token = await login(client, bao)
    message = b"timestamp=1750000000000&symbol=BTCUSDT"
    signature = await client.transit_sign(token.token, "desk-ed25519", message)
    assert len(signature) == 64
    public.verify(signature, message)


async def test_transit_signs_es256_as_jws_r_and_s(client: BaoClient, bao: BaoDevServer) -> None:
    bao.transit_key("desk-p256", "ecdsa-p256")
    public = serialization.load_pem_public_key(bao.public_key("desk-p256").encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    token = await login(client, bao)
    signing_input = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJkZXNrIn0"
    signature = await client.transit_sign(
        token.token, "desk-p256", signing_input, hash_algorithm="sha2-256", marshaling_algorithm="jws"
    )
    assert len(signature) == 64
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    public.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))


async def test_a_namespace_is_sent_in_its_header(client: BaoClient, bao: BaoDevServer) -> None:
    bao.api("POST", "sys/namespaces/desk-ns")
    in_ns = {"X-Vault-Namespace": "desk-ns"}
    bao.api("POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}}, headers=in_ns)
    bao.api("POST", "secret/data/desk/ns-only", {"data": {"where": "desk-ns"}}, headers=in_ns)
    root = Secret(bao.root_token)
    async with BaoClient(bao.address, namespace="desk-ns") as scoped:
        assert (await scoped.kv_read(root, "secret", "desk/ns-only")).data == {"where": "desk-ns"}
    await raises(BaoNotFound, client.kv_read(root, "secret", "desk/ns-only"), root)


# -- failures from the real server ----------------------------------------------------------------------


async def test_nothing_listening_is_unavailable() -> None:
    port = free_port()
    async with BaoClient(f"http://127.0.0.1:{port}") as client:
        error = await raises(BaoUnavailable, client.kv_read(Secret("s.fake"), "secret", "desk/x"), "s.fake")
    assert str(error) == f"OpenBao 127.0.0.1:{port}: cannot connect: connection refused" and error.status is None


async def test_a_server_that_accepts_and_never_answers_times_out(nursery: trio.Nursery, autojump_clock: Any) -> None:
    """The whole call is bounded (5 s by default): trio's virtual clock jumps there at once."""
    held: list[trio.SocketStream] = []

    async def hold(stream: trio.SocketStream) -> None:
        held.append(stream)  # read nothing, answer nothing, keep it open
        await trio.sleep_forever()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, hold, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    async with BaoClient(f"http://127.0.0.1:{port}") as client:
        start = trio.current_time()
        error = await raises(BaoUnavailable, client.renew_self(Secret("s.fake-token")), "s.fake-token")
        assert trio.current_time() - start == pytest.approx(5.0)
    assert str(error) == f"OpenBao 127.0.0.1:{port}: token renewal: no answer within 5 s" and held


async def test_sealed_is_unavailable_until_unsealed(client: BaoClient, bao: BaoDevServer) -> None:
    token = await login(client, bao)
    bao.kv_put("desk/sealed", {"k": "v"})
    bao.seal()
    try:
        error = await raises(BaoUnavailable, client.kv_read(token.token, "secret", "desk/sealed"), token.token)
        assert error.status == 503 and "OpenBao is sealed" in str(error)
        role_id, secret_id = Secret("fake-role"), Secret("fake-secret")
        await raises(BaoUnavailable, client.login_approle("approle", role_id, secret_id), role_id, secret_id)
    finally:
        bao.unseal()
    assert (await client.kv_read(token.token, "secret", "desk/sealed")).data == {"k": "v"}


async def test_a_missing_record_is_not_found(client: BaoClient, bao: BaoDevServer) -> None:
    token = await login(client, bao)
    error = await raises(BaoNotFound, client.kv_read(token.token, "secret", "desk/missing"), token.token)
    assert (error.status, error.deleted, error.destroyed, error.version) == (404, False, False, None)
    assert str(error) == f"OpenBao 127.0.0.1:{bao.port}: KV read secret/desk/missing: not found (HTTP 404)"


async def test_a_soft_deleted_current_version_says_so(client: BaoClient, bao: BaoDevServer) -> None:
    token = await login(client, bao)
    bao.kv_put("desk/deleted", {"k": "v1"})
    bao.kv_put("desk/deleted", {"k": "v2"})
    bao.kv_delete("desk/deleted")
    error = await raises(BaoNotFound, client.kv_read(token.token, "secret", "desk/deleted"), token.token)
    assert (error.deleted, error.destroyed, error.version) == (True, False, 2)
    assert "version 2 was deleted at 20" in str(error)


async def test_a_destroyed_current_version_says_so(client: BaoClient, bao: BaoDevServer) -> None:
    token = await login(client, bao)
    version = bao.kv_put("desk/destroyed", {"k": "v1"})
    bao.kv_destroy("desk/destroyed", [version])
    error = await raises(BaoNotFound, client.kv_read(token.token, "secret", "desk/destroyed"), token.token)
    assert (error.deleted, error.destroyed, error.version) == (False, True, 1)
    assert "version 1 was destroyed" in str(error)
    bao.kv_metadata_delete("desk/destroyed")
    gone = await raises(BaoNotFound, client.kv_read(token.token, "secret", "desk/destroyed"))
    assert (gone.deleted, gone.destroyed, gone.version) == (False, False, None)


async def test_a_revoked_token_is_forbidden(client: BaoClient, bao: BaoDevServer) -> None:
    token = await login(client, bao)
    bao.kv_put("desk/revoked", {"k": "v"})
    bao.revoke_accessor(token.accessor)
    error = await raises(BaoForbidden, client.kv_read(token.token, "secret", "desk/revoked"), token.token)
    assert error.status == 403 and "permission denied" in str(error)
    await raises(BaoForbidden, client.renew_self(token.token), token.token)
    await raises(BaoForbidden, client.transit_hmac(token.token, "binance-hmac", b"x"), token.token)


async def test_a_path_outside_the_policy_is_forbidden(client: BaoClient, bao: BaoDevServer) -> None:
    token = await login(client, bao)
    bao.kv_put("other-desk/x", {"k": "v"})
    await raises(BaoForbidden, client.kv_read(token.token, "secret", "other-desk/x"), token.token)


async def test_a_destroyed_secret_id_is_refused(client: BaoClient, bao: BaoDevServer) -> None:
    role_id, secret_id = bao.approle("desk", policies=["desk"])
    bao.destroy_secret_id("desk", secret_id)
    call = client.login_approle("approle", Secret(role_id), Secret(secret_id))
    error = await raises(BaoRefused, call, role_id, secret_id)
    assert error.status == 400
    said = "AppRole login at approle: refused (HTTP 400: invalid role or secret ID)"
    assert str(error) == f"OpenBao 127.0.0.1:{bao.port}: {said}"
    # An auth mount that does not exist: OpenBao answers 403, still a refusal.
    missing = await raises(BaoRefused, client.login_approle("no-such-mount", Secret(role_id), Secret(secret_id)))
    assert missing.status == 403


async def test_an_expired_secret_id_is_refused_and_an_expired_wrapping_token_invalid(
    client: BaoClient, bao: BaoDevServer
) -> None:
    role_id, secret_id = bao.approle("short", policies=["desk"], secret_id_ttl="1s")
    wrapping = bao.wrapped_secret_id("short", ttl="1s")
    await trio.sleep(1.5)  # OpenBao's own clock: nothing to drive
    await raises(BaoRefused, client.login_approle("approle", Secret(role_id), Secret(secret_id)), secret_id)
    await raises(BaoWrapInvalid, client.lookup_wrapping(Secret(wrapping)), wrapping)
    await raises(BaoWrapInvalid, client.unwrap(Secret(wrapping)), wrapping)


async def test_a_rebuilt_openbao_has_forgotten_the_token() -> None:
    """Dev mode keeps everything in memory: a restart is a new, empty OpenBao at the same address."""
    with BaoDevServer() as server:
        server.enable_approle()
        role_id, secret_id = server.approle("desk", policies=["default"])
        async with BaoClient(server.address) as client:
            token = await client.login_approle("approle", Secret(role_id), Secret(secret_id))
            server.restart()
            await raises(BaoForbidden, client.renew_self(token.token), token.token)
            login = client.login_approle("approle", Secret(role_id), Secret(secret_id))
            await raises(BaoRefused, login, role_id, secret_id)  # no AppRole mount any more: 403


async def test_openbao_refusing_the_request_is_a_request_error(client: BaoClient, bao: BaoDevServer) -> None:
    token = await login(client, bao)
    error = await raises(BaoRequestError, client.transit_sign(token.token, "no-such-key", b"x"), token.token)
    assert error.status == 400 and "signing key not found" in str(error)


async def test_https_with_the_servers_ca_and_without_it() -> None:
    with BaoDevServer(tls=True) as tls:
        root = Secret(tls.root_token)
        tls.kv_put("desk/tls", {"k": "v"})
        async with BaoClient(tls.address, ca_file=tls.ca_file) as client:
            assert (await client.kv_read(root, "secret", "desk/tls")).data == {"k": "v"}
        async with BaoClient(tls.address) as untrusting:
            error = await raises(BaoUnavailable, untrusting.kv_read(root, "secret", "desk/tls"), root)
        assert "cannot connect: TLS certificate not trusted" in str(error)


# -- failures a real server will not produce on demand ------------------------------------------------


@contextlib.asynccontextmanager
async def mock(handler: Callable[[httpx.Request], httpx.Response], **options: Any) -> AsyncIterator[BaoClient]:
    """A BaoClient for 127.0.0.1:8200 whose requests ``handler`` answers."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        yield BaoClient(options.pop("address", "http://127.0.0.1:8200"), http=http, **options)


def answer(status: int, body: Any = None, **kwargs: Any) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, json=body, **kwargs)


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (500, {"errors": ["internal error"]}, "HTTP 500: internal error"),
        (502, None, "HTTP 502"),
        (503, {"errors": ["Vault is sealed"]}, "OpenBao is sealed (HTTP 503)"),
        (412, {"errors": []}, "HTTP 412"),
        (429, {"errors": ["rate limited"]}, "HTTP 429: rate limited"),
        (400, {"errors": ["Waiting for the primary to upgrade from non-versioned to versioned data."]}, "not ready"),
    ],
)
async def test_transient_answers_are_unavailable(status: int, body: Any, said: str) -> None:
    async with mock(answer(status, body)) as client:
        error = await raises(BaoUnavailable, client.kv_read(Secret("s.tok"), "secret", "desk/x"))
    assert error.status == status and said in str(error)


async def test_a_redirect_is_not_followed() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(307, headers={"Location": "http://10.1.2.3:8200/v1/secret/data/desk/x?x=1"})

    async with mock(handler) as client:
        error = await raises(BaoUnavailable, client.kv_read(Secret("s.tok"), "secret", "desk/x"))
    assert str(error) == (
        "OpenBao 127.0.0.1:8200: KV read secret/desk/x: redirected to 10.1.2.3:8200 "
        "(a standby during an election?), HTTP 307"
    )
    assert seen == ["http://127.0.0.1:8200/v1/secret/data/desk/x"]


@pytest.mark.parametrize(
    "respond",
    [
        lambda request: httpx.Response(200, text="<html>proxy</html>"),
        lambda request: httpx.Response(200, json=["not", "an", "object"]),
        lambda request: httpx.Response(200, json={"data": {"data": "not a dict", "metadata": {}}}),
        lambda request: httpx.Response(200, json={"data": {"data": {}, "metadata": {"version": True}}}),
        lambda request: httpx.Response(200, content=b"{" + b" " * (1 << 20) + b"}"),
    ],
    ids=["html", "list", "data-not-dict", "bool-version", "over-1-MiB"],
)
async def test_an_answer_that_is_not_the_json_expected_is_unavailable(
    respond: Callable[[httpx.Request], httpx.Response],
) -> None:
    async with mock(respond) as client:
        await raises(BaoUnavailable, client.kv_read(Secret("s.tok"), "secret", "desk/x"))


@pytest.mark.parametrize(
    ("exception", "said"),
    [
        (httpx.ConnectTimeout("timed out"), "cannot connect within 2 s"),
        (httpx.ConnectError("x", request=None), "cannot connect: x"),
        (httpx.ReadTimeout("timed out"), "no answer within 5 s"),
        (httpx.RemoteProtocolError("peer closed connection"), "peer closed connection"),
    ],
)
async def test_transport_failures_are_unavailable(exception: Exception, said: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exception

    async with mock(handler) as client:
        error = await raises(BaoUnavailable, client.unwrap(Secret("s.wrap")))
    assert said in str(error)


async def test_an_error_text_quoting_what_was_sent_is_withheld() -> None:
    role_id, secret_id = Secret("5d3c1e0a-7b2f-4f43-9a8e-c2d4b6f80a11"), "9f0c2b7e-5a51-4c1d-8e2f-1b7c3d9a4e60"
    echo = {"errors": [f"1 error occurred:\n\t* secret_id {secret_id[:8]}... is not valid\n\n"]}
    async with mock(answer(400, echo)) as client:
        error = await raises(BaoRefused, client.login_approle("approle", role_id, Secret(secret_id)), secret_id)
    assert str(error).endswith("refused (HTTP 400: OpenBao's message withheld: it quotes what was sent)")
    clean = {"errors": ["1 error occurred:\n\t* permission denied\n\n"]}
    async with mock(answer(403, clean)) as client:
        denied = await raises(BaoRefused, client.login_approle("approle", role_id, Secret(secret_id)), secret_id)
    assert str(denied).endswith("refused (HTTP 403: permission denied)")


async def test_every_request_carries_the_headers_and_quoted_path() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": {"data": {}, "metadata": {"version": 1, "created_time": "t"}}})

    async with mock(handler, address="http://[::1]:8200/", namespace="team/desk") as client:
        await client.kv_read(Secret("s.tok"), "secret", "desk/é:x")
    (request,) = seen
    assert request.url.raw_path == b"/v1/secret/data/desk/%C3%A9%3Ax"
    assert request.headers["X-Vault-Token"] == "s.tok" and request.headers["X-Vault-Request"] == "true"
    assert request.headers["X-Vault-Namespace"] == "team/desk"


# -- checks of what is configured ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "normalised"),
    [
        ("https://bao.example.com", "https://bao.example.com"),
        ("https://bao.example.com:8200/", "https://bao.example.com:8200"),
        ("http://127.0.0.1:8200", "http://127.0.0.1:8200"),
        ("http://[::1]:8200/", "http://[::1]:8200"),
    ],
)
def test_addresses_that_are_accepted(address: str, normalised: str) -> None:
    assert check_address(address, None) == normalised


@pytest.mark.parametrize(
    ("address", "said"),
    [
        ("http://bao.example.com", "must use https"),
        ("http://10.0.0.5:8200", "must use https"),
        ("http://localhost:8200", "use 127.0.0.1 or [::1]"),
        ("https://user:pw@bao.example.com", "no user, query or fragment"),
        ("https://bao.example.com/v1", "no path"),
        ("https://bao.example.com?x=1", "no user, query or fragment"),
        ("https://bao.example.com#top", "fragment"),
        ("https://bao.example.com:99999", "invalid port"),
        ("ftp://bao.example.com", "must be an https:// URL"),
        ("bao.example.com:8200", "must be an https:// URL"),
    ],
)
def test_addresses_that_are_refused(address: str, said: str) -> None:
    with pytest.raises(ValueError, match=re.escape(said)):
        check_address(address, None)


def test_a_refused_address_does_not_quote_a_secret_in_it() -> None:
    for address in ("https://s.Qw7ZkP3xR9mT@bao.example.com", "https://bao.example.com/?token=s.Qw7ZkP3xR9mT"):
        with pytest.raises(ValueError) as caught:
            check_address(address, None)
        assert leaks(caught.value, "s.Qw7ZkP3xR9mT") == []


def test_a_ca_file_must_be_readable_and_only_for_https(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert check_address("https://bao.example.com", str(ca)) == "https://bao.example.com"
    with pytest.raises(ValueError, match="only for an https"):
        check_address("http://127.0.0.1:8200", str(ca))
    with pytest.raises(ValueError, match="not a readable file"):
        check_address("https://bao.example.com", str(tmp_path / "missing.pem"))
    # A CA file garbled since the upstream was put: the client loads, and every call fails with it.
    client = BaoClient("https://bao.example.com", ca_file=str(ca))
    assert client.broken is not None and "holds no PEM certificate" in client.broken


async def test_a_client_whose_ca_file_went_bad_fails_each_call_transiently(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    async with BaoClient("https://bao.example.com", ca_file=str(ca)) as client:
        with pytest.raises(BaoUnavailable, match="holds no PEM certificate"):
            await client.kv_read(Secret("fake-token"), "secret", "desk/x")


@pytest.mark.parametrize("value", ["secret", "desk/binance", "a-b_c.d@e", "ключ"])
def test_segments_that_are_accepted(value: str) -> None:
    assert check_segment(value, "KV path") == value


@pytest.mark.parametrize(
    "value", ["", "/desk", "desk/", "desk//x", "desk/../x", "..", "./x", "a?b", "a#b", "a%2fb", "a b", "a\tb", "a\x00b"]
)
def test_segments_that_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"^KV path"):
        check_segment(value, "KV path")


async def test_what_cannot_be_sent_is_a_request_error_before_anything_is_sent() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={})

    async with mock(handler) as client:
        for token in (Secret("s.tok\nX-Evil: 1"), Secret("s.tokén"), Secret(b"\xff\xfe")):
            error = await raises(BaoRequestError, client.kv_read(token, "secret", "desk/x"), "s.tok")
            assert str(error) == "the token is not an OpenBao token (not printable ASCII); not sent"
        await raises(BaoRequestError, client.login_approle("approle", Secret(b"\xff"), Secret("s")))
        bad_path = await raises(BaoRequestError, client.kv_read(Secret("s.tok"), "secret", "desk/../other"))
        assert str(bad_path).startswith("KV path 'desk/../other' must not contain")
        await raises(BaoRequestError, client.transit_sign(Secret("s.tok"), "key?x", b""))
    assert sent == []


def test_reprs_hold_no_secret() -> None:
    token = BaoToken(Secret("s.supersecret"), 60.0, True, "acc", ("default",))
    record = KvVersion({"api_secret": "fake-api-secret"}, 3, "t")
    assert "supersecret" not in repr(token) and "fake-api-secret" not in repr(record)
    assert BaoError("x", 503).status == 503


@pytest.mark.parametrize("lease", [math.nan, -5])
async def test_a_login_answer_with_a_lease_that_is_not_a_duration_is_unavailable(lease: float) -> None:
    body = {"auth": {"client_token": "s.tok", "lease_duration": lease, "renewable": True, "accessor": "a"}}
    async with mock(answer(200, body)) as client:
        await raises(BaoUnavailable, client.login_approle("approle", Secret("fake-role"), Secret("fake-secret")))


async def test_a_version_no_openbao_would_count_to_is_a_hostile_answer() -> None:
    body = {"data": {"data": {"token": "x"}, "metadata": {"version": 2**63, "created_time": "t"}}}
    async with mock(answer(200, body)) as client:
        await raises(BaoUnavailable, client.kv_read(Secret("s.tok"), "secret", "desk/x"))


async def test_a_deletion_time_with_control_characters_is_not_repeated() -> None:
    forged = "2026\x1b[2J\nvaultd: CRITICAL: forged" + "x" * 300_000
    body = {"data": {"metadata": {"version": 3, "deletion_time": forged, "destroyed": False}}}
    async with mock(answer(404, body)) as client:
        error = await raises(BaoNotFound, client.kv_read(Secret("s.tok"), "secret", "desk/x"))
    assert error.deleted and error.version == 3
    assert len(str(error)) < 200 and "\x1b" not in str(error) and "forged" not in str(error)


async def test_a_redirect_to_a_port_no_server_has_is_still_just_unavailable() -> None:
    async with mock(answer(307, headers={"Location": "http://evil:99999/v1/x"})) as client:
        error = await raises(BaoUnavailable, client.kv_read(Secret("s.tok"), "secret", "desk/x"))
    assert "redirected (a standby during an election?)" in str(error)
