"""``binance-rsa`` with its key in a real OpenBao's transit engine, through a real vaultd.

The RSA test key of tests/vaultd/test_schemes_rsa.py is imported into transit; vaultd, which never
holds it, signs the Binance docs' RSA example order (timestamped at the daemon's time) into
exactly the signature that key makes here (RSASSA-PKCS1-v1_5 is deterministic), in one round trip.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from vaultd._schemes._keys import load_rsa_key
from vaultd_client import Client

from ..daemon_process import DaemonProcess
from ..openbao import BaoDevServer
from ..vaultd.test_bao_transit_rsa import import_rsa_key
from ..vaultd.test_schemes_rsa import DOCS_API_KEY, DOCS_PAYLOAD, RSA_PEM
from .openbao_desk import POLICY, add_upstream, configure, described


@pytest.fixture
def bao() -> Iterator[BaoDevServer]:
    with BaoDevServer() as server:
        yield server


def test_an_rsa_key_in_transit_signs_the_binance_docs_payload_as_openssl_does(
    daemon: DaemonProcess, bao: BaoDevServer
) -> None:
    role_id = configure(bao)
    bao.write_policy("vaultd-host", POLICY + 'path "transit/sign/binance-rsa" { capabilities = ["update"] }\n')
    bao.enable_transit()
    import_rsa_key(bao, "binance-rsa", RSA_PEM)
    daemon.start()
    daemon.ctl("init", "--kdf-profile", "min", *daemon.pw())
    daemon.ctl("unlock", *daemon.pw())
    add_upstream(daemon, bao, bao.address, role_id)
    backend = {"upstream": "bao", "transit_key": "binance-rsa"}
    config = {"scheme": "binance-rsa", "api_key": DOCS_API_KEY, "backend": backend}
    daemon.ctl("add", "binance-r", "--kind", "sign", *daemon.pw(), stdin=json.dumps(config))
    # The docs' order, timestamped at the daemon's time (their own 2017 timestamp is refused now):
    # PKCS#1 v1.5 is deterministic, so transit's signature must be the key's own, byte for byte.
    order = DOCS_PAYLOAD.partition("&timestamp=")[0]
    url = f"https://api.binance.com/api/v3/order?{order}"
    with Client(daemon.socket_path) as client:
        signed = client.sign("binance-r", "POST", url)
    payload, _, signature = urlsplit(signed.url).query.rpartition("&signature=")
    assert payload.startswith(order + "&timestamp=")
    here = load_rsa_key(RSA_PEM).sign(payload.encode(), padding.PKCS1v15(), hashes.SHA256())
    assert unquote(signature) == base64.b64encode(here).decode()
    assert len(bao.audit_entries("transit/sign/binance-rsa", errors=False)) == 1, "one round trip"
    assert described(daemon, "binance-r")["settings"]["backend"]["transit_key"] == "binance-rsa"
