"""Admission of a transaction into the mempool: the checks of the client protocol, in its order."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from node.genesis import Genesis
from node.ledger import Ledger
from node.mempool import Mempool, MempoolFull
from node.tx import TX_BYTES_MAX, Transaction, TxError, decode_tx
from node.txlog import TxLog
from node.verifier import BAD_SIGNATURE, DUPLICATE as SEEN, Verifier

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


class Admission:
    def __init__(
        self, genesis: Genesis, ledger: Ledger, mempool: Mempool, verifier: Verifier,
        submit: Callable[[Transaction, bool], None], txlog: TxLog | None = None,
    ) -> None:
        self.verifier = verifier
        self.txlog = txlog  # where clients' transactions are kept before they are acknowledged
        self.submit = submit  # adds to the mempool; raises MempoolFull
        self.chain_id = genesis.chain_id
        self.authorised = genesis.authorised_senders()
        self.ledger = ledger
        self.mempool = mempool

    def seen(self, tx_hash: bytes) -> bool:
        """Pending, or in one of the recent blocks: both memory lookups (older blocks are the verifier's read)."""
        return tx_hash in self.mempool or self.ledger.committed_recently(tx_hash)

    def check(self, raw: bytes, from_peer: bool = False) -> Transaction:
        """The decoded transaction if it passes the checks that need no worker thread.

        Raises Refused, or MempoolFull (a peer's transactions have a larger share, see Mempool).

        The signature, and whether the transaction was committed before the
        recent blocks the ledger keeps in memory, are checked by `admit`.
        """
        if len(raw) > TX_BYTES_MAX:
            raise Refused(INVALID, "oversize", f"transaction is more than {TX_BYTES_MAX} bytes")
        if self.mempool.full(from_peer):  # before any work: an overloaded node refuses cheaply
            raise MempoolFull(f"mempool holds {len(self.mempool)} transactions")
        try:
            tx = decode_tx(raw)
        except TxError as exc:
            raise Refused(INVALID, exc.reason, str(exc)) from None
        if tx.chain_id != self.chain_id:
            raise Refused(INVALID, "wrong_chain_id", f"chain id {tx.chain_id!r} is not {self.chain_id!r}")
        if self.seen(tx.hash):
            raise Refused(DUPLICATE, "duplicate", "duplicate transaction")
        if tx.sender not in self.authorised:
            raise Refused(UNAUTHORISED, "unauthorised", "sender not authorised")
        return tx

    async def admit(
        self, txs: Sequence[Transaction], from_peer: bool = False
    ) -> list[Transaction | Refused | MempoolFull]:
        """Verifies each signature (once, off the event loop) and adds the good ones to the mempool.

        One outcome per transaction, in order: the transaction if it was added,
        else why not (a full mempool refuses the rest of `txs` too). A client's
        transactions are in the mempool log, synced, when this returns; raises
        TxLogError if they could not be written.
        """
        verdicts = await self.verifier.verify(txs)
        outcomes: list[Transaction | Refused | MempoolFull] = []
        for tx, verdict in zip(txs, verdicts):
            if verdict == BAD_SIGNATURE:
                outcomes.append(Refused(INVALID, "bad_signature", "the signature does not verify"))
            elif verdict == SEEN or self.seen(tx.hash):
                outcomes.append(Refused(DUPLICATE, "duplicate", "duplicate transaction"))  # perhaps meanwhile
            else:
                try:
                    self.submit(tx, from_peer)
                except MempoolFull as exc:
                    outcomes.append(exc)
                    continue
                outcomes.append(tx)
        if not from_peer and self.txlog is not None:
            await self.txlog.append([tx for tx in outcomes if isinstance(tx, Transaction)])
        return outcomes

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
