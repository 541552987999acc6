"""Row "fuzz": hypothesis fuzzes the sans-IO decoder and a live daemon's request dispatch.

Two parts, each run as repeated hypothesis runs (``@given`` with ``settings(max_examples=N,
database=None)``, called from :func:`run`, no pytest) until its time budget is spent:

* **decoder**: a server-side :class:`Connection` is fed arbitrary bytes, valid requests and
  notifications, and valid MessagePack of hostile shapes (non-str keys, deep nesting, announced
  or real sizes over the limit, bad envelopes, invalid UTF-8, byte 0xC1, truncations), whole,
  split at arbitrary points and byte by byte. Checked: only ``RemoteProtocolError`` escapes,
  and a broken connection stays broken with the same error; every split decodes the same; the
  requests before the first hostile message come out exactly as sent, and the hostile one ends
  the stream with the error SPEC.md 3.1 gives (``TOO_LARGE`` for size and nesting); an error
  carries a msgid only when a message starting ``[0, msgid`` in a 4-element array was sent.
* **dispatch**: an in-process daemon (``serve`` + ``Dispatcher`` on a real Unix socket, in a
  thread of its own), its vault unlocked with the MIN KDF profile and holding fake credentials
  (a ``static`` one and two ``sign`` ones). Each example opens a connection and pipelines up
  to 6 requests: method names real, near-miss or arbitrary; params maps built from the schemas
  in ``vaultd_protocol._methods`` with types, sizes and values mutated, sometimes the right
  passphrase; sometimes a hostile message last. Checked: the daemon never dies and never
  answers ``INTERNAL``; every answer is a well-formed response (or notification); each request
  the decoder would accept gets exactly one answer, or at most one when a hostile message
  ends the connection, which then carries the error SPEC.md says, and the daemon closes;
  ``Dispatcher.immediate`` (the synchronous fast path) raises nothing but ``RpcError``; a
  well-behaved client on its own connection still gets its token after every example; no
  answer and no log line holds a fake secret.

``inputs`` counts decoder byte streams plus messages sent to the daemon; ``faults`` the hostile
messages among them; ``connections`` the fuzzing connections; ``served`` the well-behaved
client's tokens. The first few failures are shown in ``figures`` with their bytes in hex.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import os
import pickle
import random
import shutil
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import trio
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from vaultd._errors import RpcError
from vaultd._listen import bind_unix_socket
from vaultd._peer import Peer
from vaultd._rpc import Dispatcher
from vaultd._server import NOT_NOW, ServerLimits, Session, serve
from vaultd._vault import FailureDelay, Vault
from vaultd_protocol import (
    METHODS,
    NEED_DATA,
    Connection,
    ConnectionClosed,
    ErrorCode,
    Limits,
    Method,
    Notification,
    RemoteProtocolError,
    Request,
    Response,
    Role,
)
from vaultd_protocol._framing import peek_msgid

from .rows import Mode, Row

__all__ = ["run"]

#: Seconds of hypothesis per part: (decoder, dispatch).
BUDGETS: dict[Mode, tuple[float, float]] = {"short": (5.0, 11.0), "full": (40.0, 80.0), "soak": (300.0, 900.0)}

PASS = "fuzz-canary-passphrase-5be1"
PASS2 = "fuzz-canary-passphrase-2-77d0"
STATIC_TOKEN = "fuzz-canary-static-token-91d3"
BINANCE_KEY = "fuzz-binance-api-key"
BINANCE_SECRET = "fuzzcanarybinancesecret" + "0" * 41
KRAKEN_RAW = b"fuzz-canary-kraken-secret-000000000000000000000000000000000000000"
KRAKEN_SECRET = base64.b64encode(KRAKEN_RAW).decode()
BASELINE: dict[str, tuple[str, dict[str, Any]]] = {
    "ex": ("static", {"token": STATIC_TOKEN}),
    "binance": ("sign", {"scheme": "binance-hmac", "api_key": BINANCE_KEY, "secret": BINANCE_SECRET}),
    "kraken": ("sign", {"scheme": "kraken", "api_key": "fuzz-kraken-key", "secret": KRAKEN_SECRET}),
}
#: Never in an answer (the static token is: token.get hands it out) nor in a log line.
ANSWER_SECRETS = (PASS.encode(), PASS2.encode(), BINANCE_SECRET.encode(), KRAKEN_SECRET.encode(), KRAKEN_RAW)
LOG_SECRETS = (PASS, PASS2, BINANCE_SECRET, KRAKEN_SECRET, STATIC_TOKEN, repr(KRAKEN_RAW)[2:-1])

#: A placeholder the generator puts where a passphrase goes; replaced by the right one on send.
RIGHT = "\x00right-passphrase\x00"
#: Methods whose success changes what the well-behaved client relies on: restored afterwards.
MUTATING = frozenset({"vault.lock", "credential.put", "credential.remove", "policy.set", "vault.rekey"})
SETTINGS = settings(
    database=None,
    deadline=None,
    phases=(Phase.generate,),
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
)


@dataclass
class _Tally:
    inputs: int = 0
    faults: int = 0
    connections: int = 0
    served: int = 0
    errors: int = 0
    crashes: int = 0
    examples: Counter[str] = field(default_factory=Counter)
    #: The daemon's answers by outcome ("ok" or the error's name), to show what the fuzzing reached.
    answers: Counter[str] = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)

    def fail(self, what: str, data: bytes = b"") -> None:
        self.errors += 1
        if len(self.findings) < 6:
            shown = data[:160].hex() + ("..." if len(data) > 160 else "")
            self.findings.append(f"{what}" + (f" [{shown}]" if data else ""))


# -- generated values ----------------------------------------------------------------------------

_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=24)
    | st.binary(max_size=24)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
    | st.builds(msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 999_999_999))
)
values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10) | st.binary(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
#: For the decoder, which must give back what was sent: NaN is not equal to itself.
plain_values = st.recursive(
    _leaves.filter(lambda v: not (isinstance(v, float) and math.isnan(v))),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10) | st.binary(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
NAMES = ["ex", "binance", "kraken", "missing", "", "é", "a" * 64, "a" * 65, "ex*", "../ex"]
URLS = [
    "https://api.binance.com/api/v3/account",
    "https://api.binance.com/api/v3/order?symbol=LTCBTC&side=BUY",
    "https://api.binance.com/sapi/v1/capital/withdraw/apply?coin=BTC",
    "https://api.kraken.com/0/private/Balance",
    "http://127.0.0.1:1/x",
    "http://example.com/plain-http",
    "ftp://api.binance.com/x",
    "https://[::1/x",
    "https://api.binance.com/%ff%00?a=%zz&&=&b",
    "//no-scheme/x",
    "",
]


def _sized(max_len: int, alphabet: str = "x") -> st.SearchStrategy[str]:
    return st.sampled_from([alphabet * max_len, alphabet * (max_len + 1)])


def _field_value(method: Method, name: str, kind: str, max_len: int) -> st.SearchStrategy[Any]:
    """Values for one schema field: mostly plausible, some at or just over its size limit."""
    if name in ("passphrase", "new_passphrase"):
        choices = (
            [RIGHT, RIGHT, "wrong passphrase", "", PASS2] if name == "new_passphrase" else [RIGHT, "wrong passphrase"]
        )
        return st.sampled_from(choices) | st.text(max_size=12) | _sized(max_len)
    if name == "name":
        return st.sampled_from(["ex", "binance", "kraken"]) | st.sampled_from(NAMES) | st.text(max_size=8)
    if name == "names":
        return st.lists(st.sampled_from(NAMES) | st.text(max_size=4), max_size=5) | st.just(["ex"] * 257)
    if name == "method" and method is Method.TOKEN_SIGN:
        return st.sampled_from(["GET", "POST", "DELETE", "PUT", "get", "", "G\x00T"]) | st.text(max_size=17)
    if name == "url":
        return st.sampled_from(URLS) | st.text(max_size=30) | st.sampled_from(URLS).map(lambda u: u + "?" + "a" * 8200)
    if name == "kind":
        return st.sampled_from(["static", "sign", "jwt", "oauth2", "exec", "keepalive", "STATIC", ""]) | st.text(
            max_size=33
        )
    if name == "config":
        return _configs
    if name == "policy":
        return _policies
    if name == "kdf_profile":
        return st.sampled_from(["min", "interactive", "moderate", "sensitive", "MIN"]) | st.text(max_size=8)
    if name == "protocol":
        return st.sampled_from([0, 1, 2, -1, 2**63 - 1]) | st.integers()
    if kind == "int":
        return st.integers(-(2**63), 2**64 - 1) | st.sampled_from([0, 1499827319559, 2**63])
    if kind == "number":
        return st.floats(0, 1e6) | st.floats() | st.integers(-(2**63), 2**64 - 1) | st.sampled_from([0, 1e9, 86400.0])
    if kind == "bool":
        return st.booleans()
    if kind == "map":
        return st.dictionaries(st.text(max_size=10), values, max_size=4)
    if kind == "body":
        return (
            st.binary(max_size=40)
            | st.text(max_size=40)
            | st.sampled_from([b"\xff\xfe", b"x" * max_len, b"x" * (max_len + 1)])
        )
    return st.text(max_size=20) | _sized(max_len)


_configs = st.one_of(
    st.fixed_dictionaries({"token": st.text(max_size=20)}, optional={"not_after": values, "headers": values}),
    st.fixed_dictionaries(
        {"scheme": st.sampled_from(["binance-hmac", "binance-ed25519", "kraken", "okx", "bybit", "deribit", "x"])},
        optional={"api_key": st.text(max_size=10), "secret": st.text(max_size=20) | values, "allow": values},
    ),
    st.dictionaries(st.text(max_size=10), values, max_size=5),
)
_rules = st.fixed_dictionaries(
    {},
    optional={
        "uid": st.integers(-1, 2**32) | values,
        "unit": st.text(max_size=12),
        "exe": st.text(max_size=12),
        "credentials": st.lists(st.sampled_from(NAMES) | st.text(max_size=4), max_size=3) | values,
        "methods": st.lists(st.sampled_from(["get", "sign", "watch", "status", "delete"]), max_size=4) | values,
    },
)
_policies = st.fixed_dictionaries({"rules": st.lists(_rules, max_size=3) | values}) | st.dictionaries(
    st.text(max_size=8), values, max_size=3
)


@st.composite
def _params(draw: st.DrawFn, method: Method) -> list[Any]:
    """A params array for ``method``'s schema (or, sometimes, another's), mutated."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.lists(values, max_size=3))
    schema = method if draw(st.integers(0, 9)) else draw(st.sampled_from(list(Method)))
    given: dict[Any, Any] = {}
    for spec in METHODS[schema]:
        roll = draw(st.integers(0, 19))
        if roll == 0 or (not spec.required and roll < 6):
            continue  # missing
        if roll == 1:
            given[spec.name] = draw(values)  # wrong type, most likely
        else:
            given[spec.name] = draw(_field_value(schema, spec.name, spec.kind, spec.max_len))
    if draw(st.integers(0, 9)) == 0:
        given[draw(st.text(max_size=10) | st.binary(max_size=4) | st.just("passphrase "))] = draw(values)
    if given.get("passphrase") == RIGHT:
        # The right passphrase may change the vault: never with kinds that call out (oauth2, exec,
        # keepalive), and never to a passphrase the row could not put back.
        if "kind" in given and given["kind"] not in ("static", "sign"):
            given["passphrase"] = "wrong passphrase"
        new = given.get("new_passphrase")
        if isinstance(new, str) and len(new) >= 8 and new not in (RIGHT, PASS2):
            given["new_passphrase"] = PASS2
    return [given] if draw(st.integers(0, 19)) else [given, draw(values)]


