"""The socket server: accept, authenticate the peer, and run one connection's requests.

Transport only: it turns bytes into requests with the sans-IO connection, hands each
request to the dispatcher, and writes the answers back, in whatever order they finish.
Every buffer and wait is bounded: a cap on connections, on requests in flight per
connection, on one message's size, on how long half a message may take to arrive, on an
idle connection, and on a peer that will not read its answers. A broken connection
closes alone; the rest carry on.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from vaultd_protocol import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    ErrorCode,
    LocalProtocolError,
    Notification,
    RemoteProtocolError,
    Request,
    Response,
    Role,
    error_response,
)

from ._errors import RpcError
from ._peer import Peer, peer_of
from ._slots import DEFAULT_LIMITS, ServerLimits, Shares

__all__ = ["NOT_NOW", "Handler", "ServerLimits", "Session", "serve", "serve_stream"]

log = logging.getLogger("vaultd.server")


class Session:
    """One connection as the handlers see it: who the peer is, and a way to push to it.

    ``notify`` never blocks: it queues the notification, or, when the peer has let
    ``max_queued`` pile up unread, closes the connection and returns False.
    """

    def __init__(self, peer: Peer, outbox: trio.MemorySendChannel[Notification], close: Callable[[], None]) -> None:
        self.peer = peer
        #: ``peer.to_wire()``, built once: the audit log keeps it with every line (never change it).
        self.identity = peer.to_wire()
        #: The handler's own per-connection state (the dispatcher keeps its policy decisions here,
        #: and the connection's one watch subscription).
        self.access: Any = None
        self.watch: Any = None
        self._outbox = outbox
        self._close = close
        self._on_close: list[Callable[[], None]] = []

    def notify(self, method: str, params: dict[str, Any]) -> bool:
        try:
            self._outbox.send_nowait(Notification(method, [params]))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            log.info("closing connection (%s): it does not read its notifications", self.peer)
            self._close()
            return False
        return True

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the connection ends (e.g. to drop its subscriptions)."""
        self._on_close.append(callback)

    def closed(self) -> None:
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            try:
                callback()
            except Exception as exc:  # one callback's bug must not skip the others' cleanup
                log.error("cleanup after a connection failed: %s", type(exc).__name__, exc_info=exc)

    def close(self) -> None:
        """End this connection now (its requests in progress are abandoned unanswered)."""
        self._close()


#: Answers one request on one connection: returns the result, or raises RpcError. A handler
#: may also have an ``immediate(request, session)`` method that answers synchronously when it
#: can, or returns :data:`NOT_NOW` (the request then goes to a task of its own); an
#: ``admits(peer) -> bool`` method, asked at accept about a peer of another uid (without it,
#: none is let in); a ``refused(peer)`` method, told of each peer refused at accept; and an
#: ``opened(session)`` method, told of each connection before its first byte is read.
Handler = Callable[[Request, Session], Awaitable[Any]]
NOT_NOW: Any = object()

#: Reads and writes a connection may do at once, without yielding to other tasks, before it
#: must take the awaited path (which yields): a pipelining peer cannot starve the scheduler.
_EAGER_LIMIT = 16

#: Connections taken from the listen backlog at once. An awaited accept costs a scheduler pass
#: (every busy connection's turn), so one at a time, a client left in the backlog of a loaded
#: daemon waits seconds to be let in.
_ACCEPT_BATCH = 64

#: How often a half-closed peer whose answers are still being worked on is checked for being gone.
_GONE_POLL = 1.0

#: What reading or writing meets when the peer has gone: an ordinary end of the stream.
_PEER_GONE = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ETIMEDOUT})

#: accept() failures that say "not now" (out of fds or memory, a peer gone before we took it).
_ACCEPT_TRANSIENT = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED})


