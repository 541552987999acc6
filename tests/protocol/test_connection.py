"""The sans-IO connection: two endpoints joined by passing bytes, no sockets."""

from __future__ import annotations

import copy
import pickle
import struct

import msgpack
import pytest

from vaultd_protocol import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    ErrorCode,
    ErrorInfo,
    Limits,
    LocalProtocolError,
    Notification,
    RemoteProtocolError,
    Request,
    Response,
    Role,
    error_response,
)


def drain(conn: Connection) -> list[object]:
    events = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, ConnectionClosed):
            break
    return events


def server_with(data: bytes, limits: Limits | None = None) -> Connection:
    server = Connection(Role.SERVER, limits or Limits())
    server.receive_data(data)
    return server


def test_request_response_round_trip() -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(client.send(Request(7, "token.get", [{"name": "deribit", "min_ttl": 30.0}])))
    assert drain(server) == [Request(7, "token.get", [{"name": "deribit", "min_ttl": 30.0}])]
    client.receive_data(server.send(Response(7, None, {"token": "t"})))
    assert drain(client) == [Response(7, None, {"token": "t"})]
    assert client.in_flight == frozenset() and server.in_flight == frozenset()


def test_wire_format_is_plain_msgpack_rpc() -> None:
    """Any msgpack-rpc implementation must be able to speak to us: check the raw tuples."""
    client = Connection(Role.CLIENT)
    assert msgpack.unpackb(client.send(Request(1, "status", [{}]))) == [0, 1, "status", [{}]]
    server = server_with(msgpack.packb([0, 3, "hello", [{"protocol": 1}]]))
    drain(server)
    wire = msgpack.unpackb(server.send(error_response(3, ErrorCode.LOCKED, "locked")))
    assert wire == [1, 3, {"code": 12, "name": "LOCKED", "message": "locked"}, None]
    assert msgpack.unpackb(server.send(Notification("vault.locked", [{}]))) == [2, "vault.locked", [{}]]


def test_pipelined_requests_answered_out_of_order() -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    wire = b"".join(client.send(Request(i, "status", [])) for i in range(5))
    server.receive_data(wire)
    assert [e.msgid for e in drain(server) if isinstance(e, Request)] == [0, 1, 2, 3, 4]
    answers = b"".join(server.send(Response(i, None, i * 10)) for i in (4, 2, 0, 3, 1))
    client.receive_data(answers)
    assert [(e.msgid, e.result) for e in drain(client) if isinstance(e, Response)] == [
        (4, 40),
        (2, 20),
        (0, 0),
        (3, 30),
        (1, 10),
    ]


def test_byte_at_a_time_gives_the_same_events() -> None:
    client = Connection(Role.CLIENT)
    wire = client.send(Request(1, "token.get", [{"name": "x" * 300}])) + client.send(Request(2, "status", []))
    server = Connection(Role.SERVER)
    events = []
    for i in range(len(wire)):
        server.receive_data(wire[i : i + 1])
        events += drain(server)
    assert [e.msgid for e in events if isinstance(e, Request)] == [1, 2]


def test_notifications_reach_the_application_and_need_no_answer() -> None:
    server = server_with(msgpack.packb([2, "some.unknown.notification", [1, 2]]))
    assert drain(server) == [Notification("some.unknown.notification", [1, 2])]
    assert server.in_flight == frozenset()


def test_clean_close_between_messages() -> None:
    server = server_with(msgpack.packb([0, 1, "status", []]))
    server.receive_data(b"")
    events = drain(server)
    assert isinstance(events[0], Request) and isinstance(events[1], ConnectionClosed)


def test_close_in_the_middle_of_a_message_is_an_error() -> None:
    server = server_with(msgpack.packb([0, 1, "status", []])[:-2])
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a message"):
        server.next_event()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xc1",  # the one byte MessagePack never uses
        b"\x01",  # a bare integer, not an array
        msgpack.packb("hello"),
        msgpack.packb([]),
        msgpack.packb([9, 1, "x", []]),  # unknown message type
        msgpack.packb([0, -1, "x", []]),  # negative msgid
        msgpack.packb([0, 2**32, "x", []]),  # msgid beyond 32 bits
        msgpack.packb([1, 1, None, None]),  # a response sent to a server
        b"\xa3\xff\xfe\xfd",  # a string that is not UTF-8
    ],
)
def test_garbage_breaks_the_connection_for_good(garbage: bytes) -> None:
    server = server_with(garbage)
    with pytest.raises(RemoteProtocolError) as first:
        server.next_event()
    assert server.broken
    with pytest.raises(RemoteProtocolError) as again:
        server.next_event()
    assert again.value is first.value


