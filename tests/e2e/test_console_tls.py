"""The web console over TLS with access control on: a real node serving https with a closed access
mode, the page in headless Chromium asking for a token, then showing the chain once it has one, and
checking a notarised file's proof there (WebCrypto in an https page)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from node.client import Client, load_key

from tests.e2e.browser import chromium
from tests.e2e.nodeproc import ALLIANCE, DEADLINE_S, alliance, wait_for
from tests.e2e.tls_certs import Certs, make_certs

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

BASE_PORT = 30600  # one node: 30600..30602


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Certs, str, str]]:
    tmp = tmp_path_factory.mktemp("console-tls")
    certs = make_certs(tmp / "certs")
    net = tmp / "net"
    alliance("testnet", "--nodes", "1", "--out", str(net), "--base-port", str(BASE_PORT))
    home = net / "node0"
    for path in (certs.server_cert, certs.server_key):
        shutil.copy(path, home / path.name)
    token = alliance("token", "new", "--name", "console", "--roles", "read,submit,subscribe",
                     "--file", str(home / "tokens.toml")).stdout.strip()
    text = (home / "node.toml").read_text().replace("[rpc]\n", '[rpc]\ntls_cert = "server.pem"\n'
                                                    'tls_key = "server.key"\naccess = "closed"\n'
                                                    'tokens_file = "tokens.toml"\n')
    (home / "node.toml").write_text(text)
    url = f"https://127.0.0.1:{BASE_PORT}"
    with (home / "run.log").open("wb") as log:
        process = subprocess.Popen([*ALLIANCE, "run", "--home", str(home)], stdout=log, stderr=subprocess.STDOUT)
    try:
        client = Client(url, timeout_s=20, token=token, ca_file=certs.ca)
        wait_for(lambda: _status(client, process, home), "the node to answer over https")
        yield net, certs, url, token
    finally:
        process.terminate()
        process.wait(timeout=DEADLINE_S)


def _status(client: Client, process: subprocess.Popen[bytes], home: Path) -> Any:
    if process.poll() is not None:
        raise AssertionError(f"node exited: {(home / 'run.log').read_text()}")
    try:
        return client.status()
    except Exception:  # not up yet
        return None


def _text(driver: "WebDriver", element_id: str) -> str:
    return str(driver.execute_script("const e = document.getElementById(arguments[0]); return e ? e.innerText : ''",
                                     element_id))


def _by_id(driver: "WebDriver", element_id: str) -> Any:
    from selenium.webdriver.common.by import By
    found = driver.find_elements(By.ID, element_id)
    return found[0] if found else None


def test_the_console_over_https_asks_for_a_token_then_shows_and_verifies(
        node: tuple[Path, Certs, str, str], tmp_path: Path) -> None:
    net, certs, url, token = node
    client = Client(url, timeout_s=20, token=token, ca_file=certs.ca, key=load_key(net / "client.key"))
    document = tmp_path / "invoice.pdf"
    document.write_bytes(b"%PDF e-invoice over TLS")
    client.submit(load_key(net / "client.key"), "notary", "record",
                  {"digest": hashlib.sha256(document.read_bytes()).digest()})
    with chromium(ca_file=certs.ca) as driver:
        driver.get(f"{url}/#/overview")
        wait_for(lambda: "token" in driver.find_element("tag name", "main").text.lower(),
                 "the page to say it needs an access token")
        assert driver.execute_script("return window.isSecureContext && !!crypto.subtle")
        driver.execute_script("document.getElementById('settings').open = true")
        _by_id(driver, "token").send_keys("not-a-token-of-this-node")
        _by_id(driver, "token-form").submit()
        wait_for(lambda: "does not know this access token" in driver.find_element("tag name", "main").text,
                 "the page to say the token it was given is not known")
        _by_id(driver, "token").clear()
        _by_id(driver, "token").send_keys(token)
        _by_id(driver, "token-form").submit()
        height = str(client.status()["height"])
        wait_for(lambda: _text(driver, "ov-height") == height, "the overview's height, with the token")

        driver.get(f"{url}/#/evidence")
        driver.refresh()
        wait_for(lambda: _by_id(driver, "ev-file"), "the evidence page")
        _by_id(driver, "ev-genesis-file").send_keys(str(net / "genesis.toml"))
        wait_for(lambda: driver.execute_script("return document.getElementById('ev-genesis-text').value"),
                 "the genesis to be read")
        _by_id(driver, "ev-file").send_keys(str(document))
        wait_for(lambda: _by_id(driver, "ev-result").get_attribute("data-verdict"), "a verdict")
        assert _by_id(driver, "ev-result").get_attribute("data-verdict") == "verified", _text(driver, "ev-result")
