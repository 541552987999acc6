"""Through a real socket: a MessagePack-RPC client from before msgpack's str/bin split (neovim's
clients among them) sends method names as bin, and the daemon answers it like any other."""

from __future__ import annotations

from typing import Any

import msgpack
import trio

from .conftest import StartServer


def old_style(message: list[Any]) -> bytes:
    return bytes(msgpack.packb(message, use_bin_type=True))


async def test_bin_method_names_are_answered_and_bad_utf8_is_refused_with_its_msgid(start_server: StartServer) -> None:
    served = await start_server()
    client = await served.connect()
    await client.send_raw(
        old_style([0, 1, b"hello", [{"protocol": 1, "client": "nvim"}]])
        + old_style([2, b"engine.heartbeat", [{}]])  # a notification: ignored, never answered
        + old_style([0, 2, b"status", [{}]])
    )
    unpacker = msgpack.Unpacker(raw=False)
    answers: list[Any] = []
    with trio.fail_after(5):
        while len(answers) < 2:
            unpacker.feed(await client.stream.receive_some(65536))
            answers.extend(unpacker)
    answers.sort(key=lambda a: a[1])  # answers may come in any order (SPEC.md section 2)
    assert [(a[0], a[1], a[2]) for a in answers] == [(1, 1, None), (1, 2, None)]
    assert answers[0][3]["protocol"] == 1 and "state" in answers[1][3]

    await client.send_raw(old_style([0, 3, b"stat\xffus", [{}]]))
    refused, closed = await client.raw_answer_then_close()
    assert closed and [a[:2] for a in refused] == [[1, 3]]
    assert refused[0][2]["name"] == "PROTOCOL_ERROR" and "not valid UTF-8" in refused[0][2]["message"]
    other = await served.connect()  # the daemon goes on
    assert (await other.ok("hello", protocol=1, client="t"))["protocol"] == 1
