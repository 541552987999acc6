"""What ``credential.put`` takes for a ``sign`` credential, what a vault already holding one loads,
and what ``status`` shows of it (SPEC.md section 6.6); the section's example JSON is put for real."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from vaultd._credentials import ConfigError, from_config, from_record
from vaultd._errors import RpcError
from vaultd._providers.sign import SignProvider
from vaultd._schemes import SCHEMES, SignError, SignRequest
from vaultd._secret import Secret
from vaultd._vault import Vault
from vaultd.ctl import credentials as ctl
from vaultd.ctl.common import CtlError
from vaultd_client.errors import AlreadyExists
from vaultd_protocol import ErrorCode, KdfProfile

from .bao_standin import StandInBao, serving, upstream_config
from .renewal_tools import PASS as RENEWAL_PASS
from .renewal_tools import Wall, refused, state
from .renewal_tools import open_vault as open_renewing_vault

SPEC = (Path(__file__).parents[2] / "protocol" / "SPEC.md").read_text()
SECTION = SPEC.split("### 6.6 `sign`", 1)[1].split("\n## 7.", 1)[0]
NOW = 1_800_000_000.0
PASS = "fake vault passphrase"
#: SPEC's stand-in for a PEM key (the RSA schemes' examples): a JSON string holding ``...``.
ELIDED_PEM = "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n"
RSA_PEM = (
    rsa.generate_private_key(public_exponent=65537, key_size=2048)
    .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    .decode()
)


def spec_examples() -> dict[str, str]:
    """Scheme name -> the JSON text SPEC 6.6 says to pipe into ``vaultctl add NAME --kind sign``."""
    found = re.findall(r"^- `([a-z0-9-]+)`: `(\{.*\})`$", SECTION, re.M)
    return dict(found)


def example(scheme: str) -> dict[str, Any]:
    """SPEC's example for ``scheme``, read as ``vaultctl add`` reads stdin, its elided PEM filled in."""
    config = ctl.config_from_stdin("sign", spec_examples()[scheme])
    if config.get("private_key") == ELIDED_PEM:
        config["private_key"] = RSA_PEM
    return config


async def open_vault(path: Path, nursery: trio.Nursery) -> Vault:
    vault = Vault(path, nursery=nursery, clock=lambda: NOW)
    await vault.init(Secret(PASS), KdfProfile.MIN)
    await vault.unlock(Secret(PASS))
    return vault


# -- SPEC 6.6's examples -------------------------------------------------------------------------


def test_the_spec_gives_one_example_per_scheme() -> None:
    examples = spec_examples()
    assert sorted(examples) == sorted(SCHEMES) and len(examples) == 18
    for scheme, text in examples.items():
        assert json.loads(text)["scheme"] == scheme


async def test_every_spec_example_is_accepted_by_credential_put_and_loads_again(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    vault = await open_vault(tmp_path, nursery)
    for scheme in SCHEMES:
        assert await vault.put(Secret(PASS), scheme, "sign", example(scheme), replace=False) is True
    vault.lock()
    await vault.unlock(Secret(PASS))  # every record read back (SignProvider.from_record)
    shown = {entry["name"]: entry["settings"] for entry in vault.describe()}
    assert {name: settings["scheme"] for name, settings in shown.items()} == {name: name for name in SCHEMES}
    assert shown["kucoin"]["key_version"] == 3 and shown["binance-hmac"]["recv_window"] == 5000


def test_the_jq_recipe_keeps_the_key_out_of_argv_and_makes_a_config_put_takes(tmp_path: Path) -> None:
    match = re.search(r"^    (jq -n --rawfile .*) \| vaultctl add NAME --kind sign$", SECTION, re.M)
    assert match, "SPEC 6.6 gives the jq recipe"
    argv = shlex.split(match.group(1))
    assert "--arg" not in argv and "key.pem" in argv
    assert "jq --arg" in SECTION, "and warns against --arg"
    if shutil.which("jq") is None:  # as tests/openbao.py does for bao: CI must run it, not skip it
        message = "jq is not installed (apt install jq): the recipe SPEC.md gives cannot be run"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    (tmp_path / "key.pem").write_text(RSA_PEM)
    out = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=True, timeout=30).stdout
    config = ctl.config_from_stdin("sign", out)
    assert config["private_key"] == RSA_PEM, "the newlines survive"
    assert from_config("rsa", "sign", config, NOW).provider.describe()["scheme"] == "binance-rsa"


