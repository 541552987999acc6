"""Writes ``vectors.json``: the protocol's conformance vectors, message by message, as hex.

Run by hand after a deliberate change to the wire format, a message text or the vocabulary
(a new method, error code or notification), then review the diff and commit both files::

    python protocol/conformance/generate.py          # rewrites protocol/conformance/vectors.json
    python protocol/conformance/generate.py --check  # exit 1 if the committed file is stale

The values below are written by hand, as the daemon would send them, with obviously fake
secrets; the bytes are encoded with plain ``msgpack`` (not ``vaultd_protocol``), the way the
daemon encodes: integers in their smallest form, every float as float 64, str for text and
bin for bytes, map keys in the order given here. ``tests/protocol/test_conformance.py``
checks the committed file against our client and server in both directions, and
``tests/foreign/fetch_token.mjs --selftest`` checks it against a decoder that shares no code
with ours. SPEC.md section 10 explains the file's layout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgpack

from vaultd_client.errors import error_from_info
from vaultd_protocol import ErrorCode, ErrorInfo, Method, Notify

OUT = Path(__file__).with_name("vectors.json")

TOKEN = "fake-token-0001"
PASS = "fake passphrase"
VAULT = "/home/trader/.local/share/vaultd/vault"

EXPIRES = 1767225600.0  # 2026-01-01T00:00:00Z
NOW_MS = 1767222000000  # an hour earlier, in ms: above 2**32, so it takes a uint 64

DESCRIPTION: dict[str, Any] = {
    "name": "demo",
    "kind": "static",
    "type": "bearer",
    "state": "FRESH",
    "expires_at": EXPIRES,
    "refresh_token_expires_at": None,
    "next_renewal": None,
    "last_error": None,
    "upstream_calls": 0,
    "warnings": [],
    "settings": {"type": "bearer", "not_after": EXPIRES},
    "created_at": 1764547200.0,
    "updated_at": 1764547200.0,
    "source": None,
    "hold": None,
}

UPSTREAM: dict[str, Any] = {
    "name": "bao",
    "kind": "openbao",
    "address": "http://127.0.0.1:8200",
    "namespace": None,
    "kv_mount": "secret",
    "auth": {"method": "approle", "mount": "approle", "role": "host-a"},
    "secret_id_accessor": None,
    "max_stale": 86400.0,
    "created_at": 1764547200.0,
    "updated_at": 1764547200.0,
    "state": "FRESH",
    "token_expires_at": EXPIRES,
    "next_renewal": 1764549600.0,
    "last_error": None,
    "logins": 1,
    "upstream_calls": 0,
    "sourced": ["binance"],
}

POLICY_RULE: dict[str, Any] = {"unit": "engine-a.service", "credentials": ["demo*"], "methods": ["get", "watch"]}

TOKEN_RESULT: dict[str, Any] = {
    "name": "demo",
    "token": TOKEN,
    "type": "bearer",
    "expires_at": EXPIRES,
    "ttl": 3599.5,
    "headers": {"Authorization": f"Bearer {TOKEN}"},
    "extra": {},
}

# (label, method, msgid, params array, result). msgids are chosen to cover every integer
# width a msgid can take: fixint, uint 8, uint 16, uint 32.
CALLS: list[tuple[str, Method, int, list[Any], dict[str, Any]]] = [
    (
        "hello",
        Method.HELLO,
        0,
        [{"protocol": 1, "client": "conformance"}],
        {
            "protocol": 1,
            "server": "vaultd 0.1.0",
            "state": "UNLOCKED",
            "peer": {"pid": 4242, "uid": 1000, "gid": 1000, "unit": "engine-a.service", "exe": "/usr/bin/python3.11"},
        },
    ),
    (
        "status",
        Method.STATUS,
        2,
        [{}],
        {
            "state": "UNLOCKED",
            "version": "0.1.0",
            "protocol": 1,
            "pid": 4242,
            "uptime": 12.25,
            "socket": "/run/user/1000/vaultd/vaultd.sock",
            "vault_path": VAULT,
            "generation": 3,
            "kdf_profile": "moderate",
            "failed_unlocks": 0,
            "last_write_error": None,
            "credentials": [DESCRIPTION],
            "warnings": [],
        },
    ),
    (
        "status, params as an empty array",
        Method.STATUS,
        4294967295,
        [],
        {
            "state": "LOCKED",
            "version": "0.1.0",
            "protocol": 1,
            "pid": 4242,
            "uptime": 0.5,
            "socket": "/run/user/1000/vaultd/vaultd.sock",
            "vault_path": VAULT,
            "generation": 3,
            "kdf_profile": "min",
            "failed_unlocks": 2,
            "last_write_error": None,
            "credentials": [],
            "warnings": ["the vault uses the 'min' KDF profile: for tests only, never for real secrets"],
        },
    ),
    (
        "vault.init",
        Method.VAULT_INIT,
        3,
        [{"passphrase": PASS, "kdf_profile": "min"}],
        {"state": "LOCKED", "kdf_profile": "min"},
    ),
    ("vault.unlock", Method.VAULT_UNLOCK, 4, [{"passphrase": PASS}], {"state": "UNLOCKED"}),
    ("vault.lock", Method.VAULT_LOCK, 5, [{}], {"state": "LOCKED"}),
    ("token.get", Method.TOKEN_GET, 1, [{"name": "demo", "min_ttl": 0}], TOKEN_RESULT),
    (
        "token.get, a token that never expires, min_ttl a float",
        Method.TOKEN_GET,
        200,
        [{"name": "demo-key", "min_ttl": 2.5}],
        {
            "name": "demo-key",
            "token": "fake-api-key-0002",
            "type": "api-key",
            "expires_at": None,
            "ttl": None,
            "headers": {},
            "extra": {},
        },
    ),
    ("token.watch", Method.TOKEN_WATCH, 7, [{"names": ["demo", "demo-key"]}], {"watching": ["demo", "demo-key"]}),
    (
        "token.sign",
        Method.TOKEN_SIGN,
        300,
        [
            {
                "name": "kraken-demo",
                "method": "POST",
                "url": "https://api.kraken.com/0/private/Balance",
                "body": b"",
                "timestamp": NOW_MS,
            }
        ],
        {
            "headers": {
                "API-Key": "fake-api-key-0003",
                "API-Sign": "ZmFrZS1zaWduYXR1cmUtbm90LXJlYWw=",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            "url": "https://api.kraken.com/0/private/Balance",
            "query": [],
            "body": f"nonce={NOW_MS}".encode(),
            "valid_until": NOW_MS / 1000 + 60,
            "nonce": NOW_MS,
        },
    ),
    (
        "token.sign_many: two Kraken requests (the second's nonce is the next) and one the allow-list refuses",
        Method.TOKEN_SIGN_MANY,
        301,
        [
            {
                "requests": [
                    {
                        "name": "kraken-demo",
                        "method": "POST",
                        "url": "https://api.kraken.com/0/private/Balance",
                        "timestamp": NOW_MS,
                    },
                    {
                        "name": "kraken-demo",
                        "method": "POST",
                        "url": "https://api.kraken.com/0/private/Withdraw",
                    },
                    {
                        "name": "kraken-demo",
                        "method": "POST",
                        "url": "https://api.kraken.com/0/private/OpenOrders",
                        "body": b"trades=true",
                        "timestamp": NOW_MS,
                    },
                ]
            }
        ],
        {
            "results": [
                {
                    "headers": {
                        "API-Key": "fake-api-key-0003",
                        "API-Sign": "ZmFrZS1zaWduYXR1cmUtbm90LXJlYWw=",
                        "Content-Type": "application/x-www-form-urlencoded",
                    },
                    "url": "https://api.kraken.com/0/private/Balance",
                    "query": [],
                    "body": f"nonce={NOW_MS}".encode(),
                    "valid_until": NOW_MS / 1000 + 60,
                    "nonce": NOW_MS,
                },
                {
                    "error": {
                        "code": int(ErrorCode.FORBIDDEN),
                        "name": "FORBIDDEN",
                        "message": "not signed: POST /0/private/Withdraw moves money out (withdrawal or transfer): "
                        "refused unless an allow rule names this exact path",
                    }
                },
                {
                    "headers": {
                        "API-Key": "fake-api-key-0003",
                        "API-Sign": "ZmFrZS1zaWduYXR1cmUtbm90LXJlYWw=",
                        "Content-Type": "application/x-www-form-urlencoded",
                    },
                    "url": "https://api.kraken.com/0/private/OpenOrders",
                    "query": [],
                    "body": f"nonce={NOW_MS + 1}&trades=true".encode(),
                    "valid_until": NOW_MS / 1000 + 60,
                    "nonce": NOW_MS + 1,
                },
            ]
        },
    ),
    (
        "credential.put",
        Method.CREDENTIAL_PUT,
        70000,
        [
            {
                "passphrase": PASS,
                "name": "demo",
                "kind": "static",
                "config": {"token": TOKEN, "not_after": "2026-01-01T00:00:00Z"},
                "replace": False,
            }
        ],
        {"name": "demo", "kind": "static", "created": True},
    ),
    ("credential.remove", Method.CREDENTIAL_REMOVE, 9, [{"passphrase": PASS, "name": "demo"}], {"name": "demo"}),
    ("credential.list", Method.CREDENTIAL_LIST, 10, [{"passphrase": PASS}], {"credentials": [DESCRIPTION]}),
    (
        "credential.renew",
        Method.CREDENTIAL_RENEW,
        11,
        [{"passphrase": PASS, "name": "demo"}],
        {"credential": DESCRIPTION},
    ),
    ("policy.get", Method.POLICY_GET, 12, [{"passphrase": PASS}], {"rules": [POLICY_RULE]}),
    ("policy.set", Method.POLICY_SET, 13, [{"passphrase": PASS, "policy": {"rules": [POLICY_RULE]}}], {"rules": 1}),
    ("vault.rekey", Method.VAULT_REKEY, 14, [{"passphrase": PASS, "new_passphrase": "fake new passphrase"}], {}),
    (
        "credential.put, sourced from an upstream",
        Method.CREDENTIAL_PUT,
        15,
        [
            {
                "passphrase": PASS,
                "name": "binance",
                "kind": "sign",
                "source": {"upstream": "bao", "path": "desk/binance", "refresh": 60},
            }
        ],
        {"name": "binance", "kind": "sign", "created": True},
    ),
    (
        "upstream.put",
        Method.UPSTREAM_PUT,
        16,
        [
            {
                "passphrase": PASS,
                "name": "bao",
                "kind": "openbao",
                "config": {
                    "address": "http://127.0.0.1:8200",
                    "auth": {"method": "approle", "role": "host-a", "role_id": "fake-role-id", "secret_id": "fake"},
                },
            }
        ],
        {"upstream": UPSTREAM, "created": True},
    ),
    ("upstream.remove", Method.UPSTREAM_REMOVE, 17, [{"passphrase": PASS, "name": "bao"}], {"name": "bao"}),
    ("upstream.list", Method.UPSTREAM_LIST, 18, [], {"state": "UNLOCKED", "upstreams": [UPSTREAM], "alarms": []}),
    (
        "notify.test",
        Method.NOTIFY_TEST,
        19,
        [{"passphrase": PASS, "event": "expiring"}],
        {"event": "expiring", "sinks": [{"sink": "#1 command /usr/local/bin/page", "ok": True, "error": None}]},
    ),
    (
        "vault.backup",
        Method.VAULT_BACKUP,
        20,
        [{"passphrase": PASS, "path": "/home/trader/backups/vault-2026-01-01", "force": False, "lock": False}],
        {
            "path": "/home/trader/backups/vault-2026-01-01",
            "generation": 42,
            "fingerprint": "5f1c0c3a27d6c8a1b9e4f0d2a7c3e8b16d9f4a2c0e7b5d3f1a9c8e6b4d2f0a17",
            "bytes": 1873,
            "locked": False,
        },
    ),
    (
        "vault.restore",
        Method.VAULT_RESTORE,
        6,
        [{"passphrase": PASS, "path": "/home/trader/backups/vault-2026-01-01"}],
        {
            "path": "/home/trader/backups/vault-2026-01-01",
            "generation": 43,
            "restored_generation": 42,
            "fingerprint": "5f1c0c3a27d6c8a1b9e4f0d2a7c3e8b16d9f4a2c0e7b5d3f1a9c8e6b4d2f0a17",
            "held": ["schwab"],
            "previous": VAULT + ".bak",
            "rollback_accepted": "restored /home/trader/backups/vault-2026-01-01 (generation 42; the vault replaced "
            "was at generation 42, kept as vault.bak), written as generation 43; on hold: schwab",
        },
    ),
    (
        "credential.release",
        Method.CREDENTIAL_RELEASE,
        8,
        [{"passphrase": PASS, "name": "demo"}],
        {"credential": {**DESCRIPTION, "state": "RENEW_DUE"}},
    ),
    (
        "credential.login, in a browser",
        Method.CREDENTIAL_LOGIN,
        190,
        [{"passphrase": PASS, "name": "broker"}],
        {
            "login_id": "fake-login-id-0001",
            "name": "broker",
            "mode": "browser",
            "url": "http://127.0.0.1:49152/start/fake-nonce-0001",
            "authorization_url": "https://id.example/authorize?response_type=code&client_id=desk&state=fake",
            "redirect_uri": "http://127.0.0.1:49152/callback",
            "expires_in": 300.0,
        },
    ),
    (
        "credential.login_wait",
        Method.CREDENTIAL_LOGIN_WAIT,
        191,
        [{"passphrase": PASS, "login_id": "fake-login-id-0001", "wait": 60}],
        {
            "login_id": "fake-login-id-0001",
            "name": "broker",
            "outcome": "ok",
            "error": None,
            "credential": DESCRIPTION,
        },
    ),
]

_GET = [{"name": "demo", "min_ttl": 0}]

# (code, method, msgid, params array or None, raw request bytes or None, message, note).
# A request with params None is not valid protocol: its raw bytes are given instead.
ERRORS: list[tuple[ErrorCode, str, int, list[Any] | None, bytes | None, str, str]] = [
    (
        ErrorCode.PROTOCOL_ERROR,
        "status",
        21,
        None,
        msgpack.packb([0, 21, "status", {}]),
        "request params must be an array",
        "params is a map, not an array: the daemon answers this error, then closes the connection",
    ),
    (
        ErrorCode.TOO_LARGE,
        "token.get",
        22,
        None,
        b"\x94\x00\x16" + msgpack.packb("token.get") + b"\x91\x81" + msgpack.packb("name") + b"\xdb\x00\x01\x00\x00",
        "message exceeds the 65536-byte limit",
        "only the start of the message: a str 32 header announcing 65536 bytes, which the daemon refuses "
        "as soon as the header arrives; it answers, then closes the connection",
    ),
    (
        ErrorCode.UNKNOWN_METHOD,
        "vault.export",
        23,
        [{}],
        None,
        "unknown method 'vault.export'",
        "",
    ),
    (
        ErrorCode.INVALID_PARAMS,
        "token.get",
        24,
        [{"name": "demo", "colour": "red"}],
        None,
        "unknown parameter 'colour' for token.get",
        "",
    ),
    (ErrorCode.INTERNAL, "token.get", 25, _GET, None, "the request timed out inside the daemon", ""),
    (
        ErrorCode.UNSUPPORTED_PROTOCOL,
        "hello",
        26,
        [{"protocol": 2, "client": "conformance"}],
        None,
        "protocol 2 is not supported (this daemon speaks [1])",
        "",
    ),
    (
        ErrorCode.BUSY,
        "status",
        27,
        [{}],
        None,
        "the daemon is busy",
        "reserved: never sent in version 1; a client must still map it",
    ),
    (
        ErrorCode.NOT_INITIALIZED,
        "vault.unlock",
        28,
        [{"passphrase": PASS}],
        None,
        "no vault yet: create one with 'vaultctl init'",
        "",
    ),
    (
        ErrorCode.ALREADY_INITIALIZED,
        "vault.init",
        29,
        [{"passphrase": PASS, "kdf_profile": "min"}],
        None,
        f"a vault already exists at {VAULT}",
        "",
    ),
    (
        ErrorCode.LOCKED,
        "token.get",
        1,
        _GET,
        None,
        "the vault is locked: an operator must run 'vaultctl unlock'",
        "SPEC.md section 8's worked example",
    ),
    (
        ErrorCode.BAD_PASSPHRASE,
        "vault.unlock",
        30,
        [{"passphrase": "fake wrong passphrase"}],
        None,
        "wrong passphrase, or the vault file is damaged",
        "",
    ),
    (
        ErrorCode.FORBIDDEN,
        "token.sign",
        31,
        [{"name": "kraken-demo", "method": "POST", "url": "https://api.kraken.com/0/private/Withdraw", "body": b""}],
        None,
        "not signed: POST /0/private/Withdraw moves money out (withdrawal or transfer): refused unless an allow "
        "rule names this exact path",
        "the policy (SPEC.md section 11) answers FORBIDDEN too, for token.get, token.sign, token.watch and status: "
        "e.g. \"token.get of 'demo' is not allowed for this process: no rule matches uid 1000, unit "
        'engine-c.service"',
    ),
    (
        ErrorCode.VAULT_DAMAGED,
        "vault.unlock",
        32,
        [{"passphrase": PASS}],
        None,
        f"{VAULT}: unsupported vault format version 9 (this vaultd reads 1)",
        "",
    ),
    (
        ErrorCode.STORAGE_FAILED,
        "credential.remove",
        33,
        [{"passphrase": PASS, "name": "demo"}],
        None,
        "the change was not saved: [Errno 28] writing vault failed: No space left on device",
        "",
    ),
    (
        ErrorCode.ROLLBACK,
        "vault.unlock",
        42,
        [{"passphrase": PASS}],
        None,
        "the vault file holds generation 5, but generation 7 was written before: it was rolled back (a backup, "
        "vault.bak or an older copy was put in its place), so a tighter policy, a removed credential or a rotated "
        "refresh token may be undone. Put the newest vault file back, or accept this one with 'vaultctl unlock "
        "--accept-rollback'",
        "vault.unlock with accept_rollback true unlocks it anyway and writes it as the newest",
    ),
    (ErrorCode.UNKNOWN_CREDENTIAL, "token.get", 34, [{"name": "nope"}], None, "no credential named 'nope'", ""),
    (ErrorCode.TOKEN_EXPIRED, "token.get", 35, _GET, None, "token 'demo' expired (not_after passed)", ""),
    (
        ErrorCode.RENEWAL_FAILED,
        "token.get",
        36,
        _GET,
        None,
        "no valid token for 'demo': the last renewal failed: the endpoint answered HTTP 503; next attempt in 12 s",
        "",
    ),
    (
        ErrorCode.NEEDS_REAUTH,
        "token.get",
        37,
        _GET,
        None,
        "credential 'demo' was refused upstream and needs an operator: invalid_grant",
        "",
    ),
    (
        ErrorCode.ALREADY_EXISTS,
        "credential.put",
        38,
        [
            {
                "passphrase": PASS,
                "name": "demo",
                "kind": "static",
                "config": {"token": TOKEN},
                "replace": False,
            }
        ],
        None,
        "credential 'demo' exists (put with replace to overwrite)",
        "",
    ),
    (
        ErrorCode.PULLED,
        "token.get",
        43,
        _GET,
        None,
        "credential 'demo' was pulled upstream (bao:desk/demo: version 3 deleted); it is served again when a new "
        "version is written there",
        "",
    ),
    (
        ErrorCode.UPSTREAM_UNAVAILABLE,
        "credential.put",
        45,
        [{"passphrase": PASS, "name": "demo", "kind": "static", "source": {"upstream": "bao", "path": "desk/demo"}}],
        None,
        "bao:desk/demo: connection refused (is OpenBao running at http://127.0.0.1:8200?)",
        "",
    ),
    (
        ErrorCode.ON_HOLD,
        "token.get",
        46,
        _GET,
        None,
        "credential 'demo' is on hold: restored from a backup on 2026-01-01T00:00:00Z: run 'vaultctl release "
        "demo' once the live copy is stopped (or log in again)",
        "",
    ),
]

# Error maps a client must cope with although this daemon sends none of them (SPEC.md section 4).
VARIANTS: list[tuple[str, int, dict[str, Any], str]] = [
    (
        "a code this client does not know, from a newer daemon: handled generically",
        40,
        {"code": 99, "name": "SOMETHING_NEW", "message": "a newer daemon's error"},
        "RemoteError",
    ),
    ("an error map with only its code: mapped by the code", 41, {"code": 12}, "Locked"),
]

NOTIFICATIONS: list[tuple[Notify, dict[str, Any]]] = [
    (Notify.TOKEN_UPDATED, TOKEN_RESULT),
    (Notify.TOKEN_EXPIRED, {"name": "demo"}),
    (Notify.VAULT_LOCKED, {}),
]

# Messages from clients written before msgpack's str/bin split (neovim's among them), whose
# method name is bin (SPEC.md section 2): (label, message, method it stands for or None when
# refused, refusal message). This daemon's client never sends these.
METHOD_AS_BIN: list[tuple[str, list[Any], str | None, str]] = [
    (
        "a request whose method is bin holding UTF-8",
        [0, 42, b"hello", [{"protocol": 1, "client": "nvim"}]],
        "hello",
        "",
    ),
    ("a notification whose method is bin holding UTF-8", [2, b"engine.heartbeat", [{}]], "engine.heartbeat", ""),
    (
        "a request whose method is bin that is not UTF-8: answered, then the connection closes",
        [0, 43, b"hel\xfflo", [{}]],
        None,
        "method name is bin but not valid UTF-8",
    ),
]

ABOUT = [
    "Conformance vectors for the vaultd wire protocol, version 1 (protocol/SPEC.md section 10).",
    "Every message is given as its values and as its exact bytes (hex). Values use JSON, except that",
    'a MessagePack bin is written {"$bin": "<hex>"}, and a float always has a fraction or an exponent',
    "(1767225600.0) while an integer never has. Map key order carries no meaning when decoding;",
    "the bytes show the order this daemon and its client use.",
    "Generated by protocol/conformance/generate.py; checked by tests/protocol/test_conformance.py",
    "and tests/integration/test_foreign_client.py. All tokens and passphrases here are fake.",
]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def to_json(value: Any) -> Any:
    """The JSON notation of a MessagePack value (bin as {"$bin": hex})."""
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_json(item) for item in value]
    return value


def _client_class(error: dict[str, Any]) -> str:
    info = ErrorInfo.from_wire(error)
    return type(error_from_info(info)).__name__


def _no_integral_float(value: Any, where: str) -> None:
    """Request params must survive a language with one number type (JavaScript): 30.0 would not."""
    if isinstance(value, float) and value.is_integer():
        raise SystemExit(f"{where}: request params must not hold an integral float ({value})")
    for item in value.values() if isinstance(value, dict) else value if isinstance(value, list) else ():
        _no_integral_float(item, where)


def build() -> dict[str, Any]:
    covered = {method for _, method, *_ in CALLS}
    missing = set(Method) - covered
    if missing:
        raise SystemExit(f"no call vector for {sorted(missing)}")
    missing_codes = set(ErrorCode) - {code for code, *_ in ERRORS}
    if missing_codes:
        raise SystemExit(f"no error vector for {sorted(c.name for c in missing_codes)}")

    calls = []
    for label, method, msgid, params, result in CALLS:
        _no_integral_float(params, label)
        calls.append(
            {
                "label": label,
                "method": str(method),
                "msgid": msgid,
                "params": to_json(params),
                "request": pack([0, msgid, str(method), params]).hex(),
                "result": to_json(result),
                "response": pack([1, msgid, None, result]).hex(),
            }
        )
    errors = []
    for code, method_name, msgid, given, raw, message, note in ERRORS:
        if given is not None:
            _no_integral_float(given, code.name)
        request = pack([0, msgid, method_name, given]) if given is not None else raw
        assert request is not None, code
        error = {"code": int(code), "name": code.name, "message": message}
        entry: dict[str, Any] = {
            "code": int(code),
            "name": code.name,
            "client_class": _client_class(error),
            "method": method_name,
            "msgid": msgid,
            "params": None if given is None else to_json(given),
            "request": request.hex(),
            "message": message,
            "response": pack([1, msgid, error, None]).hex(),
        }
        if note:
            entry["note"] = note
        errors.append(entry)
    variants = []
    for label, msgid, error, expected in VARIANTS:
        if _client_class(error) != expected:
            raise SystemExit(f"{label}: our client raises {_client_class(error)}, not {expected}")
        variants.append(
            {
                "label": label,
                "msgid": msgid,
                "error": error,
                "client_class": expected,
                "response": pack([1, msgid, error, None]).hex(),
            }
        )
    notifications = [
        {"method": str(method), "params": to_json([params]), "message": pack([2, str(method), [params]]).hex()}
        for method, params in NOTIFICATIONS
    ]
    if {n["method"] for n in notifications} != {str(n) for n in Notify}:
        raise SystemExit("every Notify needs a notification vector")
    method_as_bin = []
    for what, sent, read_as, refusal in METHOD_AS_BIN:
        entry = {"label": what, "value": to_json(sent), "message": pack(sent).hex(), "method": read_as}
        if read_as is None:
            error = {"code": int(ErrorCode.PROTOCOL_ERROR), "name": ErrorCode.PROTOCOL_ERROR.name, "message": refusal}
            entry["response"] = pack([1, sent[1], error, None]).hex()
        method_as_bin.append(entry)
    return {
        "about": ABOUT,
        "protocol": 1,
        "calls": calls,
        "errors": errors,
        "error_variants": variants,
        "notifications": notifications,
        "method_as_bin": method_as_bin,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if vectors.json is not what this script writes")
    args = parser.parse_args()
    text = render()
    if args.check:
        if OUT.read_text() != text:
            print(f"{OUT} is stale: run {Path(__file__).name} and review the diff", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
