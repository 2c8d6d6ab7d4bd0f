"""Checking transaction and state proofs against a genesis file or a validator set (node.chain.proof does the checking)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from node.chain.compact_proof import compact_state_proof as _compact
from node.chain.compact_proof import verify_compact_state_proof as _verify_compact
from node.chain.genesis import load_genesis
from node.chain.proof import ProofInvalid, VerifiedProof
from node.chain.proof import verify_proof as _verify
from node.chain.state_proof import VerifiedState
from node.chain.state_proof import verify_state_proof as _verify_state
from node.client.errors import InvalidInput
from node.keys import parse_pubkey

__all__ = ["ProofInvalid", "VerifiedProof", "VerifiedState", "compact_state_proof", "trust_anchor", "verify_proof",
           "verify_state_proof"]

EITHER = "verify a proof against either a genesis file or both chain_id and validators"


def verify_proof(
    proof: Any,
    genesis: str | Path | None = None,
    *,
    chain_id: str | None = None,
    validators: Sequence[str | bytes] | None = None,
) -> VerifiedProof:
    """Checks a `get_proof` object against a genesis file, or against `chain_id` and the genesis
    validators' public keys (hex or bytes, in the genesis order: the headers commit to the ordered
    list). Proofs from after validator-set changes carry the certified steps from the genesis set to
    their block's. Raises ProofInvalid, with its `reason`, if the proof does not hold."""
    return _verify(proof, *trust_anchor(genesis, chain_id, validators))


def verify_state_proof(
    proof: Any,
    genesis: str | Path | None = None,
    *,
    chain_id: str | None = None,
    validators: Sequence[str | bytes] | None = None,
) -> VerifiedState:
    """Checks a state proof (`query` with `prove`, or the bytes of its compact form) against a genesis
    file, or `chain_id` and the genesis validators' keys, as `verify_proof` does. Raises ProofInvalid if
    it does not hold."""
    anchor = trust_anchor(genesis, chain_id, validators)
    return _verify_compact(proof, *anchor) if isinstance(proof, bytes) else _verify_state(proof, *anchor)


def compact_state_proof(
    proof: Any,
    genesis: str | Path | None = None,
    *,
    chain_id: str | None = None,
    validators: Sequence[str | bytes] | None = None,
) -> bytes:
    """The compact form of a state proof (docs/proofs.md, under 2 KB), once it is checked against the
    genesis as `verify_state_proof` does; raises ProofInvalid if it does not hold."""
    return _compact(proof, *trust_anchor(genesis, chain_id, validators))


def trust_anchor(
    genesis: str | Path | None, chain_id: str | None, validators: Sequence[str | bytes] | None
) -> tuple[str, list[bytes]]:
    """The chain id and validator keys a proof is checked against: read from the genesis file, or
    as given. One or the other: a mix is refused rather than half ignored."""
    if genesis is not None:
        if chain_id is not None or validators is not None:
            raise InvalidInput(f"{EITHER}, not both")
        loaded = load_genesis(Path(genesis))
        return loaded.chain_id, [m.pubkey for m in loaded.validators]
    if chain_id is None or validators is None:
        raise InvalidInput(EITHER)
    return chain_id, [v if isinstance(v, bytes) else parse_pubkey(v, "validator public key") for v in validators]
