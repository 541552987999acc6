"""Credential kinds, by name: how each is configured and how it gets a token."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._base import ConfigError, FetchContext, Issued, Provider, UpstreamError
from .exec import ExecProvider
from .jwt import JwtProvider
from .keepalive import KeepaliveProvider
from .oauth2 import OAuth2Provider
from .sign import SignProvider
from .static import StaticProvider

__all__ = [
    "KINDS",
    "ConfigError",
    "FetchContext",
    "Issued",
    "Provider",
    "UpstreamError",
    "provider_from_config",
    "provider_from_record",
]

KINDS: dict[str, Any] = {
    StaticProvider.kind: StaticProvider,
    OAuth2Provider.kind: OAuth2Provider,
    JwtProvider.kind: JwtProvider,
    KeepaliveProvider.kind: KeepaliveProvider,
    ExecProvider.kind: ExecProvider,
    SignProvider.kind: SignProvider,
}


def provider_from_config(kind: str, config: Mapping[str, Any]) -> Provider:
    """Raises: ConfigError: unknown kind, or an invalid config (the message names the field)."""
    cls = KINDS.get(kind)
    if cls is None:
        raise ConfigError(f"unknown credential kind {kind[:32]!r} (known: {', '.join(sorted(KINDS))})")
    provider: Provider = cls.from_config(config)
    return provider


def provider_from_record(kind: str, record: Mapping[str, Any]) -> Provider:
    """Raises: KeyError, ValueError, TypeError: a record this version cannot read."""
    provider: Provider = KINDS[kind].from_record(record)
    return provider
