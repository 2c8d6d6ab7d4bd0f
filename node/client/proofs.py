"""Checking transaction proofs against a genesis file or a validator set (node.proof does the checking)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from node.client.errors import InvalidInput
from node.genesis import load_genesis
from node.keys import parse_pubkey
from node.proof import ProofInvalid, VerifiedProof
from node.proof import verify_proof as _verify

__all__ = ["ProofInvalid", "VerifiedProof", "verify_proof"]


def verify_proof(
    proof: Any,
    genesis: str | Path | None = None,
    *,
    chain_id: str | None = None,
    validators: Sequence[str | bytes] | None = None,
) -> VerifiedProof:
    """Checks a `get_proof` object against a genesis file, or against `chain_id` and the validators'
    public keys (hex or bytes). Raises ProofInvalid, with its `reason`, if the proof does not hold."""
    if (genesis is None) == (chain_id is None or validators is None):
        raise InvalidInput("verify a proof against either a genesis file or both chain_id and validators")
    if genesis is not None:
        loaded = load_genesis(Path(genesis))
        chain_id, keys = loaded.chain_id, [m.pubkey for m in loaded.validators]
    else:
        assert validators is not None
        keys = [v if isinstance(v, bytes) else parse_pubkey(v, "validator public key") for v in validators]
    assert chain_id is not None
    return _verify(proof, chain_id, keys)
