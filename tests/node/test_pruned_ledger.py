"""Pruning: the store's batches and base, the ledger's answers below the base, the RPC's -32005 "pruned",
catch-up serving, the integrity checks from the base, and the pruning step's bounds."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from node.api.lookup import ChainLookup, build_proof
from node.api.rpc import RpcService
from node.chain.ledger import BlockPruned, Ledger
from node.disk.integrity import Fault, ReplayImpossible, check_store, verify_window
from node.ops.metrics import Metrics
from node.pipeline.pruner import PRUNE_BLOCKS_PER_COMMIT, Pruner
from node.txpool.admission import Admission
from node.txpool.mempool import Mempool
from storage.chain import ChainStore, PrunedBlock
from storage.kv import StorageError
from storage.leveldb import LevelDBStore
from storage.memory import MemoryStore
from node.chain.proof import verify_proof
from node.chain.tx import sign_tx, tx_hash_of
from tests.shell.chainkit import Consortium, build, consortium, grow
from tests.shell.membership_chain import change, commit, governed, pub
from tests.shell.membership_chain import grow as membership_grow


def _ledger(c: Consortium, blocks: int, kv: Any = None) -> Ledger:
    ledger = Ledger(ChainStore(kv if kv is not None else MemoryStore()), c.genesis)
    grow(c, ledger, blocks)
    return ledger


def _tx_of(ledger: Ledger, height: int) -> bytes:
    block = ledger.block(height)
    assert block is not None
    return tx_hash_of(block.txs[0])


def test_prune_moves_the_base_and_deletes_bodies_entries_and_index() -> None:
    c = consortium()
    ledger = _ledger(c, 10)
    old_tx, old_hash = _tx_of(ledger, 3), ledger.header(3).hash()
    assert ledger.prune(below=6, most=100) == 5
    store = ledger.store
    assert store.base() == ledger.base == 6
    for height in range(1, 6):
        assert store.load_block(height) is None and store.load_certificate(height) is None
        with pytest.raises(BlockPruned) as caught:
            ledger.block(height)
        assert caught.value.base == 6
    assert store.load_tx(old_tx) is None and store.height_of(old_hash) is None
    assert ledger.tx_entry(old_tx) is None
    assert ledger.block(6) is not None and ledger.tx_entry(_tx_of(ledger, 6)) is not None
    assert ChainStore(store.kv).base() == 6  # the base is stored, not only cached


def test_prune_is_bounded_per_step_and_never_reaches_the_tip() -> None:
    c = consortium()
    ledger = _ledger(c, 10)
    assert ledger.prune(below=100, most=3) == 3
    assert ledger.base == 4
    assert ledger.prune(below=100, most=100) == 6  # the tip (10) stays
    assert ledger.base == 10
    assert ledger.prune(below=100, most=100) == 0


def test_store_refuses_pruning_that_does_not_start_at_the_base() -> None:
    c = consortium()
    ledger = _ledger(c, 5)
    with pytest.raises(StorageError):
        ledger.store.prune([PrunedBlock(2, b"h" * 32, [], None)])
    with pytest.raises(StorageError):
        ledger.store.prune([PrunedBlock(1, b"h" * 32, [], None), PrunedBlock(3, b"h" * 32, [], None)])
    with pytest.raises(StorageError):  # the tip
        ledger.store.prune([PrunedBlock(h, b"h" * 32, [], None) for h in range(1, 6)])
    assert ledger.base == 1 and ledger.block(1) is not None


def test_a_kept_header_and_certificate_stay_below_the_base() -> None:
    c = consortium()
    ledger = _ledger(c, 6)
    header = ledger.header(2)
    ledger.store.prune([PrunedBlock(1, ledger.header(1).hash(), [], None),
                        PrunedBlock(2, header.hash(), [], header.encode())])
    assert ledger.header(2) == header
    assert ledger.certificate(2) is not None
    with pytest.raises(BlockPruned):
        ledger.header(1)
    with pytest.raises(BlockPruned):
        ledger.certificate(1)
    with pytest.raises(BlockPruned):
        ledger.block(2)


def test_leveldb_compaction_frees_the_pruned_blocks(tmp_path: Path) -> None:
    c = consortium()
    kv = LevelDBStore.open(tmp_path / "data")
    try:
        ledger = _ledger(c, 3, kv)
        for _ in range(30):  # random values: LevelDB compresses its tables
            candidate = build(c, ledger, [c.tx(f"{i}", os.urandom(2000)) for i in range(10)])
            ledger.commit(candidate.block, candidate.txs, candidate.execution, c.seal(candidate.block_hash))
        ledger.store.compact()
        before = _size(tmp_path / "data")
        ledger.prune(below=ledger.height, most=1000)
        ledger.store.compact()
        after = _size(tmp_path / "data")
        assert before > 500_000 and after < before / 4, (before, after)
        assert ledger.block(ledger.height) is not None
    finally:
        kv.close()


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


# ---- the RPC -------------------------------------------------------------------------------


async def _here(function: Any, *args: Any) -> Any:
    return function(*args)


def _rpc(ledger: Ledger, c: Consortium, archive: Path | None = None) -> RpcService:
    driver: Any = SimpleNamespace(ledger=ledger, transactions_pending=lambda: None)
    admission = Admission(c.genesis, ledger, Mempool(10), SimpleNamespace(), driver)  # type: ignore[arg-type]
    return RpcService(ledger, driver, admission, ChainLookup(ledger, admission), Metrics(), lambda: {},
                      on_admitted=lambda tx: None, on_store_damaged=_no_damage, run_blocking=_here, archive=archive)


def _no_damage(exc: Exception) -> None:
    raise AssertionError(f"reported as damage: {exc}")


def _call(service: RpcService, method: str, **params: Any) -> dict[str, Any]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    answer: dict[str, Any] = trio.run(service.handle, body)
    return answer


def test_rpc_answers_pruned_for_old_blocks_and_txs_and_serves_recent_ones() -> None:
    c = consortium()
    ledger = _ledger(c, 10)
    old_tx, new_tx = _tx_of(ledger, 2).hex(), _tx_of(ledger, 9).hex()
    service = _rpc(ledger, c)
    assert _call(service, "get_tx", tx_hash=old_tx)["result"]["status"] == "committed"
    ledger.prune(below=5, most=100)
    for method, params in (("get_block", {"height": 2}), ("get_tx", {"tx_hash": old_tx}),
                           ("get_proof", {"tx_hash": old_tx})):
        error = _call(service, method, **params)["error"]
        assert error["code"] == -32005, (method, error)
        assert error["data"]["reason"] == "pruned" and error["data"]["base"] == 5, (method, error)
    assert _call(service, "get_tx", tx_hash=old_tx)["error"]["data"]["status"] == "unknown"
    assert _call(service, "get_block", height=5)["result"]["height"] == 5
    assert _call(service, "get_tx", tx_hash=new_tx)["result"]["status"] == "committed"
    assert _call(service, "get_proof", tx_hash=new_tx)["result"]["tx_hash"] == new_tx


def test_an_unpruned_node_still_answers_unknown() -> None:
    c = consortium()
    service = _rpc(_ledger(c, 3), c)
    assert _call(service, "get_tx", tx_hash="00" * 32)["result"]["status"] == "unknown"
    assert _call(service, "get_proof", tx_hash="00" * 32)["error"]["data"] == {"status": "unknown"}


def test_a_proof_after_a_validator_change_verifies_with_the_changing_block_pruned() -> None:
    g = governed()
    ledger = g.ledger()
    active = change(g, ledger, {"kind": "add_validator", "name": "v4", "pubkey": pub(g.newcomer()),
                                         "address": "127.0.0.1:1"})
    membership_grow(g, ledger, 4)
    tx = sign_tx(g.admin, g.chain_id, "gov", "propose",
                 {"change": {"kind": "add_client", "name": "c", "pubkey": pub(g.newcomer())}}, 10**6)
    commit(g, ledger, [tx])
    membership_grow(g, ledger, 2)
    before = build_proof(ledger, tx.hash)
    assert ledger.prune(below=active + 2, most=100) == active + 1
    assert ledger.header(active - 1).height == active - 1 and ledger.certificate(active - 1) is not None
    with pytest.raises(BlockPruned):
        ledger.header(active - 2)  # no activation follows it: nothing of it kept
    proof = build_proof(ledger, tx.hash)
    assert proof == before
    verified = verify_proof(json.loads(json.dumps(proof)), g.chain_id, g.genesis.validator_keys)
    assert verified.validator_changes == 1


# ---- catch-up serving and the integrity checks -------------------------------------------------


def test_catch_up_answers_nothing_for_pruned_heights_and_serves_retained_ones() -> None:
    from node.p2p.sync import Syncer
    from node.p2p.wire import Blocks, GetBlocks, decode

    c = consortium()
    ledger = _ledger(c, 10)
    ledger.prune(below=5, most=100)
    sent: list[Any] = []
    outbox: Any = SimpleNamespace(send=lambda peer, frame: sent.append(decode(frame)))
    syncer = Syncer(ledger, outbox, SimpleNamespace(), SimpleNamespace(), on_store_damaged=_no_damage)  # type: ignore[arg-type]
    syncer.on_get_blocks(b"p" * 32, GetBlocks(2, 64))
    syncer.on_get_blocks(b"p" * 32, GetBlocks(5, 64))
    assert isinstance(sent[0], Blocks) and sent[0].blocks == ()
    assert len(sent[1].blocks) == 6


def test_integrity_checks_start_at_the_base() -> None:
    c = consortium()
    ledger = _ledger(c, 10)
    ledger.prune(below=5, most=100)
    verify_window(ledger.store, c.genesis)
    assert check_store(ledger.store, c.genesis, replay=False) == (6, None)
    with pytest.raises(ReplayImpossible):
        check_store(ledger.store, c.genesis, replay=True)
    ledger.store.kv.delete(b"b/" + (7).to_bytes(8, "big"))
    checked, fault = check_store(ledger.store, c.genesis, replay=False)
    assert checked == 2 and isinstance(fault, Fault) and fault.height == 7


# ---- the pruning step --------------------------------------------------------------------------


def test_the_pruner_keeps_the_retained_window_and_prunes_a_bounded_step() -> None:
    c = consortium()
    ledger = _ledger(c, PRUNE_BLOCKS_PER_COMMIT + 200)
    pruner = Pruner(ledger, retain_blocks=128, archive=None)
    assert pruner.step() == PRUNE_BLOCKS_PER_COMMIT
    while pruner.step():
        pass
    assert ledger.base == ledger.height - 128 + 1
    assert ledger.block(ledger.base) is not None


# ---- the setting -------------------------------------------------------------------------------


@pytest.mark.parametrize("retain, accepted", [(0, True), (127, False), (1, False), (128, True), (10**6, True)])
def test_retain_blocks_is_0_or_at_least_the_minimum(tmp_path: Path, retain: int, accepted: bool) -> None:
    from node.config import RETAIN_BLOCKS_MIN, load_config
    from node.errors import ConfigError

    (tmp_path / "node.toml").write_text(f"[storage]\nretain_blocks = {retain}\n")
    if accepted:
        assert load_config(tmp_path).retain_blocks == retain
    else:
        with pytest.raises(ConfigError, match=f"at least {RETAIN_BLOCKS_MIN}"):
            load_config(tmp_path)


def test_the_minimum_is_twice_what_catch_up_fetches() -> None:
    from node.config import RETAIN_BLOCKS_MIN
    from node.p2p.sync import BLOCKS_PER_REQUEST

    assert RETAIN_BLOCKS_MIN == 2 * BLOCKS_PER_REQUEST


def test_with_an_archive_blocks_are_archived_before_they_are_pruned_and_proofs_served_from_it(tmp_path: Path) -> None:
    from node.disk.archive import load_manifest
    from node.disk.archive_check import verify_archive

    c = consortium()
    ledger = _ledger(c, 300)
    old_tx = _tx_of(ledger, 3)
    archive = tmp_path / "archive"
    pruner = Pruner(ledger, retain_blocks=128, archive=archive)
    while pruner.step():
        pass
    manifest = load_manifest(archive)
    assert manifest is not None and manifest.last >= ledger.base - 1
    assert ledger.base == 300 - 128 + 1
    assert verify_archive(archive, c.genesis) == (manifest.last, None)
    service = _rpc(ledger, c, archive)
    proof = _call(service, "get_proof", tx_hash=old_tx.hex())["result"]
    verified = verify_proof(proof, c.chain_id, c.genesis.validator_keys)
    assert verified.height == 3
    assert _call(service, "get_tx", tx_hash=old_tx.hex())["error"]["data"]["reason"] == "pruned"
    assert _call(service, "get_proof", tx_hash="11" * 32)["error"]["data"]["reason"] == "pruned"


def test_an_archive_that_cannot_be_written_stops_pruning(tmp_path: Path) -> None:
    c = consortium()
    ledger = _ledger(c, 200)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert Pruner(ledger, retain_blocks=128, archive=blocker / "archive").step() == 0
    assert ledger.base == 1
