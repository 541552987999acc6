"""atheris harness for request dispatch: ``parse_params`` and ``Dispatcher.immediate``, no socket.

Not part of the test suite (atheris is not a project dependency): see ``tests/fuzz/README.md``.
A vault in a temporary folder is created, unlocked (MIN KDF profile) and given fake
credentials (a ``static`` one, a ``binance-hmac`` and a ``kraken`` ``sign`` one) inside a trio
run; the fuzzer then runs synchronously in that run's main task, so that the daemon's
synchronous fast path, :meth:`Dispatcher.immediate`, runs as it does in the server.

Each input becomes a method name (a real one, most of the time) and a params array built from
that method's schema with values the fuzzer chooses (right and wrong types, sizes at and over
the limits, names of real credentials). Findings: ``parse_params`` raising anything but
``InvalidParams`` or returning a map that does not match the schema; ``immediate`` raising
anything but an ``RpcError``, answering ``INTERNAL``, or returning something other than a map
or ``NOT_NOW``; a fake secret in a result or an error message.
"""

from __future__ import annotations

import base64
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

with atheris.instrument_imports():
    import trio

    from vaultd._errors import RpcError
    from vaultd._peer import Peer
    from vaultd._rpc import Dispatcher
    from vaultd._secret import Secret
    from vaultd._server import NOT_NOW, Session
    from vaultd._vault import FailureDelay, Vault
    from vaultd_protocol import (
        METHODS,
        ErrorCode,
        InvalidParams,
        KdfProfile,
        Method,
        Notification,
        Request,
        parse_params,
    )

PASS = "fuzz-canary-passphrase-5be1"
STATIC_TOKEN = "fuzz-canary-static-token-91d3"
BINANCE_SECRET = "fuzzcanarybinancesecret" + "0" * 41
KRAKEN_RAW = b"fuzz-canary-kraken-secret-000000000000000000000000000000000000000"
KRAKEN_SECRET = base64.b64encode(KRAKEN_RAW).decode()
SECRETS = (PASS, BINANCE_SECRET, KRAKEN_SECRET, repr(KRAKEN_RAW))
NAMES = ["ex", "binance", "kraken", "missing", ""]
METHOD_NAMES = [str(m) for m in Method]
URLS = [
    "https://api.binance.com/api/v3/account",
    "https://api.binance.com/api/v3/order?symbol=LTCBTC&side=BUY",
    "https://api.binance.com/sapi/v1/capital/withdraw/apply",
    "https://api.kraken.com/0/private/Balance",
    "http://127.0.0.1:1/x",
]
KINDS = {"str", "secret", "int", "number", "bool", "map", "names", "body"}

_state: dict[str, Any] = {}


def _value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> Any:
    """Any MessagePack-like value."""
    kind = fdp.ConsumeIntInRange(0, 11 if depth < 3 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeIntInRange(-(2**63), 2**64 - 1)
    if kind == 3:
        return fdp.ConsumeRegularFloat()
    if kind == 4:
        return fdp.ConsumeFloat()  # NaN and infinities too
    if kind in (5, 6):
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if kind == 7:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
    if kind == 8:
        return fdp.PickValueInList(NAMES + URLS + ["GET", "POST"])
    if kind == 9:
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    return {fdp.ConsumeUnicodeNoSurrogates(8): _value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))}


def _field(fdp: atheris.FuzzedDataProvider, name: str, kind: str, max_len: int) -> Any:
    """A value for one schema field: plausible, at or over its limit, or of any type."""
    how = fdp.ConsumeIntInRange(0, 5)
    if how == 0:
        return _value(fdp)
    if how == 1 and kind in ("str", "secret", "body"):
        return "x" * (max_len + fdp.ConsumeIntInRange(-1, 1))
    if name == "name":
        return fdp.PickValueInList(NAMES)
    if name == "url":
        text = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 30))
        return fdp.PickValueInList([*URLS, "https://", "https://[", "http://", ""]) + text
    if name == "method":
        return fdp.PickValueInList(["GET", "POST", "DELETE", "get", ""])
    if name == "names":
        return [fdp.PickValueInList(NAMES) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if kind in ("str", "secret"):
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 30))
    if kind == "int":
        return fdp.ConsumeIntInRange(-(2**63), 2**64 - 1)
    if kind == "number":
        return fdp.ConsumeFloat() if fdp.ConsumeBool() else fdp.ConsumeIntInRange(-10, 10**6)
    if kind == "bool":
        return fdp.ConsumeBool()
    if kind == "body":
        if fdp.ConsumeBool():
            return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 60))
        return fdp.ConsumeUnicodeNoSurrogates(20)  # a str off the wire is valid UTF-8: no lone surrogates
    return _value(fdp)


