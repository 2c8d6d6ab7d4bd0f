"""The synchronous Client against a real `alliance run` validator."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.client import (
    Client, DuplicateTx, InvalidInput, NodeUnreachable, NotAuthorised, NotFound, RpcError, TxRefused,
    build_tx, generate_key, load_key, public_key_hex,
)
from tests.client.conftest import Chain
from tests.e2e.nodeproc import free_base_port, wait_for


@pytest.fixture
def client(chain: Chain) -> Iterator[Client]:
    with Client(chain.url, key=load_key(chain.key_path)) as c:
        yield c


def test_notarize_file_in_three_lines(chain: Chain, tmp_path: Path) -> None:
    document = tmp_path / "invoice.pdf"
    document.write_bytes(b"%PDF- invoice 42")
    client = Client(chain.url, key=load_key(chain.key_path))
    receipt = client.notarize_file(document, meta="invoice 42")

    assert receipt.ok and receipt.height is not None and receipt.tx is not None
    assert receipt.tx.args == {"digest": hashlib.sha256(document.read_bytes()).hexdigest(), "meta": "invoice 42"}
    record = client.notary_lookup_file(document)
    assert record is not None
    assert (record.recorder, record.height, record.tx_hash, record.meta) == (
        public_key_hex(load_key(chain.key_path)), receipt.height, receipt.tx_hash, "invoice 42")
    again = client.notarize_file(document)
    assert again.committed and again.code == 4 and not again.ok  # digest already recorded
    client.close()


def test_kv_put_get_delete(client: Client) -> None:
    put = client.kv_put("colour", "blue")
    entry = client.kv_get("colour")
    assert entry is not None and put.ok
    assert (entry.value, entry.owner, entry.height) == (b"blue", public_key_hex(client.key), put.height)
    assert client.kv_delete("colour").ok
    assert client.kv_get("colour") is None
    assert client.kv_delete("colour").code == 3  # no such key: committed, refused in execution


def test_status_block_and_tx_are_typed(client: Client) -> None:
    committed = client.kv_put("typed", b"\x00\x01")
    status = client.get_status()
    assert status.height >= committed.height and status.node_pubkey in status.validators
    assert client.get_tx(committed.tx_hash) == committed
    block = client.get_block(committed.height)
    assert block.txs[committed.index] == committed.tx_hash
    assert block.commit.block_hash == block.hash and block.commit.signatures[0].validator == status.node_pubkey
    assert client.get_block("latest").height >= block.height


def test_send_without_waiting_is_pending_then_commits(client: Client) -> None:
    tx = client.sign("kv", "put", {"key": "later", "value": b"v"})
    accepted = client.send(tx, wait=False)
    assert (accepted.tx_hash, accepted.status, accepted.height) == (tx.hash.hex(), "pending", None)
    assert wait_for(lambda: client.get_tx(tx.hash).committed, "the transaction to commit")
    with pytest.raises(DuplicateTx) as duplicate:
        client.send(tx)
    assert duplicate.value.code == -32003


def test_batch_gives_each_transaction_its_result_or_typed_error(chain: Chain, client: Client) -> None:
    chain_id = client.get_status().chain_id
    good = [client.sign("kv", "put", {"key": f"batch-{i}", "value": b"b"}) for i in range(3)]
    stranger = build_tx(generate_key(), chain_id, "kv", "put", {"key": "x", "value": b""})
    foreign = build_tx(client.key, chain_id + "-other", "kv", "put", {"key": "x", "value": b""})
    results = client.send_batch([*good, stranger, foreign], wait=True)

    assert [r.tx_hash for r in results[:3] if not isinstance(r, RpcError) and r.ok] == [t.hash.hex() for t in good]
    assert isinstance(results[3], NotAuthorised)
    assert isinstance(results[4], TxRefused) and results[4].reason == "wrong_chain_id"
    again = client.send_batch(good[:1])
    assert isinstance(again[0], DuplicateTx)


def test_typed_errors_and_refused_inputs(chain: Chain, client: Client) -> None:
    with pytest.raises(NotFound):
        client.get_block(10**9)
    assert client.get_tx("ab" * 32).status == "unknown"
    for bad in ("ab", "zz" * 32, b"short"):
        with pytest.raises(InvalidInput):
            client.get_tx(bad)
    with pytest.raises(InvalidInput):
        client.get_block(0)
    with pytest.raises(InvalidInput, match="no key"):
        Client(chain.url).kv_put("k", "v")
    with pytest.raises(InvalidInput, match="cannot read"):
        client.notarize_file("/nonexistent/file")


def test_unreachable_node() -> None:
    with Client(f"http://127.0.0.1:{free_base_port()}", timeout_s=2) as client:
        with pytest.raises(NodeUnreachable):
            client.get_status()


def test_raw_layer_keeps_answering_json(client: Client) -> None:
    status = client.status()
    assert status == client.call("status") and status["chain_id"] == client.get_status().chain_id
    ok, missing = client.batch([("status", {}), ("get_block", {"height": 10**9})])
    assert ok["chain_id"] == status["chain_id"] and isinstance(missing, NotFound) and missing.code == -32005
    assert client.submit(client.key, "kv", "put", {"key": "raw", "value": b"r"})["status"] == "committed"
    assert client.query("kv", "raw")["value"] == "72"
