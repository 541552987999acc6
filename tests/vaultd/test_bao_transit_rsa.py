"""RSA signatures from a real OpenBao's transit engine, as ``binance-rsa`` and ``bybit-rsa`` ask for them.

``transit/sign`` with ``hash_algorithm=sha2-256`` and ``signature_algorithm=pkcs1v15`` is
RSASSA-PKCS1-v1_5, deterministic: the test key of test_schemes_rsa.py, imported into transit,
signs the Binance docs' RSA payload into exactly the signature the docs' openssl command makes.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from vaultd._bao import BaoClient, BaoToken
from vaultd._schemes._keys import load_rsa_key
from vaultd._secret import Secret

from ..openbao import BaoDevServer
from .test_schemes_rsa import DOCS_PAYLOAD, DOCS_SIGNATURE, RSA_PEM

POLICY = 'path "transit/sign/*" { capabilities = ["update"] }'


@pytest.fixture(scope="module")
def bao() -> Iterator[BaoDevServer]:
    with BaoDevServer() as server:
        server.enable_approle()
        server.enable_transit()
        server.write_policy("signer", POLICY)
        yield server


@pytest.fixture
async def client(bao: BaoDevServer) -> AsyncIterator[BaoClient]:
    async with BaoClient(bao.address) as bao_client:
        yield bao_client


async def login(client: BaoClient, bao: BaoDevServer) -> BaoToken:
    role_id, secret_id = bao.approle("signer", policies=["signer"])
    return await client.login_approle("approle", Secret(role_id), Secret(secret_id))


def import_rsa_key(bao: BaoDevServer, name: str, pem: str) -> None:
    """Import an RSA private key into transit as OpenBao's BYOK asks (tests/openbao.py's
    ``import_hmac_key`` does the same for HMAC keys): PKCS#8 DER wrapped by AES-KWP under a fresh
    AES-256 key, itself wrapped by the transit wrapping key with RSA-OAEP SHA-256."""
    der = load_rsa_key(pem).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    wrapping_key = serialization.load_pem_public_key(
        bao.api("GET", "transit/wrapping_key")["data"]["public_key"].encode()
    )
    assert isinstance(wrapping_key, rsa.RSAPublicKey)
    ephemeral = secrets.token_bytes(32)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    ciphertext = wrapping_key.encrypt(ephemeral, oaep) + aes_key_wrap_with_padding(ephemeral, der)
    bao.api(
        "POST", f"transit/keys/{name}/import", {"ciphertext": base64.b64encode(ciphertext).decode(), "type": "rsa-2048"}
    )


async def test_an_imported_key_signs_the_binance_docs_payload_as_openssl_does(
    client: BaoClient, bao: BaoDevServer
) -> None:
    import_rsa_key(bao, "binance-rsa", RSA_PEM)
    token = await login(client, bao)
    signature = await client.transit_sign(
        token.token, "binance-rsa", DOCS_PAYLOAD.encode(), hash_algorithm="sha2-256", signature_algorithm="pkcs1v15"
    )
    assert base64.b64encode(signature).decode() == DOCS_SIGNATURE


async def test_a_key_made_in_transit_signs_what_its_public_key_verifies(client: BaoClient, bao: BaoDevServer) -> None:
    bao.transit_key("bybit-rsa", "rsa-3072")
    public = serialization.load_pem_public_key(bao.public_key("bybit-rsa").encode())
    assert isinstance(public, rsa.RSAPublicKey)
    token = await login(client, bao)
    message = b'1668481559918XXXXXXXXXX5000{"category":"spot"}'
    signature = await client.transit_sign(
        token.token, "bybit-rsa", message, hash_algorithm="sha2-256", signature_algorithm="pkcs1v15"
    )
    assert len(signature) == 384
    public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    pss = await client.transit_sign(token.token, "bybit-rsa", message, hash_algorithm="sha2-256")
    with pytest.raises(InvalidSignature):  # transit's default for RSA is PSS: the parameter matters
        public.verify(pss, message, padding.PKCS1v15(), hashes.SHA256())
