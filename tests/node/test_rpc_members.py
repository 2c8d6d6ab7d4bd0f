"""get_members and get_proposal in-process, over a ledger whose blocks carry real gov transactions;
and the membership gauges set after a commit."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from nacl.signing import SigningKey

from consensus.messages import seal_bytes
from node.api.lookup import ChainLookup
from node.api.members import MembershipGauges
from node.api.rpc import RpcService
from node.api.status import NodeStatus
from node.chain.genesis import Genesis
from node.chain.ledger import Ledger
from node.chain.membership import Member
from node.chain.proposal import build_block
from node.chain.tx import Transaction, sign_tx
from node.ops.metrics import Metrics
from node.txpool.admission import Admission
from node.txpool.mempool import Mempool
from storage.chain import ChainStore
from storage.kv import StoreCorrupt
from storage.memory import MemoryStore
from tests.jsonrpc_fuzz import Raw, body_of, strict_json

VALIDATOR = SigningKey(b"v" * 32)
CLIENT = SigningKey(b"c" * 32)
ADMINS = [SigningKey(bytes([i]) * 32) for i in (1, 2, 3)]
NEWCOMER = SigningKey(b"n" * 32)
GENESIS = Genesis(
    chain_id="rpc-members", genesis_time_ms=1_700_000_000_000,
    validators=(Member("v0", bytes(VALIDATOR.verify_key), "127.0.0.1:26601"),),
    clients=(Member("client", bytes(CLIENT.verify_key)),),
    admins=tuple(Member(f"admin{i}", bytes(k.verify_key)) for i, k in enumerate(ADMINS)),
)
_nonces = itertools.count(1)


def gov(key: SigningKey, op: str, args: dict[str, Any]) -> Transaction:
    return sign_tx(key, GENESIS.chain_id, "gov", op, args, next(_nonces))


def commit(ledger: Ledger, txs: Sequence[Transaction]) -> list[tuple[int, str]]:
    """Commits one block of `txs`; their receipts' (code, log)."""
    candidate = build_block(ledger, txs, bytes(VALIDATOR.verify_key), ledger.last_time_ms + 1000)
    seal = ((bytes(VALIDATOR.verify_key), VALIDATOR.sign(seal_bytes(candidate.block_hash)).signature),)
    ledger.commit(candidate.block, candidate.txs, candidate.execution, seal)
    return [(r.code, r.log) for r in candidate.execution.receipts]


ADD_CLIENT = {"kind": "add_client", "name": "newcomer", "pubkey": bytes(NEWCOMER.verify_key)}
ADD_OBSERVER = {"kind": "add_observer", "name": "watcher", "pubkey": b"w" * 32, "address": "127.0.0.1:27001"}


class Chain:
    """Block 1: admin0 proposes an add_client and an add_observer that expires at 2; block 2: admin1
    approves the add_client, which passes (in force from 4); then blocks 3 and 4, empty."""

    def __init__(self) -> None:
        self.ledger = Ledger(ChainStore(MemoryStore()), GENESIS)
        self.add_client = gov(ADMINS[0], "propose", {"change": ADD_CLIENT})
        self.add_observer = gov(ADMINS[0], "propose", {"change": ADD_OBSERVER, "expires": 2})
        self.damaged: list[StoreCorrupt] = []
        self.service = _service(self.ledger, self.damaged.append)

    def grow(self, to_height: int) -> None:
        blocks: list[list[Transaction]] = [
            [self.add_client, self.add_observer],
            [gov(ADMINS[1], "approve", {"proposal": self.add_client.hash})],
        ]
        while self.ledger.height < to_height:
            txs = blocks[self.ledger.height] if self.ledger.height < len(blocks) else []
            assert all(code == 0 for code, _ in commit(self.ledger, txs))

    def result(self, method: str, params: Any) -> Any:
        answer = _call(self.service, method, params)
        assert "result" in answer, answer
        return answer["result"]

    def error(self, method: str, params: Any) -> dict[str, Any]:
        answer = _call(self.service, method, params)
        assert "error" in answer, answer
        error: dict[str, Any] = answer["error"]
        return error


async def _run_here(function: Any, *args: Any) -> Any:
    return function(*args)


def _service(ledger: Ledger, on_store_damaged: Any) -> RpcService:
    driver: Any = SimpleNamespace(ledger=ledger, wait_committed=None, transactions_pending=lambda: None)
    admission = Admission(GENESIS, ledger, Mempool(100), None, driver)  # type: ignore[arg-type]
    return RpcService(ledger, driver, admission, ChainLookup(ledger, admission), Metrics(), dict,
                      on_admitted=lambda tx: None, on_store_damaged=on_store_damaged, run_blocking=_run_here)


