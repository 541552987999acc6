"""The jwt kind: key import, the RFC 8037 vector, ES256 and CDP tokens, refusals, reuse, records."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from nacl.signing import SigningKey, VerifyKey

from vaultd._providers import ConfigError, FetchContext, UpstreamError
from vaultd._providers.jwt import JwtProvider, load_signing_key, sign_jws

# RFC 8037 (CFRG curves in JOSE), Appendix A.1 (the Ed25519 private key) and A.4 (the JWS
# "Example of Ed25519 signing" with protected header {"alg":"EdDSA"}).
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_SIGNING_INPUT = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
RFC8037_SIGNATURE = "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"

NOW = 1_750_000_000.25
CDP_KID = "organizations/org-1/apiKeys/key-1"
CDP_URI = "GET api.coinbase.com/api/v3/brokerage/accounts"


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, payload, signing input and signature of a compact JWS, checking its encoding."""
    header, payload, signature = token.split(".")
    assert "=" not in token
    decoded = [b64url_decode(part) for part in (header, payload)]
    for raw in decoded:
        assert raw == json.dumps(json.loads(raw), separators=(",", ":")).encode()
    return json.loads(decoded[0]), json.loads(decoded[1]), f"{header}.{payload}".encode(), b64url_decode(signature)


def ed_pem() -> tuple[str, bytes]:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return pem.decode(), public


def ec_pem(
    fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8, curve: ec.EllipticCurve | None = None
) -> tuple[str, ec.EllipticCurvePublicKey]:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    return pem.decode(), key.public_key()


def verify_es256(public: ec.EllipticCurvePublicKey, signing_input: bytes, signature: bytes) -> None:
    assert len(signature) == 64
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    public.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))


async def mint(provider: JwtProvider, now: float = NOW) -> str:
    return (await provider.fetch(FetchContext(lambda: now))).token.reveal_str()


# -- signatures ----------------------------------------------------------------------------------


def test_rfc8037_a4_signature_is_reproduced_exactly() -> None:
    key = load_signing_key("EdDSA", RFC8037_D)
    signature = sign_jws(key, RFC8037_SIGNING_INPUT.encode())
    assert base64.urlsafe_b64encode(signature).rstrip(b"=").decode() == RFC8037_SIGNATURE
    VerifyKey(b64url_decode(RFC8037_X)).verify(RFC8037_SIGNING_INPUT.encode(), signature)


async def test_eddsa_tokens_verify_with_the_rfc_public_key() -> None:
    provider = JwtProvider.from_config({"alg": "EdDSA", "private_key": RFC8037_D, "claims": {"aud": "x"}})
    header, payload, signing_input, signature = split(await mint(provider))
    assert header == {"alg": "EdDSA", "typ": "JWT"}
    assert payload == {"aud": "x", "iat": 1_750_000_000, "nbf": 1_750_000_000, "exp": 1_750_000_120}
    VerifyKey(b64url_decode(RFC8037_X)).verify(signing_input, signature)


@pytest.mark.parametrize("fmt", [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL])
async def test_es256_tokens_verify_and_have_raw_64_byte_signatures(fmt: serialization.PrivateFormat) -> None:
    pem, public = ec_pem(fmt)
    provider = JwtProvider.from_config({"alg": "ES256", "private_key": pem, "kid": "k1"})
    for _ in range(5):  # DER lengths vary with leading zeros; the raw form never does
        header, _, signing_input, signature = split(await mint(provider))
        assert header == {"alg": "ES256", "typ": "JWT", "kid": "k1"}
        verify_es256(public, signing_input, signature)


async def test_pkcs8_ed25519_pem_imports() -> None:
    pem, public = ed_pem()
    provider = JwtProvider.from_config({"alg": "EdDSA", "private_key": pem})
    _, _, signing_input, signature = split(await mint(provider))
    VerifyKey(public).verify(signing_input, signature)


async def test_pem_with_literal_newline_escapes_imports() -> None:
    pem, public = ec_pem(serialization.PrivateFormat.TraditionalOpenSSL)
    provider = JwtProvider.from_config({"alg": "ES256", "private_key": pem.strip().replace("\n", "\\n")})
    _, _, signing_input, signature = split(await mint(provider))
    verify_es256(public, signing_input, signature)


async def test_cdp_64_byte_base64_key_imports() -> None:
    seed = SigningKey.generate()
    both = base64.b64encode(bytes(seed) + bytes(seed.verify_key)).decode()
    provider = JwtProvider.from_config({"alg": "EdDSA", "private_key": both})
    _, _, signing_input, signature = split(await mint(provider))
    seed.verify_key.verify(signing_input, signature)


