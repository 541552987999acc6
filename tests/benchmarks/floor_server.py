"""The floor: a bare trio MessagePack-RPC server answering every request with one fixed token.

    python tests/benchmarks/floor_server.py SOCKET_PATH

What a vaultd round trip would cost if the daemon did nothing but frame and answer: the same
transport (trio, an AF_UNIX stream, msgpack) with no vault, no checks and no dispatch. The
benchmarks start it beside a real vaultd and time both with the same client.
"""

from __future__ import annotations

import sys

import msgpack
import trio

TOKEN = "f" * 200
#: A 200-byte token, in the very map vaultd answers ``token.get`` with for a static credential
#: named ``tok`` holding it (its name and its ready-made header included), so that the client
#: decodes the same bytes from both servers and the difference is the daemon's own work.
ANSWER = {
    "name": "tok",
    "token": TOKEN,
    "type": "bearer",
    "expires_at": None,
    "ttl": None,
    "headers": {"Authorization": "Bearer " + TOKEN},
    "extra": {},
}


async def answer(stream: trio.SocketStream) -> None:
    unpacker = msgpack.Unpacker(raw=False)
    pack = msgpack.Packer(use_bin_type=True).pack
    async with stream:
        while data := await stream.receive_some(65536):
            unpacker.feed(data)
            out = b"".join(pack([1, request[1], None, ANSWER]) for request in unpacker)
            if out:
                await stream.send_all(out)


async def main(path: str) -> None:
    sock = trio.socket.socket(trio.socket.AF_UNIX)
    await sock.bind(path)
    sock.listen(1024)
    await trio.serve_listeners(answer, [trio.SocketListener(sock)])


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
