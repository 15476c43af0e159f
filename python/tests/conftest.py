"""A real `tenebra serve` on a free port, a tenant, and a key set for the tests.

Needs TENEBRA_BIN (the `tenebra` binary; .ci/run sets it). Keys: the Rust tests' cached
set under TENEBRA_TEST_KEYS when there is one, else a new one.
"""

import os
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

import tenebra


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tenebra_bin() -> str:
    path = os.environ.get("TENEBRA_BIN")
    if not path:
        pytest.fail("set TENEBRA_BIN to the tenebra binary (cargo build --release)")
    return path


@pytest.fixture(scope="session")
def server(tenebra_bin):
    """(url, admin API key) of a fresh embedded server."""
    data = tempfile.mkdtemp(prefix="tenebra-py-")
    out = subprocess.run(
        [tenebra_bin, "admin", "tenants", "create", "py", "--data-dir", data],
        check=True, capture_output=True, text=True,
    )
    token = out.stdout.strip().splitlines()[-1]
    port = _free_port()
    proc = subprocess.Popen(
        [tenebra_bin, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/readyz", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("tenebra serve did not start")
    yield url, token
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def keys():
    cached = os.environ.get("TENEBRA_TEST_KEYS")
    if cached and os.path.exists(os.path.join(cached, "test-keys", "keyset.json")):
        return tenebra.Keys.load(os.path.join(cached, "test-keys"))
    return tenebra.Keys.generate(tempfile.mkdtemp(prefix="tenebra-keys-"))


@pytest.fixture(scope="session")
def client(server, keys):
    url, token = server
    c = tenebra.Client(url, token)
    seen = []
    ks = c.upload_key_set(keys, progress=lambda sent, total: seen.append((sent, total)))
    assert ks["fingerprint"] == keys.id
    assert seen and seen[-1][0] == seen[-1][1], "progress reaches the total"
    return c
