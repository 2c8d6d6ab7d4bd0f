"""Record history: which transactions touch a record, the index in the block's batch, and paging."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from node.chain.execution import Receipt, kv_key, notary_key
from node.chain.history import HistoryEntry, block_history, decode_entry, page, subject_of, touched
from node.chain.tx import Transaction
from storage.chain import BlockWrite, ChainStore
from storage.leveldb import LevelDBStore


def _tx(family: str, op: str, args: dict[str, object], n: int = 0) -> Transaction:
    return Transaction("c", bytes([n]) * 32, n, family, op, args, b"s" * 64, b"raw", bytes([n + 1]) * 32)


def test_what_a_transaction_touches() -> None:
    assert touched(_tx("kv", "put", {"key": "a", "value": b"v"})) == kv_key("a")
    assert touched(_tx("kv", "delete", {"key": "a"})) == kv_key("a")
    assert touched(_tx("notary", "record", {"digest": b"d" * 32})) == notary_key(b"d" * 32)
    for family, op, args in [("kv", "put", {"key": ""}), ("kv", "put", {"key": "x" * 257}), ("kv", "put", {"key": 5}),
                             ("kv", "put", {"key": "\ud800"}), ("notary", "record", {"digest": b"d" * 31}),
                             ("kv", "get", {"key": "a"}), ("gov", "propose", {"key": "a"})]:
        assert touched(_tx(family, op, args)) is None, (family, op, args)


def _write(chain: ChainStore, height: int, txs: list[Transaction], codes: list[int]) -> None:
    receipts = [Receipt(code, "") for code in codes]
    chain.write_block(BlockWrite(height, bytes([height]) * 32, b"block", b"cert", [], {}, {},
                                 block_history(txs, receipts)))


def test_the_index_is_written_with_the_block_and_read_newest_first(tmp_path: Path) -> None:
    kv = LevelDBStore.open(tmp_path / "db")
    chain = ChainStore(kv)
    put_a, put_b = _tx("kv", "put", {"key": "a"}, 1), _tx("kv", "put", {"key": "b"}, 2)
    _write(chain, 1, [put_a, put_b, _tx("kv", "delete", {"key": "a"}, 3)], [0, 0, 0])
    _write(chain, 2, [], [])
    _write(chain, 3, [_tx("kv", "put", {"key": "a"}, 4)], [2])
    a = [decode_entry(*row) for row in chain.history(subject_of(kv_key("a")))]
    assert [(e.height, e.index, e.op, e.code) for e in a] == [(3, 0, "put", 2), (1, 2, "delete", 0), (1, 0, "put", 0)]
    assert a[2].tx_hash == put_a.hash and a[2].sender == put_a.sender
    assert [e[0] for e in chain.history(subject_of(kv_key("a")), before_height=3)] == [1, 1]
    assert list(chain.history(subject_of(kv_key("a")), before_height=1)) == []
    assert [e[1] for e in chain.history(subject_of(kv_key("b")))] == [1]
    kv.close()
    reopened = ChainStore(LevelDBStore.open(tmp_path / "db"))
    assert [e[:2] for e in reopened.history(subject_of(kv_key("a")))] == [(3, 0), (1, 2), (1, 0)]


def _entries(heights: list[int]) -> list[HistoryEntry]:
    """Newest first: heights descending, indexes descending within a height."""
    out = []
    for height in sorted(set(heights), reverse=True):
        for index in reversed(range(heights.count(height))):
            out.append(HistoryEntry(height, index, b"h" * 32, b"s" * 32, "put", 0))
    return out


@settings(max_examples=200, deadline=None)
@given(heights=st.lists(st.integers(1, 12), max_size=40), limit=st.integers(1, 6))
def test_paging_by_height_loses_and_repeats_nothing(heights: list[int], limit: int) -> None:
    everything = _entries(heights)
    seen: list[HistoryEntry] = []
    before: int | None = None
    for _ in range(len(everything) + 1):
        entries, before = page([e for e in everything if before is None or e.height < before], limit)
        assert entries or before is None
        per_height = {e.height for e in entries}
        assert len(entries) <= limit or len(per_height) == 1  # over the limit only for one whole height
        seen += entries
        if before is None:
            break
        assert before == entries[-1].height
    assert seen == everything
