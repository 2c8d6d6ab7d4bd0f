"""The trio AsyncClient against a real `alliance run` validator."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from node.client import (
    AsyncClient, DuplicateTx, InvalidInput, NodeUnreachable, NotAuthorised, NotFound, RpcError,
    build_tx, generate_key, load_key, public_key_hex,
)
from tests.client.conftest import Chain
from tests.e2e.nodeproc import free_base_port


async def test_notarize_file_in_three_lines(chain: Chain, tmp_path: Path) -> None:
    document = tmp_path / "contract.txt"
    document.write_text("signed by both parties")
    async with AsyncClient(chain.url, key=load_key(chain.key_path)) as client:
        receipt = await client.notarize_file(document)
        record = await client.notary_lookup_file(document)
    assert receipt.ok and record is not None
    assert (record.recorder, record.tx_hash, record.height) == (
        public_key_hex(load_key(chain.key_path)), receipt.tx_hash, receipt.height)


async def test_kv_and_typed_queries(chain: Chain) -> None:
    async with AsyncClient(chain.url, key=load_key(chain.key_path)) as client:
        put = await client.kv_put("async-key", b"\xff")
        entry = await client.kv_get("async-key")
        assert entry is not None and (entry.value, entry.height) == (b"\xff", put.height)
        assert await client.get_tx(put.tx_hash) == put
        block = await client.get_block(put.height)
        assert block.txs[put.index] == put.tx_hash
        assert (await client.get_status()).height >= block.height
        assert (await client.kv_delete("async-key")).ok
        assert await client.kv_get("async-key") is None
        with pytest.raises(NotFound):
            await client.get_block(10**9)
        with pytest.raises(InvalidInput):
            await client.notary_lookup("not-a-digest")


async def test_concurrent_submissions_and_batch(chain: Chain) -> None:
    async with AsyncClient(chain.url, key=load_key(chain.key_path)) as client:
        receipts = []

        async def put(i: int) -> None:
            receipts.append(await client.kv_put(f"concurrent-{i}", str(i)))

        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(put, i)
        assert len(receipts) == 5 and all(r.ok for r in receipts)

        tx = await client.sign("kv", "put", {"key": "async-batch", "value": b"1"})
        stranger = build_tx(generate_key(), tx.chain_id, "kv", "put", {"key": "x", "value": b""})
        accepted, refused = await client.send_batch([tx, stranger])
        assert not isinstance(accepted, RpcError) and accepted.status == "pending"
        assert isinstance(refused, NotAuthorised)
        with pytest.raises(DuplicateTx):
            await client.send(tx)


async def test_unreachable_node() -> None:
    async with AsyncClient(f"http://127.0.0.1:{free_base_port()}", timeout_s=2) as client:
        with pytest.raises(NodeUnreachable):
            await client.get_status()