def test_four_gib_string_announcement_is_refused_at_its_header() -> None:
    """The header alone arrives: the decoder must not wait for 4 GiB to refuse it."""
    head = b"\x94\x00\x07\xa9token.get\x91\x81\xa4name" + b"\xdb" + struct.pack(">I", 2**32 - 1)
    server = server_with(head)
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code is ErrorCode.TOO_LARGE
    assert info.value.msgid == 7, "the answer must be able to name the request"
    # The server may still answer that one request before closing.
    reply = msgpack.unpackb(server.send(error_response(7, ErrorCode.TOO_LARGE, str(info.value))))
    assert reply[:2] == [1, 7] and reply[2]["name"] == "TOO_LARGE"


def test_huge_array_count_is_refused_at_its_header() -> None:
    server = server_with(b"\xdd" + struct.pack(">I", 2**31))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code is ErrorCode.TOO_LARGE


def test_nesting_two_thousand_deep_is_refused_with_the_msgid() -> None:
    wire = b"\x94\x00\x05\xa6status\x91" + b"\x91" * 2000 + b"\xc0"
    server = server_with(wire)
    with pytest.raises(RemoteProtocolError, match="deeper") as info:
        server.next_event()
    assert info.value.msgid == 5


def test_message_over_the_limit_is_refused_and_under_it_accepted() -> None:
    limits = Limits(max_message_size=1024)
    ok = msgpack.packb([0, 1, "token.get", [{"name": "a" * 900}]])
    assert len(ok) <= 1024
    assert isinstance(drain(server_with(ok, limits))[0], Request)
    too_big = msgpack.packb([0, 2, "token.get", [{"name": "a" * 1100}]])
    with pytest.raises(RemoteProtocolError) as info:
        server_with(too_big, limits).next_event()
    assert info.value.code is ErrorCode.TOO_LARGE and info.value.msgid == 2


def test_exactly_at_the_limit_is_accepted() -> None:
    limits = Limits(max_message_size=256)
    base = msgpack.packb([0, 1, "m", [{"k": ""}]])
    wire = msgpack.packb([0, 1, "m", [{"k": "x" * (256 - len(base) - 1)}]])  # str8 header adds a byte
    assert len(wire) == 256
    assert isinstance(drain(server_with(wire, limits))[0], Request)


def test_bad_envelope_with_a_readable_msgid_carries_it() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        server_with(msgpack.packb([0, 9, 42, []])).next_event()
    assert info.value.msgid == 9


def test_duplicate_in_flight_msgid_closes_without_an_ambiguous_answer() -> None:
    server = server_with(msgpack.packb([0, 1, "status", []]) * 2)
    assert isinstance(server.next_event(), Request)
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.msgid is None


def test_client_refuses_an_answer_to_a_request_it_never_sent() -> None:
    client = Connection(Role.CLIENT)
    client.receive_data(msgpack.packb([1, 99, None, "x"]))
    with pytest.raises(RemoteProtocolError, match="unknown msgid"):
        client.next_event()


def test_client_refuses_a_malformed_error_member() -> None:
    client = Connection(Role.CLIENT)
    client.send(Request(1, "status", []))
    client.receive_data(msgpack.packb([1, 1, "just a string", None]))
    with pytest.raises(RemoteProtocolError, match="integer 'code'"):
        client.next_event()


def test_error_info_keeps_unknown_codes() -> None:
    info = ErrorInfo.from_wire({"code": 999, "name": "FROM_THE_FUTURE", "message": "m"})
    assert (info.code, info.name) == (999, "FROM_THE_FUTURE")


def test_local_misuse_is_a_local_error() -> None:
    server, client = Connection(Role.SERVER), Connection(Role.CLIENT)
    with pytest.raises(LocalProtocolError):
        server.send(Response(5, None, None))  # nobody asked
    with pytest.raises(LocalProtocolError):
        server.send(Request(1, "x", []))
    with pytest.raises(LocalProtocolError):
        client.send(Response(1, None, None))
    client.send(Request(1, "x", []))
    with pytest.raises(LocalProtocolError):
        client.send(Request(1, "x", []))  # still in flight
    with pytest.raises(LocalProtocolError):
        client.send(Request(2**32, "x", []))
    with pytest.raises(LocalProtocolError):
        server.send_result(5, None)  # nobody asked
    with pytest.raises(LocalProtocolError):
        client.send_result(1, None)  # a client answers nothing


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ([True, 1, "m", []], "starting with its type"),  # a bool is not a message type
        ([0, True, "m", []], "msgid must be an unsigned 32-bit integer"),  # nor a msgid
        ([0, 1.0, "m", []], "msgid must be an unsigned 32-bit integer"),
    ],
)
def test_a_bool_or_float_in_the_envelope_is_refused(message: list[object], error: str) -> None:
    with pytest.raises(RemoteProtocolError, match=error):
        server_with(msgpack.packb(message)).next_event()