def _params(fdp: atheris.FuzzedDataProvider, method: Method) -> list[Any]:
    shape = fdp.ConsumeIntInRange(0, 15)
    if shape == 0:
        return [_value(fdp) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    given: dict[Any, Any] = {}
    for spec in METHODS[method]:
        if fdp.ConsumeIntInRange(0, 9):
            given[spec.name] = _field(fdp, spec.name, spec.kind, spec.max_len)
    if shape == 1:
        given[fdp.ConsumeUnicodeNoSurrogates(10) if fdp.ConsumeBool() else fdp.ConsumeBytes(4)] = _value(fdp)
    return [given] if shape != 2 else [given, _value(fdp)]


def _check_parsed(method: Method, parsed: dict[str, Any]) -> None:
    fields = {f.name: f for f in METHODS[method]}
    assert set(parsed) == set(fields), (method, sorted(parsed))
    for name, value in parsed.items():
        spec = fields[name]
        if value is None and (spec.nullable or not spec.required):
            continue
        if spec.kind in ("str", "secret"):
            assert isinstance(value, str) and len(value) <= spec.max_len, name
        elif spec.kind == "body":
            assert isinstance(value, bytes) and len(value) <= spec.max_len, name
        elif spec.kind == "number":
            assert isinstance(value, float) and 0 <= value < float("inf"), name
        elif spec.kind == "names":
            assert isinstance(value, list) and 1 <= len(value) <= spec.max_len, name
            assert all(isinstance(v, str) and 0 < len(v) <= 64 for v in value), name


def test_one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    pick = fdp.ConsumeIntInRange(0, 19)
    if pick < 2:
        name = fdp.ConsumeUnicodeNoSurrogates(20)
    elif pick < 10:
        name = fdp.PickValueInList([Method.TOKEN_GET.value, Method.TOKEN_SIGN.value])
    else:
        name = fdp.PickValueInList(METHOD_NAMES)
    try:
        method: Method | None = Method(name)
    except ValueError:
        method = None
    params = _params(fdp, method or Method.TOKEN_GET)
    if method is not None:
        try:
            _check_parsed(method, parse_params(method, params))
        except InvalidParams as exc:
            assert not any(s in str(exc) for s in SECRETS)
    dispatcher: Dispatcher = _state["dispatcher"]
    try:
        result = dispatcher.immediate(Request(fdp.ConsumeIntInRange(0, 2**32 - 1), name, params), _state["session"])
    except RpcError as exc:
        assert exc.code is not ErrorCode.INTERNAL, exc
        assert not any(s in str(exc) for s in SECRETS), exc
        return
    if result is NOT_NOW:
        return
    assert isinstance(result, dict), type(result)
    shown = repr(result)
    assert not any(s in shown for s in SECRETS), "a fake secret in a result"


async def _main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="vfzd", dir="/tmp"))
    data = folder / "data"
    data.mkdir(mode=0o700)
    async with trio.open_nursery() as nursery:
        vault = Vault(data, nursery=nursery, failure_delay=FailureDelay(step=0.0, cap=0.0))
        await vault.init(Secret(PASS), KdfProfile.MIN)
        await vault.unlock(Secret(PASS))
        await vault.put(Secret(PASS), "ex", "static", {"token": STATIC_TOKEN}, replace=False)
        binance = {"scheme": "binance-hmac", "api_key": "fuzz-key", "secret": BINANCE_SECRET}
        await vault.put(Secret(PASS), "binance", "sign", binance, replace=False)
        kraken = {"scheme": "kraken", "api_key": "fuzz-key", "secret": KRAKEN_SECRET}
        await vault.put(Secret(PASS), "kraken", "sign", kraken, replace=False)
        outbox, _reader = trio.open_memory_channel[Notification](1000)
        _state["dispatcher"] = Dispatcher(vault, folder / "vaultd.sock")
        _state["session"] = Session(Peer(os.getpid(), os.getuid(), os.getgid()), outbox, lambda: None)
        # The fuzzer takes over this task and never returns: libFuzzer exits the process.
        atheris.Fuzz()


def main() -> None:
    # Refusals are logged at INFO and WARNING, millions of times: show errors only.
    handler = logging.StreamHandler()
    handler.setLevel(logging.ERROR)
    logging.getLogger("vaultd").addHandler(handler)
    logging.getLogger("vaultd").propagate = False
    atheris.Setup(sys.argv, test_one_input)
    trio.run(_main)


if __name__ == "__main__":
    main()