# -- fields a scheme does not use ----------------------------------------------------------------

RECV = "'recv_window' is for the binance-ed25519, binance-hmac, binance-rsa, binance-ws-logon, bybit, bybit-rsa schemes"
PASSPHRASE = "'passphrase' is for the bitget, kucoin, okx, okx-ws-login schemes"
UNUSED = [
    ("kucoin", {"recv_window": 20000}, f"{RECV} only, not 'kucoin'"),
    ("okx", {"recv_window": 20000}, f"{RECV} only, not 'okx'"),
    ("gate", {"recv_window": 20000}, f"{RECV} only, not 'gate'"),
    ("bybit-ws-auth", {"recv_window": 20000}, f"{RECV} only, not 'bybit-ws-auth'"),
    ("gate", {"passphrase": "fake-pass"}, f"{PASSPHRASE} only, not 'gate'"),
    ("binance-hmac", {"passphrase": "fake-pass"}, f"{PASSPHRASE} only, not 'binance-hmac'"),
    ("hyperliquid", {"passphrase": "fake-pass"}, f"{PASSPHRASE} only, not 'hyperliquid'"),
    ("okx", {"last_nonce": 5}, "'last_nonce' is for the kraken, kraken-futures schemes only, not 'okx'"),
    ("bitget", {"key_version": 3}, "'key_version' is for the kucoin scheme only, not 'bitget'"),
    ("binance-rsa", {"secret_encoding": "raw"}, "'secret_encoding' is for HMAC schemes (binance-hmac, bitget, "),
]