def _call(service: RpcService, method: str, params: Any) -> dict[str, Any]:
    answer = trio.run(service.handle, body_of({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
    decoded: dict[str, Any] = strict_json(service.encode(answer))
    return decoded


@pytest.fixture
def chain() -> Chain:
    return Chain()


def keys_of(members: list[dict[str, Any]]) -> list[str]:
    return [m["pubkey"] for m in members]


def test_a_chain_without_blocks_answers_the_genesis_membership(chain: Chain) -> None:
    result = chain.result("get_members", {})
    assert result == {
        "height": 0,
        "validators": [{"name": "v0", "pubkey": VALIDATOR.verify_key.encode().hex(), "address": "127.0.0.1:26601"}],
        "observers": [],
        "clients": [{"name": "client", "pubkey": CLIENT.verify_key.encode().hex()}],
        "admins": [{"name": f"admin{i}", "pubkey": k.verify_key.encode().hex()} for i, k in enumerate(ADMINS)],
        "admin_threshold": 2, "pending": [],
    }


def test_pending_lists_open_proposals_with_a_null_activation(chain: Chain) -> None:
    chain.grow(1)
    pending = chain.result("get_members", {})["pending"]
    assert pending == [
        {"proposal": chain.add_client.hash.hex(),
         "change": {"kind": "add_client", "name": "newcomer", "pubkey": NEWCOMER.verify_key.encode().hex()},
         "approvals": [ADMINS[0].verify_key.encode().hex()], "activation": None},
        {"proposal": chain.add_observer.hash.hex(),
         "change": {"kind": "add_observer", "name": "watcher", "pubkey": (b"w" * 32).hex(),
                    "address": "127.0.0.1:27001"},
         "approvals": [ADMINS[0].verify_key.encode().hex()], "activation": None},
    ]


def test_a_passed_proposal_is_pending_until_its_activation_and_an_expired_one_is_not(chain: Chain) -> None:
    chain.grow(3)
    result = chain.result("get_members", {})
    assert result["height"] == 3 and NEWCOMER.verify_key.encode().hex() not in keys_of(result["clients"])
    [passed] = result["pending"]
    assert passed["proposal"] == chain.add_client.hash.hex() and passed["activation"] == 4
    assert passed["approvals"] == [ADMINS[0].verify_key.encode().hex(), ADMINS[1].verify_key.encode().hex()]
    chain.grow(4)
    result = chain.result("get_members", {})
    assert result["height"] == 4 and result["pending"] == []
    assert keys_of(result["clients"]) == [CLIENT.verify_key.encode().hex(), NEWCOMER.verify_key.encode().hex()]


def test_the_membership_of_a_past_height_and_of_the_genesis(chain: Chain) -> None:
    chain.grow(4)
    newcomer = NEWCOMER.verify_key.encode().hex()
    for height in (0, 1, 3):
        result = chain.result("get_members", {"height": height})
        assert result["height"] == height and newcomer not in keys_of(result["clients"])
    assert newcomer in keys_of(chain.result("get_members", {"height": 4})["clients"])
    assert chain.result("get_members", {"height": "latest"})["height"] == 4


def test_get_proposal_follows_a_proposal_from_open_to_active(chain: Chain) -> None:
    proposal = {"proposal": chain.add_client.hash.hex()}
    statuses = []
    for height in (1, 2, 3, 4):
        chain.grow(height)
        result = chain.result("get_proposal", proposal)
        statuses.append((result["status"], result["activation"]))
    assert statuses == [("open", None), ("passed", 4), ("passed", 4), ("active", 4)]
    assert result == {
        "proposal": chain.add_client.hash.hex(), "proposer": ADMINS[0].verify_key.encode().hex(),
        "change": {"kind": "add_client", "name": "newcomer", "pubkey": NEWCOMER.verify_key.encode().hex()},
        "approvals": [ADMINS[0].verify_key.encode().hex(), ADMINS[1].verify_key.encode().hex()],
        "status": "active", "height": 1, "activation": 4,
    }


def test_a_proposal_past_its_expiry_is_expired(chain: Chain) -> None:
    chain.grow(2)
    assert chain.result("get_proposal", {"proposal": chain.add_observer.hash.hex()})["status"] == "open"
    chain.grow(3)
    result = chain.result("get_proposal", {"proposal": chain.add_observer.hash.hex()})
    assert result["status"] == "expired" and result["activation"] is None


def test_a_height_above_the_tip_and_an_unknown_proposal_are_not_found(chain: Chain) -> None:
    chain.grow(2)
    assert chain.error("get_members", {"height": 3})["code"] == -32005
    assert chain.error("get_members", {"height": 2**63 - 1})["code"] == -32005
    assert chain.error("get_proposal", {"proposal": "ab" * 32})["code"] == -32005
    assert chain.error("get_proposal", {"proposal": "AB" * 32})["code"] == -32005  # read in either case


@pytest.mark.parametrize("method,params", [
    ("get_members", {"height": -1}), ("get_members", {"height": True}), ("get_members", {"height": 1.0}),
    ("get_members", {"height": 2**64}), ("get_members", {"height": "1"}), ("get_members", {"height": None}),
    ("get_members", {"height": Raw("NaN")}), ("get_members", {"at": 1}), ("get_members", [1]),
    ("get_proposal", {}), ("get_proposal", {"proposal": "ab" * 31}), ("get_proposal", {"proposal": 5}),
    ("get_proposal", {"proposal": "zz" * 32}), ("get_proposal", {"proposal": "ab" * 32, "extra": 1}),
    ("get_proposal", {"proposal": "\ud800" * 64}),
])
def test_bad_params_are_invalid_params(chain: Chain, method: str, params: Any) -> None:
    assert chain.error(method, params)["code"] == -32602


def test_a_damaged_governance_entry_takes_the_store_damaged_path(chain: Chain, monkeypatch: Any) -> None:
    chain.grow(1)
    read = chain.ledger.read_state
    monkeypatch.setattr(chain.ledger, "read_state", lambda key: b"\xc1" if key.startswith(b"gv/") else read(key))
    for method, params in [("get_members", {}), ("get_proposal", {"proposal": chain.add_client.hash.hex()})]:
        assert chain.error(method, params)["code"] == -32603
    assert len(chain.damaged) == 2 and all(isinstance(exc, StoreCorrupt) for exc in chain.damaged)


def gauges(metrics: Metrics) -> tuple[float | None, ...]:
    names = ("alliance_validators", "alliance_observers", "alliance_gov_proposals_pending")
    return tuple(metrics.registry.get_sample_value(name) for name in names)


def test_the_gauges_count_the_next_blocks_membership_and_the_pending_proposals(chain: Chain) -> None:
    metrics = Metrics()
    watch = MembershipGauges(chain.ledger, metrics)
    watch.committed(0)
    assert gauges(metrics) == (1, 0, 0)
    chain.grow(1)
    watch.committed(1)
    assert gauges(metrics) == (1, 0, 2)
    chain.grow(3)
    watch.committed(3)
    assert gauges(metrics) == (1, 0, 1)  # the add_client passed, not in force; the add_observer expired
    chain.grow(4)
    watch.committed(4)
    assert gauges(metrics) == (1, 0, 0)


def test_the_gauges_count_an_observer_once_in_force() -> None:
    chain = Chain()
    metrics = Metrics()
    watch = MembershipGauges(chain.ledger, metrics)
    propose = gov(ADMINS[2], "propose", {"change": ADD_OBSERVER})
    assert commit(chain.ledger, [propose, gov(ADMINS[1], "approve", {"proposal": propose.hash})])[1][0] == 0
    watch.committed(1)  # passed in block 1: in force from block 3
    assert gauges(metrics) == (1, 0, 1)
    commit(chain.ledger, [])
    watch.committed(2)
    assert gauges(metrics) == (1, 1, 1)  # block 3, the next, has the observer; the proposal is active from 3
    commit(chain.ledger, [])
    watch.committed(3)
    assert gauges(metrics) == (1, 1, 0)


def test_status_and_readiness_follow_the_membership_of_the_next_block() -> None:
    chain = Chain()
    joiner = {"kind": "add_validator", "name": "v1", "pubkey": b"j" * 32, "address": "127.0.0.1:27011"}
    propose = gov(ADMINS[0], "propose", {"change": joiner})
    receipts = commit(chain.ledger, [propose, gov(ADMINS[1], "approve", {"proposal": propose.hash})])
    assert [code for code, _ in receipts] == [0, 0]  # passed in block 1: in force from block 3
    me = bytes(VALIDATOR.verify_key)
    replica: Any = SimpleNamespace(me=me, round=0, height=2, proposer=lambda height, round_: me)
    outbox: Any = SimpleNamespace(connected=lambda pubkey: False)
    syncer: Any = SimpleNamespace(syncing=False, peers_height=0)
    config: Any = SimpleNamespace(name="v0")
    status = NodeStatus(config, GENESIS, chain.ledger, replica, outbox, syncer, trio.Event(), {"mode": "blocks"})
    assert status.status()["validators"] == [me.hex()] and status.peers() == [] and status.readiness() == []
    commit(chain.ledger, [])
    assert status.status()["validators"] == [me.hex(), (b"j" * 32).hex()]
    assert status.peers() == [{"name": "v1", "pubkey": (b"j" * 32).hex(), "connected": False}]
    assert status.readiness() == ["connected to 1 of 2 validators needed for a quorum"]
