"""Governance through Client and AsyncClient against a real validator whose testnet has one admin
(threshold 1: a proposal passes with its propose)."""

from __future__ import annotations

import pytest
import trio

from node.client import AsyncClient, Client, NotFound, generate_key, load_key, public_key_hex
from tests.client.conftest import Chain
from tests.e2e.nodeproc import wait_for


def test_the_sync_client_proposes_and_reads_the_proposal(chain: Chain) -> None:
    newcomer = public_key_hex(generate_key())
    with Client(chain.url, key=load_key(chain.net / "admin0.key")) as client:
        before = client.get_members()
        proposed = client.propose({"kind": "add_client", "name": "sync-newcomer", "pubkey": newcomer})
        assert proposed.ok and "passed" in (proposed.log or "")
        proposal = client.get_proposal(proposed.tx_hash)
        # The chain makes the blocks that bring a passed change in force: it may be active already.
        assert proposal.status in ("passed", "active")
        assert (proposal.height, proposal.activation) == (proposed.height, proposed.height + 2)
        assert proposal.approvals == (public_key_hex(load_key(chain.net / "admin0.key")),)
        wait_for(lambda: client.get_proposal(proposed.tx_hash).status == "active", "the change in force")
        assert newcomer not in [c.pubkey for c in client.get_members(proposed.height + 1).clients]
        assert newcomer in [c.pubkey for c in client.get_members(proposed.height + 2).clients]
        members = client.get_members()
        assert members.height >= before.height + 2 and proposed.tx_hash not in [p.proposal for p in members.pending]
        assert [c.name for c in client.get_members(0).clients] == ["client"]  # the genesis membership
        with pytest.raises(NotFound):
            client.get_members(members.height + 10**6)
        with pytest.raises(NotFound):
            client.get_proposal("ab" * 32)


def test_the_async_client_refusal_shows_in_the_receipt(chain: Chain) -> None:
    async def main() -> None:
        async with AsyncClient(chain.url, key=load_key(chain.net / "admin0.key")) as client:
            members = await client.get_members()
            only = members.validators[0].pubkey
            refused = await client.propose({"kind": "remove_validator", "pubkey": only})
            assert refused.committed and refused.code == 7 and "no validator" in (refused.log or "")
            approved = await client.approve(refused.tx_hash)  # a refused propose opened nothing
            assert approved.code == 6
            with pytest.raises(NotFound):
                await client.get_proposal(refused.tx_hash)
            assert (await client.get_members(members.height)).validators == members.validators

    trio.run(main)