_methods = (
    st.sampled_from(list(Method))
    | st.sampled_from(list(Method))
    | st.sampled_from([Method.TOKEN_GET, Method.TOKEN_SIGN, Method.STATUS, Method.TOKEN_WATCH])
    | st.sampled_from([Method.TOKEN_GET, Method.TOKEN_SIGN, Method.STATUS, Method.TOKEN_WATCH])
    | st.sampled_from(
        ["token.get ", "TOKEN.GET", "token", "", "token.get\x00", "__call__", "_hello", "credential.put.x"]
    )
    | st.text(max_size=70)
)


@st.composite
def _request(draw: st.DrawFn) -> tuple[str, list[Any]]:
    name = draw(_methods)
    try:
        method = Method(name)
    except ValueError:
        method = draw(st.sampled_from(list(Method)))  # still schema-shaped params
    return name, draw(_params(method))


def _nest(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


@st.composite
def _hostile(draw: st.DrawFn, msgid: int) -> tuple[bytes, str]:
    """One hostile message and what SPEC.md 3.1 says of it: "too_large", "bad" or "any"."""
    head = b"\x94\x00" + msgpack.packb(msgid) + b"\xa9token.get"
    choice = draw(st.integers(0, 15))
    choice = 8 if choice > 13 else choice  # wrong envelopes are the most varied: thrice the weight
    if choice == 0:
        return draw(st.binary(min_size=1, max_size=64)), "any"
    if choice == 1:  # deeper than the limit of 16 (the message array is level 1)
        return head + b"\x91\x81\xa4name" + _nest(draw(st.integers(14, 40))), "too_large"
    if choice == 2:  # a str announcing far more than the limit, then nothing
        return head + b"\x91\x81\xa4name\xdb" + draw(st.integers(65536, 2**32 - 1)).to_bytes(4, "big"), "too_large"
    if choice == 3:  # really too large
        message = msgpack.packb([0, msgid, "token.sign", [{"body": b"x" * draw(st.integers(65500, 70000))}]])
        return message, "too_large" if len(message) > 65536 else "any"
    if choice == 4:  # an array announcing more elements than the limit can hold
        return head + b"\xdd" + draw(st.integers(65536, 2**32 - 1)).to_bytes(4, "big"), "too_large"
    if choice == 5:  # a non-str map key
        key = draw(st.integers(-5, 5) | st.none() | st.floats(allow_nan=False) | st.booleans())
        return msgpack.packb([0, msgid, "token.get", [{key: "ex"}]]), "bad"
    if choice == 6:
        return head + b"\x91\x81\xa4name\xa2" + draw(st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0"])), "bad"
    if choice == 7:
        return head + b"\x91\xc1", "bad"
    if choice == 8:  # wrong envelopes
        shapes: list[Any] = [
            [0, msgid, "token.get", {"name": "ex"}],
            [0, msgid, 7, []],
            [0, msgid],
            [0, msgid, "token.get", [], None],
            [1, msgid, None, {}],
            [3, msgid, "x", []],
            [0, -1, "token.get", []],
            [0, 2**32, "token.get", []],
            [0, True, "token.get", []],
            [0, 1.0, "token.get", []],
            [True, msgid, "token.get", []],
            {"0": msgid},
            [],
            "token.get",
            [2, "x", {}],
        ]
        return msgpack.packb(draw(st.sampled_from(shapes))), "bad"
    if choice == 9:  # cut short: the stream then ends in the middle of a message
        whole = msgpack.packb([0, msgid, "token.get", [{"name": "ex"}]])
        return whole[: draw(st.integers(1, len(whole) - 1))], "bad"
    if choice == 10:  # a map announcing more pairs than the limit can hold
        return head + b"\x91\xdf" + draw(st.integers(32768, 2**32 - 1)).to_bytes(4, "big"), "too_large"
    if choice == 11:  # ext and timestamps that do not decode
        return head + b"\x91\x81\xa4name" + draw(
            st.sampled_from([b"\xd6\xff\x00", b"\xc7\x05\xff" + b"\x00" * 5])
        ), "any"
    if choice == 12:  # exactly at the limit: accepted
        body = 65536 - len(msgpack.packb([0, msgid, "token.sign", [{"body": b""}]], use_bin_type=True)) - 2
        return msgpack.packb([0, msgid, "token.sign", [{"body": b"x" * body}]], use_bin_type=True), "any"
    return msgpack.packb([0, msgid, "token.get", [{"name": draw(values)}]], use_bin_type=True), "any"


# -- part 1: the decoder -------------------------------------------------------------------------


def _depth(obj: Any) -> int:
    """Nesting as SPEC.md counts it: empty arrays and maps do not count."""
    if isinstance(obj, (list, dict)) and obj:
        inner = obj.values() if isinstance(obj, dict) else obj
        return 1 + max(_depth(v) for v in inner)
    return 0


Outcome = tuple[list[Any], tuple[int, int | None] | None]


def _decode(data: bytes, cuts: list[int], limits: Limits) -> Outcome:
    """Feed ``data`` cut at ``cuts``, then end the stream: the events, and the error if one ends it.

    Raises:
        AssertionError: anything but a clean event or ``RemoteProtocolError``, or a broken
            connection that does not stay broken.
    """
    conn = Connection(Role.SERVER, limits)
    events: list[Any] = []
    last = 0
    try:
        for cut in [*cuts, len(data)]:
            if cut > last:
                conn.receive_data(data[last:cut])
                last = cut
            while (event := conn.next_event()) is not NEED_DATA:
                events.append(event)
        conn.receive_data(b"")
        while not isinstance(event := conn.next_event(), ConnectionClosed):
            assert event is not NEED_DATA, "NEED_DATA after the end of the stream"
            events.append(event)
        return events, None
    except RemoteProtocolError as exc:
        assert conn.broken, "an error left the connection usable"
        try:
            conn.next_event()
        except RemoteProtocolError as again:
            assert again is exc, "a broken connection raised another error"
        else:
            raise AssertionError("a broken connection gave an event") from None
        return events, (int(exc.code), exc.msgid)


_small_limits = st.builds(Limits, st.integers(64, 1024), st.integers(2, 20))
_valid_requests = st.builds(
    lambda method, params: ("request", method, params), st.text(max_size=20), st.lists(plain_values, max_size=3)
)
_valid_notifications = st.builds(
    lambda method, params: ("note", method, params), st.text(max_size=10), st.lists(plain_values, max_size=2)
)


@st.composite
def _decoder_case(draw: st.DrawFn) -> tuple[Limits, bytes, list[Any], str | None, list[int]]:
    """Limits, bytes, the events expected before the first hostile part, what that part is, cuts."""
    limits = draw(_small_limits | st.just(Limits()))
    parts = draw(st.lists(_valid_requests | _valid_notifications, max_size=4))
    wire = bytearray()
    expected: list[Any] = []
    ending: str | None = None
    for msgid, (kind, method, params) in enumerate(parts):
        obj = [0, msgid, method, params] if kind == "request" else [2, method, params]
        try:
            packed = msgpack.packb(obj, use_bin_type=True, use_single_float=draw(st.booleans()))
        except OverflowError:  # too large for a float 32
            packed = msgpack.packb(obj, use_bin_type=True)
        if len(packed) > limits.max_message_size or _depth(obj) > limits.max_depth:
            ending = "too_large"
        elif _has_bad_key(obj) or _has_single_float_mismatch(obj, packed):
            ending = "any"
        wire += packed
        if ending:
            break
        expected.append(Request(msgid, method, params) if kind == "request" else Notification(method, params))
    if ending is None:
        tail = draw(st.integers(0, 3))
        if tail in (1, 3):
            data, ending = draw(_hostile(len(parts)))
            if limits != Limits():
                ending = "any"  # the hostile shapes assume the default limits
            wire += data
        elif tail == 2:
            wire += draw(st.binary(min_size=1, max_size=80))
            ending = "any"
    cuts = sorted({c % (len(wire) + 1) for c in draw(st.lists(st.integers(0, 1 << 17), max_size=6))})
    return limits, bytes(wire), expected, ending, cuts


def _same(first: Any, second: Any) -> bool:
    """Equal outcomes, NaN included: a NaN decoded twice is not equal to itself, but pickles
    to the same bytes (the full run once reported such a pair as a difference)."""
    return bool(first == second) or pickle.dumps(first) == pickle.dumps(second)


def _has_bad_key(obj: Any) -> bool:
    if isinstance(obj, dict):
        return any(not isinstance(k, (str, bytes)) or _has_bad_key(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_has_bad_key(v) for v in obj)
    return False


def _has_single_float_mismatch(obj: Any, packed: bytes) -> bool:
    """Whether packing floats as float 32 changed a value (the decoded request would differ)."""
    return b"\xca" in packed and msgpack.unpackb(packed, raw=False, strict_map_key=False) != obj


def _fuzz_decoder(tally: _Tally, budget: float, rng: random.Random) -> None:
    def check(case: tuple[Limits, bytes, list[Any], str | None, list[int]]) -> None:
        limits, data, expected, ending, cuts = case
        tally.inputs += 1
        tally.examples["decoder"] += 1
        if ending in ("bad", "too_large"):
            tally.faults += 1
        try:
            whole = _decode(data, [], limits)
            split = _decode(data, cuts, limits)
            if not _same(whole, split):
                tally.fail(f"decoder: a split at {cuts} changes the outcome", data)
            if len(data) <= 2048 and not _same(_decode(data, list(range(1, len(data))), limits), whole):
                tally.fail("decoder: byte-by-byte feeding changes the outcome", data)
            events, error = whole
            if events[: len(expected)] != expected:
                tally.fail("decoder: valid messages did not decode as sent", data)
            if ending is None and (error is not None or len(events) != len(expected)):
                tally.fail(f"decoder: a valid stream failed: {error}", data)
            if ending in ("bad", "too_large") and error is None:
                tally.fail(f"decoder: a {ending} message was accepted", data)
            if ending == "too_large" and error is not None and error[0] != ErrorCode.TOO_LARGE:
                tally.fail(f"decoder: an over-limit message gave {ErrorCode(error[0]).name}", data)
            if (
                error is not None
                and error[1] is not None
                and not any(peek_msgid(data[i : i + 16]) == error[1] for i in range(len(data)))
            ):
                tally.fail("decoder: an error answers a msgid no 4-element request carried", data)
            for event in events:
                if (
                    isinstance(event, Request)
                    and _depth([0, event.msgid, event.method, event.params]) > limits.max_depth
                ):
                    tally.fail("decoder: a request deeper than the limit came through", data)
        except Exception as exc:  # anything but RemoteProtocolError escaping is a finding
            tally.fail(f"decoder raised {type(exc).__name__}: {exc}", data)

    _run_hypothesis(tally, check, st.tuples(_decoder_case()), budget, rng, chunk=150)


def _run_hypothesis(
    tally: _Tally,
    check: Callable[..., None],
    strategy: st.SearchStrategy[Any],
    budget: float,
    rng: random.Random,
    chunk: int,
) -> None:
    """Run ``check`` under hypothesis in runs of ``chunk`` examples, each with a new seed, until ``budget`` is spent.

    ``check`` records what it finds in ``tally`` and does not raise: hypothesis would stop at the
    first failure, where the row wants to count them all. Whatever it raises is a finding too.
    """
    end = time.monotonic() + budget

    def example(args: tuple[Any, ...]) -> None:
        if time.monotonic() < end:
            try:
                check(*args)
            except Exception as exc:
                tally.fail(f"unexpected {type(exc).__name__}: {exc}")

    while time.monotonic() < end:
        test = seed(rng.getrandbits(64))(settings(SETTINGS, max_examples=chunk)(given(strategy)(example)))
        test()


# -- part 2: a live daemon -----------------------------------------------------------------------


class _Daemon:
    """An in-process daemon on a real Unix socket, in a thread running its own trio loop."""

    def __init__(self, folder: Path) -> None:
        self.socket_path = folder / "run" / "vaultd.sock"
        self.data = folder / "data"
        self.data.mkdir(mode=0o700)
        self.error: BaseException | None = None
        self.dispatcher: Dispatcher | None = None
        self.session: Session | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="fuzzed-vaultd", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self.error is not None:
            raise RuntimeError(f"the daemon did not start: {self.error!r}")

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # the daemon died: the row counts it as a crash
            self.error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            vault = Vault(self.data, nursery=nursery, failure_delay=FailureDelay(step=0.0, cap=0.0))
            self.dispatcher = Dispatcher(vault, self.socket_path)
            outbox, self._outbox_reader = trio.open_memory_channel[Notification](1000)
            self.session = Session(Peer(os.getpid(), os.getuid(), os.getgid()), outbox, lambda: None)
            listener = trio.socket.from_stdlib_socket(bind_unix_socket(self.socket_path))
            await nursery.start(serve, listener, self.dispatcher, ServerLimits(idle_timeout=600.0))
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def immediate(self, request: Request) -> str:
        """Call ``Dispatcher.immediate`` in the daemon's loop: "ok", "not now", "rpc", or the exception."""

        def call() -> str:
            assert self.dispatcher is not None and self.session is not None
            try:
                result = self.dispatcher.immediate(request, self.session)
            except RpcError as exc:
                return "INTERNAL" if exc.code is ErrorCode.INTERNAL else "rpc"
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"
            return "not now" if result is NOT_NOW else "ok" if isinstance(result, dict) else f"result {type(result)}"

        return trio.from_thread.run_sync(call, trio_token=self._token)

    def stop(self) -> None:
        if self._thread.is_alive() and self._stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)


class _Client:
    """A blocking, well-behaved protocol client (the sans-IO connection in the client role)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.conn = Connection(Role.CLIENT)
        self._next = 0

    def call(self, rpc: str, /, **params: Any) -> Any:
        """The result; raises RpcFailed with the error's name."""
        self._next += 1
        self.sock.sendall(self.conn.send(Request(self._next, rpc, [params])))
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                self.conn.receive_data(self.sock.recv(65536))
                continue
            if isinstance(event, Notification):
                continue
            if isinstance(event, Response) and event.msgid == self._next:
                if event.error is not None:
                    raise _RpcFailed(event.error.name)
                return event.result
            raise _RpcFailed(f"unexpected {event!r}")

    def close(self) -> None:
        self.sock.close()


class _RpcFailed(Exception):
    pass


class _LogTap(logging.Handler):
    """Keeps every vaultd log line, formatted as a log file would hold it (tracebacks included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, self.format(record)))


@contextlib.contextmanager
def _tapped_logs() -> Iterator[_LogTap]:
    logger = logging.getLogger("vaultd")
    tap = _LogTap()
    saved = logger.level, logger.propagate
    logger.addHandler(tap)
    logger.setLevel(logging.DEBUG)  # the most lines, for the secret check
    logger.propagate = False
    try:
        yield tap
    finally:
        logger.removeHandler(tap)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _exchange(path: Path, data: bytes) -> tuple[bytes, bool]:
    """Send ``data`` on a new connection, end our side, read until the daemon closes: (answers, closed)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return bytes(received), True
            except TimeoutError:
                return bytes(received), False
            if not chunk:
                return bytes(received), True
            received += chunk


def _judge(tally: _Tally, data: bytes, answers: bytes, closed: bool, oracle: Outcome) -> None:
    """Check the daemon's answers to one connection against what the decoder (the oracle) makes of it."""
    requests = [e.msgid for e in oracle[0] if isinstance(e, Request)]
    error = oracle[1]
    if not closed:
        tally.fail("dispatch: the daemon did not close the connection after our end of stream", data)
    for secret in ANSWER_SECRETS:
        if secret in answers:
            tally.fail(f"dispatch: an answer holds a fake secret ({secret[:12]!r}...)", data)
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(answers)
    counts: Counter[int] = Counter()
    protocol_errors = []
    try:
        messages = list(unpacker)
    except Exception as exc:
        tally.fail(f"dispatch: undecodable answers ({type(exc).__name__})", data)
        return
    for message in messages:
        if isinstance(message, list) and len(message) == 3 and message[0] == 2:
            if not (isinstance(message[1], str) and isinstance(message[2], list)):
                tally.fail("dispatch: a malformed notification", data)
            continue
        if not (isinstance(message, list) and len(message) == 4 and message[0] == 1):
            tally.fail("dispatch: an answer that is not [1, msgid, error, result]", data)
            continue
        _, msgid, err, result = message
        tally.answers["ok" if err is None else str(err.get("name") if isinstance(err, dict) else err)] += 1
        if err is None:
            if not isinstance(result, dict):
                tally.fail("dispatch: a result that is not a map", data)
        elif not (
            isinstance(err, dict)
            and isinstance(err.get("code"), int)
            and isinstance(err.get("message"), str)
            and err.get("name") == _code_name(err["code"])
            and result is None
        ):
            tally.fail(f"dispatch: a malformed error {err!r}", data)
            continue
        elif err["code"] == ErrorCode.INTERNAL:
            tally.fail(f"dispatch: INTERNAL ({err['message']})", data)
        elif err["code"] in (ErrorCode.PROTOCOL_ERROR, ErrorCode.TOO_LARGE):
            protocol_errors.append((err["code"], msgid))
            continue
        counts[msgid] += 1
    unexpected = set(counts) - set(requests)
    if unexpected:
        tally.fail(f"dispatch: answers to msgids never sent: {sorted(unexpected)[:3]}", data)
    twice = [m for m, n in counts.items() if n > 1]
    if twice:
        tally.fail(f"dispatch: several answers to msgid {twice[0]}", data)
    if error is None:
        missing = [m for m in requests if counts[m] == 0]
        if missing:
            tally.fail(f"dispatch: no answer to msgid {missing[0]}", data)
        if protocol_errors:
            tally.fail(f"dispatch: a protocol error {protocol_errors[0]} where the decoder sees none", data)
    else:
        code, msgid = error
        if len(protocol_errors) > 1:
            tally.fail("dispatch: several protocol errors on one connection", data)
        elif protocol_errors and (protocol_errors[0][0] != code or protocol_errors[0][1] not in (msgid, *requests)):
            tally.fail(f"dispatch: answered {protocol_errors[0]} where the decoder says {error}", data)
        elif msgid is not None and not protocol_errors:
            tally.fail(f"dispatch: no {ErrorCode(code).name} answer to msgid {msgid}", data)


def _code_name(code: int) -> str | None:
    try:
        return ErrorCode(code).name
    except ValueError:
        return None


@st.composite
def _connection_case(
    draw: st.DrawFn,
) -> tuple[list[tuple[str, list[Any]]], list[tuple[str, list[Any]]], bytes, str | None]:
    """Requests and notifications, their bytes, and perhaps one hostile message at the end."""
    requests = draw(st.lists(_request(), min_size=1, max_size=6))
    notes = draw(
        st.lists(
            st.tuples(st.sampled_from(["token.updated", "x"]) | st.text(max_size=8), st.lists(values, max_size=2)),
            max_size=1,
        )
    )
    hostile = draw(st.none() | st.none() | st.none() | st.none() | _hostile(100))
    if hostile is None:
        return requests, notes, b"", None
    return requests, notes, hostile[0], hostile[1]


def _right(params: list[Any]) -> bool:
    return bool(params) and isinstance(params[0], dict) and PASS in params[0].values()


def _substitute(params: list[Any], passphrase: str) -> list[Any]:
    if params and isinstance(params[0], dict):
        given = {k: (passphrase if v == RIGHT else v) for k, v in params[0].items()}
        return [given, *params[1:]]
    return params


class _Dispatch:
    """One fuzzing session against one daemon, with the well-behaved client beside it."""

    def __init__(self, tally: _Tally, folder: Path, tap: _LogTap) -> None:
        self.tally = tally
        self.tap = tap
        self.daemon = _Daemon(folder)
        self.path = self.daemon.socket_path
        admin = _Client(self.path)
        admin.call("vault.init", passphrase=PASS, kdf_profile="min")
        admin.call("vault.unlock", passphrase=PASS)
        for name, (kind, config) in BASELINE.items():
            admin.call("credential.put", passphrase=PASS, name=name, kind=kind, config=config)
        admin.close()
        self.good = _Client(self.path)
        self.restores = 0
        self.immediate = Counter[str]()

    def close(self) -> None:
        self.good.close()
        self.daemon.stop()

    def example(self, case: tuple[list[tuple[str, list[Any]]], list[tuple[str, list[Any]]], bytes, str | None]) -> None:
        requests, notes, hostile, _ = case
        tally = self.tally
        if not self.daemon.alive:
            return
        wire = bytearray()
        sent: list[tuple[str, list[Any]]] = []
        for msgid, (method, drawn) in enumerate(requests):
            params = _substitute(drawn, PASS)
            sent.append((method, params))
            try:
                wire += msgpack.packb([0, msgid, method, params], use_bin_type=True)
            except (ValueError, OverflowError, TypeError):
                continue
        for method, params in notes:
            wire += msgpack.packb([2, method, params], use_bin_type=True)
        wire += hostile
        data = bytes(wire)
        tally.inputs += len(requests) + len(notes) + (1 if hostile else 0)
        tally.faults += 1 if hostile else 0
        tally.connections += 1
        tally.examples["dispatch"] += 1
        oracle = _decode(data, [], Limits())
        for event in oracle[0]:
            if isinstance(event, Request) and event.method in (Method.TOKEN_GET, Method.TOKEN_SIGN):
                outcome = self.daemon.immediate(event)
                self.immediate[outcome if outcome in ("ok", "not now", "rpc") else "other"] += 1
                if outcome not in ("ok", "not now", "rpc"):
                    tally.fail(f"Dispatcher.immediate: {outcome}", data)
        answers, closed = _exchange(self.path, data)
        if not self.daemon.alive:
            tally.crashes += 1
            tally.fail(f"the daemon died: {self.daemon.error!r}", data)
            return
        _judge(tally, data, answers, closed, oracle)
        self._check_logs(data)
        changed = {m for m, p in sent if m == "vault.lock" or (m in MUTATING and _right(p))}
        try:
            if changed:
                self._restore(changed)
            token = self.good.call("token.get", name="ex")
            if token.get("token") != STATIC_TOKEN:
                tally.fail("the well-behaved client got a wrong token", data)
            else:
                tally.served += 1
            if tally.examples["dispatch"] % 10 == 0:
                signed = self.good.call("token.sign", name="binance", method="GET", url=URLS[0])
                if BINANCE_KEY not in str(signed.get("headers")):
                    tally.fail("the well-behaved client got a wrong signature", data)
                else:
                    tally.served += 1
        except (_RpcFailed, OSError, RemoteProtocolError) as exc:
            tally.fail(f"the well-behaved client failed: {exc!r}", data)
            self._reconnect()

    def _check_logs(self, data: bytes) -> None:
        for level, line in self.tap.lines:
            if any(secret in line for secret in LOG_SECRETS):
                self.tally.fail(f"a log line holds a fake secret: {line[:80]!r}", data)
            elif level >= logging.ERROR:
                self.tally.fail(f"an error logged: {line[:160]!r}", data)
        self.tap.lines.clear()

    def _restore(self, changed: set[str]) -> None:
        """Undo what the fuzzer may have changed (``changed``: methods sent) with the right passphrase, or a lock."""
        self.restores += 1
        admin = _Client(self.path)
        try:
            if admin.call("status")["state"] != "UNLOCKED":
                try:
                    admin.call("vault.unlock", passphrase=PASS)
                except _RpcFailed:  # a vault.rekey then a vault.lock: unlock with the new one
                    if "vault.rekey" not in changed:
                        raise
                    admin.call("vault.unlock", passphrase=PASS2)
            if "vault.rekey" in changed:
                with contextlib.suppress(_RpcFailed):
                    admin.call("vault.rekey", passphrase=PASS2, new_passphrase=PASS)
            if "policy.set" in changed:
                admin.call("policy.set", passphrase=PASS, policy={"rules": []})
            if changed & {"credential.put", "credential.remove"}:
                for name, (kind, config) in BASELINE.items():
                    admin.call("credential.put", passphrase=PASS, name=name, kind=kind, config=config, replace=True)
        finally:
            admin.close()
            self.tap.lines.clear()

    def _reconnect(self) -> None:
        with contextlib.suppress(OSError):
            self.good.close()
        try:
            self._restore(set(MUTATING))
            self.good = _Client(self.path)
        except (_RpcFailed, OSError, RemoteProtocolError) as exc:
            self.tally.fail(f"cannot restore the vault: {exc!r}")


def _fuzz_dispatch(tally: _Tally, budget: float, rng: random.Random) -> dict[str, str]:
    folder = Path(tempfile.mkdtemp(prefix="vfz", dir="/tmp"))
    try:
        with _tapped_logs() as tap:
            session = _Dispatch(tally, folder, tap)
            try:
                _run_hypothesis(tally, session.example, st.tuples(_connection_case()), budget, rng, chunk=60)
            finally:
                alive = session.daemon.alive
                session.close()
            if not alive:
                tally.crashes += 0 if tally.crashes else 1
        return {
            "restores": f"{session.restores} (the vault put back after a lock or a change with the right passphrase)",
            "immediate": ", ".join(f"{k} {v}" for k, v in sorted(session.immediate.items())),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(mode: Mode) -> Row:
    """Fuzz the decoder, then a live daemon, for ``mode``'s budgets; count what went wrong."""
    decoder_budget, dispatch_budget = BUDGETS[mode]
    master = random.SystemRandom().getrandbits(32)
    rng = random.Random(master)
    tally = _Tally()
    started = time.monotonic()
    _fuzz_decoder(tally, decoder_budget, rng)
    decoder_took = time.monotonic() - started
    decoder_inputs = tally.inputs
    started = time.monotonic()
    extra = _fuzz_dispatch(tally, dispatch_budget, rng)
    dispatch_took = time.monotonic() - started
    figures = {
        "decoder": f"{decoder_inputs:,} byte streams in {decoder_took:.1f} s ({decoder_inputs / decoder_took:,.0f}/s)",
        "dispatch": (
            f"{tally.inputs - decoder_inputs:,} messages on {tally.connections:,} connections in {dispatch_took:.1f} s"
            f" ({tally.connections / dispatch_took:,.0f} connections/s)"
        ),
        **extra,
        "answers": ", ".join(f"{name} {count:,}" for name, count in tally.answers.most_common()),
        "seed": f"{master} (random.Random(seed) draws each hypothesis run's seed)",
    }
    figures.update({f"finding {i + 1}": text for i, text in enumerate(tally.findings)})
    return Row(
        name="fuzz (decoder, dispatch)",
        inputs=tally.inputs,
        faults=tally.faults,
        connections=tally.connections,
        served=tally.served,
        errors=tally.errors,
        crashes=tally.crashes,
        figures=figures,
    )
