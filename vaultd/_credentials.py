"""One credential: its name, its provider (config and secrets), and where its renewal stands.

The state machine (docs/ARCHITECTURE.md section 7) is the ``state`` field plus the wall clock:
FRESH -> RENEW_DUE -> (renewing) -> FRESH; a failed renewal with the token still valid is
DEGRADED; a token past its expiry is EXPIRED whatever the stored state says (so a suspended
machine never serves one); NEEDS_REAUTH holds until an operator acts; ON_HOLD (a restored copy
whose upstream rotates refresh tokens, ``hold`` set and sealed with it: ``_backup``) comes before
all of them and holds until released. The renewer
(``_renewer``) makes the transitions; this module only records and describes them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from vaultd_protocol import CredentialState, ErrorCode

from ._errors import RpcError
from ._providers import ConfigError, Issued, Provider, provider_from_config, provider_from_record
from ._renewal import Budget
from ._source import Source

__all__ = ["NAME_PATTERN", "ConfigError", "Credential", "check_name", "from_config", "from_record", "utc_text"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(name: str) -> None:
    """Raises: ConfigError: the name is not 1-64 of ``A-Za-z0-9._-`` starting alphanumeric."""
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            "credential names are 1 to 64 ASCII characters: letters A-Z and a-z, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )


@dataclass(eq=False, repr=False)
class Credential:
    """One credential of an unlocked vault: its provider and where its renewal stands."""

    name: str
    provider: Provider
    created_at: float
    updated_at: float
    state: CredentialState = CredentialState.RENEW_DUE
    issued: Issued | None = None
    #: When the next renewal is planned (wall clock), for ``status``; None if none is.
    next_renewal: float | None = None
    last_error: str | None = None
    failures: int = 0
    #: How long the last token lived: a min_ttl above it cannot be met by renewing.
    last_lifetime: float | None = None
    upstream_calls: int = 0
    budget: Budget = field(default_factory=Budget)
    #: Set while a renewal runs; concurrent callers wait on it instead of calling upstream.
    renewing: trio.Event | None = None
    #: Where the configuration comes from, for one sourced from an upstream (``_source``).
    source: Source | None = None
    #: Why it is on hold (restored from a backup: ``_backup``), or None. Sealed with its record:
    #: a held credential is not served, not renewed and sends nothing upstream until released.
    hold: str | None = None

    @property
    def kind(self) -> str:
        return self.provider.kind

    def state_at(self, now: float) -> CredentialState:
        if self.hold is not None:
            return CredentialState.ON_HOLD
        source = self.source
        if source is not None:
            blocked = source.blocked_state(now)
            if blocked is not None:
                return blocked
        state = self._own_state(now)
        if state is CredentialState.FRESH and source is not None and source.degraded():
            return CredentialState.DEGRADED  # served from the last good copy while reads fail
        return state

    def _own_state(self, now: float) -> CredentialState:
        if not getattr(self.provider, "issues_tokens", True):
            return CredentialState.FRESH  # a signing key: always ready, nothing expires
        if self.state is CredentialState.NEEDS_REAUTH:
            return self.state
        if self.issued is None:
            return CredentialState.EXPIRED if self.failures else CredentialState.RENEW_DUE
        if not self.issued.valid_at(now):
            return CredentialState.EXPIRED
        return self.state

    def valid_token(self, now: float) -> Issued | None:
        """The current token if it may be served now (never an expired one, nor a pulled or stale copy's)."""
        if self.state is CredentialState.NEEDS_REAUTH or self.issued is None or not self.issued.valid_at(now):
            return None
        if self.hold is not None:
            return None
        if self.source is not None and self.source.blocked_state(now) is not None:
            return None
        return self.issued

    def set_issued(self, issued: Issued) -> None:
        old, self.issued = self.issued, issued
        if old is not None:
            old.wipe()

    def describe(self, now: float) -> dict[str, Any]:
        """Everything ``status`` and ``credential.list`` show. Never a secret."""
        issued = self.issued
        return {
            "name": self.name,
            "kind": self.kind,
            "type": issued.token_type if issued else self.provider.describe().get("type"),
            "state": str(self.state_at(now)),
            "expires_at": issued.expires_at if issued else None,
            "refresh_token_expires_at": getattr(self.provider, "refresh_token_expires_at", None),
            "next_renewal": self.next_renewal,
            "last_error": self.last_error,
            "upstream_calls": self.upstream_calls,
            "warnings": self.provider.warnings(now),
            "settings": self.provider.describe(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "source": None if self.source is None else self.source.describe(now),
            "hold": self.hold,
        }

    def hold_refusal(self) -> RpcError:
        """The ON_HOLD error a request for this credential gets while it is held."""
        return RpcError(ErrorCode.ON_HOLD, f"credential {self.name!r} is on hold: {self.hold}")

    def to_record(self) -> dict[str, Any]:
        """The sealed form (reveals secrets: only for the vault body)."""
        record = {
            "kind": self.kind,
            "config": self.provider.to_record(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if self.source is not None:
            record["source"] = self.source.to_record()
        if self.hold is not None:
            record["hold"] = self.hold
        return record

    def wipe(self) -> None:
        self.provider.wipe()
        if self.issued is not None:
            self.issued.wipe()
            self.issued = None

    def __repr__(self) -> str:
        return f"Credential(name={self.name!r}, kind={self.kind!r}, state={self.state!s})"


def from_config(name: str, kind: str, config: dict[str, Any], now: float) -> Credential:
    """Raises: ConfigError: bad name, unknown kind, invalid config, or a ``not_after`` already past."""
    check_name(name)
    provider = provider_from_config(kind, config)
    not_after = getattr(provider, "not_after", None)
    if isinstance(not_after, float) and not_after <= now:
        # It would never be served, and nothing can renew it: say so now, not in status later.
        provider.wipe()
        raise ConfigError(
            f"'not_after' {utc_text(not_after)} is in the past (it is now {utc_text(now)}): the token would "
            "never be served; give a later not_after, or none"
        )
    return Credential(name, provider, now, now)


def utc_text(epoch: float) -> str:
    """``2026-12-31T00:00:00Z``: a time as messages show it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def from_record(name: str, record: dict[str, Any]) -> Credential:
    """Raises: KeyError, ValueError, TypeError: a record this version cannot read (ConfigError, a
    ValueError, for a name that is not a credential name: a sealed file may have been crafted)."""
    if not isinstance(name, str):
        raise TypeError("name")
    check_name(name)
    provider = provider_from_record(record["kind"], record["config"])
    credential = Credential(name, provider, float(record["created_at"]), float(record["updated_at"]))
    if record.get("source") is not None:
        credential.source = Source.from_record(record["source"])
    hold = record.get("hold")
    if hold is not None:
        if not isinstance(hold, str):
            raise TypeError("hold")
        credential.hold = hold
    return credential
