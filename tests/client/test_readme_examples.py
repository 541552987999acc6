"""client/README.md's examples: the three driver examples and the WebSocket login run against a real daemon.

The HTTP examples talk to real exchanges, which CI cannot reach: they are compiled only.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..daemon_process import DaemonProcess

README = Path(__file__).parents[2] / "client" / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
DRIVER_EXAMPLES = [block for block in BLOCKS if "signed = " in block and 'vault.token("deribit", min_ttl=60)' in block]


def test_the_readme_has_one_example_per_driver() -> None:
    assert [("AsyncClient" in b, "TrioClient" in b) for b in DRIVER_EXAMPLES] == [
        (False, False),
        (True, False),
        (False, True),
    ]


@pytest.mark.parametrize("example", DRIVER_EXAMPLES, ids=["sync", "asyncio", "trio"])
def test_a_driver_example_runs_against_a_real_daemon(daemon: DaemonProcess, example: str) -> None:
    daemon.start()
    daemon.ready()
    daemon.ctl("add", "deribit", "--kind", "static", *daemon.pw(), stdin="fake-token-readme\n")
    hmac = {"scheme": "binance-hmac", "api_key": "fake-key", "secret": "fake-secret"}
    daemon.ctl("add", "binance", "--kind", "sign", *daemon.pw(), stdin=json.dumps(hmac))
    check = "\nassert token.value == 'fake-token-readme' and '&signature=' in signed.url\nprint('ok')\n"
    if "async def main" in example:  # check inside main, where the names live
        example = example.replace("\n\n\nasyncio.run(main())", "").replace("\n\n\ntrio.run(main)", "")
        check = (
            check.replace("\n", "\n        ")
            + "\n"
            + ("asyncio.run(main())" if "asyncio" in example else "trio.run(main)")
        )
    env = {**daemon.env, "VAULTD_SOCKET": str(daemon.socket_path)}
    proc = subprocess.run([sys.executable, "-c", example + check], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


WS_LOGIN = [block for block in BLOCKS if 'vault.sign("okx-ws", "GET", private)' in block]


def test_the_websocket_login_example_builds_okx_login_message(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.ready()
    okx = {"scheme": "okx-ws-login", "api_key": "fake-key", "secret": "fake-secret", "passphrase": "fake-pp"}
    daemon.ctl("add", "okx-ws", "--kind", "sign", *daemon.pw(), stdin=json.dumps(okx))
    check = (
        "\nsent = json.loads(login)\nassert sent['op'] == 'login' and signed.headers == {} and signed.body == b''"
        "\nassert list(sent['args'][0]) == ['apiKey', 'passphrase', 'timestamp', 'sign']"
        "\nassert sent['args'][0]['passphrase'] == 'fake-pp' and 'fake-pp' not in repr(signed)\nprint('ok')\n"
    )
    env = {**daemon.env, "VAULTD_SOCKET": str(daemon.socket_path)}
    [example] = WS_LOGIN
    proc = subprocess.run([sys.executable, "-c", example + check], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_every_other_example_compiles() -> None:
    for block in BLOCKS:
        if block in DRIVER_EXAMPLES or block in WS_LOGIN:
            continue
        code = block
        if "async def" not in block and re.search(r"\b(await|async with|async for)\b", block):
            code = "async def _():\n" + "".join(f"    {line}\n" for line in block.splitlines())  # a fragment
        compile(code, "client/README.md", "exec")
