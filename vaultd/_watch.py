"""Who watches which credentials, and pushing each event to them the moment it happens.

Publishing never waits: each subscriber's sink takes the notification or refuses it (its
connection is then closed, and the engine's client resubscribes and fetches afresh), so a
slow watcher can never stall renewals for everyone else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from vaultd_protocol import Notify

__all__ = ["EXPIRED", "LOCKED", "UPDATED", "Subscription", "WatchHub"]

log = logging.getLogger("vaultd.watch")

UPDATED = Notify.TOKEN_UPDATED.value
EXPIRED = Notify.TOKEN_EXPIRED.value
LOCKED = Notify.VAULT_LOCKED.value

#: Takes one notification (method, params); returns False if it cannot (the queue is full).
Sink = Callable[[str, dict[str, Any]], bool]


@dataclass(eq=False)
class Subscription:
    names: frozenset[str]
    sink: Sink


class WatchHub:
    """The subscriptions of every connection that called ``token.watch``."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def subscribe(self, names: Iterable[str], sink: Sink) -> Subscription:
        subscription = Subscription(frozenset(names), sink)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def active(self, subscription: Subscription) -> bool:
        """Whether ``subscription`` still hears (not ended by a lock, a refusal or a full queue)."""
        return subscription in self._subscriptions

    def __len__(self) -> int:
        return len(self._subscriptions)

    def watchers(self, name: str) -> int:
        return sum(1 for s in self._subscriptions if name in s.names)

    def publish(self, method: str, name: str, params: Callable[[], dict[str, Any]]) -> None:
        """Push ``method`` about credential ``name``; ``params`` is built only if someone watches."""
        built: dict[str, Any] | None = None
        for subscription in list(self._subscriptions):
            if name in subscription.names:
                if built is None:
                    built = params()
                self._deliver(subscription, method, built)

    def publish_all(self, method: str, params: dict[str, Any]) -> None:
        for subscription in list(self._subscriptions):
            self._deliver(subscription, method, params)

    def end_all(self, method: str, params: dict[str, Any]) -> None:
        """Tell every subscriber ``method`` once, then drop every subscription (the vault locked)."""
        self.publish_all(method, params)
        self._subscriptions.clear()

    def _deliver(self, subscription: Subscription, method: str, params: dict[str, Any]) -> None:
        try:
            taken = subscription.sink(method, params)
        except Exception as exc:  # a sink's bug ends that subscription, never the renewer that publishes
            log.error("a watcher's notification failed (%s): its subscription ends", type(exc).__name__, exc_info=exc)
            taken = False
        if not taken:
            self._subscriptions.discard(subscription)
