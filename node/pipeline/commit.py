"""The commit pipeline: a block from built or proposed, through validated, to committed.

Synchronous and without I/O: it reads no clock (times come in as arguments),
awaits nothing and holds no global state, so a simulator can drive it over a
MemoryStore as the Driver drives it in a node. Its steps are of two kinds:
heavy ones (`build`, `validate`, `commit`, `apply_synced`: they execute blocks
or write the ledger, and change nothing else of the pipeline's, so the Driver
runs them in a worker thread under its commit lock) and light bookkeeping
(`proposed`, `remember`, `validated`, `settle`), run where the event loop is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from consensus.actions import CommitBlock, ValidateBlock
from node.chain.block_check import Decided, Proposed, check_block, check_synced_block
from node.chain.candidate import BlockInvalid, Candidate
from node.chain.crypto import Verify, verify
from node.chain.governance import ReadState, change_scheduled
from node.chain.ledger import BlockPruned, Ledger
from node.chain.proposal import build_block, missing_txs, parse_body
from node.chain.tx import Transaction
from node.txpool.mempool import Mempool

# Blocks whose transactions stay at hand after their commit: a slower validator may still fetch them.
HELD_COMMITTED_BLOCKS = 4

Fetched = Mapping[bytes, Transaction]


@dataclass(frozen=True, slots=True)
class Committed:
    """The block is in the ledger now; `settle` it."""

    candidate: Candidate
    tx_hashes: list[bytes]

    @property
    def height(self) -> int:
        return self.candidate.block.header.height


@dataclass(frozen=True, slots=True)
class Deferred:
    """Consensus committed a block whose transactions this node lacks: catch-up must bring it."""

    reason: str


@dataclass(frozen=True, slots=True)
class AlreadyStored:
    """Catch-up stored the height first; `forked` when the stored block is not the one consensus decided."""

    forked: bool


CommitOutcome = Committed | Deferred | AlreadyStored


class CommitPipeline:
    def __init__(
        self, ledger: Ledger, pool: Mempool, proposer: bytes, block_txs_max: int, verify_seal: Verify = verify
    ) -> None:
        self.ledger = ledger
        self.pool = pool
        self.proposer = proposer  # whose name the blocks built here carry
        self.block_txs_max = block_txs_max
        self.verify_seal = verify_seal  # how catch-up checks the seals of a block's commit certificate
        self._candidates: dict[bytes, Candidate] = {}  # built or validated here, not committed yet
        self._proposed_at: dict[bytes, float] = {}
        self._held_committed: deque[list[Transaction]] = deque(maxlen=HELD_COMMITTED_BLOCKS)
        self._held_by_hash: dict[bytes, Transaction] = {}

    # ---- lookups --------------------------------------------------------------------

    def held_tx(self, tx_hash: bytes) -> Transaction | None:
        """A transaction this node holds: pending, or in one of the last blocks it committed (for peers' fetches)."""
        return self.pool.get(tx_hash) or self._held_by_hash.get(tx_hash)

    def missing_txs(self, body: bytes) -> list[bytes]:
        """The hashes a proposal body names of transactions this node does not hold: to fetch before `validate`."""
        return missing_txs(body, self.pool.get)

    def missing_for_commit(self, action: CommitBlock) -> list[bytes]:
        """What to fetch before `commit`: nothing when the block was built or validated here, or is stored."""
        if action.block_hash in self._candidates or action.height <= self.ledger.height:
            return []
        return self.missing_txs(action.block)

    # ---- heavy steps: they read the pipeline's state and write only the ledger ----------------

    def build(self, height: int, txs: list[Transaction], now_ms: int) -> Candidate | None:
        """A block of `txs` (the pool's oldest, see `block_txs`) for `height`; None unless it is the next one."""
        if height != self.ledger.height + 1:
            return None
        return build_block(self.ledger, txs, self.proposer, now_ms)

    def validate(self, action: ValidateBlock, proposers: frozenset[bytes], fetched: Fetched, now_ms: int) -> Candidate:
        """The proposal checked in full (`check_block`); BlockInvalid says why it must not be prepared."""
        header, items = parse_body(action.block)
        vouch = Proposed(action.block_hash, proposers, now_ms)
        return check_block(self.ledger, header, items, vouch, self.pool.get, fetched)

    def commit(self, action: CommitBlock, fetched: Fetched) -> CommitOutcome:
        """Writes the block consensus decided, executing it first if it was not validated here."""
        if action.height <= self.ledger.height:
            try:
                stored = self.ledger.block(action.height)
            except BlockPruned:  # stored long ago, and pruned since: no decision of that height is news
                return AlreadyStored(forked=False)
            return AlreadyStored(forked=stored is None or stored.header.hash() != action.block_hash)
        candidate = self._candidates.get(action.block_hash)
        if candidate is None:
            try:
                header, items = parse_body(action.block)
                candidate = check_block(self.ledger, header, items, Decided(action.block_hash), self.pool.get, fetched)
            except BlockInvalid as exc:  # transactions nobody sent us: catch-up brings the whole block
                return Deferred(str(exc))
        self.ledger.commit(candidate.block, candidate.txs, candidate.execution, action.certificate)
        return Committed(candidate, [tx.hash for tx in candidate.txs])

    def apply_synced(self, raw_block: bytes, raw_certificate: bytes) -> Committed | None:
        """Checks a block catch-up fetched against its certificate and writes it; None when the height is
        stored already. Raises BlockInvalid when the block is not this chain's next."""
        checked = check_synced_block(self.ledger, raw_block, raw_certificate, self.verify_seal)
        if checked is None:
            return None
        candidate, certificate = checked
        self.ledger.commit(candidate.block, candidate.txs, candidate.execution, certificate)
        return Committed(candidate, [tx.hash for tx in candidate.txs])

    # ---- light steps: bookkeeping ---------------------------------------------------------------

    def block_txs(self) -> list[Transaction]:
        """The transactions the next block built here takes: the pool's oldest whose senders may still send
        (one admitted while governance removed its sender leaves the pool here: no block may carry it)."""
        txs = self.pool.oldest(self.block_txs_max)
        authorised = self.ledger.members(self.ledger.height + 1).authorised_senders
        if all(tx.sender in authorised for tx in txs):
            return txs
        self.pool.remove([tx.hash for tx in txs if tx.sender not in authorised])
        return [tx for tx in txs if tx.sender in authorised]

    def work_waiting(self) -> bool:
        """A block is worth building: transactions are pending, or a passed change waits for its
        activation height (which an idle chain would otherwise never reach)."""
        return bool(len(self.pool)) or change_scheduled(ReadState(self.ledger.read_state))

    def drop_unauthorised(self) -> list[bytes]:
        """After a commit that changed who may send: empties the pool of what the next block may not carry."""
        return self.pool.drop_senders_outside(self.ledger.members(self.ledger.height + 1).authorised_senders)

    def proposed(self, block_hash: bytes, at_s: float) -> None:
        """The block was first proposed (or built) at `at_s`: its commit latency counts from then."""
        self._proposed_at.setdefault(block_hash, at_s)

    def remember(self, candidate: Candidate, at_s: float) -> None:
        """A block built here: committed as it is when consensus decides it."""
        self._candidates[candidate.block_hash] = candidate
        self.proposed(candidate.block_hash, at_s)

    def validated(self, candidate: Candidate, at_s: float) -> None:
        """A proposal that passed `validate`: remembered, and its transactions kept in the pool,
        so that their gossip copies are not verified again."""
        self.remember(candidate, at_s)
        self.pool.keep(candidate.txs)

    def settle(self, committed: Committed) -> float | None:
        """After a commit: forgets what is decided, empties the pool of its transactions and holds them
        for peers a while. Returns when the block was proposed, if this node saw it proposed."""
        candidate = committed.candidate
        height = candidate.block.header.height
        self._candidates = {h: c for h, c in self._candidates.items() if c.block.header.height > height}
        started = self._proposed_at.pop(candidate.block_hash, None)
        self._proposed_at = {h: t for h, t in self._proposed_at.items() if h in self._candidates}
        self.pool.remove(committed.tx_hashes)
        self._hold(candidate.txs)
        return started

    def _hold(self, txs: list[Transaction]) -> None:
        if len(self._held_committed) == HELD_COMMITTED_BLOCKS:
            for tx in self._held_committed[0]:
                self._held_by_hash.pop(tx.hash, None)
        self._held_committed.append(txs)
        self._held_by_hash.update((tx.hash, tx) for tx in txs)
