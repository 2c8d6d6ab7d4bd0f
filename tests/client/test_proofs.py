"""Proofs fetched by both clients and checked against the genesis, never against the node."""

from __future__ import annotations

import copy

import pytest

from node.chain.genesis import load_genesis
from node.client import AsyncClient, Client, InvalidInput, NotFound, ProofInvalid, load_key, verify_proof
from tests.client.conftest import Chain


def test_a_committed_transaction_is_proven_against_the_genesis(chain: Chain) -> None:
    with Client(chain.url, key=load_key(chain.key_path)) as client:
        receipt = client.kv_put("proven", b"yes")
        verified = client.get_verified_proof(receipt.tx_hash, chain.genesis_path)
        proof = client.get_proof(receipt.tx_hash)
    assert (verified.tx.hash.hex(), verified.height, verified.index, verified.code) == (
        receipt.tx_hash, receipt.height, receipt.index, 0)
    genesis = load_genesis(chain.genesis_path)
    by_keys = verify_proof(proof, chain_id=genesis.chain_id, validators=[m.pubkey.hex() for m in genesis.validators])
    assert by_keys == verified


def test_a_changed_proof_or_another_chain_fails(chain: Chain) -> None:
    with Client(chain.url, key=load_key(chain.key_path)) as client:
        proof = client.get_proof(client.kv_put("tampered", b"no").tx_hash)
    changed = copy.deepcopy(proof)
    changed["receipt"]["code"] = 1
    with pytest.raises(ProofInvalid):
        verify_proof(changed, chain.genesis_path)
    validators = [m.pubkey for m in load_genesis(chain.genesis_path).validators]
    with pytest.raises(ProofInvalid) as other_chain:
        verify_proof(proof, chain_id="another-chain", validators=validators)
    assert other_chain.value.reason.startswith("chain")


def test_proof_errors_are_typed(chain: Chain) -> None:
    with Client(chain.url) as client:
        with pytest.raises(NotFound):
            client.get_proof("ab" * 32)
        with pytest.raises(InvalidInput):
            client.get_proof("ab")
    for mix in ({"chain_id": "x", "validators": []}, {"chain_id": "x"}, {"validators": []}):
        with pytest.raises(InvalidInput, match="either a genesis file or .*, not both"):
            verify_proof({}, chain.genesis_path, **mix)
    for half in ({"chain_id": "x"}, {"validators": []}, {}):
        with pytest.raises(InvalidInput, match="either a genesis file or"):
            verify_proof({}, **half)


async def test_async_proof(chain: Chain) -> None:
    async with AsyncClient(chain.url, key=load_key(chain.key_path)) as client:
        receipt = await client.notarize(b"\x11" * 32)
        verified = await client.get_verified_proof(receipt.tx_hash, chain.genesis_path)
    assert verified.tx.args["digest"] == b"\x11" * 32 and verified.height == receipt.height
