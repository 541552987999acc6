"""A real OpenID provider for tests: panva's ``oidc-provider`` (OpenID Certified) on 127.0.0.1.

``tests/oidc/provider.mjs`` configures it (PKCE required, device flow, rotation with reuse
detection, resource indicators, introspection, dev interactions that accept any user); its
npm package is pinned in ``tests/oidc/package-lock.json`` and installed by ``.ci/run``
(``npm ci --prefix tests/oidc``). Without node or the package, a test fails under the ``CI``
environment variable and is skipped elsewhere, as tests/openbao.py does for ``bao``.

:class:`Browser` plays the operator's browser with httpx: it follows redirects and submits the
dev interactions' login and consent forms, and the device flow's user-code form.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
import time
from html import unescape
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .openbao import free_port
from .unavailable import unavailable

__all__ = ["REDIRECT", "Browser", "OidcProvider"]

HERE = Path(__file__).parent / "oidc"
#: What the native clients register: RFC 8252 loopback, any port (oidc-provider ignores it).
REDIRECT = "http://127.0.0.1/callback"
_GRANTS = ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"]
START_TIMEOUT = 30.0


def _b64(n: int, size: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode()


class OidcProvider:
    """One oidc-provider process; a context manager. Fake secrets and a throwaway key only."""

    def __init__(self, *, access_token_ttl: int = 60, refresh_token_ttl: int = 86400) -> None:
        node = shutil.which("node")
        if node is None:
            unavailable("node is missing: the OpenID provider tests need node 20 (and npm ci --prefix tests/oidc)")
        if not (HERE / "node_modules" / "oidc-provider").is_dir():
            unavailable("oidc-provider is not installed: run 'npm ci --prefix tests/oidc' (.ci/run does)")
        self._node = str(node)
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        key = ec.generate_private_key(ec.SECP256R1())
        self.private_key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        numbers = key.public_key().public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "x": _b64(numbers.x, 32), "y": _b64(numbers.y, 32), "kid": "test-1"}
        native = {"application_type": "native", "redirect_uris": [REDIRECT], "grant_types": _GRANTS}
        native["response_types"] = ["code"]
        self.secrets = {"vaultd-basic": "fake-secret-basic-0001", "vaultd-post": "fake-secret-post-0001"}
        self.clients: list[dict[str, Any]] = [
            {**native, "client_id": "vaultd-basic", "client_secret": self.secrets["vaultd-basic"]},
            {
                **native,
                "client_id": "vaultd-post",
                "client_secret": self.secrets["vaultd-post"],
                "token_endpoint_auth_method": "client_secret_post",
            },
            {
                **native,
                "client_id": "vaultd-jwt",
                "token_endpoint_auth_method": "private_key_jwt",
                "token_endpoint_auth_signing_alg": "ES256",
                "jwks": {"keys": [jwk]},
            },
        ]
        self._folder = tempfile.TemporaryDirectory(prefix="oidc-")
        settings = Path(self._folder.name) / "settings.json"
        settings.write_text(
            json.dumps(
                {
                    "port": self.port,
                    "clients": self.clients,
                    "access_token_ttl": access_token_ttl,
                    "refresh_token_ttl": refresh_token_ttl,
                }
            )
        )
        self._settings = settings
        self.log_path = Path(self._folder.name) / "provider.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> OidcProvider:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [self._node, str(HERE / "provider.mjs"), str(self._settings)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=HERE,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"oidc-provider exited {self.proc.returncode}:\n{self.log}")
            if "ready " in self.log:
                return self
            time.sleep(0.05)
        self.__exit__()
        raise AssertionError(f"oidc-provider did not start within {START_TIMEOUT} s:\n{self.log}")

    def __exit__(self, *exc_info: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
        self._folder.cleanup()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metadata(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{self.issuer}/.well-known/openid-configuration").json()
        return answer

    def introspect(self, token: str) -> dict[str, Any]:
        """What the provider says of ``token`` (``active``, ``exp``, ...), asked as vaultd-basic."""
        answer = httpx.post(
            self.metadata()["introspection_endpoint"],
            data={"token": token},
            auth=("vaultd-basic", self.secrets["vaultd-basic"]),
        )
        result: dict[str, Any] = answer.json()
        return result


_FORM = re.compile(r'<form\b[^>]*\baction="([^"]*)"[^>]*>(.*?)</form>', re.S)
_INPUT = re.compile(r"<input\b([^>]*)>", re.S)
_ATTR = re.compile(r'(\w+)="([^"]*)"')


class Browser:
    """An operator's browser: httpx with cookies, that fills in the provider's dev forms."""

    def __init__(self) -> None:
        self.client = httpx.Client(follow_redirects=True, timeout=30)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.client.close()

    def authorize(self, url: str, *, deny: bool = False) -> httpx.Response:
        """Open ``url``, log in as a test user, consent; the last page (the daemon's loopback one)."""
        page = self.client.get(url)
        return self._forms(page, {"login": "trader", "password": "any"}, deny=deny)

    def enter_user_code(self, verification_uri: str, user_code: str) -> httpx.Response:
        page = self.client.get(verification_uri)
        return self._forms(page, {"user_code": user_code, "login": "trader", "password": "any"})

    def _forms(self, page: httpx.Response, values: dict[str, str], *, deny: bool = False) -> httpx.Response:
        for _ in range(8):
            found = _FORM.search(page.text) if "text/html" in page.headers.get("content-type", "") else None
            if found is None:
                return page
            action, body = unescape(found.group(1)), found.group(2)
            fields: dict[str, str] = {}
            for attrs in _INPUT.findall(body):
                named = dict(_ATTR.findall(attrs))
                if "name" in named:
                    fields[named["name"]] = unescape(named.get("value", ""))
            for key in fields.keys() & values.keys():
                if not fields[key]:
                    fields[key] = values[key]
            if deny and fields.get("prompt") == "consent":
                abort = re.search(r'href="([^"]*/abort)"', page.text)
                assert abort is not None, "the consent page has no abort link"
                page = self.client.get(httpx.URL(str(page.url)).join(unescape(abort.group(1))))
                continue
            page = self.client.post(httpx.URL(str(page.url)).join(action), data=fields)
        raise AssertionError(f"too many forms; the last page: {page.text[:500]}")
