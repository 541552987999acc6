"""The committed conformance vectors (protocol/conformance/vectors.json) match our client and server.

Both directions, byte for byte: what our client sends for each request, what our server makes
of it, what our server sends back, and what our client makes of that. The file is read as
committed, never regenerated here: a change to the wire format fails these tests until the
vectors are regenerated and the diff reviewed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import pytest

from vaultd_client import errors
from vaultd_client._session import ClientSession
from vaultd_protocol import (
    NEED_DATA,
    Connection,
    ErrorCode,
    InvalidParams,
    Method,
    Notification,
    Notify,
    RemoteProtocolError,
    Request,
    Response,
    Role,
    error_response,
    parse_params,
)

ROOT = Path(__file__).parents[2]
VECTORS_PATH = ROOT / "protocol" / "conformance" / "vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text())

CALLS: list[dict[str, Any]] = VECTORS["calls"]
ERRORS: list[dict[str, Any]] = VECTORS["errors"]
#: Error vectors whose request is well-formed (the others are raw bytes our server refuses).
ANSWERED = [e for e in ERRORS if e["params"] is not None]
MALFORMED = [e for e in ERRORS if e["params"] is None]
VARIANTS: list[dict[str, Any]] = VECTORS["error_variants"]
NOTIFICATIONS: list[dict[str, Any]] = VECTORS["notifications"]
METHOD_AS_BIN: list[dict[str, Any]] = VECTORS["method_as_bin"]


def value(obj: Any) -> Any:
    """A vector's JSON notation as the MessagePack value it stands for ({"$bin": hex} is bytes)."""
    if isinstance(obj, dict):
        if obj.keys() == {"$bin"}:
            return bytes.fromhex(obj["$bin"])
        return {key: value(item) for key, item in obj.items()}
    if isinstance(obj, list):
        return [value(item) for item in obj]
    return obj


def label(vector: dict[str, Any]) -> str:
    return str(vector.get("label") or vector.get("name") or vector["method"])


def requests() -> list[dict[str, Any]]:
    return CALLS + ANSWERED


def with_msgid(data: bytes, kind: int, old: int, new: int) -> bytes:
    """The same message with another msgid (``data`` must start ``[kind, old``)."""
    head = bytes([0x94, kind]) + bytes(msgpack.packb(old))
    assert data.startswith(head), data.hex()
    return bytes([0x94, kind]) + bytes(msgpack.packb(new)) + data[len(head) :]


def server_after(request_hex: str) -> tuple[Connection, Request]:
    """Our server, fed one request vector a byte at a time; it must yield nothing before the last."""
    data = bytes.fromhex(request_hex)
    server = Connection(Role.SERVER)
    for byte in data[:-1]:
        server.receive_data(bytes([byte]))
        assert server.next_event() is NEED_DATA
    server.receive_data(data[-1:])
    event = server.next_event()
    assert isinstance(event, Request)
    assert server.next_event() is NEED_DATA, "bytes left over after the message"
    return server, event


def client_receiving(vector: dict[str, Any], response_hex: str) -> Response:
    """Our client, after sending the vector's request, fed the response a byte at a time."""
    client = Connection(Role.CLIENT)
    client.send(Request(vector["msgid"], vector.get("method", "status"), [{}]))
    data = bytes.fromhex(response_hex)
    for byte in data[:-1]:
        client.receive_data(bytes([byte]))
        assert client.next_event() is NEED_DATA
    client.receive_data(data[-1:])
    event = client.next_event()
    assert isinstance(event, Response)
    assert client.next_event() is NEED_DATA, "bytes left over after the message"
    return event


# -- coverage -----------------------------------------------------------------------------------


def test_every_method_error_code_and_notification_has_a_vector() -> None:
    assert {c["method"] for c in CALLS} == {str(m) for m in Method}, "a method without a call vector"
    assert sorted(e["code"] for e in ERRORS) == sorted(int(c) for c in ErrorCode), "an error code without a vector"
    assert {n["method"] for n in NOTIFICATIONS} == {str(n) for n in Notify}, "a notification without a vector"
    for error in ERRORS:
        assert ErrorCode(error["code"]).name == error["name"]


