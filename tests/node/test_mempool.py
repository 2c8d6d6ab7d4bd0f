"""The mempool's bounds: clients stop at txs_max, peers' transactions may fill twice that."""

from __future__ import annotations

import pytest
from nacl.signing import SigningKey

from node.chain.tx import Transaction, sign_tx
from node.txpool.mempool import Mempool, MempoolFull

CLIENT = SigningKey(b"m" * 32)


def txs(n: int) -> list[Transaction]:
    return [sign_tx(CLIENT, "mempool-test", "kv", "put", {"key": f"k{i}", "value": b"v"}, i) for i in range(n)]


def test_clients_are_refused_at_txs_max() -> None:
    pool, batch = Mempool(3), txs(4)
    for tx in batch[:3]:
        pool.add(tx)
    assert pool.full() and not pool.full(from_peer=True)
    with pytest.raises(MempoolFull):
        pool.add(batch[3])
    assert len(pool) == 3 and batch[3].hash not in pool


def test_peers_transactions_fill_up_to_twice_txs_max() -> None:
    pool, batch = Mempool(3), txs(7)
    for tx in batch[:6]:
        pool.add(tx, from_peer=True)
    assert pool.full(from_peer=True)
    with pytest.raises(MempoolFull):
        pool.add(batch[6], from_peer=True)
    assert [tx.hash for tx in pool.oldest(10)] == [tx.hash for tx in batch[:6]]


def test_removing_committed_transactions_makes_room_again() -> None:
    pool, batch = Mempool(2), txs(3)
    pool.add(batch[0])
    pool.add(batch[1])
    pool.remove([batch[0].hash, b"\x00" * 32])
    pool.add(batch[2])
    assert [tx.hash for tx in pool.oldest(10)] == [batch[1].hash, batch[2].hash]
    assert pool.get(batch[0].hash) is None and pool.get(batch[2].hash) is batch[2]


def test_room_kept_for_transactions_on_their_way_counts_as_taken() -> None:
    pool, batch = Mempool(3), txs(7)
    pool.add(batch[0])
    pool.reserve(batch[1].hash)
    assert not pool.full() and not pool.full(from_peer=True)
    pool.reserve(batch[2].hash)
    assert pool.full()
    for tx in batch[3:5]:
        pool.reserve(tx.hash)
    assert not pool.full(from_peer=True)
    pool.reserve(batch[5].hash)
    assert pool.full(from_peer=True)
    assert pool.seen(batch[5].hash) and not pool.seen(batch[6].hash) and batch[5].hash not in pool
    pool.release(tx.hash for tx in batch[1:6])
    assert not pool.full() and not pool.seen(batch[5].hash)


def test_a_reserved_room_is_its_own_transactions() -> None:
    pool, batch = Mempool(2), txs(2)
    pool.add(batch[0])
    pool.reserve(batch[1].hash)
    assert pool.full()
    pool.release([batch[1].hash])
    pool.add(batch[1])  # its room was kept: the clients' share still takes it
    assert len(pool) == 2


def test_kept_transactions_fill_the_peers_share_and_no_more() -> None:
    pool, batch = Mempool(2), txs(6)
    pool.add(batch[0])
    pool.keep(batch)
    assert [tx.hash for tx in pool.oldest(10)] == [tx.hash for tx in batch[:4]]
