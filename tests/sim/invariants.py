"""What the simulator checks while it runs, and once more at the end.

Only honest validators are judged; the Byzantine twins are free to do anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from consensus.messages import Commit, Prepare, Proposal, RoundChange, Signed, seal_bytes
from node.chain.block import Header
from node.chain.execution import Execution
from node.chain.ledger import Ledger
from node.chain.membership import Membership, validators_hash
from tests.sim.keyring import Keyring


class InvariantViolated(AssertionError):
    """A safety or liveness property of the consensus did not hold."""


class Invariants:
    def __init__(self, keyring: Keyring, quorum: Callable[[int], int]):
        self.keyring = keyring
        self.quorum = quorum  # of a set of n validators
        self.members: dict[int, Membership] = {}  # height -> its membership, as every honest ledger has it
        self.validators: dict[int, tuple[bytes, ...]] = {}  # height -> its validators (of `members`)
        self.committed_at: dict[bytes, int] = {}  # key -> the highest height an honest node signed a COMMIT at with it
        self.sealed_at: dict[bytes, int] = {}  # key -> the highest height whose certificate (honest) holds its seal
        self.chain: dict[int, bytes] = {}  # height -> hash any honest replica stored there
        self.state_roots: dict[int, bytes] = {}  # height -> state root there
        self.submitted: set[bytes] = set()  # hashes of the client's transactions
        self.tx_height: dict[bytes, int] = {}  # committed tx hash -> its block's height
        self.bad_hashes: set[bytes] = set()  # hashes of blocks the block check must refuse
        self._signed: dict[tuple[bytes, str, int, int], Signed] = {}
        self._stored_height: dict[int, int] = {}  # node id -> highest stored height seen

    # ---- safety: no conflicting signatures ----------------------------------------

    def on_broadcast(self, node: int, signed: Signed) -> None:
        """`signed` left honest `node`: it must not contradict anything it signed before."""
        m = signed.message
        if signed.sender not in self.validators.get(m.height, ()):
            raise InvariantViolated(f"node {node} signed {type(m).__name__} at height {m.height} with key "
                                    f"{signed.sender.hex()[:16]}, not a validator of that height")
        if isinstance(m, Commit):
            self.committed_at[signed.sender] = max(m.height, self.committed_at.get(signed.sender, 0))
        outsiders = [s.sender for s in _carried(m) if s.sender not in self.validators.get(s.message.height, ())]
        if outsiders:
            raise InvariantViolated(f"node {node} sent {type(m).__name__} at height {m.height} carrying messages of "
                                    f"{_short(tuple(outsiders))}, not validators of their height")
        key = (signed.sender, type(m).__name__, m.height, m.round)
        first = self._signed.setdefault(key, signed)
        if first != signed:
            raise InvariantViolated(f"node {node} signed two conflicting messages:\n  {first}\n  {signed}")
        if isinstance(m, (Proposal, Prepare, Commit)) and m.block_hash in self.bad_hashes:
            raise InvariantViolated(f"node {node} signed a block the block check refuses: {m}")

    # ---- safety: one chain, one state, never shrinking -------------------------------

    def on_stored(self, node: int, height: int, block_hash: bytes, state_root: bytes, tx_hashes: list[bytes]) -> None:
        """Honest `node` made block `height` durable (by commit or by catch-up)."""
        self.check_block(node, height, block_hash, state_root)
        self.check_txs(node, height, tx_hashes)
        self.on_height(node, height)

    def check_block(self, node: int, height: int, block_hash: bytes, state_root: bytes) -> None:
        """Block `height` of honest `node` is every other honest node's block there, with the same state."""
        agreed = self.chain.setdefault(height, block_hash)
        if agreed != block_hash:
            raise InvariantViolated(f"fork at height {height}: node {node} stored {block_hash.hex()[:16]}, "
                                    f"another honest node {agreed.hex()[:16]}")
        root = self.state_roots.setdefault(height, state_root)
        if root != state_root:
            raise InvariantViolated(f"node {node}'s state root at height {height} differs from another honest node's")

    def check_state(self, node: int, header: Header, execution: Execution, ledger: Ledger) -> None:
        """The state honest `node` wrote for a block is what the block's header commits to."""
        if execution.tree is None or execution.tree.root != header.state_root or ledger.tree.root != header.state_root:
            raise InvariantViolated(f"node {node}'s execution of block {header.height} is not the state its header commits to")
        if any(ledger.read_state(key) != value for key, value in execution.writes.items()):
            raise InvariantViolated(f"node {node}'s store lacks the state block {header.height} wrote")

    def check_txs(self, node: int, height: int, tx_hashes: list[bytes]) -> None:
        """Every transaction in a block was submitted, and is in no other block."""
        if len(set(tx_hashes)) != len(tx_hashes):
            raise InvariantViolated(f"node {node}'s block {height} holds a transaction twice")
        for tx_hash in tx_hashes:
            if tx_hash not in self.submitted:
                raise InvariantViolated(f"node {node}'s block {height} holds tx {tx_hash.hex()[:16]} nobody submitted")
            first = self.tx_height.setdefault(tx_hash, height)
            if first != height:
                raise InvariantViolated(f"tx {tx_hash.hex()[:16]} committed at heights {first} and {height}")

    def on_height(self, node: int, height: int) -> None:
        """Honest `node`'s durable chain is `height` long (after a store or a restart)."""
        before = self._stored_height.get(node, 0)
        if height < before:
            raise InvariantViolated(f"node {node}'s committed height went back from {before} to {height}")
        self._stored_height[node] = height

    # ---- membership: one history, and each height decided by its own set ---------------

    def on_members(self, node: int, height: int, members: Membership) -> None:
        """Honest `node`'s ledger says `members` are the membership at `height`: every other honest ledger
        says so too (validators, observers, clients, admins and threshold)."""
        agreed = self.members.setdefault(height, members)
        if agreed != members:
            raise InvariantViolated(f"node {node}'s membership at height {height} differs from another honest node's: "
                                    f"validators {_short(members.validator_keys)} against {_short(agreed.validator_keys)}")
        self.validators.setdefault(height, members.validator_keys)

    def check_certificate(self, node: int, height: int, block_hash: bytes, certificate: Sequence[tuple[bytes, bytes]]) -> None:
        """A quorum of the validators of `height`, each sealing `block_hash`, and nobody else: never a mixture of sets."""
        validators = self.validators.get(height)
        if validators is None:
            raise InvariantViolated(f"node {node} holds a certificate of height {height} whose validators no honest node knows")
        outsiders = [v for v, _ in certificate if v not in validators]
        if outsiders:
            raise InvariantViolated(f"node {node}'s certificate of block {height} holds seals of "
                                    f"{_short(tuple(outsiders))}, not validators of that height")
        signers = {v for v, seal in certificate if self.keyring.verify(v, seal_bytes(block_hash), seal)}
        if len(signers) < self.quorum(len(validators)):
            raise InvariantViolated(f"node {node} committed block {height} without a quorum of valid seals "
                                    f"({len(signers)} of {len(validators)} validators)")
        for signer in signers:
            self.sealed_at[signer] = max(height, self.sealed_at.get(signer, 0))

    def check_header_validators(self, node: int, header: Header) -> None:
        """A header commits to the validators of its height and of the next, as the honest ledgers know them."""
        for height, committed in ((header.height, header.validators_hash), (header.height + 1, header.next_validators_hash)):
            known = self.validators.get(height)
            if known is not None and validators_hash(known) != committed:
                raise InvariantViolated(f"node {node}'s header {header.height} commits to other validators of height {height}")


def _carried(m: object) -> tuple[Signed, ...]:
    """The signed messages `m` carries as evidence: a proposal's round changes and their prepared
    certificates' prepares, a round change's prepares."""
    if isinstance(m, Proposal):
        return m.justification + tuple(s for rc in m.justification for s in _carried(rc.message))
    if isinstance(m, RoundChange) and m.prepared is not None:
        return m.prepared.prepares
    return ()


def _short(keys: tuple[bytes, ...]) -> str:
    return "[" + ", ".join(k.hex()[:8] for k in keys) + "]"
