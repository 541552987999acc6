"""Who is at the other end of a loopback connection: never a mini-socket's uid 0.

A peer that sends its request and closes before the daemon accepts leaves, on its side, a
TIME_WAIT (FIN_WAIT2) mini-socket, which inet_diag reports as uid 0: a daemon running as root
took such a peer for itself and served another user's forged login redirect. The login listener
now asks for a connected (ESTABLISHED) peer only: one that is gone is "unknown" (None), and
nothing is served to it.
"""

from __future__ import annotations

import socket
import time

from vaultd._loopback import connection_owner


def test_a_peer_that_already_closed_is_nobody_not_root() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.create_connection(server.getsockname())
        client.sendall(b"GET /callback?code=x HTTP/1.1\r\n\r\n")
        client.close()  # gone before the accept
        time.sleep(0.2)  # the kernel's own FIN handshake: no clock of ours drives it
        accepted, _ = server.accept()
        with accepted:
            assert connection_owner(accepted, connected_only=True) is None


def test_a_peer_still_connected_is_its_own_uid() -> None:
    """The positive control: the same connection, kept open, is told as ours."""
    import os

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            client.sendall(b"GET / HTTP/1.1\r\n\r\n")
            accepted, _ = server.accept()
            with accepted:
                assert connection_owner(accepted, connected_only=True) == os.geteuid()
                assert connection_owner(accepted) == os.geteuid()
