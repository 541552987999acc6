"""atheris harness for the sans-IO decoder: any bytes, any split, any limits fail only cleanly.

Not part of the test suite (atheris is not a project dependency): see ``tests/fuzz/README.md``.
Each input picks limits and split points, then feeds the rest to a server-side
:class:`Connection` twice, whole and in the chosen pieces (so that both the whole-message
fast path and the resumable header scanner decode it). Findings are any exception other than
:class:`RemoteProtocolError`, a decoded request outside the limits or of the wrong shape, a
broken connection that does not stay broken, and the two feeds disagreeing.
"""

from __future__ import annotations

import sys
from typing import Any

import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

with atheris.instrument_imports():
    import msgpack

    from vaultd_protocol import (
        NEED_DATA,
        Connection,
        ConnectionClosed,
        Limits,
        Notification,
        RemoteProtocolError,
        Request,
        Role,
    )
    from vaultd_protocol._framing import peek_msgid

Outcome = tuple[list[Any], tuple[int, int | None] | None]


def _depth(obj: Any) -> int:
    """Nesting as SPEC.md counts it: empty arrays and maps do not count."""
    if isinstance(obj, (list, dict)) and obj:
        values = obj.values() if isinstance(obj, dict) else obj
        return 1 + max(_depth(v) for v in values)
    return 0


def _feed(data: bytes, cuts: list[int], limits: Limits) -> Outcome:
    conn = Connection(Role.SERVER, limits)
    events: list[Any] = []
    last = 0
    for cut in [*cuts, len(data)]:
        if cut > last:
            conn.receive_data(data[last:cut])
            last = cut
        try:
            while (event := conn.next_event()) is not NEED_DATA:
                events.append(event)
        except RemoteProtocolError as exc:
            return events, _failed(conn, exc)
    conn.receive_data(b"")
    try:
        while True:
            event = conn.next_event()
            assert event is not NEED_DATA, "NEED_DATA after end of stream"
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return events, None
    except RemoteProtocolError as exc:
        return events, _failed(conn, exc)


def _comparable(outcome: Outcome) -> tuple[list[bytes], tuple[int, int | None] | None]:
    """The outcome with each event re-encoded: NaN is not equal to itself, its encoding is."""
    events = []
    for event in outcome[0]:
        if isinstance(event, Request):
            events.append(msgpack.packb([0, event.msgid, event.method, event.params], use_bin_type=True))
        elif isinstance(event, Notification):
            events.append(msgpack.packb([2, event.method, event.params], use_bin_type=True))
        else:
            events.append(repr(event).encode())
    return events, outcome[1]


def _failed(conn: Connection, exc: RemoteProtocolError) -> tuple[int, int | None]:
    assert conn.broken
    try:
        conn.next_event()
    except RemoteProtocolError as again:
        assert again is exc, "a broken connection raised a different error"
    else:
        raise AssertionError("a broken connection produced an event")
    assert exc.msgid is None or 0 <= exc.msgid < 2**32
    return int(exc.code), exc.msgid


def _check_events(events: list[Any], limits: Limits) -> None:
    seen: set[int] = set()
    for event in events:
        if isinstance(event, Request):
            assert 0 <= event.msgid < 2**32 and event.msgid not in seen
            seen.add(event.msgid)
            assert isinstance(event.method, str) and isinstance(event.params, list)
            wire = msgpack.packb([0, event.msgid, event.method, event.params], use_bin_type=True)
            # Re-encoding may be shorter than what was sent (longer forms are allowed), never longer
            # than the limit allows plus the slack of float32 widening to float64.
            assert _depth([0, event.msgid, event.method, event.params]) <= limits.max_depth
            assert len(wire) <= 2 * limits.max_message_size
        else:
            assert isinstance(event, (Notification, ConnectionClosed)), event


def test_one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    limits = Limits(max_message_size=fdp.ConsumeIntInRange(64, 2048), max_depth=fdp.ConsumeIntInRange(2, 24))
    cuts = sorted(fdp.ConsumeIntInRange(0, 4096) for _ in range(fdp.ConsumeIntInRange(0, 6)))
    data = fdp.ConsumeBytes(fdp.remaining_bytes())
    cuts = [c % (len(data) + 1) for c in cuts]
    whole = _feed(data, [], limits)
    split = _feed(data, cuts, limits)
    bytewise = _feed(data, list(range(1, len(data))), limits) if len(data) <= 512 else split
    assert _comparable(whole) == _comparable(split) == _comparable(bytewise), (whole, split, bytewise)
    _check_events(whole[0], limits)
    if whole[1] is not None and whole[1][1] is not None:
        # The id answered must be the one at the start of some message that was sent.
        assert any(peek_msgid(data[i : i + 16]) == whole[1][1] for i in range(len(data))), whole


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
