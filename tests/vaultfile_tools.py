"""Build well-formed but hostile vault files for tests."""

from __future__ import annotations

import struct

import msgpack

from vaultd._vaultfile import MAGIC


def with_header(
    vault_bytes: bytes,
    version: int | None = None,
    header_fields: dict[str, object] | None = None,
    **kdf_changes: object,
) -> bytes:
    """The same file with the format version, header fields or KDF fields changed, lengths consistent."""
    _, old_version, hlen = struct.unpack_from(">8sHH", vault_bytes)
    fields = msgpack.unpackb(vault_bytes[12 : 12 + hlen])
    fields["kdf"].update(kdf_changes)
    fields.update(header_fields or {})
    packed = msgpack.packb(fields, use_bin_type=True)
    new_version = old_version if version is None else version
    return struct.pack(">8sHH", MAGIC, new_version, len(packed)) + packed + vault_bytes[12 + hlen :]