async def serve(
    listener: trio.socket.SocketType,
    handler: Handler,
    limits: ServerLimits = DEFAULT_LIMITS,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections on a listening AF_UNIX socket until cancelled."""
    own_uid = os.getuid()
    admits: Callable[[Peer], bool] | None = getattr(handler, "admits", None)
    refused: Callable[[Peer], None] | None = getattr(handler, "refused", None)
    shares = Shares(limits, own_uid)
    refused_for_cap = 0
    refusals: dict[int, int] = {}
    # A twin of the listener (the same backlog), to take what else waits there without a yield.
    with socket.fromfd(listener.fileno(), listener.family, listener.type) as twin:
        twin.setblocking(False)
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                try:
                    first, _ = await listener.accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_TRANSIENT:
                        raise
                    log.error("accept failed (%s): waiting before accepting again", exc.strerror)
                    await trio.sleep(0.1)
                    continue
                for sock in [first, *_accept_now(twin)]:
                    why = f"connection cap of {limits.max_connections} reached" if shares.full() else None
                    peer = None
                    if why is None:
                        try:
                            peer = peer_of(sock)
                        except OSError:
                            sock.close()
                            continue
                        if peer.uid != own_uid and not _admitted(peer, admits, refused, refusals):
                            peer.close()
                            sock.close()
                            continue
                        why = shares.take(peer.uid)
                    if why is not None or peer is None:
                        if peer is not None:
                            peer.close()
                        refused_for_cap += 1
                        if _worth_a_line(refused_for_cap):
                            log.warning(
                                "refusing a connection (%s): %s (%d refused so far for want of a slot)",
                                peer or "not read",
                                why,
                                refused_for_cap,
                            )
                        sock.close()
                        continue
                    stream = trio.SocketStream(sock)

                    async def run(stream: trio.SocketStream = stream, peer: Peer = peer) -> None:
                        try:
                            await serve_stream(stream, peer, handler, limits)
                        finally:
                            shares.give_back(peer.uid)
                            peer.close()  # its exe mark: one descriptor per open connection

                    nursery.start_soon(run)


#: Exception types whose traceback was logged already: a bug shows its traceback once, then a line per connection.
_TRACED: set[str] = set()


def _log_end(peer: Peer, exc: Exception) -> None:
    """Log, once, why a connection ended by an exception (the connection is closed by the caller)."""
    leaves = _leaves(exc)
    if all(isinstance(leaf, (trio.BrokenResourceError, trio.ClosedResourceError)) for leaf in leaves):
        log.info("connection (%s) ended: the peer went away", peer)
        return
    kinds = ", ".join(sorted({type(leaf).__name__ for leaf in leaves}))
    if kinds in _TRACED or len(_TRACED) >= 64:
        log.error("connection (%s) closed by an internal error (%s; traceback logged before)", peer, kinds)
        return
    _TRACED.add(kinds)
    log.error("connection (%s) closed by an internal error (%s)", peer, kinds, exc_info=exc)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) groups, or ``[exc]`` when it is no group."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _accept_now(twin: socket.socket) -> list[trio.socket.SocketType]:
    """The connections waiting in the backlog now (at most ``_ACCEPT_BATCH - 1``), without waiting."""
    taken: list[trio.socket.SocketType] = []
    while len(taken) < _ACCEPT_BATCH - 1:
        try:
            sock, _ = twin.accept()
        except OSError:  # none waiting; any other failure, the awaited accept meets and handles
            break
        taken.append(trio.socket.from_stdlib_socket(sock))
    return taken


#: Uids whose refusals at accept a server counts at once (for its log), before it starts afresh.
_REFUSALS_KEPT = 4096


def _admitted(
    peer: Peer,
    admits: Callable[[Peer], bool] | None,
    refused: Callable[[Peer], None] | None,
    refusals: dict[int, int],
) -> bool:
    """Whether to serve a peer of another uid; a refusal is told to ``refused`` and logged sparingly.

    ``refusals`` counts them per uid: the 1st, 10th, 100th... is logged, so a peer reconnecting
    in a loop cannot flood the daemon's own log (the audit log counts every one).
    """
    try:
        if admits is not None and admits(peer):
            return True
        if len(refusals) >= _REFUSALS_KEPT and peer.uid not in refusals:
            refusals.clear()
        count = refusals[peer.uid] = refusals.get(peer.uid, 0) + 1
        if _worth_a_line(count):
            log.warning(
                "refused a connection from another user (%s): no policy rule lets it in now (%d from uid %d so far)",
                peer,
                count,
                peer.uid,
            )
        if refused is not None:
            refused(peer)
    except Exception as exc:  # a bug there must not stop the accept loop: refuse
        log.error("cannot judge a connection from %s: %s", peer, type(exc).__name__, exc_info=exc)
    return False


def _worth_a_line(count: int) -> bool:
    """1, 10, 100, ... then every millionth: a flood shows in the log, and the log stays small."""
    return count % 1_000_000 == 0 or (count < 1_000_000 and str(count).rstrip("0") == "1")


async def serve_stream(stream: trio.abc.Stream, peer: Peer, handler: Handler, limits: ServerLimits) -> None:
    """Serve one connection, already authenticated as ``peer``, until it closes; then close it."""
    await _ServerConnection(stream, peer, handler, limits).run()


class _ServerConnection:
    """One accepted connection: a read loop plus one task per request in flight.

    On a socket, reads and writes are first tried at once on the non-blocking descriptor, and
    only when the kernel says "not now" does the connection wait through trio (with its
    deadlines): a request answered from memory then costs no scheduler pass of its own.
    """

    def __init__(self, stream: trio.abc.Stream, peer: Peer, handler: Handler, limits: ServerLimits) -> None:
        self._stream = stream
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else None
        self._eager = 0
        self._peer = peer
        self._handler = handler
        self._immediate: Callable[[Request, Session], Any] | None = getattr(handler, "immediate", None)
        self._limits = limits
        self._conn = Connection(Role.SERVER, limits.protocol)
        self._send_lock = trio.Lock()
        self._slots = trio.Semaphore(limits.max_in_flight)
        self._outbox, self._outbox_reader = trio.open_memory_channel[Notification](limits.max_queued)
        self._scope = trio.CancelScope()
        self._session = Session(peer, self._outbox, self._scope.cancel)
        self._last_activity = trio.current_time()
        self._frame_started: float | None = None
        #: Set when a deadline moved earlier (half a message arrived): the watch looks again.
        self._deadline_moved = trio.Event()
        #: Whether the read loop waits for bytes (a message's clock runs only then: while it
        #: holds whole requests back for want of a free slot, the peer is not the slow one).
        self._waiting = False
        #: Whether the peer reset the connection (it is gone: nothing in flight is worth finishing).
        self._reset = False

    async def run(self) -> None:
        """Serve until the connection ends, however it ends; never raises but Cancelled.

        One connection is one failure domain: a reset, a handler's bug or an ``ExceptionGroup``
        out of this connection's nursery ends this connection, is logged once, and never
        reaches the accept loop.
        """
        try:
            with self._scope:
                opened: Callable[[Session], None] | None = getattr(self._handler, "opened", None)
                if opened is not None:
                    opened(self._session)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._push_notifications, nursery)
                    nursery.start_soon(self._watch_deadlines)
                    await self._read_loop(nursery)
                    if not self._gone():
                        # The peer only half-closed: it still reads. Finish the answers in flight.
                        await self._drain_answers()
                    # Gone for good (closed, reset, killed): nobody reads what is in flight, so
                    # it is dropped at once with the connection's slot; a passphrase check that
                    # waits for its turn is dropped before its KDF runs (the delay stands).
                    nursery.cancel_scope.cancel()
        except Exception as exc:  # groups included: whatever it is, it ends this connection alone
            _log_end(self._peer, exc)
        finally:
            self._session.closed()
            await trio.aclose_forcefully(self._stream)

    def _gone(self) -> bool:
        """Whether the peer is gone for good (reset, or closed both ways: POLLHUP), not half-closed."""
        if self._reset:
            return True
        if self._fd is None:
            return False
        poller = select.poll()
        poller.register(self._fd, select.POLLHUP)
        return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))

    async def _take_slot(self) -> bool:
        """A slot for one more request in flight; False if the peer went for good while every
        slot was taken (nothing is read meanwhile, so its end of stream would go unseen)."""
        try:
            self._slots.acquire_nowait()
            return True
        except trio.WouldBlock:
            pass
        while True:
            with trio.move_on_after(_GONE_POLL):
                await self._slots.acquire()
                return True
            if self._gone():
                return False

    async def _drain_answers(self) -> None:
        """Wait for the answers in flight of a half-closed peer (every slot free again), unless
        it goes for good meanwhile."""
        for _ in range(self._limits.max_in_flight):
            if not await self._take_slot():
                return

    async def _push_notifications(self, nursery: trio.Nursery) -> None:
        async for notification in self._outbox_reader:
            if not await self._send(notification):
                nursery.cancel_scope.cancel()
                return

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        conn = self._conn
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                log.info("closing connection (%s): %s", self._peer, exc)
                if exc.msgid is not None:
                    await self._send(error_response(exc.msgid, exc.code, str(exc)))
                nursery.cancel_scope.cancel()
                return
            if event is NEED_DATA:
                if not await self._receive():
                    nursery.cancel_scope.cancel()
                    return
            elif isinstance(event, Request):
                self._frame_started = None  # the next message's clock starts with its first byte
                answer = self._answer_now(event)
                if answer is not None:  # answered from memory: no task, no extra deadline
                    if not await self._send_bytes(answer):
                        nursery.cancel_scope.cancel()
                        return
                    continue
                if not await self._take_slot():
                    nursery.cancel_scope.cancel()
                    return
                nursery.start_soon(self._answer, event, nursery)
            elif isinstance(event, Notification):
                self._frame_started = None
                log.debug("ignoring notification %r from %s", event.method, self._peer)
            elif isinstance(event, ConnectionClosed):
                return

    async def _receive(self) -> bool:
        """Read more bytes into the connection; False when the connection should close.

        No deadline here (a cancel scope per read costs more than answering a token):
        :meth:`_watch_deadlines` closes a connection whose message or silence lasts too long.
        """
        if self._fd is not None and self._eager < _EAGER_LIMIT:
            # Even after a short read: the peer may have sent its next request while we answered
            # (on one core, our write lets it run at once), and then no scheduler pass is needed.
            ready = self._read_now()
            if ready is not None:
                self._eager += 1
                self._received(ready)
                return True
        self._eager = 0
        if self._conn.mid_message and self._frame_started is None:
            self._frame_started = trio.current_time()  # part of a message is here: its clock starts
            self._deadline_moved.set()
        self._waiting = True
        try:
            while True:
                data = await self._receive_some()
                if data is not None:  # else: woken, yet nothing to read: wait again
                    self._received(data)
                    return True
        finally:
            self._waiting = False

    def _received(self, data: bytes | bytearray) -> None:
        self._last_activity = trio.current_time()
        self._conn.receive_data(data)

    async def _watch_deadlines(self) -> None:
        """Close the connection when a message takes longer than ``frame_timeout`` to arrive
        whole (however slowly it trickles), or when it stays silent with nothing in flight for
        ``idle_timeout``. Sleeps until the nearest deadline; reads only note the time."""
        limits = self._limits
        while True:
            now = trio.current_time()
            if self._waiting and self._frame_started is not None and self._conn.mid_message:
                deadline = self._frame_started + limits.frame_timeout
                if now >= deadline:
                    log.info("closing connection (%s): half a message for too long", self._peer)
                    self._scope.cancel()
                    return
            else:
                deadline = self._last_activity + limits.idle_timeout
                if now >= deadline:
                    if not self._conn.in_flight:
                        log.info("closing connection (%s): idle", self._peer)
                        self._scope.cancel()
                        return
                    deadline = now + limits.idle_timeout  # an answer is pending: not idle
            self._deadline_moved = moved = trio.Event()
            with trio.move_on_at(deadline):
                await moved.wait()

    async def _receive_some(self) -> bytes | bytearray | None:
        if self._fd is None:
            try:
                return await self._stream.receive_some(self._limits.receive_size)
            except trio.BrokenResourceError:  # a reset: the peer is gone, as at end of stream
                self._reset = True
                return b""
        await trio.lowlevel.wait_readable(self._fd)
        return self._read_now()

    def _read_now(self) -> bytes | None:
        """What the socket holds now, or None if nothing yet.

        ``b""`` at end of stream, and also when the peer is gone without one: a peer that
        closes with answers unread makes the kernel reset the connection (ECONNRESET), which
        is how engines usually leave (SIGKILL, a crash, a client closed mid-call).

        Raises:
            trio.ClosedResourceError: the descriptor was closed under us (EBADF).
        """
        assert self._fd is not None
        try:
            return os.read(self._fd, self._limits.receive_size)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in _PEER_GONE:
                self._reset = True
                return b""
            raise trio.ClosedResourceError(exc.strerror) from None

    def _answer_now(self, request: Request) -> bytes | None:
        """The answer's bytes, if the handler can give it at once without waiting (a fast path)."""
        immediate = self._immediate
        if immediate is None:
            return None
        try:
            result = immediate(request, self._session)
        except RpcError as exc:
            return self._conn.send(Response(request.msgid, exc.to_error_info(), None))
        except Exception:  # the slow path will answer it, and log whatever went wrong
            return None
        return None if result is NOT_NOW else self._conn.send_result(request.msgid, result)

    async def _answer(self, request: Request, nursery: trio.Nursery) -> None:
        try:
            response = await self._call(request)
            if not await self._send(response):
                nursery.cancel_scope.cancel()
        finally:
            self._slots.release()

    async def _call(self, request: Request) -> Response:
        try:
            with trio.fail_after(self._limits.request_timeout):
                result = await self._handler(request, self._session)
        except RpcError as exc:
            return Response(request.msgid, exc.to_error_info(), None)
        except ExceptionGroup as group:  # a handler that ran tasks: one RpcError inside is its answer
            leaves = _leaves(group)
            if len(leaves) == 1 and isinstance(leaves[0], RpcError):
                return Response(request.msgid, leaves[0].to_error_info(), None)
            log.error("internal error in %s: %s", request.method, type(group).__name__, exc_info=group)
            return error_response(request.msgid, ErrorCode.INTERNAL, "internal error (see the daemon's log)")
        except trio.TooSlowError:
            log.error("%s from %s took longer than %.0f s", request.method, self._peer, self._limits.request_timeout)
            return error_response(request.msgid, ErrorCode.INTERNAL, "the request timed out inside the daemon")
        except Exception as exc:
            # Exception text may come from a library; log its type, never send it on.
            log.error("internal error in %s: %s", request.method, type(exc).__name__, exc_info=exc)
            return error_response(request.msgid, ErrorCode.INTERNAL, "internal error (see the daemon's log)")
        return Response(request.msgid, None, result)

    async def _send(self, message: Response | Notification) -> bool:
        """Write one message; False if the peer is gone or will not read, or the connection
        broke (the peer sent garbage) before this message's turn came."""
        try:
            data = self._conn.send(message)
        except LocalProtocolError:
            return False
        return await self._send_bytes(data)

    async def _send_bytes(self, data: bytes) -> bool:
        """Write one message's bytes (from ``self._conn``); False if the peer is gone or will not read."""
        if self._fd is not None and self._eager < _EAGER_LIMIT and not self._send_lock.locked():
            # Nobody is mid-write, and no yield happens before the lock is taken below.
            try:
                sent = os.write(self._fd, data)
            except BlockingIOError:
                sent = 0
            except OSError:  # the peer is gone
                return False
            if sent == len(data):
                self._eager += 1
                self._last_activity = trio.current_time()
                return True
            data = data[sent:]
        self._eager = 0
        with trio.move_on_after(self._limits.send_timeout):
            async with self._send_lock:
                try:
                    await self._stream.send_all(data)
                    self._last_activity = trio.current_time()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return False
                return True
        log.info("closing connection (%s): it does not read its answers", self._peer)
        return False
