"""The commit pipeline on its own: synchronous calls over a MemoryStore, no trio, no clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import node.pipeline.commit

from consensus.actions import CommitBlock, ValidateBlock
from node.chain.block import encode_certificate
from node.chain.candidate import BlockInvalid, Candidate
from node.chain.ledger import Ledger
from node.chain.proposal import proposal_body
from node.chain.tx import Transaction
from node.pipeline.commit import HELD_COMMITTED_BLOCKS, AlreadyStored, CommitPipeline, Committed, Deferred
from node.txpool.mempool import Mempool
from tests.shell.chainkit import Consortium, build, consortium, grow

NOW_MS = 1_000


@pytest.fixture
def c() -> Consortium:
    return consortium(validators=4, chain_id="pipeline-test")


def _pipeline(c: Consortium, index: int = 0, ledger: Ledger | None = None, txs_max: int = 100) -> CommitPipeline:
    return CommitPipeline(ledger or c.ledger(), Mempool(txs_max), c.validators[index], block_txs_max=3)


def _pooled(pipeline: CommitPipeline, txs: list[Transaction]) -> None:
    for tx in txs:
        pipeline.pool.add(tx)


def _built(c: Consortium, pipeline: CommitPipeline, at_s: float = 0.0) -> Candidate:
    candidate = pipeline.build(pipeline.ledger.height + 1, pipeline.block_txs(), NOW_MS)
    assert candidate is not None
    pipeline.remember(candidate, at_s)
    return candidate


def _commit_action(c: Consortium, candidate: Candidate, body: bytes | None = None) -> CommitBlock:
    height = candidate.block.header.height
    return CommitBlock(height, body or candidate.block.encode(), candidate.block_hash, c.seal(candidate.block_hash))


def test_a_built_block_is_validated_by_another_validator_and_committed_by_both(c: Consortium) -> None:
    txs = [c.tx(f"k{i}") for i in range(5)]
    proposer, validator = _pipeline(c, 0), _pipeline(c, 1)
    _pooled(proposer, txs)
    candidate = _built(c, proposer, at_s=10.0)
    assert candidate.txs == txs[:3]  # block_txs_max, oldest first

    body = proposal_body(candidate, inline=lambda tx_hash: True)
    assert validator.missing_txs(body) == []
    action = ValidateBlock(1, 0, body, candidate.block_hash)
    checked = validator.validate(action, frozenset([c.validators[0]]), {}, NOW_MS)
    assert checked.block == candidate.block and checked.txs == txs[:3]
    validator.validated(checked, at_s=11.0)
    assert [tx.hash for tx in validator.pool.oldest(10)] == [tx.hash for tx in txs[:3]]  # kept: no second check

    for pipeline, started in ((proposer, 10.0), (validator, 11.0)):
        commit = _commit_action(c, candidate, body)
        assert pipeline.missing_for_commit(commit) == []
        outcome = pipeline.commit(commit, {})
        assert isinstance(outcome, Committed) and outcome.tx_hashes == [tx.hash for tx in txs[:3]]
        assert pipeline.settle(outcome) == started
        assert pipeline.ledger.height == 1 and pipeline.ledger.last_hash == candidate.block_hash
        assert [pipeline.held_tx(tx.hash) for tx in txs[:3]] == txs[:3]  # held for peers' fetches
    assert [tx.hash for tx in proposer.pool.oldest(10)] == [tx.hash for tx in txs[3:]]
    assert len(validator.pool) == 0


def test_a_proposal_that_does_not_check_is_refused_with_its_reason(c: Consortium) -> None:
    proposer, validator = _pipeline(c, 0), _pipeline(c, 1)
    _pooled(proposer, [c.tx("a")])
    candidate = _built(c, proposer)
    action = ValidateBlock(1, 0, candidate.block.encode(), candidate.block_hash)
    with pytest.raises(BlockInvalid, match="proposer is not a proposer"):
        validator.validate(action, frozenset([c.validators[2]]), {}, NOW_MS)
    with pytest.raises(BlockInvalid, match="not available"):
        by_hash = proposal_body(candidate, inline=lambda tx_hash: False)
        validator.validate(ValidateBlock(1, 0, by_hash, candidate.block_hash), frozenset([c.validators[0]]), {}, NOW_MS)


def test_building_for_a_height_already_committed_gives_nothing(c: Consortium) -> None:
    pipeline = _pipeline(c)
    grow(c, pipeline.ledger, 1)
    assert pipeline.build(1, [c.tx("late")], NOW_MS) is None


def test_a_block_committed_without_validation_is_executed_from_held_and_fetched_transactions(c: Consortium) -> None:
    txs = [c.tx(f"u{i}") for i in range(3)]
    candidate = build(c, c.ledger(), txs)
    body = proposal_body(candidate, inline=lambda tx_hash: False)
    pipeline = _pipeline(c, 2)
    _pooled(pipeline, txs[:1])
    action = _commit_action(c, candidate, body)
    assert pipeline.missing_for_commit(action) == [tx.hash for tx in txs[1:]]

    deferred = pipeline.commit(action, {txs[1].hash: txs[1]})
    assert isinstance(deferred, Deferred) and txs[2].hash.hex() in deferred.reason
    assert pipeline.ledger.height == 0

    outcome = pipeline.commit(action, {tx.hash: tx for tx in txs[1:]})
    assert isinstance(outcome, Committed)
    assert pipeline.settle(outcome) is None  # never seen proposed
    assert pipeline.ledger.block(1) == candidate.block and len(pipeline.pool) == 0


def test_a_decided_block_that_is_not_the_next_or_not_its_hash_is_deferred_to_catch_up(c: Consortium) -> None:
    source = c.ledger()
    first = build(c, source, [c.tx("d1")])
    source.commit(first.block, first.txs, first.execution, c.seal(first.block_hash))
    second = build(c, source, [c.tx("d2")])
    pipeline = _pipeline(c, 2)
    ahead = pipeline.commit(_commit_action(c, second), {})  # height 2 on a ledger at 0
    assert isinstance(ahead, Deferred) and "does not extend our chain" in ahead.reason
    other = build(c, c.ledger(), [c.tx("d3")])  # a faulty proposer's other block, under the decided hash
    swapped = CommitBlock(1, other.block.encode(), first.block_hash, c.seal(first.block_hash))
    deferred = pipeline.commit(swapped, {})
    assert isinstance(deferred, Deferred) and "hash does not match" in deferred.reason
    assert pipeline.ledger.height == 0
    assert isinstance(pipeline.commit(_commit_action(c, first), {}), Committed)


def test_a_synced_block_is_checked_against_its_certificate_and_committed(c: Consortium) -> None:
    source = c.ledger()
    grow(c, source, 2)
    pipeline = _pipeline(c, 3)
    raw_block, raw_certificate = source.store.load_block(1), source.store.load_certificate(1)
    assert raw_block is not None and raw_certificate is not None
    outcome = pipeline.apply_synced(raw_block, raw_certificate)
    assert isinstance(outcome, Committed)
    pipeline.settle(outcome)
    assert pipeline.ledger.last_hash == source.block(1).header.hash()  # type: ignore[union-attr]
    assert pipeline.apply_synced(raw_block, raw_certificate) is None  # stored already

    raw_2 = source.store.load_block(2)
    assert raw_2 is not None
    with pytest.raises(BlockInvalid, match="no valid commit certificate"):
        pipeline.apply_synced(raw_2, encode_certificate(c.seal(bytes(32))))
    assert pipeline.ledger.height == 1


def test_a_decided_height_stored_already_is_checked_for_a_fork(c: Consortium) -> None:
    pipeline = _pipeline(c)
    grow(c, pipeline.ledger, 1)
    stored = pipeline.ledger.block(1)
    assert stored is not None
    same = CommitBlock(1, stored.encode(), stored.header.hash(), ())
    assert pipeline.missing_for_commit(same) == []
    assert pipeline.commit(same, {}) == AlreadyStored(forked=False)

    other = build(c, c.ledger(), [c.tx("elsewhere")])
    assert pipeline.commit(_commit_action(c, other), {}) == AlreadyStored(forked=True)
    assert pipeline.ledger.height == 1 and pipeline.ledger.block(1) == stored


def test_a_commit_forgets_the_candidates_it_decides_and_holds_the_last_blocks_transactions(c: Consortium) -> None:
    pipeline = _pipeline(c)
    rival = build(c, c.ledger(), [c.tx("rival")])
    pipeline.remember(rival, at_s=1.0)
    committed: list[list[Transaction]] = []
    for height in range(1, HELD_COMMITTED_BLOCKS + 2):
        txs = [c.tx(f"h{height}")]
        _pooled(pipeline, txs)
        outcome = pipeline.commit(_commit_action(c, _built(c, pipeline)), {})
        assert isinstance(outcome, Committed)
        pipeline.settle(outcome)
        committed.append(txs)
    assert pipeline.held_tx(committed[0][0].hash) is None  # out of the held window
    assert all(pipeline.held_tx(txs[0].hash) is not None for txs in committed[1:])
    # The rival block 1 is forgotten: consensus deciding it now finds height 1 stored, not a candidate.
    assert pipeline.missing_for_commit(_commit_action(c, rival)) == []
    assert pipeline.commit(_commit_action(c, rival), {}) == AlreadyStored(forked=True)


def test_the_pipeline_does_no_io_and_reads_no_clock() -> None:
    tree = ast.parse(Path(node.pipeline.commit.__file__).read_text())
    imported = {alias.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"trio", "time", "random", "os", "socket", "plyvel", "prometheus_client"}
