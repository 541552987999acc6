"""A plain-http loopback webhook gets nothing when another local user holds its port (needs root).

The webhook's server may be down (a restart): any local user can then bind its port on 127.0.0.1
and read every notice, and a webhook's path often holds its secret. As for OpenBao, the daemon
sends only when the socket that accepts the connection is its own user's. The other user is a
real process of uid 65534 (tests/integration/test_openbao_squat.py's squatter).
"""

from __future__ import annotations

import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

from vaultd._notify_config import Sink
from vaultd._notify_send import deliver

from .test_openbao_squat import NOBODY, squatter  # noqa: F401 - the fixture, by name

NOTICE = {"event": "locked", "credential": None, "reason": "the vault is locked", "test": True}


def _sink(port: int) -> Sink:
    return Sink(1, None, f"http://127.0.0.1:{port}/hooks/fake-secret-path", frozenset({"locked"}), 5.0)


async def test_a_notice_is_never_posted_to_another_users_listener(
    squatter: tuple[int, subprocess.Popen[str]],  # noqa: F811
) -> None:
    port, proc = squatter
    outcome = await deliver(_sink(port), NOTICE)
    assert outcome is not None and f"belongs to uid {NOBODY}" in outcome and "nothing sent" in outcome
    assert "fake-secret-path" not in outcome
    assert proc.stdout is not None
    proc.kill()
    out, _ = proc.communicate(timeout=10)
    assert "got 0" in out or "got" not in out, f"the squatter read a request: {out!r}"
    assert "POST" not in out


async def test_a_listener_of_our_own_gets_the_notice() -> None:
    """The positive control: the same delivery to a webhook server of this user arrives."""
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert await deliver(_sink(server.server_address[1]), NOTICE) is None
    finally:
        server.shutdown()
        server.server_close()
    assert len(received) == 1 and b'"locked"' in received[0]