def test_the_worked_example_in_spec_md_is_a_vector() -> None:
    spec = (ROOT / "protocol" / "SPEC.md").read_text()
    locked = next(e for e in ERRORS if e["name"] == "LOCKED")
    assert f"`{locked['request']}`" in spec
    assert f"`{locked['response']}`" in spec


def test_request_params_hold_no_integral_float() -> None:
    """A language with one number type (JavaScript) could not reproduce 30.0's bytes."""

    def floats(obj: Any) -> list[float]:
        if isinstance(obj, float):
            return [obj]
        items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else []
        return [f for item in items for f in floats(item)]

    assert not [f for v in requests() for f in floats(v["params"]) if f.is_integer()]


# -- requests: client encodes, server decodes ---------------------------------------------------


@pytest.mark.parametrize("vector", requests(), ids=label)
def test_our_client_encodes_the_request_bytes(vector: dict[str, Any]) -> None:
    params = value(vector["params"])
    sent = Connection(Role.CLIENT).send(Request(vector["msgid"], vector["method"], params))
    assert sent.hex() == vector["request"]


@pytest.mark.parametrize("vector", [v for v in requests() if len(v["params"]) == 1], ids=label)
def test_our_client_session_sends_the_same_bytes(vector: dict[str, Any]) -> None:
    """The session numbers requests itself (from 0): apart from the msgid, the bytes are the vector's."""
    session = ClientSession()
    msgid, sent = session.request(vector["method"], value(vector["params"][0]))
    expected = with_msgid(bytes.fromhex(vector["request"]), 0, vector["msgid"], msgid)
    assert sent == expected


@pytest.mark.parametrize("vector", CALLS, ids=label)
def test_our_server_decodes_each_call(vector: dict[str, Any]) -> None:
    _, request = server_after(vector["request"])
    params = value(vector["params"])
    assert (request.msgid, request.method, request.params) == (vector["msgid"], vector["method"], params)
    parsed = parse_params(Method(request.method), request.params)
    for key, given in (params[0] if params else {}).items():
        assert parsed[key] == given


@pytest.mark.parametrize("vector", ANSWERED, ids=label)
def test_our_server_decodes_each_request_that_gets_an_error(vector: dict[str, Any]) -> None:
    _, request = server_after(vector["request"])
    assert (request.msgid, request.method, request.params) == (
        vector["msgid"],
        vector["method"],
        value(vector["params"]),
    )
    if vector["name"] == "UNKNOWN_METHOD":
        with pytest.raises(ValueError):
            Method(request.method)
    elif vector["name"] == "INVALID_PARAMS":
        with pytest.raises(InvalidParams) as info:
            parse_params(Method(request.method), request.params)
        assert str(info.value) == vector["message"]
    else:
        parse_params(Method(request.method), request.params)  # the error comes from the daemon's state


@pytest.mark.parametrize("vector", MALFORMED, ids=label)
def test_our_server_refuses_each_malformed_request_and_answers_it(vector: dict[str, Any]) -> None:
    server = Connection(Role.SERVER)
    server.receive_data(bytes.fromhex(vector["request"]))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    exc = info.value
    assert (int(exc.code), exc.msgid, str(exc)) == (vector["code"], vector["msgid"], vector["message"])
    assert exc.msgid is not None
    assert server.send(error_response(exc.msgid, exc.code, str(exc))).hex() == vector["response"]


# -- responses: server encodes, client decodes --------------------------------------------------


@pytest.mark.parametrize("vector", CALLS, ids=label)
def test_our_server_encodes_each_result(vector: dict[str, Any]) -> None:
    server, request = server_after(vector["request"])
    assert server.send(Response(request.msgid, None, value(vector["result"]))).hex() == vector["response"]


@pytest.mark.parametrize("vector", ANSWERED, ids=label)
def test_our_server_encodes_each_error(vector: dict[str, Any]) -> None:
    server, request = server_after(vector["request"])
    answer = error_response(request.msgid, ErrorCode(vector["code"]), vector["message"])
    assert server.send(answer).hex() == vector["response"]


