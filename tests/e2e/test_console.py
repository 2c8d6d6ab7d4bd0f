"""The web console: its static files served at GET / and /console/<file> (unit tests, no browser), and
its pages driven in headless Chromium against a 4-node testnet of real processes: the overview's
heights, evidence of a notarised file verified in the browser, a wrong genesis, an absent record and a
tampered proof refused, and a stalled consortium showing who is missing.

With ALLIANCE_SCREENSHOTS=DIR set, the browser tests save their screenshots there (docs/console)."""

from __future__ import annotations

import copy
import hashlib
import http.client
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

from node.api.console_files import PREFIX, ConsoleFiles, load_static
from node.client import compact_state_proof

from tests.e2e.browser import chromium
from tests.e2e.nodeproc import DEADLINE_S, NodeProcess, alliance, running, wait_for

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

BASE_PORT = 30200  # 30200..30239: four nodes, ten ports each
STATIC = Path(__file__).parents[2] / "node" / "console" / "static"
SCREENSHOTS = os.environ.get("ALLIANCE_SCREENSHOTS")


# ---- static serving, without a browser ------------------------------------------------------------

async def _get(files: ConsoleFiles, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError

    scope = {"type": "http", "method": method, "path": path, "headers": [(b"accept", b"text/html,*/*;q=0.8")]}
    assert files.serves(scope)
    await files(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, sent[1]["body"]


def test_the_package_holds_the_console_files() -> None:
    files = load_static()
    assert {"index.html", "app.js", "rpc.js", "dom.js", "evidence.js", "console.css"} <= set(files)
    assert files["index.html"] == (STATIC / "index.html").read_bytes()


async def test_files_are_served_with_their_type_and_a_strict_policy() -> None:
    files = ConsoleFiles(load_static())
    status, headers, body = await _get(files, "/")
    assert status == 200 and body == (STATIC / "index.html").read_bytes()
    assert headers["content-type"] == "text/html; charset=utf-8" and headers["cache-control"] == "no-cache"
    policy = headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self' ws: wss:" in policy and "unsafe" not in policy
    assert (await _get(files, PREFIX + "app.js"))[1]["content-type"] == "text/javascript; charset=utf-8"
    assert (await _get(files, PREFIX + "console.css"))[1]["content-type"] == "text/css; charset=utf-8"
    images = ConsoleFiles({"logo.svg": b"<svg/>", "shot.png": b"\x89PNG"})
    assert (await _get(images, PREFIX + "logo.svg"))[1]["content-type"] == "image/svg+xml"
    assert (await _get(images, PREFIX + "shot.png"))[1]["content-type"] == "image/png"
    status, headers, body = await _get(files, PREFIX + "app.js", "HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) == len(load_static()["app.js"])


@pytest.mark.parametrize("path", [
    "/console/../pyproject.toml", "/console/..", "/console//etc/passwd", "/console/static/app.js",
    "/console/../../node/config.py", "/console/.hidden.js", "/console/", "/console/nothing.js",
    "/console/app.js/", "/console/app.js\x00.png", "/console/__init__.py", "/console/C:\\x.js",
])
async def test_anything_but_a_file_of_the_directory_is_404(path: str) -> None:
    files = ConsoleFiles({**load_static(), "__init__.py": b"x"})
    status, headers, body = await _get(files, path)
    assert status == 404 and headers["content-type"] == "application/json" and b"not found" in body


def test_json_rpc_and_other_methods_are_not_the_console() -> None:
    assert not ConsoleFiles.serves({"method": "POST", "path": "/"})
    # GET / from a client that is no browser is refused as before (the client protocol's tests check it)
    assert not ConsoleFiles.serves({"method": "GET", "path": "/", "headers": []})
    assert not ConsoleFiles.serves({"method": "GET", "path": "/", "headers": [(b"accept", b"application/json")]})
    assert ConsoleFiles.serves({"method": "GET", "path": "/console/app.js", "headers": []})
    assert not ConsoleFiles.serves({"method": "PUT", "path": "/console/app.js"})
    assert not ConsoleFiles.serves({"method": "GET", "path": "/ws"})


# ---- in the browser -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[NodeProcess]]]:
    out = tmp_path_factory.mktemp("console") / "net"
    alliance("testnet", "--nodes", "4", "--out", str(out), "--base-port", str(BASE_PORT))
    with running(out, BASE_PORT, 4) as nodes:
        yield out, nodes


@pytest.fixture(scope="module")
def browser() -> Iterator["WebDriver"]:
    with chromium() as driver:
        yield driver


def _shot(driver: "WebDriver", name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SCREENSHOTS) / f"{name}.png"))


def _text(driver: "WebDriver", element_id: str) -> str:
    """The element's visible text, "" while it is absent (read in one step: the overview redraws itself)."""
    text = driver.execute_script("const e = document.getElementById(arguments[0]); return e ? e.innerText : ''",
                                 element_id)
    return str(text)


def _attribute(driver: "WebDriver", element_id: str, name: str) -> str:
    value = driver.execute_script("const e = document.getElementById(arguments[0]); "
                                  "return e ? (e.getAttribute(arguments[1]) ?? e[arguments[1]] ?? '') : ''",
                                  element_id, name)
    return str(value or "")


def _open(driver: "WebDriver", node: NodeProcess, page: str, ready_id: str) -> None:
    # A fresh document each time: a hash change alone would keep the page state of an earlier test, and
    # a refresh right after it could race the navigation still under way (Chrome: "aborted by navigation").
    driver.get("about:blank")
    driver.get(f"{node.rpc_url}/#/{page}")
    wait_for(lambda: _element(driver, ready_id), f"the {page} page")


def _element(driver: "WebDriver", element_id: str) -> Any:
    from selenium.webdriver.common.by import By
    found = driver.find_elements(By.ID, element_id)
    return found[0] if found else None


def _verdict(driver: "WebDriver", element_id: str) -> tuple[str, str]:
    """(verified | not-verified, the sentence) once the page has said it."""
    wait_for(lambda: _attribute(driver, element_id, "data-verdict"), f"a verdict in #{element_id}")
    return _attribute(driver, element_id, "data-verdict"), _text(driver, element_id)


def _check_file(driver: "WebDriver", node: NodeProcess, genesis: Path, document: Path) -> tuple[str, str]:
    _open(driver, node, "evidence", "ev-file")
    _element(driver, "ev-genesis-file").send_keys(str(genesis))
    wait_for(lambda: _attribute(driver, "ev-genesis-text", "value"), "the genesis to be read")
    _element(driver, "ev-file").send_keys(str(document))
    return _verdict(driver, "ev-result")


def _assert_verdict(verdict: tuple[str, str], ok: bool, words: str) -> None:
    assert verdict[0] == ("verified" if ok else "not-verified") and words in verdict[1], verdict


def test_the_node_serves_the_console_beside_json_rpc(net: tuple[Path, list[NodeProcess]]) -> None:
    _, nodes = net

    def get(path: str, accept: str = "*/*") -> tuple[int, str, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", nodes[0].rpc_port, timeout=DEADLINE_S)
        try:
            connection.request("GET", path, headers={"Accept": accept})
            reply = connection.getresponse()
            return reply.status, reply.getheader("content-security-policy") or "", reply.read()
        finally:
            connection.close()

    status, policy, body = get("/", "text/html")
    assert status == 200 and body == (STATIC / "index.html").read_bytes() and "default-src 'self'" in policy
    assert get("/console/app.js")[0] == 200
    for path in ("/console/../pyproject.toml", "/console/%2e%2e/pyproject.toml", "/console/..%2fpyproject.toml",
                 "/console/%2fetc%2fpasswd", "/console/missing.js"):
        assert get(path)[0] == 404, path
    assert get("/")[0] == 405  # not a browser: JSON-RPC is POST /
    assert nodes[0].client().status()["chain_id"]


def test_overview_shows_the_heights_the_node_reports(net: tuple[Path, list[NodeProcess]], browser: "WebDriver") -> None:
    out, nodes = net
    alliance("tx", "put", "invoice/1/status", "issued", "--rpc", nodes[0].rpc_url, "--key", str(out / "client.key"))
    _open(browser, nodes[0], "overview", "ov-height")
    wait_for(lambda: _text(browser, "ov-height") == str(nodes[0].client().status()["height"]), "the overview's height")
    status = nodes[0].client().status()
    assert _text(browser, "ov-chain") == status["chain_id"] and _text(browser, "ov-view") == str(status["view"])
    assert all(peer["name"] in browser.page_source for peer in status["peers"])
    before = int(_text(browser, "ov-height"))
    alliance("tx", "put", "invoice/2/status", "issued", "--rpc", nodes[0].rpc_url, "--key", str(out / "client.key"))
    wait_for(lambda: int(_text(browser, "ov-height") or 0) > before, "the overview to follow a new block live")
    _shot(browser, "overview")


def test_blocks_lead_to_their_transactions(net: tuple[Path, list[NodeProcess]], browser: "WebDriver") -> None:
    out, nodes = net
    put = json.loads(alliance("tx", "put", "invoice/4/status", "sent", "--rpc", nodes[0].rpc_url,
                              "--key", str(out / "client.key")).stdout)
    _open(browser, nodes[0], "blocks", "page")
    wait_for(lambda: f"#/block/{put['height']}" in browser.page_source, "the block of the put in the list")
    _open(browser, nodes[0], f"block/{put['height']}", "page")
    wait_for(lambda: put["tx_hash"] in _text(browser, "page"), "the block page to list the put")
    _open(browser, nodes[0], f"tx/{put['tx_hash']}", "page")
    wait_for(lambda: "committed" in _text(browser, "page"), "the transaction page")
    assert "invoice/4/status" in _text(browser, "page")
    assert f"nonce\n{put['tx']['nonce']}\n" in _text(browser, "page")  # 64 bits, not rounded to a double


def test_history_lists_what_touched_a_key(net: tuple[Path, list[NodeProcess]], browser: "WebDriver") -> None:
    out, nodes = net
    rpc, key = ["--rpc", nodes[0].rpc_url], ["--key", str(out / "client.key")]
    first = json.loads(alliance("tx", "put", "invoice/5/status", "issued", *rpc, *key).stdout)
    second = json.loads(alliance("tx", "put", "invoice/5/status", "paid", *rpc, *key).stdout)
    _open(browser, nodes[0], "history?family=kv&key=invoice/5/status", "hist-results")
    wait_for(lambda: _text(browser, "hist-results"), "the history page to answer")
    shown = _text(browser, "hist-results")
    assert shown.index(second["tx_hash"][:12]) < shown.index(first["tx_hash"][:12])  # newest first
    spaced = json.loads(alliance("tx", "put", " invoice/5/status ", "draft", *rpc, *key).stdout)
    _open(browser, nodes[0], "history?family=kv&key=%20invoice/5/status%20", "hist-results")
    wait_for(lambda: _text(browser, "hist-results"), "the history of the key with spaces to answer")
    shown = _text(browser, "hist-results")  # a kv key is asked for as given, spaces and all
    assert spaced["tx_hash"][:12] in shown and second["tx_hash"][:12] not in shown, shown


def test_a_notarised_file_is_verified_against_the_genesis(net: tuple[Path, list[NodeProcess]], browser: "WebDriver",
                                                          tmp_path: Path) -> None:
    out, nodes = net
    document = tmp_path / "invoice-42.pdf"
    document.write_bytes(b"%PDF-1.7 invoice 42 for the console")
    alliance("notarize", str(document), "--meta", "invoice 42", "--rpc", nodes[0].rpc_url, "--key", str(out / "client.key"))
    digest = hashlib.sha256(document.read_bytes()).hexdigest()
    verdict = _check_file(browser, nodes[0], out / "genesis.toml", document)
    _assert_verdict(verdict, True, "Verified: this file's SHA-256")
    assert digest in _text(browser, "ev-digest") and "invoice 42" in _text(browser, "ev-record")
    assert "genesis you supplied" in verdict[1]
    _shot(browser, "evidence-verified")

    other = tmp_path / "other"
    alliance("testnet", "--nodes", "4", "--out", str(other), "--base-port", str(BASE_PORT + 100))
    _assert_verdict(_check_file(browser, nodes[0], other / "genesis.toml", document), False, "NOT verified")
    _shot(browser, "evidence-not-verified")


def test_a_file_never_recorded_is_verified_absent(net: tuple[Path, list[NodeProcess]], browser: "WebDriver",
                                                  tmp_path: Path) -> None:
    out, nodes = net
    document = tmp_path / "never.txt"
    document.write_bytes(b"never recorded anywhere")
    _assert_verdict(_check_file(browser, nodes[1], out / "genesis.toml", document), True, "Verified absent at height")


def _flip(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


TAMPERINGS: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("value", lambda p: p.__setitem__("state_value", _flip(p["state_value"]))),
    ("records", lambda p: p.__setitem__("records", p["records"][:-2])),
    ("sibling", lambda p: p["siblings"].__setitem__(0, _flip(p["siblings"][0]))),
    ("header", lambda p: p["header"].__setitem__("time", p["header"]["time"] + 1)),
    ("signature", lambda p: p["commit"]["signatures"][0].__setitem__(
        "signature", _flip(p["commit"]["signatures"][0]["signature"]))),
    ("key", lambda p: p.__setitem__("key", "invoice/4/status")),
]


def test_a_proof_file_is_checked_and_every_tampered_one_refused(net: tuple[Path, list[NodeProcess]],
                                                                browser: "WebDriver", tmp_path: Path) -> None:
    out, nodes = net
    alliance("tx", "put", "invoice/3/status", "paid", "--rpc", nodes[0].rpc_url, "--key", str(out / "client.key"))
    proof = nodes[0].client().query("kv", "invoice/3/status", prove=True)
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(proof))
    _open(browser, nodes[0], "evidence", "pf-file")
    _element(browser, "ev-genesis-file").send_keys(str(out / "genesis.toml"))
    _element(browser, "pf-file").send_keys(str(path))  # the good proof, as a file
    wait_for(lambda: _attribute(browser, "pf-text", "value"), "the proof to be read")
    wait_for(lambda: _attribute(browser, "ev-genesis-text", "value"), "the genesis to be read")
    _element(browser, "pf-verify").click()
    _assert_verdict(_verdict(browser, "pf-result"), True, "Verified: kv")
    for field, tamper in TAMPERINGS:  # each pasted in its turn
        tampered = copy.deepcopy(proof)
        tamper(tampered)
        browser.execute_script("document.getElementById('pf-text').value = arguments[0];"
                               "delete document.getElementById('pf-result').dataset.verdict;", json.dumps(tampered))
        _element(browser, "pf-verify").click()
        verdict = _verdict(browser, "pf-result")
        assert verdict[0] == "not-verified", (field, verdict)
    data = compact_state_proof(proof, out / "genesis.toml")
    for name, content, verified in (("proof.bin", data, True), ("damaged.bin", data[:-1] + bytes([data[-1] ^ 1]), False)):
        (tmp_path / name).write_bytes(content)
        browser.execute_script("delete document.getElementById('pf-result').dataset.verdict;")
        _element(browser, "pf-file").send_keys(str(tmp_path / name))  # a compact proof, as a file
        wait_for(lambda: name in _attribute(browser, "pf-text", "value"), "the compact proof to be read")
        _element(browser, "pf-verify").click()
        verdict = _verdict(browser, "pf-result")
        assert verdict[0] == ("verified" if verified else "not-verified"), (name, verdict)
        if verified:
            _assert_verdict(verdict, True, "Verified: kv")


def test_the_overview_fits_a_phone_screen(net: tuple[Path, list[NodeProcess]], browser: "WebDriver") -> None:
    _, nodes = net
    browser.set_window_size(360, 800)
    try:
        _open(browser, nodes[0], "overview", "ov-height")
        width = browser.execute_script("return document.documentElement.clientWidth")
        assert browser.execute_script("return document.documentElement.scrollWidth") <= width
        _shot(browser, "overview-phone")
    finally:
        browser.set_window_size(1280, 900)


def test_a_stalled_consortium_shows_who_is_missing(net: tuple[Path, list[NodeProcess]], browser: "WebDriver") -> None:
    out, nodes = net
    for node in nodes[2:]:
        node.kill9()
    # A transaction to decide: an idle chain waits for transactions, not for votes.
    alliance("tx", "put", "stuck/1", "v", "--no-wait", "--rpc", nodes[0].rpc_url, "--key", str(out / "client.key"))
    _open(browser, nodes[0], "overview", "ov-height")

    def peers_down() -> bool:
        rows = [r for r in browser.page_source.split("<tr>") if "not connected" in r]
        return all(any(f">{node.home.name}<" in r for r in rows) for node in nodes[2:])

    wait_for(peers_down, "the overview to show node2 and node3 not connected", deadline_s=DEADLINE_S)
    wait_for(lambda: all(node.home.name in _text(browser, "waiting-for") for node in nodes[2:]),
             "the waiting_for sentence to name node2 and node3")
    _shot(browser, "stuck")
