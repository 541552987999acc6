"""The metrics endpoint: ``GET /metrics`` over HTTP/1.1, one request per connection, from a trio task.

A scraper can never hurt the daemon: at most :data:`MAX_SCRAPERS` connections at once (more
are closed unanswered), a request head of at most 8 KiB that must arrive within
:data:`READ_TIMEOUT`, an answer that must be taken within :data:`SEND_TIMEOUT`, and every
connection closed after one answer. The families are gathered on the event loop (a consistent
view, no lock) and written out as text in a worker thread (``prometheus_client``'s
``generate_latest``), so a large exposition does not hold up requests. h11 parses the request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from http import HTTPStatus

import h11
import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from ._http_head import read_head

__all__ = ["MAX_SCRAPERS", "serve_metrics"]

log = logging.getLogger("vaultd.metrics")

MAX_SCRAPERS = 4
MAX_HEAD = 8 * 1024
READ_TIMEOUT = 5.0
SEND_TIMEOUT = 10.0
PATH = "/metrics"
_PHRASES = {status: HTTPStatus(status).phrase.encode() for status in (200, 404, 405)}


class _Gathered(Collector):
    """Families already built (on the event loop), for a registry to write out in a thread."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


async def serve_metrics(
    listener: trio.socket.SocketType,
    collector: Collector,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept scrapers on ``listener`` until cancelled."""
    process = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=process)  # process_cpu_seconds_total, process_resident_memory_bytes, fds...
    open_now = 0
    refused = 0
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            try:
                sock, _ = await listener.accept()
            except OSError as exc:  # out of fds, a peer gone before we took it: not now
                log.warning("metrics: accept failed (%s)", exc.strerror)
                await trio.sleep(0.1)
                continue
            if open_now >= MAX_SCRAPERS:
                refused += 1
                if refused in (1, 10, 100) or refused % 1000 == 0:
                    log.warning("metrics: %d scrape connections refused: %d are open already", refused, MAX_SCRAPERS)
                sock.close()
                continue
            open_now += 1

            async def run(sock: trio.socket.SocketType = sock) -> None:
                nonlocal open_now
                try:
                    await _one_scrape(trio.SocketStream(sock), collector, process)
                finally:
                    open_now -= 1

            nursery.start_soon(run)


async def _one_scrape(stream: trio.SocketStream, collector: Collector, process: CollectorRegistry) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    try:
        request = None
        with trio.move_on_after(READ_TIMEOUT):
            request = await read_head(stream, conn, MAX_HEAD)
        if request is None:
            return  # silent, gone, too slow or not HTTP: nothing worth an answer
        method, target = request.method.decode("ascii", "replace"), request.target.decode("ascii", "replace")
        path = target.split("?", 1)[0]
        headers: list[tuple[str, str]] = []
        if path != PATH:
            status, body = 404, b"not found: the metrics are at /metrics\n"
        elif method not in ("GET", "HEAD"):
            status, body, headers = 405, b"method not allowed: use GET\n", [("allow", "GET, HEAD")]
        else:
            families = list(collector.collect())
            body = await trio.to_thread.run_sync(_exposition, families, process)
            status, headers = 200, [("content-type", CONTENT_TYPE_LATEST)]
        if status != 200:
            headers.append(("content-type", "text/plain; charset=utf-8"))
        headers += [("content-length", str(len(body))), ("connection", "close")]
        with trio.move_on_after(SEND_TIMEOUT):
            head = h11.Response(status_code=status, headers=headers, reason=_PHRASES[status])
            await stream.send_all(conn.send(head) or b"")
            if method != "HEAD":
                await stream.send_all(conn.send(h11.Data(data=body)) or b"")
            await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
        return  # the scraper left, or spoke something else: its problem alone
    except Exception as exc:  # a bug here must not end the metrics endpoint (nor the daemon)
        log.error("metrics: the scrape failed: %s", type(exc).__name__, exc_info=exc)
    finally:
        await trio.aclose_forcefully(stream)


def _exposition(families: list[Metric], process: CollectorRegistry) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Gathered(families))
    return generate_latest(registry) + generate_latest(process)