@pytest.mark.parametrize("vector", NOTIFICATIONS, ids=label)
def test_our_server_encodes_each_notification(vector: dict[str, Any]) -> None:
    notification = Notification(vector["method"], value(vector["params"]))
    assert Connection(Role.SERVER).send(notification).hex() == vector["message"]


@pytest.mark.parametrize("vector", CALLS, ids=label)
def test_our_client_decodes_each_result(vector: dict[str, Any]) -> None:
    response = client_receiving(vector, vector["response"])
    assert response.msgid == vector["msgid"] and response.error is None
    assert ClientSession.result(response) == value(vector["result"])


@pytest.mark.parametrize("vector", ERRORS + VARIANTS, ids=label)
def test_our_client_raises_the_named_class_for_each_error(vector: dict[str, Any]) -> None:
    response = client_receiving(vector, vector["response"])
    cls = getattr(errors, vector["client_class"])
    with pytest.raises(errors.RemoteError) as info:
        ClientSession.result(response)
    exc = info.value
    assert type(exc) is cls
    wire = vector.get("error") or vector
    assert exc.code == wire["code"]
    assert exc.message == wire.get("message", "")
    if "name" in wire:
        assert exc.name == wire["name"]


@pytest.mark.parametrize("vector", CALLS + ERRORS, ids=label)
def test_our_client_session_matches_answers_by_msgid(vector: dict[str, Any]) -> None:
    """Through the session's own numbering: the answer to the request it sent, nothing else."""
    session = ClientSession()
    session.request("status")
    msgid, _ = session.request(vector["method"], {})
    session.receive_data(with_msgid(bytes.fromhex(vector["response"]), 1, vector["msgid"], msgid))
    message = session.next_message()
    assert isinstance(message, Response) and message.msgid == msgid
    if "result" in vector:
        assert ClientSession.result(message) == value(vector["result"])
    else:
        with pytest.raises(getattr(errors, vector["client_class"])):
            ClientSession.result(message)
    assert session.next_message() is None


@pytest.mark.parametrize("vector", NOTIFICATIONS, ids=label)
def test_our_client_decodes_each_notification(vector: dict[str, Any]) -> None:
    session = ClientSession()
    session.receive_data(bytes.fromhex(vector["message"]))
    assert session.next_message() == Notification(vector["method"], value(vector["params"]))
    assert session.next_message() is None


# -- method names as bin, from clients older than msgpack's str/bin split ----------------------


def test_the_method_as_bin_vectors_are_bin_and_cover_both_outcomes() -> None:
    assert {v["value"][0] for v in METHOD_AS_BIN if v["method"]} == {0, 2}, "a request and a notification"
    assert any(v["method"] is None for v in METHOD_AS_BIN), "a refused one"
    for vector in METHOD_AS_BIN:
        decoded = msgpack.unpackb(bytes.fromhex(vector["message"]), raw=False)
        assert decoded == value(vector["value"])
        assert type(decoded[1 if decoded[0] == 2 else 2]) is bytes, "the method name is bin on the wire"


@pytest.mark.parametrize("vector", METHOD_AS_BIN, ids=label)
def test_our_server_reads_a_method_name_sent_as_bin(vector: dict[str, Any]) -> None:
    message = value(vector["value"])
    data = bytes.fromhex(vector["message"])
    server = Connection(Role.SERVER)
    if vector["method"] is None:
        with pytest.raises(RemoteProtocolError) as info:
            for byte in data:
                server.receive_data(bytes([byte]))
                server.next_event()
        exc = info.value
        assert (exc.code, exc.msgid) == (ErrorCode.PROTOCOL_ERROR, message[1])
        assert server.send(error_response(message[1], exc.code, str(exc))).hex() == vector["response"]
        return
    for byte in data[:-1]:
        server.receive_data(bytes([byte]))
        assert server.next_event() is NEED_DATA
    server.receive_data(data[-1:])
    event = server.next_event()
    if message[0] == 0:
        assert event == Request(message[1], vector["method"], message[3])
    else:
        assert event == Notification(vector["method"], message[2])
