"""A scheme run against a key held elsewhere (OpenBao transit), in two pure passes.

Every scheme makes one primitive call per request (:attr:`Scheme.remote_primitive`; KuCoin
two, its ``remote_calls``), on bytes that depend on the request alone, never on the primitive's
answer. So the caller runs the scheme once with a :class:`Recorder` as :attr:`Keys.remote`,
which notes the bytes to sign and answers a placeholder of the right size; has the key's holder
compute those primitives (the one step with I/O, outside this package); then runs the scheme
again with a :class:`Replayer`, which answers each call with the holder's result after checking
that the bytes are the same. The first pass also does every check the scheme makes: a request
the scheme refuses never costs a round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ._base import Keys, Scheme, Signed, SignRequest

__all__ = ["ANSWER_SIZES", "ANSWER_SIZES_ALLOWED", "Call", "Recorder", "Replayer", "record", "replay"]

#: The size of each primitive's raw answer, by "operation/algorithm".
ANSWER_SIZES = {
    "hmac/sha2-256": 32,
    "hmac/sha2-512": 64,
    "sign/ed25519": 64,
    "sign/es256": 64,
    "sign/rsa-pkcs1v15-sha256": 256,
}
#: Primitives whose answer is as long as the key: every size a key may have (RSA: 2048, 3072 or
#: 4096 bits, transit's rsa-2048/3072/4096). The recorder's placeholder is ANSWER_SIZES'.
ANSWER_SIZES_ALLOWED = {"sign/rsa-pkcs1v15-sha256": (256, 384, 512)}


@dataclass(frozen=True, slots=True)
class Call:
    """One primitive a scheme asked for: ``operation`` "hmac" or "sign", on ``data``."""

    operation: str
    algorithm: str
    data: bytes = b""

    @property
    def primitive(self) -> str:
        return f"{self.operation}/{self.algorithm}"

    @property
    def answer_size(self) -> int:
        return ANSWER_SIZES[self.primitive]

    @property
    def answer_sizes(self) -> tuple[int, ...]:
        """Every size an answer may have (one, but for RSA, whose signature is as long as its key)."""
        return ANSWER_SIZES_ALLOWED.get(self.primitive, (self.answer_size,))

    def __repr__(self) -> str:  # the bytes signed are the engine's request: their length only
        return f"Call({self.primitive}, {len(self.data)} bytes)"


class Recorder:
    """Pass one: notes each primitive asked for, answers zero bytes of the right size."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def hmac(self, data: bytes, algorithm: str) -> bytes:
        return self._note(Call("hmac", algorithm, bytes(data)))

    def sign(self, data: bytes, algorithm: str) -> bytes:
        return self._note(Call("sign", algorithm, bytes(data)))

    def _note(self, call: Call) -> bytes:
        self.calls.append(call)
        return bytes(call.answer_size)


class Replayer:
    """Pass two: answers each call with the holder's result for the same call of pass one."""

    def __init__(self, calls: Sequence[Call], answers: Sequence[bytes]) -> None:
        if len(calls) != len(answers):
            raise ValueError("one answer per recorded call")
        self._pending = list(zip(calls, answers, strict=True))

    def hmac(self, data: bytes, algorithm: str) -> bytes:
        return self._answer(Call("hmac", algorithm, bytes(data)))

    def sign(self, data: bytes, algorithm: str) -> bytes:
        return self._answer(Call("sign", algorithm, bytes(data)))

    def _answer(self, call: Call) -> bytes:
        if not self._pending or self._pending[0][0] != call:
            # Schemes are pure: the same request gives the same calls. This is a bug, not input.
            raise RuntimeError(f"the scheme asked for {call!r} on replay, not what it asked before")
        return self._pending.pop(0)[1]

    @property
    def done(self) -> bool:
        return not self._pending


def record(scheme: Scheme, request: SignRequest, keys: Keys) -> list[Call]:
    """The primitive calls ``scheme`` makes to sign ``request``: one of its kind (``remote_calls`` if set).

    Raises:
        SignError: the scheme refuses the request (nothing to ask the key's holder).
    """
    recorder = Recorder()
    scheme.sign(request, replace(keys, remote=recorder))
    expected = [scheme.remote_primitive] * getattr(scheme, "remote_calls", 1)
    if [call.primitive for call in recorder.calls] != expected:
        wanted = f"{len(expected)} {scheme.remote_primitive}"
        raise RuntimeError(f"{scheme.name}: asked for {recorder.calls!r}, not {wanted}")
    return recorder.calls


def replay(scheme: Scheme, request: SignRequest, keys: Keys, calls: Sequence[Call], answers: Sequence[bytes]) -> Signed:
    """What ``scheme`` attaches to ``request`` given the holder's ``answers`` to :func:`record`'s calls.

    Raises:
        ValueError: an answer of the wrong size for its call.
    """
    for call, answer in zip(calls, answers, strict=True):
        if len(answer) not in call.answer_sizes:
            sizes = " or ".join(str(size) for size in call.answer_sizes)
            raise ValueError(f"a {call.primitive} answer must be {sizes} bytes, not {len(answer)}")
    replayer = Replayer(calls, answers)
    signed = scheme.sign(request, replace(keys, remote=replayer))
    if not replayer.done:
        raise RuntimeError(f"{scheme.name}: left recorded calls unasked on replay")
    return signed
