"""Connection slots: the server's limits, and who holds how many of the connections.

Each uid other than the daemon's has its own share of the connection cap, and the last slots
are kept for the daemon's own uid, so that no other user can hold the desk (shut the
operator's ``vaultctl lock`` out). Pure bookkeeping: the server asks and gives back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vaultd_protocol import Limits

__all__ = ["DEFAULT_LIMITS", "ServerLimits", "Shares"]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    protocol: Limits = field(default_factory=Limits)
    #: Open connections in all; the last ``reserved_connections`` of them (all but one, if the cap
    #: is smaller) only the daemon's own uid may use.
    max_connections: int = 256
    #: Open connections of any one uid other than the daemon's.
    max_connections_per_uid: int = 64
    reserved_connections: int = 16
    max_in_flight: int = 32
    frame_timeout: float = 10.0
    idle_timeout: float = 300.0
    request_timeout: float = 120.0
    send_timeout: float = 30.0
    receive_size: int = 65536
    #: Notifications queued for a peer that has not read them yet, before it is dropped.
    max_queued: int = 256

    def __post_init__(self) -> None:
        if self.reserved_connections < 0:
            raise ValueError("reserved connections cannot be negative")
        for name in ("max_connections", "max_connections_per_uid", "max_in_flight", "max_queued"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be at least 1")


DEFAULT_LIMITS = ServerLimits()


class Shares:
    """Who holds how many of the connection slots: each other uid its own share, and the
    last ``reserved`` slots kept for the daemon's own uid, so no other user can hold the desk
    (shut the operator's ``vaultctl lock`` out)."""

    def __init__(self, limits: ServerLimits, own_uid: int) -> None:
        self._total = limits.max_connections
        # At least one slot stays open to other uids (a small cap with the default reserve).
        self._others_total = max(1, limits.max_connections - limits.reserved_connections)
        self._per_uid = limits.max_connections_per_uid
        self._own = own_uid
        self.open = 0
        self._others = 0
        self._by_uid: dict[int, int] = {}

    def full(self) -> bool:
        return self.open >= self._total

    def take(self, uid: int) -> str | None:
        """Take a slot for ``uid``; None when taken, else why not."""
        if self.open >= self._total:
            return f"connection cap of {self._total} reached"
        if uid != self._own:
            held = self._by_uid.get(uid, 0)
            if held >= self._per_uid:
                return f"uid {uid} holds its share of {self._per_uid} connections"
            if self._others >= self._others_total:
                return f"other users hold all {self._others_total} connections open to them"
            self._by_uid[uid] = held + 1
            self._others += 1
        self.open += 1
        return None

    def give_back(self, uid: int) -> None:
        self.open -= 1
        if uid != self._own:
            self._others -= 1
            left = self._by_uid[uid] - 1
            if left:
                self._by_uid[uid] = left
            else:
                del self._by_uid[uid]