# -- claims and shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [1, 60, 120, 3600])
async def test_exp_minus_iat_is_the_ttl(ttl: int) -> None:
    provider = JwtProvider.from_config({"alg": "EdDSA", "private_key": RFC8037_D, "ttl": ttl})
    issued = await provider.fetch(FetchContext(lambda: NOW))
    _, payload, _, _ = split(issued.token.reveal_str())
    assert payload["exp"] - payload["iat"] == ttl
    assert payload["nbf"] == payload["iat"] == issued.issued_at == int(NOW)
    assert issued.expires_at == payload["exp"] <= NOW + ttl
    assert issued.token_type == "bearer"
    assert issued.headers() == {"Authorization": f"Bearer {issued.token.reveal_str()}"}
    assert issued.extra == {}
    assert not issued.rotated


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
async def test_coinbase_cdp_shape(alg: str) -> None:
    pem = ed_pem()[0] if alg == "EdDSA" else ec_pem()[0]
    config = {"alg": alg, "private_key": pem, "shape": "coinbase-cdp", "kid": CDP_KID, "uri": CDP_URI}
    provider = JwtProvider.from_config(config)
    nonces = set()
    for _ in range(3):
        header, payload, _, _ = split(await mint(provider))
        assert header.keys() == {"alg", "typ", "kid", "nonce"}
        assert header["alg"] == alg
        assert header["kid"] == CDP_KID
        assert len(header["nonce"]) == 32
        int(header["nonce"], 16)
        nonces.add(header["nonce"])
        assert payload == {
            "iss": "cdp",
            "sub": CDP_KID,
            "uri": CDP_URI,
            "iat": int(NOW),
            "nbf": int(NOW),
            "exp": int(NOW) + 120,
        }
    assert len(nonces) == 3


async def test_cdp_shape_without_uri_has_no_uri_claim() -> None:
    config = {"alg": "EdDSA", "private_key": RFC8037_D, "shape": "coinbase-cdp", "kid": CDP_KID}
    _, payload, _, _ = split(await mint(JwtProvider.from_config(config)))
    assert "uri" not in payload
    assert payload["sub"] == CDP_KID


# -- reuse ---------------------------------------------------------------------------------------


async def test_reuse_hands_back_the_same_token_until_it_runs_out() -> None:
    clock = [NOW]
    ctx = FetchContext(lambda: clock[0])
    provider = JwtProvider.from_config({"alg": "EdDSA", "private_key": RFC8037_D, "reuse": 60})
    first = await provider.fetch(ctx)
    clock[0] += 30
    second = await provider.fetch(ctx)
    assert second.token == first.token
    assert (second.issued_at, second.expires_at) == (first.issued_at, first.expires_at)
    first.wipe()  # the renewer wipes a replaced token: the copy it got next must survive
    assert not second.token.wiped
    clock[0] += 31
    third = await provider.fetch(ctx)
    assert third.token != second.token
    assert third.issued_at == int(NOW) + 61


async def test_no_reuse_mints_every_time() -> None:
    clock = [NOW]
    provider = JwtProvider.from_config({"alg": "EdDSA", "private_key": RFC8037_D})
    first = await provider.fetch(FetchContext(lambda: clock[0]))
    clock[0] += 1
    assert (await provider.fetch(FetchContext(lambda: clock[0]))).token != first.token


# -- records, repr, wipe -------------------------------------------------------------------------


async def test_record_round_trip_and_nothing_secret_shown() -> None:
    pem, public = ec_pem()
    config = {
        "alg": "ES256",
        "private_key": pem,
        "kid": "k",
        "claims": {"aud": ["a", "b"], "n": 1.5, "ok": True},
        "ttl": 60,
        "reuse": 10,
        "uri": CDP_URI,
        "type": "jwt",
    }
    provider = JwtProvider.from_config(config)
    body = pem.split("-----")[2].strip().splitlines()[0]
    described = provider.describe()
    assert body not in repr(provider)
    assert body not in json.dumps(described)
    assert described == {k: v for k, v in config.items() if k != "private_key"} | {"shape": "plain"}
    assert set(provider.to_record()) <= JwtProvider.FIELDS
    assert set(described) | {"private_key"} == JwtProvider.FIELDS
    again = JwtProvider.from_record(provider.to_record())
    assert again.to_record() == provider.to_record()
    header, payload, signing_input, signature = split(await mint(again))
    verify_es256(public, signing_input, signature)
    assert header["kid"] == "k"
    assert payload["aud"] == ["a", "b"]
    assert payload["uri"] == CDP_URI
    assert (await again.fetch(FetchContext(lambda: NOW))).token_type == "jwt"
    assert provider.warnings(NOW) == []


async def test_wipe_forgets_the_key() -> None:
    provider = JwtProvider.from_config({"alg": "EdDSA", "private_key": RFC8037_D, "reuse": 30})
    issued = await provider.fetch(FetchContext(lambda: NOW))
    provider.wipe()
    assert not issued.token.wiped
    assert provider.to_record()["private_key"] == ""
    with pytest.raises(UpstreamError, match="wiped"):
        await provider.fetch(FetchContext(lambda: NOW))


# -- refusals ------------------------------------------------------------------------------------