def test_send_result_is_send_of_a_response_without_the_object() -> None:
    server = server_with(msgpack.packb([0, 3, "token.get", [{"name": "ex"}]]) + msgpack.packb([0, 4, "status", []]))
    drain(server)
    assert msgpack.unpackb(server.send_result(3, {"token": "t"})) == [1, 3, None, {"token": "t"}]
    assert server.send(Response(4, None, {"token": "t"})) == msgpack.packb([1, 4, None, {"token": "t"}])
    assert server.in_flight == frozenset()
    with pytest.raises(LocalProtocolError):
        server.send_result(3, None)  # answered already


def test_events_are_read_only_values_compared_by_their_fields() -> None:
    request = Request(1, "token.get", [{"name": "ex"}])
    assert request == Request(1, "token.get", [{"name": "ex"}]) and request != Request(2, "token.get", [{"name": "ex"}])
    assert request != Notification("token.get", [{"name": "ex"}]) and Response(1, None, None) != (1, None, None)
    assert hash(ErrorInfo(12, "LOCKED", "m")) == hash(ErrorInfo(12, "LOCKED", "m"))
    with pytest.raises(AttributeError, match="read-only"):
        request.msgid = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        request.other = 1  # type: ignore[attr-defined]
    for value in (request, Response(1, ErrorInfo(12, "LOCKED", "m"), None), Limits(max_depth=8), ConnectionClosed()):
        assert copy.copy(value) == value and pickle.loads(pickle.dumps(value)) == value
    assert repr(Limits()) == "Limits(max_message_size=65536, max_depth=16)"
    match Response(4, None, {"token": "t"}):
        case Response(msgid, None, result):
            assert (msgid, result) == (4, {"token": "t"})
        case _:
            pytest.fail("a Response did not match its own fields")
    with pytest.raises(ValueError, match="max_depth"):
        Limits(max_depth=1)


def test_event_reprs_never_show_params_or_results() -> None:
    request = Request(1, "vault.unlock", [{"passphrase": "hunter2-hunter2"}])
    response = Response(1, None, {"token": "tok-secret"})
    assert "hunter2" not in repr(request) and "tok-secret" not in repr(response)


def _bin_method(message: list[object]) -> bytes:
    """``message`` packed as a pre-str/bin-split client would: every bytes value (the method) as bin."""
    return bytes(msgpack.packb(message, use_bin_type=True))


@pytest.mark.parametrize("byte_at_a_time", [False, True], ids=["whole", "byte at a time"])
def test_a_method_name_sent_as_bin_is_accepted_when_it_is_utf8(byte_at_a_time: bool) -> None:
    """Issue 14 item 9: older MessagePack-RPC clients (neovim's) send the method name as bin."""
    data = _bin_method([0, 5, b"status", [{}]]) + _bin_method([2, "token.w\u00e4tch".encode(), [{}]])
    assert data[3] == 0xC4, "the method really is bin 8"
    server = Connection(Role.SERVER)
    events: list[object] = []
    for chunk in (data[i : i + 1] for i in range(len(data))) if byte_at_a_time else [data]:
        server.receive_data(chunk)
        events += drain(server)
    assert events == [Request(5, "status", [{}]), Notification("token.w\u00e4tch", [{}])]
    assert type(events[0].method) is str  # type: ignore[attr-defined]
    assert msgpack.unpackb(server.send(Response(5, None, {}))) == [1, 5, None, {}]


@pytest.mark.parametrize("byte_at_a_time", [False, True], ids=["whole", "byte at a time"])
def test_a_method_name_in_bin_that_is_not_utf8_is_a_protocol_error_with_the_msgid(byte_at_a_time: bool) -> None:
    data = _bin_method([0, 9, b"stat\xffus", [{}]])
    server = Connection(Role.SERVER)
    with pytest.raises(RemoteProtocolError) as info:
        for chunk in (data[i : i + 1] for i in range(len(data))) if byte_at_a_time else [data]:
            server.receive_data(chunk)
            drain(server)
    assert (info.value.code, info.value.msgid) == (ErrorCode.PROTOCOL_ERROR, 9)
    assert "not valid UTF-8" in str(info.value)
    assert msgpack.unpackb(server.send(error_response(9, info.value.code, str(info.value))))[1] == 9


@pytest.mark.parametrize(
    "message",
    [[2, b"\xc3\x28", [{}]], [2, 7, [{}]], [0, 4, 7, [{}]], [0, 4, None, [{}]]],
    ids=["notification bin not UTF-8", "notification int", "request int", "request nil"],
)
def test_other_method_types_stay_protocol_errors(message: list[object]) -> None:
    server = server_with(_bin_method(message))
    with pytest.raises(RemoteProtocolError) as info:
        drain(server)
    assert info.value.code is ErrorCode.PROTOCOL_ERROR
    assert info.value.msgid == (4 if message[0] == 0 else None)
