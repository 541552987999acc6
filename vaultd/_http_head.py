"""One HTTP/1.1 request head, read with h11: what the daemon's two small HTTP servers take in.

The metrics endpoint (``_metrics_server``) and a login's loopback redirect listener (``_login``)
each answer one request per connection; neither reads a body. The size limit is the caller's
``h11.Connection``'s ``max_incomplete_event_size``, the time limit the caller's cancel scope.
"""

from __future__ import annotations

import h11
import trio

__all__ = ["read_head"]


async def read_head(stream: trio.SocketStream, conn: h11.Connection, chunk: int = 4096) -> h11.Request | None:
    """The request line and headers; None if the peer leaves or sends what is not HTTP/1.x."""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return None
        if event is h11.NEED_DATA:
            data = await stream.receive_some(chunk)
            conn.receive_data(data)
            if not data:
                return None
        elif isinstance(event, h11.Request):
            return event
        else:
            return None
