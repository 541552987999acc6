"""What an unlocked vault holds besides its credentials, and the body its file seals.

The data key and the header it is wrapped in, the policy and the audit key (both sealed in
the file, read at unlock, as are the upstreams' settings: ``_upstream``), and the
fingerprints of tokens handed out since. ``_vault`` owns the lifecycle; this module only
holds the state and its pure helpers.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import _vaultfile
from ._credentials import NAME_PATTERN, Credential, from_record
from ._secret import Secret
from ._upstream import UpstreamConfig

__all__ = [
    "FINGERPRINTS_KEPT",
    "BadRecordName",
    "Body",
    "OpenVault",
    "adopt",
    "new_audit_key",
    "read_body",
    "sealed_body",
]

log = logging.getLogger("vaultd.vault")

#: Fingerprints remembered at most (then forgotten all at once): tokens renew, names are few.
FINGERPRINTS_KEPT = 4096


@dataclass
class OpenVault:
    """What an unlocked vault holds besides the credentials."""

    header: _vaultfile.Header
    data_key: Secret
    #: Who may ask for what (``{"rules": [...]}``, see ``_policy``); stored sealed, set with the passphrase.
    policy: dict[str, Any]
    #: Keys the audit log's token fingerprints, so that the log cannot be used to test a guess.
    audit_key: Secret
    #: Token -> fingerprint, for tokens handed out since the unlock (dropped at lock).
    fingerprints: dict[str, str] = field(default_factory=dict)

    def fingerprint(self, token: str) -> str:
        """A short keyed fingerprint of ``token``, remembered per token (a token is handed out
        many times: the hot path pays the HMAC once per token, not once per request)."""
        known = self.fingerprints.get(token)
        if known is None:
            if len(self.fingerprints) >= FINGERPRINTS_KEPT:
                self.fingerprints.clear()
            known = hmac.new(self.audit_key.reveal(), token.encode(), hashlib.sha256).hexdigest()[:16]
            self.fingerprints[token] = known
        return known

    def wipe(self) -> None:
        self.data_key.wipe()
        self.audit_key.wipe()
        self.fingerprints.clear()


def new_audit_key() -> bytes:
    return secrets.token_bytes(32)


@dataclass
class Body:
    """What a vault file's body holds, read."""

    credentials: dict[str, Credential]
    policy: dict[str, Any]
    #: None in a vault older than audit keys.
    audit_key: bytes | None
    upstreams: dict[str, UpstreamConfig]

    def wipe(self) -> None:
        for credential in self.credentials.values():
            credential.wipe()
        for upstream in self.upstreams.values():
            upstream.wipe()


class BadRecordName(ValueError):
    """A credential record whose name is not a credential name (a crafted file): by its index."""

    def __init__(self, index: int) -> None:
        super().__init__(
            f"credential record #{index} (in the file's order) has a name that is not a credential name "
            "(1 to 64 ASCII letters, digits, '.', '_' and '-', starting with a letter or digit)"
        )
        self.index = index


def read_body(body: dict[str, Any], *, skip_bad_names: bool = False) -> Body:
    """The credentials, policy, audit key and upstreams a body holds.

    A credential record whose name is not a credential name (only a crafted file has one) is
    refused (:class:`BadRecordName`), or with ``skip_bad_names`` left out and logged by its
    index (never the name itself: it may carry terminal escapes or shell syntax).

    Raises:
        KeyError, ValueError, TypeError, AttributeError: a record this version cannot read.
    """
    read = Body({}, {}, None, {})
    try:
        for index, (name, rec) in enumerate(body["credentials"].items(), 1):
            if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
                if not skip_bad_names:
                    raise BadRecordName(index)
                log.error("%s: not loaded (the next write of the vault drops it)", BadRecordName(index))
                continue
            read.credentials[name] = from_record(name, rec)
        read.upstreams = {
            name: UpstreamConfig.from_record(name, rec) for name, rec in body.get("upstreams", {}).items()
        }
        policy = body.get("policy") or {"rules": []}
        audit_key = body.get("audit_key")
        if not isinstance(policy, dict) or not isinstance(audit_key, bytes | None):
            raise TypeError("policy or audit_key")
    except BaseException:
        read.wipe()
        raise
    read.policy, read.audit_key = policy, audit_key
    return read


def adopt(opened: OpenVault, changed: OpenVault) -> None:
    """Make the unlocked vault's state what was just written (wiping a data key replaced)."""
    if changed.data_key is not opened.data_key:
        old_key, opened.data_key = opened.data_key, changed.data_key
        old_key.wipe()
    opened.header, opened.policy = changed.header, changed.policy


def sealed_body(
    opened: OpenVault, credentials: Mapping[str, Credential], upstreams: Mapping[str, UpstreamConfig]
) -> dict[str, Any]:
    """What the vault file seals: the credentials' records, the policy, the audit key, the upstreams."""
    body = {
        "credentials": {name: c.to_record() for name, c in credentials.items()},
        "policy": opened.policy,
        "audit_key": opened.audit_key.reveal(),
    }
    if upstreams:  # absent otherwise: a vault without upstreams stays readable by older versions
        body["upstreams"] = {name: u.to_record() for name, u in upstreams.items()}
    return body