@pytest.mark.parametrize(("scheme", "field", "message"), UNUSED)
def test_a_field_the_scheme_does_not_use_is_refused_at_put(scheme: str, field: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_config("c", "sign", {**example(scheme), **field}, NOW)
    assert str(info.value).startswith(message), str(info.value)
    assert "fake-pass" not in str(info.value)


USED = {
    "recv_window": 20000,
    "passphrase": "fake-pass",
    "last_nonce": 5,
    "key_version": 3,
    "secret_encoding": "raw",
}


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_each_field_is_taken_by_the_schemes_that_use_it(scheme: str) -> None:
    taken = []
    for field, value in USED.items():
        try:
            provider = SignProvider.from_config({**example(scheme), field: value})
        except ConfigError as exc:
            assert "only, not" in str(exc), str(exc)
            continue
        taken.append(field)
        if field == "recv_window":  # it does something: the scheme is sent the window
            assert provider.options() and set(provider.options().values()) == {"20000"}
            assert provider.describe()["recv_window"] == 20000
    expected = {
        "recv_window": scheme.startswith("binance") or scheme in ("bybit", "bybit-rsa"),
        "passphrase": scheme in ("okx", "okx-ws-login", "kucoin", "bitget"),
        "last_nonce": scheme in ("kraken", "kraken-futures"),
        "key_version": scheme == "kucoin",
        "secret_encoding": SCHEMES[scheme].key_kind == "hmac",
    }
    assert taken == [field for field in USED if expected[field]]


async def test_credential_put_refuses_it_with_invalid_params(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = await open_vault(tmp_path, nursery)
    with pytest.raises(RpcError) as info:
        await vault.put(Secret(PASS), "gate", "sign", {**example("gate"), "passphrase": "fake-pass"}, replace=False)
    assert info.value.code is ErrorCode.INVALID_PARAMS and f"{PASSPHRASE} only, not 'gate'" in str(info.value)
    assert vault.describe() == []


def test_records_already_in_a_vault_load_as_before() -> None:
    """An older vault's gate credential with a passphrase and a recv_window, an okx one with a
    last_nonce, a kucoin one whose record holds them all (to_record writes recv_window and last_nonce)."""
    old = {
        "gate": {**example("gate"), "passphrase": "fake-old-pass", "recv_window": 20000, "last_nonce": 9},
        "okx": {**example("okx"), "last_nonce": 7, "recv_window": None},
        "kucoin": {**example("kucoin"), "recv_window": 20000, "last_nonce": 0, "secret_encoding": "raw"},
        "binance-rsa": {**example("binance-rsa"), "secret_encoding": "raw", "last_nonce": 0, "recv_window": None},
    }
    for scheme, config in old.items():
        record = {"kind": "sign", "config": config, "created_at": NOW, "updated_at": NOW}
        provider = from_record(scheme, record).provider
        assert isinstance(provider, SignProvider)
        described = provider.describe()
        assert described["recv_window"] is None and described["last_nonce"] is None, "it did nothing, and says so"
        assert provider.options() == ({"key_version": "3"} if scheme == "kucoin" else {})
        again = provider.to_record()
        assert again.get("passphrase") == config.get("passphrase"), "a passphrase is kept"
        assert SignProvider.from_record(again).describe() == described


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_every_record_put_writes_loads_again(scheme: str) -> None:
    provider = SignProvider.from_config(example(scheme))
    assert SignProvider.from_record(provider.to_record()).describe() == provider.describe()


# -- key_version ------------------------------------------------------------------------------------


def test_a_key_version_given_as_a_string_is_refused_saying_so() -> None:
    with pytest.raises(ConfigError) as info:
        SignProvider.from_config({**example("kucoin"), "key_version": "3"})
    assert str(info.value).startswith(
        "'key_version' must be 2 or 3, a whole number (a JSON number, not a string: 3, not \"3\")"
    )
    with pytest.raises(ConfigError) as info:
        SignProvider.from_config({**example("kucoin"), "key_version": 1})
    assert "not a string" not in str(info.value) and "version 1 keys are not supported" in str(info.value)


# -- what status shows ---------------------------------------------------------------------------


def test_status_shows_kucoins_key_version() -> None:
    without = {k: v for k, v in example("kucoin").items() if k != "key_version"}
    assert SignProvider.from_config(without).describe()["key_version"] == 2, "the version sent by default"
    assert SignProvider.from_config(example("kucoin")).describe()["key_version"] == 3
    assert SignProvider.from_config(example("okx")).describe()["key_version"] is None


def test_status_says_whether_withdrawals_are_refused() -> None:
    default = SignProvider.from_config(example("binance-hmac")).describe()
    assert default["allow"] == ["* /*"], "the rules as before"
    assert default["withdrawals"] == "refused: no allow rule names a withdrawal or transfer path exactly"
    globbed = SignProvider.from_config({**example("binance-hmac"), "allow": ["POST /sapi/*", "GET /api/*"]})
    assert globbed.describe()["withdrawals"].startswith("refused: "), "a glob never opens one"
    opened = SignProvider.from_config(
        {**example("binance-hmac"), "allow": ["GET /api/*", "POST /sapi/v1/capital/withdraw/apply"]}
    )
    assert opened.describe()["withdrawals"] == (
        "refused except at POST /sapi/v1/capital/withdraw/apply (rules naming that exact path)"
    )


# -- Hyperliquid's api_key ---------------------------------------------------------------------------


def test_hyperliquids_api_key_must_be_an_address_at_put() -> None:
    for bad in ("fake-api-key", "0x" + "1" * 39, "1" * 42):
        with pytest.raises(ConfigError) as info:
            SignProvider.from_config({**example("hyperliquid"), "api_key": bad})
        assert str(info.value).startswith("'api_key' for hyperliquid must be the account's address, '0x' and 40 hex")
    assert not SignProvider.from_config(example("hyperliquid")).warnings(NOW)


def test_a_stored_hyperliquid_credential_without_an_address_loads_with_a_warning() -> None:
    provider = SignProvider.from_record({**example("hyperliquid"), "api_key": "fake-api-key"})
    assert any("'api_key' is not an address" in warning for warning in provider.warnings(NOW))
    with pytest.raises(SignError, match="'api_key' must be the account's address"):
        provider.sign(SignRequest("POST", "api.hyperliquid.xyz", "/exchange", (), b'{"action": {}}', 1_765_000_000_123))


# -- a private_key missing -------------------------------------------------------------------------

MISSING = [
    ("hyperliquid", "a secp256k1 key, '0x' and 64 hex digits"),
    ("binance-rsa", "an unencrypted PEM RSA key, PKCS#8 or PKCS#1, at least 2048 bits"),
    ("binance-ed25519", "an Ed25519 key: PEM PKCS#8, or base64 of the 32-byte seed"),
    ("coinbase", "a Coinbase CDP key: PEM EC P-256, or Ed25519 as PEM PKCS#8 or base64 of 32 or 64 bytes"),
]


@pytest.mark.parametrize(("scheme", "form"), MISSING)
def test_a_missing_private_key_names_the_scheme_and_its_format(scheme: str, form: str) -> None:
    base = {k: v for k, v in example(scheme).items() if k != "private_key"}
    with pytest.raises(ConfigError) as info:
        SignProvider.from_config(base)
    assert str(info.value) == f"'private_key' is required: scheme {scheme!r} signs with a 'private_key' ({form})"
    with pytest.raises(ConfigError) as info:
        SignProvider.from_config({**base, "secret": "fake-secret"})
    assert str(info.value) == f"scheme {scheme!r} signs with a 'private_key' ({form}), not a 'secret'"


# -- a name that exists --------------------------------------------------------------------------


async def test_a_bad_config_is_named_before_an_existing_name(nursery: trio.Nursery, tmp_path: Path) -> None:
    vault = await open_vault(tmp_path, nursery)
    await vault.put(Secret(PASS), "bad", "sign", example("okx"), replace=False)
    typo = {**example("okx"), "pasphrase": "fake-pass"}
    with pytest.raises(RpcError) as info:
        await vault.put(Secret(PASS), "bad", "sign", typo, replace=False)
    assert info.value.code is ErrorCode.INVALID_PARAMS and "pasphrase" in str(info.value)
    assert "fake-pass" not in str(info.value)
    with pytest.raises(RpcError) as info:
        await vault.put(Secret(PASS), "bad", "sign", example("okx"), replace=False)
    assert info.value.code is ErrorCode.ALREADY_EXISTS


class _Exists:
    """A daemon that answers ``credential.put`` with ALREADY_EXISTS."""

    slow_timeout = 5.0

    def __init__(self, message: str) -> None:
        self.message = message

    def call(self, method: str, params: dict[str, Any], timeout: float) -> Any:
        raise AlreadyExists(self.message)


@pytest.mark.parametrize(
    ("daemon_says", "replace", "line"),
    [
        (
            "credential 'bad' exists (put with replace to overwrite)",
            False,
            "credential 'bad' exists: add --replace to replace it (ALREADY_EXISTS)",
        ),
        (
            "an upstream is named 'bao': give the credential another name",
            False,
            "an upstream is named 'bao': give the credential another name (ALREADY_EXISTS)",
        ),
    ],
)
def test_vaultctl_add_says_how_to_replace_once(
    daemon_says: str, replace: bool, line: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ctl, "_read_stdin_secret", lambda kind: json.dumps(example("okx")))
    monkeypatch.setattr(ctl, "_passphrase", lambda args, **kwargs: PASS)
    args = argparse.Namespace(name="bad", kind="sign", replace=replace, source=None, refresh=None)
    with pytest.raises(CtlError) as info:
        ctl.cmd_add(_Exists(daemon_says), args)  # type: ignore[arg-type]
    assert str(info.value) == line


# -- a record in an upstream (SPEC section 12) is the operator's input too ------------------------


@pytest.fixture
def bao(monkeypatch: pytest.MonkeyPatch) -> Any:
    with serving(monkeypatch, StandInBao()) as server:
        yield server


async def test_an_upstream_record_with_an_unused_field_is_refused_and_the_held_copy_stays(
    nursery: trio.Nursery, tmp_path: Path, wall: Wall, bao: StandInBao, autojump_clock: Any
) -> None:
    vault = await open_renewing_vault(nursery, tmp_path, wall)
    await vault.put_upstream(Secret(RENEWAL_PASS), "bao", "openbao", upstream_config(), replace=False)
    bao.put("desk/okx", {**example("okx"), "recv_window": 20000})
    source = {"upstream": "bao", "path": "desk/okx", "refresh": 5}
    error = await refused(vault.put(Secret(RENEWAL_PASS), "okx", "sign", None, replace=False, source=source))
    assert error.code is ErrorCode.INVALID_PARAMS and f"{RECV} only, not 'okx'" in str(error)
    bao.put("desk/okx", example("okx"))
    await vault.put(Secret(RENEWAL_PASS), "okx", "sign", None, replace=False, source=source)
    bao.put("desk/okx", {**example("okx"), "api_key": "fake-okx-key-2", "last_nonce": 5})
    await trio.sleep(6)
    held = state(vault, "okx")
    assert held["source"]["version"] == 2 and "'last_nonce' is for" in held["source"]["last_error"]
    order = {"method": "GET", "url": "https://www.okx.com/api/v5/account/balance", "body": b"", "timestamp": None}
    assert (await vault.sign("okx", order))["headers"]["OK-ACCESS-KEY"] == "fake-okx-api-key", "the held copy signs"
