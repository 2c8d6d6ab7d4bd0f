"""Admission of a transaction into the mempool: the checks of the client protocol, in its order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import trio

from node.chain.genesis import Genesis
from node.chain.governance import ACTIVATION_DELAY
from node.chain.ledger import Ledger
from node.chain.tx import TX_BYTES_MAX, Transaction, TxError, decode_for_chain
from node.txpool.mempool import Mempool, MempoolFull
from node.txpool.txlog import TxLog, TxLogError
from node.txpool.verifier import BAD_SIGNATURE, DUPLICATE as SEEN, Verifier

INVALID, UNAUTHORISED, DUPLICATE = "invalid", "unauthorised", "duplicate"


class Refused(Exception):
    """A transaction that does not enter the mempool.

    `kind` is invalid, unauthorised or duplicate; `reason` is the spec's
    data.reason for invalid ones (malformed, bad_signature, wrong_chain_id,
    oversize, not_canonical).
    """

    def __init__(self, kind: str, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.reason = reason


class PendingListener(Protocol):
    """Told each time a transaction enters the mempool (the consensus loop's Inbox: a block is worth building)."""

    def transactions_pending(self) -> None: ...


class NotAMember(Exception):
    """This node's key is not a validator or observer at the next height, or governance removed it
    from a height soon after: no peer takes what it passes on, so it must not acknowledge a client's
    transaction."""


class Admission:
    def __init__(
        self, genesis: Genesis, ledger: Ledger, mempool: Mempool, verifier: Verifier,
        pending: PendingListener, txlog: TxLog | None = None, node_key: bytes | None = None,
    ) -> None:
        self.node_key = node_key  # None: serving whatever its role (tests)
        self.verifier = verifier
        self.txlog = txlog  # where clients' transactions are kept before they are acknowledged
        self.pending = pending
        self.chain_id = genesis.chain_id
        self.ledger = ledger
        self.mempool = mempool

    def seen(self, tx_hash: bytes) -> bool:
        """Pending (or on its way), or in one of the recent blocks: memory lookups (older blocks are the verifier's read)."""
        return self.mempool.seen(tx_hash) or self.ledger.committed_recently(tx_hash)

    def pending_tx(self, tx_hash: bytes) -> Transaction | None:
        """The transaction if it waits in the mempool for a block."""
        return self.mempool.get(tx_hash)

    def check(self, raw: bytes, from_peer: bool = False) -> Transaction:
        """The decoded transaction if it passes the checks that need no worker thread.

        Raises Refused, MempoolFull (a peer's transactions have a larger share, see Mempool) or, for a
        client's transaction, NotAMember.

        The signature, and whether the transaction was committed before the
        recent blocks the ledger keeps in memory, are checked by `admit`.
        """
        if len(raw) > TX_BYTES_MAX:
            raise Refused(INVALID, "oversize", f"transaction is more than {TX_BYTES_MAX} bytes")
        if self.mempool.full(from_peer):  # before any work: refused cheaply
            raise MempoolFull(f"mempool holds {len(self.mempool)} transactions")
        try:
            tx = decode_for_chain(raw, self.chain_id)
        except TxError as exc:
            raise Refused(INVALID, exc.reason, str(exc)) from None
        if self.seen(tx.hash):
            raise Refused(DUPLICATE, "duplicate", "duplicate transaction")
        members = self.ledger.members(self.ledger.height + 1)
        if tx.sender not in members.authorised_senders:
            raise Refused(UNAUTHORISED, "unauthorised", "sender not authorised")
        if not from_peer and self.node_key is not None:
            self._check_member(members.peer_keys)
        return tx

    def _check_member(self, next_peers: frozenset[bytes]) -> None:
        """A node whose removal has passed (in force within ACTIVATION_DELAY blocks) acknowledges nothing
        more: its peers cut it off at the activation, and it may not even learn the blocks before it."""
        height = self.ledger.height
        if self.node_key not in next_peers:
            raise NotAMember(f"this node's key is not a member of the chain at height {height + 1}")
        if self.node_key not in self.ledger.members(height + ACTIVATION_DELAY).peer_keys:
            raise NotAMember(f"governance removes this node's key from the chain by height {height + ACTIVATION_DELAY}")

    async def admit(
        self, txs: Sequence[Transaction], from_peer: bool = False
    ) -> list[Transaction | Refused | MempoolFull]:
        """Verifies each signature (once, off the event loop) and adds the good ones to the mempool.

        One outcome per transaction, in order: the transaction if it was added,
        else why not (a full mempool refuses the rest of `txs` too). A client's
        transactions are synced to the mempool log before they enter the
        mempool, so that no block can hold one a crash would lose; if they
        cannot be written, they are refused as for a full mempool.
        """
        verdicts = await self.verifier.verify(txs)
        outcomes = [self._outcome(tx, verdict, from_peer) for tx, verdict in zip(txs, verdicts)]
        fresh = [tx for tx in outcomes if isinstance(tx, Transaction)]
        try:
            if not from_peer and self.txlog is not None:
                with trio.CancelScope(shield=True):  # a client gone meanwhile must not leave them logged only
                    await self.txlog.append(fresh)
        except TxLogError as exc:  # not acknowledged: the client is told to retry later
            return [MempoolFull(str(exc)) if isinstance(tx, Transaction) else tx for tx in outcomes]
        finally:
            self.mempool.release(tx.hash for tx in fresh)
        return [self._submitted(tx) if isinstance(tx, Transaction) else tx for tx in outcomes]

    def _outcome(self, tx: Transaction, verdict: str, from_peer: bool) -> Transaction | Refused | MempoolFull:
        if verdict == BAD_SIGNATURE:
            return Refused(INVALID, "bad_signature", "the signature does not verify")
        if verdict == SEEN or self.seen(tx.hash):
            return Refused(DUPLICATE, "duplicate", "duplicate transaction")  # perhaps meanwhile
        if self.mempool.full(from_peer):
            return MempoolFull(f"mempool holds {len(self.mempool)} transactions")
        self.mempool.reserve(tx.hash)  # a second copy is a duplicate
        return tx

    def _submitted(self, tx: Transaction) -> Transaction | Refused | MempoolFull:
        if tx.hash in self.mempool or self.ledger.committed_recently(tx.hash):  # a block brought it meanwhile
            return Refused(DUPLICATE, "duplicate", "duplicate transaction")
        if tx.sender not in self.ledger.members(self.ledger.height + 1).authorised_senders:
            if self.txlog is not None:  # governance removed the sender while it was verified and logged
                self.txlog.forget([tx.hash])
            return Refused(UNAUTHORISED, "unauthorised", "sender not authorised")
        try:
            self.mempool.add(tx, from_peer=True)  # its room was kept (a client's within the clients' share)
        except MempoolFull as exc:
            if self.txlog is not None:
                self.txlog.forget([tx.hash])
            return exc
        self.pending.transactions_pending()
        return tx

    async def readmit(self, raws: Sequence[bytes]) -> list[Transaction]:
        """Admits again what the mempool log kept over a restart: the ones now pending.

        Every check runs again, signature included: one committed meanwhile is
        a duplicate, one whose sender lost its authorisation is refused.
        """
        checked: list[Transaction] = []
        for raw in raws:
            try:
                checked.append(self.check(raw, from_peer=True))  # a peer's share: it was accepted once
            except (Refused, MempoolFull):
                continue
        outcomes = await self.admit(checked, from_peer=True)
        return [tx for tx in outcomes if isinstance(tx, Transaction)]
