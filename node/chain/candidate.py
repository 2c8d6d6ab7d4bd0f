"""A block checked or built as this ledger's next: its transactions, their execution, and what its header must commit to."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from node.chain.block import Block, Header
from node.chain.execution import Execution, receipt_bytes
from node.chain.merkle import merkle_root
from node.chain.tx import Transaction

KnownTx = Callable[[bytes], Transaction | None]


class BlockInvalid(Exception):
    """A block that an honest validator must not prepare, commit or apply; the message says why."""


@dataclass(frozen=True)
class Candidate:
    """A block with its decoded transactions and the outcome of executing it."""

    block: Block
    block_hash: bytes
    txs: list[Transaction]
    execution: Execution


@dataclass(frozen=True)
class Contents:
    """What a header commits to about its transactions and their execution."""

    tx_count: int
    tx_root: bytes
    receipt_root: bytes
    state_root: bytes
    validators_hash: bytes
    next_validators_hash: bytes

    @staticmethod
    def of(
        txs: Sequence[Transaction], execution: Execution, state_root: bytes, validators: tuple[bytes, bytes]
    ) -> Contents:
        """`state_root`: the state tree's root after the block; `validators`: the validators hashes of the
        block's height and of the next, after its execution."""
        hashes = [tx.hash for tx in txs]
        return Contents(
            tx_count=len(txs),
            tx_root=merkle_root(hashes),
            receipt_root=merkle_root([receipt_bytes(h, r) for h, r in zip(hashes, execution.receipts)]),
            state_root=state_root,
            validators_hash=validators[0],
            next_validators_hash=validators[1],
        )

    def check(self, header: Header) -> None:
        """Raises BlockInvalid naming the first header field that does not match."""
        _check_fields(header, {
            "tx_count": self.tx_count, "tx_root": self.tx_root, "receipt_root": self.receipt_root,
            "state_root": self.state_root, "validators_hash": self.validators_hash,
            "next_validators_hash": self.next_validators_hash,
        })


def check_tx_root(header: Header, tx_hashes: Sequence[bytes]) -> None:
    """Raises BlockInvalid unless the header's tx_count and tx_root are those of `tx_hashes` (no execution needed)."""
    _check_fields(header, {"tx_count": len(tx_hashes), "tx_root": merkle_root(tx_hashes)})


def _check_fields(header: Header, fields: dict[str, object]) -> None:
    for name, value in fields.items():
        if getattr(header, name) != value:
            raise BlockInvalid(f"{name} differs from the block's transactions and their execution")