def ok(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"alg": "EdDSA", "private_key": RFC8037_D}
    config.update(changes)
    return {k: v for k, v in config.items() if v is not None}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (ok(alg=None), "'alg' is required"),
        (ok(alg="HS256"), "'alg' must be 'EdDSA'"),
        (ok(alg="eddsa"), "'alg' must be 'EdDSA'"),
        (ok(private_key=None), "'private_key' is required"),
        (ok(private_key=""), "'private_key' is required"),
        (ok(private_key=7), "'private_key' is required"),
        (ok(private_key="A" * 20000), "'private_key' is longer than"),
        (ok(private_key="not base64!"), "'private_key' must be a PEM PKCS#8 Ed25519 key or base64 of a 32- or 64"),
        (ok(private_key=base64.b64encode(b"x" * 31).decode()), "'private_key' must be a PEM PKCS#8 Ed25519"),
        (ok(private_key="-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), "'private_key' must"),
        (ok(shape="jwt"), "'shape' must be 'plain' or 'coinbase-cdp'"),
        (ok(shape="coinbase-cdp"), "'kid' is required for shape 'coinbase-cdp'"),
        (ok(kid=""), "'kid' is required and must be a non-empty string"),
        (ok(kid="k" * 600), "'kid' is longer than"),
        (ok(uri=3), "'uri' is required and must be a non-empty string"),
        (ok(ttl=0), "'ttl' must be between 1 and 3600"),
        (ok(ttl=3601), "'ttl' must be between 1 and 3600"),
        (ok(ttl=1.5), "'ttl' must be a whole number"),
        (ok(ttl="120"), "'ttl' must be a number"),
        (ok(ttl=True), "'ttl' must be a number"),
        (ok(reuse=-1), "'reuse' must be between"),
        (ok(reuse=61), "'reuse' must be at most half of 'ttl'"),
        (ok(ttl=10, reuse=6), "'reuse' must be at most half of 'ttl'"),
        (ok(type="Bearer Token"), "'type'"),
        (ok(claims=["aud"]), "'claims' must be a map"),
        (ok(claims={"iat": 1}), "'claims' must not set 'iat': iat, nbf and exp are computed"),
        (ok(claims={"exp": 1}), "'claims' must not set 'exp'"),
        (ok(claims={"nbf": 1}), "'claims' must not set 'nbf'"),
        (ok(claims={"iss": "me"}, shape="coinbase-cdp", kid="k"), "'claims' must not set 'iss'"),
        (ok(claims={"sub": "me"}, shape="coinbase-cdp", kid="k"), "'claims' must not set 'sub'"),
        (ok(claims={"uri": "x"}, uri="GET a/b"), "'claims' must not set 'uri'"),
        (ok(claims={"aud": {"nested": 1}}), "'claims' value of 'aud' must be"),
        (ok(claims={"aud": [["deep"]]}), "'claims' value of 'aud' must be"),
        (ok(claims={"n": float("nan")}), "'claims' value of 'n' must be"),
        (ok(claims={"n": None}), "'claims' value of 'n' must be"),
        (ok(claims={"": 1}), "'claims' names must be"),
        (ok(claims={1: 1}), "'claims' names must be"),
        (ok(claims={"big": "x" * 5000}), "'claims' must encode to at most"),
        (ok(colour="red"), "unknown field"),
    ],
)
def test_bad_config_is_refused_with_the_field_named(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        JwtProvider.from_config(config)
    assert RFC8037_D not in str(info.value)


def pem_refusals() -> list[tuple[str, str, str]]:
    encrypted = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    return [
        ("EdDSA", ec_pem()[0], "must be a PEM PKCS#8 Ed25519 key .* this PEM holds an EC secp256r1 key"),
        ("ES256", ed_pem()[0], "must be a PEM P-256 key .* this PEM holds an Ed25519 key"),
        ("ES256", ec_pem(curve=ec.SECP384R1())[0], "must be a PEM P-256 key .* this PEM holds an EC secp384r1 key"),
        ("ES256", RFC8037_D, "'private_key' must be a PEM P-256 key"),
        ("EdDSA", encrypted.decode(), "'private_key' is encrypted"),
    ]


@pytest.mark.parametrize(("alg", "key", "message"), pem_refusals())
def test_a_key_of_the_wrong_type_for_alg_is_refused(alg: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        JwtProvider.from_config({"alg": alg, "private_key": key})
    assert key.strip().splitlines()[-2 if "\n" in key.strip() else 0] not in str(info.value)


def test_a_64_byte_key_whose_halves_disagree_is_refused() -> None:
    mismatched = bytes(SigningKey.generate()) + bytes(SigningKey.generate().verify_key)
    with pytest.raises(ConfigError, match="public half of the 64-byte Ed25519 key does not match"):
        JwtProvider.from_config({"alg": "EdDSA", "private_key": base64.b64encode(mismatched).decode()})
