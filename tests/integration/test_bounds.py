"""What one connection may hold is bounded: one watch subscription, however often it calls."""

from __future__ import annotations

import trio
import trio.testing

from vaultd_protocol import Notification, Request

from .conftest import PASS, StartServer


async def _put(client: object, name: str, token: str) -> None:
    await client.ok(  # type: ignore[attr-defined]
        "credential.put", passphrase=PASS, name=name, kind="static", config={"token": token}, replace=True
    )


async def test_thousands_of_watch_calls_hold_one_subscription(start_server: StartServer) -> None:
    # Before: each call added a subscription (300,000 calls grew the daemon by 317 MiB).
    served = await start_server()
    await served.ready()
    watcher = await served.connect()
    calls = 5000
    wire = b"".join(watcher.conn.send(Request(msgid, "token.watch", [{"names": ["ex"]}])) for msgid in range(calls))
    await watcher.send_raw(wire)
    for _ in range(calls):
        answer = await watcher.receive()
        assert answer is not None and not isinstance(answer, Notification) and answer.error is None
    assert len(served.vault.hub) == 1 and served.vault.hub.watchers("ex") == 1
    operator = await served.connect()
    await _put(operator, "ex", "fake-token-once")
    update = await watcher.receive()
    assert isinstance(update, Notification) and update.params[0]["token"] == "fake-token-once"
    await watcher.request("hello", protocol=1)
    assert not isinstance(await watcher.receive(), Notification), "one subscription: one notification"


async def test_watch_calls_extend_one_subscription_up_to_the_cap(start_server: StartServer) -> None:
    served = await start_server(max_watch_names=2)
    await served.ready()
    operator = await served.connect()
    for name in ("a", "b", "c"):
        await _put(operator, name, f"fake-token-{name}-1")
    watcher = await served.connect()
    assert await watcher.ok("token.watch", names=["a"]) == {"watching": ["a"]}
    assert await watcher.ok("token.watch", names=["b", "a"]) == {"watching": ["b", "a"]}
    refused = await watcher.call("token.watch", names=["c"])
    assert refused.error is not None and refused.error.name == "INVALID_PARAMS"
    assert "at most 2 credentials" in refused.error.message
    await _put(operator, "c", "fake-token-c-2")  # not watched: nothing comes
    await _put(operator, "b", "fake-token-b-2")
    update = await watcher.receive()
    assert isinstance(update, Notification) and update.params[0]["name"] == "b", "b is watched, c is not"
    # A lock ends the subscription; after unlock the connection starts afresh with any two names.
    await operator.ok("vault.lock")
    assert isinstance(locked := await watcher.receive(), Notification) and locked.method == "vault.locked"
    await operator.ok("vault.unlock", passphrase=PASS)
    assert await watcher.ok("token.watch", names=["c", "a"]) == {"watching": ["c", "a"]}
    assert len(served.vault.hub) == 1


async def test_a_closed_watcher_leaves_nothing_behind(start_server: StartServer) -> None:
    served = await start_server()
    await served.ready()
    for _ in range(20):
        watcher = await served.connect()
        await watcher.ok("token.watch", names=["ex"])
        await watcher.ok("token.watch", names=["ex"])
        await watcher.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert len(served.vault.hub) == 0
